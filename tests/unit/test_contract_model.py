"""ledger.model against the contract: every revert reason is reachable in a unit test and modelled,
signature edge cases agree, scripted duels replay bit for bit (state, views, events), and a reverted
model call changes nothing."""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Any

import boa
import pytest
from contract_fixtures import (  # noqa: F401  (fixtures register under their own names)
    A_VOTE,
    ABSTAIN,
    B_VOTE,
    MIN_STAKE,
    MODEL,
    NO_EVIDENCE,
    OTHER_MODEL,
    TEST_PARAMS,
    ZERO32,
    RevertedError,
    Twin,
    attest,
    chain_id,
    contract_fixture,
    deploy,
    deployment_fixture,
    deposit,
    distinct,
    fresh_fixture,
    mine_to,
    module_deployment_fixture,
    new_account,
    next_epoch,
    revert_reason,
    sign_voucher,
)
from eth_utils import keccak

from wwwserve.ledger.model import SECP256K1N, SECP256K1N_HALF, ModelRevert, WWWServeModel
from wwwserve.ledger.records import CancelReason, DuelOutcome, DuelStatus, RewardReason, SlashReason, Vote
from wwwserve.ledger.work import answer_hash

ROOT = Path(__file__).resolve().parents[2]
REASON = re.compile(r'"((?:Params|Registry|Bank|Voucher|Duel|Sortition|WWWServe): [^"]+)"')
# checks of the two-contract deployment itself: the model is one contract, with no extension
CONTRACT_ONLY = {
    "Params: extension built with other parameters",
    "Params: extension is not a contract",
    "WWWServe: call the WWWServe contract",
}


def contract_reasons() -> set[str]:
    return {m for f in (ROOT / "contracts").glob("*.vy") for m in REASON.findall(f.read_text())}


def test_every_revert_reason_is_tested_and_modelled() -> None:
    reasons = contract_reasons()
    assert len(reasons) >= 75
    tests = "".join(f.read_text() for f in (ROOT / "tests" / "unit").glob("test_contract_*.py")
                    if f.name != Path(__file__).name)
    untested = sorted(r for r in reasons if f'"{r}"' not in tests)
    assert not untested, f"no unit test expects these reverts: {untested}"
    modelled = set(REASON.findall((ROOT / "ledger" / "model.py").read_text()))
    assert modelled == reasons - CONTRACT_ONLY, (sorted(reasons - modelled), sorted(modelled - reasons))


def _model_for(c: Any) -> WWWServeModel:
    return WWWServeModel(TEST_PARAMS, chain_id=chain_id(), address=str(c.address))


def _contract_reason(c: Any, name: str, args: tuple[Any, ...], sender: str) -> str | None:
    data = getattr(c, name).prepare_calldata(*args)
    computation = boa.env.execute_code(to_address=c.address, sender=sender, data=data)
    return revert_reason(bytes(computation.output)) if computation.is_error else None


def _model_reason(call: Any) -> str | None:
    try:
        call()
    except ModelRevert as exc:
        return exc.reason
    return None


def _edge_signatures(good: bytes) -> dict[str, bytes]:
    r, s, v = good[:32], good[32:64], good[64:]
    not_on_curve_x = (5).to_bytes(32, "big")  # 5**3 + 7 is not a square mod p
    return {
        "good": good,
        "r=0": b"\x00" * 32 + s + v,
        "r=n": SECP256K1N.to_bytes(32, "big") + s + v,
        "r not on the curve": not_on_curve_x + s + v,
        "s=0": r + b"\x00" * 32 + v,
        "s=n/2": r + SECP256K1N_HALF.to_bytes(32, "big") + v,
        "s=n/2+1": r + (SECP256K1N_HALF + 1).to_bytes(32, "big") + v,
        "v=26": r + s + bytes([26]),
        "v flipped, as 0/1": r + s + bytes([1 - (v[0] - 27)]),
        "v as 0/1": r + s + bytes([v[0] - 27]),
        "v=29": r + s + bytes([29]),
        "short": good[:64],
        "empty": b"",
    }


