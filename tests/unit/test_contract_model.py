"""ledger.model against the contract: revert-reason coverage, packing, ecrecover edge cases, a replay."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import boa
import pytest
from contract_fixtures import (  # noqa: F401  (fixtures register under their own names)
    MIN_STAKE,
    SALT,
    TEST_PARAMS,
    block_number,
    chain_id,
    commitment,
    contract_fixture,
    deposit,
    fake_blockhash,
    make_node,
    mine,
    module_contract_fixture,
    new_account,
    now_s,
    pubkey_of,
    sign_voucher,
)
from eth_utils import keccak

from ledger.model import (
    SECP256K1N,
    SECP256K1N_HALF,
    DuelInfo,
    DuelPanel,
    DuelStatus,
    ModelRevert,
    Outcome,
    Vote,
    WWWServeModel,
)

ROOT = Path(__file__).resolve().parents[2]
REASON = re.compile(r'"((?:Params|Registry|Bank|Voucher|Duel|Sortition): [^"]+)"')


def contract_reasons() -> set[str]:
    return {m for f in (ROOT / "contracts").glob("*.vy") for m in REASON.findall(f.read_text())}


def test_every_revert_reason_is_tested_and_modelled() -> None:
    reasons = contract_reasons()
    assert len(reasons) >= 45
    tests = "".join(f.read_text() for f in (ROOT / "tests" / "unit").glob("test_contract_*.py")
                    if f.name != Path(__file__).name)
    untested = sorted(r for r in reasons if f'"{r}"' not in tests)
    assert not untested, f"no unit test expects these reverts: {untested}"
    model = (ROOT / "ledger" / "model.py").read_text()
    modelled = set(REASON.findall(model))
    assert modelled == reasons, (sorted(reasons - modelled), sorted(modelled - reasons))


def test_packing_round_trips_and_guards_widths() -> None:
    info = DuelInfo(DuelStatus.VOTING, Outcome.B_WON, 3, 2**24 - 1, 0, 2**40 - 1, 17, 2**40 - 2)
    assert DuelInfo.unpack(info.pack()) == info
    panel = DuelPanel([5, 0, 2**24 - 1], [Vote.A, Vote.NONE, Vote.NO_EVIDENCE])
    assert DuelPanel.unpack(panel.pack()) == panel
    with pytest.raises(ModelRevert, match="Duel: field overflow"):
        DuelInfo(DuelStatus.VOTING, Outcome.NONE, 0, 0, 0, 2**40).pack()
    with pytest.raises(ModelRevert, match="Duel: field overflow"):
        DuelPanel([2**24], [Vote.NONE]).pack()


def _model_for(c: Any) -> WWWServeModel:
    return WWWServeModel(TEST_PARAMS, chain_id=chain_id(), address=c.address)


def _contract_reason(call: Any) -> str | None:
    try:
        call()
    except boa.BoaError as exc:
        return str(exc.stack_trace.last_frame.pretty_vm_reason)
    return None


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
        "v=1": r + s + bytes([1 - (v[0] - 27)]),
        "v=29": r + s + bytes([29]),
        "short": good[:64],
        "empty": b"",
    }


def test_model_and_contract_agree_on_malformed_signatures(c: Any) -> None:
    origin, executor = new_account("o"), new_account("e").address
    deposit(c, origin.address, 10**18)
    good = sign_voucher(c, origin, executor, 10**15)
    for name, sig in _edge_signatures(good).items():
        model = _model_for(c)
        model.deposit(origin.address, 10**18)
        with boa.env.anchor():
            got = _contract_reason(lambda sig=sig: c.claimVoucher(origin.address, executor, 10**15, sig))
        want = _model_reason(lambda sig=sig, model=model: model.claim_voucher(
            executor, origin.address, executor, 10**15, sig))
        assert got == want, name
    assert _model_reason(lambda: _model_for(c).claim_voucher(executor, origin.address, executor, 1, good + b"x")) == ""


def test_model_replays_a_duel_bit_for_bit(c: Any) -> None:
    """The model, fed the same calls, predicts the panel and every balance after settlement."""
    model = _model_for(c)
    # Mirror each contract call in the model (judges register first, so leaf 0 is a judge).
    labels = ["j0", "j1", "j2", "o", "a", "b"]
    stakes = [2 * MIN_STAKE, 3 * MIN_STAKE, 5 * MIN_STAKE + 5, MIN_STAKE, 10 * MIN_STAKE, 4 * MIN_STAKE]
    nodes = {}
    for label, stake_wei in zip(labels, stakes, strict=True):
        acct = make_node(c, label, stake_wei)
        nodes[label] = acct.address
        model.register(acct.address, pubkey_of(label), f"http://{label}.example", ["m"], "{}")
        model.deposit(acct.address, stake_wei)
        model.stake(acct.address, stake_wei)
        model.deposit(acct.address, 10**18)
    with boa.env.prank(nodes["b"]):
        c.requestUnstake(MIN_STAKE)
    model.request_unstake(nodes["b"], MIN_STAKE, now_s=now_s())
    q = keccak(b"q")
    with boa.env.prank(nodes["o"]):
        duel_id = c.openDuel(nodes["a"], nodes["b"], q, q, q)
    assert model.open_duel(nodes["o"], nodes["a"], nodes["b"], q, q, q, block_number=block_number()) == duel_id
    mine(TEST_PARAMS.seed_delay_blocks + 1)
    seed_block = block_number() - 1
    predicted = model.draw_judges(nodes["o"], duel_id, block_number=block_number(),
                                  blockhash=fake_blockhash(seed_block))
    c.drawJudges(duel_id)
    assert [str(j) for j in c.getJudges(duel_id)] == predicted
    votes = {nodes["j0"]: Vote.B, nodes["j1"]: Vote.B, nodes["j2"]: Vote.A}
    for judge, vote in votes.items():
        com = commitment(c, duel_id, judge, vote)
        with boa.env.prank(judge):
            c.commitVote(duel_id, com)
        model.commit_vote(judge, duel_id, com, block_number=block_number())
    mine(TEST_PARAMS.commit_window_blocks + 1)
    for judge, vote in list(votes.items())[:2]:  # j2 never reveals
        with boa.env.prank(judge):
            c.revealVote(duel_id, vote, SALT)
        model.reveal_vote(judge, duel_id, vote, SALT, block_number=block_number())
    with pytest.raises(ModelRevert, match="Duel: reveal window not over"):
        model.settle_duel(nodes["o"], duel_id, block_number=block_number())
    mine(TEST_PARAMS.reveal_window_blocks)
    result = model.settle_duel(nodes["o"], duel_id, block_number=block_number())
    c.settleDuel(duel_id)
    (settled,) = [log for log in c.get_logs() if type(log).__name__ == "DuelSettled"]
    assert (settled.outcome, settled.votesA, settled.votesB, settled.stakeMoved, settled.judgePool) == (
        result.outcome, result.votes_a, result.votes_b, result.stake_moved_wei, result.judge_pool_wei)
    assert result.outcome == Outcome.B_WON
    for addr in nodes.values():
        assert (c.credit(addr), c.activeStake(addr), c.unbondingStake(addr), c.lockedUntil(addr)) == (
            model.credit.get(addr, 0), model.active_stake.get(addr, 0), model.unbonding_stake.get(addr, 0),
            model.locked_until.get(addr, 0)), addr
    assert c.totalWeight() == model.sortition.total_weight()
    assert tuple(c.getDuel(duel_id)) == model.get_duel(duel_id)
    assert boa.env.get_balance(c.address) == model.balance_wei == model.liabilities_wei()


def test_a_reverted_model_call_changes_nothing() -> None:
    model = WWWServeModel(TEST_PARAMS, chain_id=1, address="0x" + "11" * 20)
    user = new_account("u").address
    model.deposit(user, 100)
    before = dict(model.credit), model.events
    with pytest.raises(ModelRevert, match="Bank: insufficient credit"):
        model.request_withdrawal(user, 101, now_s=0)
    assert (dict(model.credit), model.pending_withdrawal) == (before[0], {})
    assert model.events == []