def test_the_ledger_enums_are_the_contract_constants() -> None:
    """ledger.records' enums are the one encoding the client, the indexer, the judge and the model use (the
    model re-exports them): each member is the contract's constant of that name, and each constant a member."""
    source = (ROOT / "contracts" / "core.vy").read_text()
    constants = dict(re.findall(r"^([A-Z][A-Z_]*): constant\(uint\d+\) = (\d+)", source, re.MULTILINE))
    for enum, prefix in ((Vote, "VOTE_"), (DuelStatus, "DUEL_"), (DuelOutcome, "OUTCOME_"), (SlashReason, "SLASH_"),
                         (RewardReason, "REWARD_"), (CancelReason, "CANCEL_")):
        declared = {name.removeprefix(prefix): int(v) for name, v in constants.items() if name.startswith(prefix)}
        members = {m.name: m.value for m in enum}
        assert members.pop("NONE", 0) == declared.pop("NONE", 0) == 0, enum.__name__  # 0: none (yet)
        assert members == declared, enum.__name__


def test_model_and_contract_agree_on_malformed_voucher_signatures(c: Any) -> None:
    origin, executor = new_account("o"), new_account("e").address
    deposit(c, origin.address, 10**18)
    good = sign_voucher(c, origin, executor, 10**15)
    for name, sig in _edge_signatures(good).items():
        model = _model_for(c)
        model.deposit(origin.address, 10**18)
        with boa.env.anchor():
            got = _contract_reason(c, "claimVoucher", (origin.address, executor, 10**15, sig), executor)
        want = _model_reason(lambda sig=sig, model=model: model.claim_voucher(
            executor, origin.address, executor, 10**15, sig))
        assert got == want, name
    assert _model_reason(lambda: _model_for(c).claim_voucher(executor, origin.address, executor, 1, good + b"x")) == ""


def test_model_and_contract_agree_on_malformed_work_signatures(fresh: None) -> None:
    c = deploy()
    twin = Twin(c)
    origin = twin.node("o", 0)
    a = twin.node("a", 2 * MIN_STAKE)
    good = attest(c, origin.address, a, "w")
    # recovers nobody, or someone else
    ecrecover_fails = ("r=0", "r=n", "r not on the curve", "s=0", "s=n/2", "v flipped, as 0/1")
    for name, sig in _edge_signatures(good.work.signature).items():
        job = dataclasses.replace(good, work=dataclasses.replace(good.work, signature=sig))
        saved = copy.deepcopy(twin.m)
        with boa.env.anchor():
            try:
                twin.open_duel(origin.address, job)
                outcome = "opened"
            except RevertedError as exc:
                outcome = exc.reason
        twin.m = saved  # the anchor rolled the chain back; roll the model back with it
        expected = ("opened" if name in ("good", "v as 0/1") else
                    "Duel: bad attestation" if name in ecrecover_fails else "Duel: malformed attestation")
        assert outcome == expected, name
    # the contract's ABI decoder refuses a 66-byte signature before any check, and so does the model
    too_long = dataclasses.replace(good, work=dataclasses.replace(good.work, signature=good.work.signature + b"x"))
    with pytest.raises(RevertedError) as info:
        twin.open_duel(origin.address, too_long)
    assert info.value.reason == ""


def test_model_replays_scripted_duels_bit_for_bit(fresh: None) -> None:
    """Every kind of duel through the contract and the model in lockstep: same outcome, same revert
    reasons, same events, same storage words and views after every call."""
    c = deploy()
    twin = Twin(c)
    nodes = [twin.node(f"n{i}", (i + 2) * MIN_STAKE, models=(MODEL,) if i < 6 else (OTHER_MODEL,))
             for i in range(9)]
    next_epoch()
    o, x = nodes[0].address, nodes[1]

    def judged(tag: str, votes: dict[int, int | None]) -> tuple[int, str, list[str]]:
        duel_id, b, drawn = twin.judging(o, x, tag)
        judges = distinct(drawn)
        twin.vote_round(duel_id, {j: votes.get(i, B_VOTE) for i, j in enumerate(judges)})
        return duel_id, b, drawn

    # B wins; A wins with a silent judge; a void
    for tag, votes in (("b wins", {}), ("a wins", {0: A_VOTE, 1: A_VOTE, 2: None}),
                       ("void", {0: NO_EVIDENCE, 1: NO_EVIDENCE, 2: NO_EVIDENCE}),
                       ("tie", {0: ABSTAIN, 1: ABSTAIN, 2: ABSTAIN})):
        duel_id, _, _ = judged(tag, votes)
        twin.settle(duel_id, nodes[7].address)
        with pytest.raises(RevertedError, match="Duel: not open"):
            twin.settle(duel_id, o, wait=False)
    # an appeal that overturns round 1
    duel_id, _, _ = judged("appeal", {})
    mine_to(twin.m.reveal_end(duel_id) + 1)
    twin.appeal(duel_id, x.address)
    mine_to(twin.m.duels[duel_id].seed_block + 1)
    seats2 = twin.draw_judges(duel_id, o)
    twin.vote_round(duel_id, dict.fromkeys(distinct(seats2), A_VOTE))
    twin.settle(duel_id, o)
    # a no-show challenger, recorded by the origin
    job = attest(c, o, x, "no-show")
    duel_id = twin.open_duel(o, job)
    mine_to(twin.m.duels[duel_id].seed_block + 1)
    twin.draw_challenger(duel_id, o)
    twin.settle(duel_id, o)
    # a silent challenger nobody recorded: drawn and slashed when settled in the seed epoch; after
    # it, the duel lapses with no challenger
    for tag, late, reason in (("silent", False, 2), ("lapsed", True, 1)):
        duel_id = twin.open_duel(o, attest(c, o, x, tag))
        d = twin.m.duels[duel_id]
        mine_to(d.seed_block + twin.p.epoch_blocks if late else d.deadline + 1)
        twin.settle(duel_id, nodes[8].address, wait=False)
        assert twin.event("DuelCancelled")[0]["reason"] == reason
        assert len(twin.event("StakeSlashed")) == (0 if late else 1)
    # a request B could not get: published, answered; and one never published
    for tag, publish in (("published", True), ("withheld", False)):
        job = attest(c, o, x, tag)
        duel_id = twin.open_duel(o, job)
        mine_to(twin.m.duels[duel_id].seed_block + 1)
        b = twin.challenger_of(duel_id)
        twin.answer(duel_id, b, ZERO32)
        if publish:
            seats = twin.seats(duel_id)
            twin.publish(duel_id, job, nodes[8].address)
            mine_to(twin.m.duels[duel_id].seed_block + 1)
            with pytest.raises(RevertedError, match="Duel: request already published"):
                twin.answer(duel_id, b, ZERO32)
            assert twin.answer(duel_id, b, answer_hash("late answer")) == seats
            twin.vote_round(duel_id, dict.fromkeys(distinct(twin.seats(duel_id)), A_VOTE))
        twin.settle(duel_id, o)
    # reverts agree too
    with pytest.raises(RevertedError, match="Duel: work already dueled"):
        twin.open_duel(o, job)
    with pytest.raises(RevertedError, match="Duel: bad attestation"):
        twin.open_duel(o, attest(c, o, x, "fresh"), salt=keccak(b"not the salt"))
    for n in nodes:
        twin.sync_weight(n.address, o)
    assert twin.m.reserve > 0


def test_model_and_contract_agree_at_the_packing_limit(fresh: None) -> None:
    """openDuel refuses a duel whose blocks would outgrow duelInfo's 40-bit fields: the model must
    refuse it with the contract's reason ("Duel: field overflow")."""
    c = deploy()
    twin = Twin(c)
    origin, a = twin.node("origin", 0), twin.node("a", 2 * MIN_STAKE)
    mine_to((1 << 40) - TEST_PARAMS.duel_span_blocks - TEST_PARAMS.answer_window_blocks)
    with pytest.raises(RevertedError, match="Duel: field overflow"):
        twin.open_duel(origin.address, attest(c, origin.address, a, "late"))


def test_a_reverted_model_call_changes_nothing() -> None:
    model = WWWServeModel(TEST_PARAMS, chain_id=1, address="0x" + "11" * 20)
    user = new_account("u").address
    model.deposit(user, 100)
    before = dict(model.credit)
    with pytest.raises(ModelRevert, match="Bank: insufficient credit"):
        model.request_withdrawal(user, 101, now_s=0)
    assert (dict(model.credit), model.pending_withdrawal) == (before, {})
    assert model.events == []
