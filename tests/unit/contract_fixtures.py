"""Shared harness for the WWWServe contract tests (titanoboa, in-process py-evm).

The ledger is two contracts: `WWWServeExt` (deployed first) and `WWWServe` (deployed with the
extension's address; it delegatecalls the extension for every selector it does not export). Tests
talk to WWWServe's address through one handle with the merged ABI (`contracts.merge_abis`), as
clients do; `Deployment` also keeps both contracts' own boa objects.

One compile per session, one deployment per test module, and a chain snapshot around every test
(`boa.env.anchor()`), so tests are independent and fast.

Chain control is explicit: boa does not advance the block per transaction, so tests call `mine()`
(block number only) and `advance()` (timestamp only). BLOCKHASH is 0 in plain boa; `mine()` keeps
`prev_hashes` filled with `fake_blockhash(n)`, so every seed block has a distinct, known hash that
`ledger.model` uses to predict draws.

Duels need attested work: `attest()` makes a request, an answer and the executor's EIP-712 Work
signature (`ledger.work`), with the origin's commitment to duel it; `open_duel()` opens a duel over
it. Nothing here chooses the challenger or the seats: the contract draws them, and the helpers
find out who was drawn and act as them.

`Twin` drives the contract and `ledger.model` in lockstep (same call, same outcome, same revert
reason, same events) and compares their state; the adversarial suite runs its attacks through it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import boa
import boa.util.abi
import pytest
from eth_abi import decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from vyper.compiler.output import build_abi_output

from wwwserve.contracts import merge_abis
from wwwserve.ledger.model import ModelRevert, WWWServeModel, vote_commitment, voucher_digest
from wwwserve.ledger.params import WEI_PER_CREDIT, WEI_PER_ETH, DeploymentParams
from wwwserve.ledger.records import CancelReason, DuelOutcome, DuelStatus, RewardReason, SlashReason, Vote
from wwwserve.ledger.work import (
    WorkAttestation,
    answer_hash,
    inspect_commitment,
    model_hash,
    request_bytes,
    request_id_hash,
    sign_work,
)

CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "contracts"
C = WEI_PER_CREDIT
ETH = WEI_PER_ETH
# Short windows keep block arithmetic readable; money is the production default.
TEST_PARAMS = DeploymentParams(
    epoch_blocks=8,
    answer_window_blocks=5,
    commit_window_blocks=5,
    reveal_window_blocks=4,
    appeal_window_blocks=3,
    publish_window_blocks=6,
)
P = TEST_PARAMS
MIN_STAKE = P.min_stake_wei
BOND = P.duel_bond_wei
ESCROW = P.duel_escrow_wei
APPEAL_FEE = P.appeal_fee_wei
DUELIST_FEE = P.duelist_fee_wei
JUDGE_FEE = P.judge_fee_wei
JUDGE_PENALTY = P.judge_penalty_wei
SILENT_PENALTY = P.silent_penalty_wei
FUNDS_WEI = 1_000 * ETH
SALT = keccak(b"salt")
MODEL = "m"
OTHER_MODEL = "judge-only"
ZERO32 = b"\x00" * 32
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
ERROR_SELECTOR = bytes.fromhex("08c379a0")

# votes, duel status, outcomes: the contract's constants (core.vy), as ledger.records encodes them
# (test_contract_model checks that encoding against core.vy)
A_VOTE, B_VOTE, ABSTAIN, NO_EVIDENCE = Vote.A, Vote.B, Vote.ABSTAIN, Vote.NO_EVIDENCE
AWAITING_ANSWER, AWAITING_REQUEST, JUDGING, SETTLED, CANCELLED = (
    DuelStatus.AWAITING_ANSWER, DuelStatus.AWAITING_REQUEST, DuelStatus.JUDGING, DuelStatus.SETTLED,
    DuelStatus.CANCELLED)
A_WON, B_WON, TIE, VOIDED = DuelOutcome.A_WON, DuelOutcome.B_WON, DuelOutcome.TIE, DuelOutcome.VOIDED
SLASH_LOST_DUEL, SLASH_INCOHERENT_JUDGE, SLASH_SILENT_JUDGE, SLASH_NO_ANSWER = (
    SlashReason.LOST_DUEL, SlashReason.INCOHERENT_JUDGE, SlashReason.SILENT_JUDGE, SlashReason.NO_ANSWER)
REWARD_STAKE_WON, REWARD_DUELIST_FEE, REWARD_JUDGE_FEE, REWARD_ESCROW_REFUND, REWARD_APPEAL_REFUND = (
    RewardReason.STAKE_WON, RewardReason.DUELIST_FEE, RewardReason.JUDGE_FEE, RewardReason.ESCROW_REFUND,
    RewardReason.APPEAL_REFUND)
CANCEL_NO_CHALLENGER, CANCEL_NO_ANSWER, CANCEL_REQUEST_WITHHELD, CANCEL_NO_JUDGES = (
    CancelReason.NO_CHALLENGER, CancelReason.NO_ANSWER, CancelReason.REQUEST_WITHHELD, CancelReason.NO_JUDGES)


# ---------------------------------------------------------------------------------------------
# deployment


@dataclass(frozen=True)
class Deployment:
    """A deployed pair: `c` is WWWServe's address with the merged ABI (every function, every event);
    `core` and `ext` are the two contracts' own boa objects."""

    c: Any
    core: Any
    ext: Any
    params: DeploymentParams


@cache
def deployers() -> tuple[Any, Any]:
    """(WWWServeExt, WWWServe) deployers, compiled once per session from the sources."""
    return boa.load_partial(str(CONTRACTS_DIR / "WWWServeExt.vy")), boa.load_partial(str(CONTRACTS_DIR / "WWWServe.vy"))


@cache
def merged_abi_json() -> str:
    ext, core = deployers()
    return json.dumps(merge_abis(build_abi_output(core.compiler_data), build_abi_output(ext.compiler_data)))


@cache
def _quiet_class(cls: type) -> type:
    # boa renders a contract (its whole storage, for a VyperContract) into every error message
    return type(f"Quiet{cls.__name__}", (cls,), {"__repr__": lambda self: f"<{cls.__name__} at {self.address}>"})


def handle(address: Any) -> Any:
    """WWWServe at `address`, with the merged ABI."""
    c = boa.loads_abi(merged_abi_json(), name="WWWServe").at(address)
    c.__class__ = _quiet_class(type(c))
    return c


def deploy_pair(params: DeploymentParams = TEST_PARAMS, *, ext_params: DeploymentParams | None = None) -> Deployment:
    """Deploy the extension (with `ext_params`, by default the same), then WWWServe over it."""
    ext_d, core_d = deployers()
    ext = ext_d.deploy(*(ext_params or params).constructor_args())
    core = core_d.deploy(*params.constructor_args(), ext.address)
    for obj in (ext, core):
        obj.__class__ = _quiet_class(type(obj))
    # the merged handle is registered last, so WWWServe's logs decode through it
    return Deployment(handle(core.address), core, ext, params)


def deploy(params: DeploymentParams = TEST_PARAMS) -> Any:
    """Deploy both contracts with `params`; returns the merged handle."""
    return deploy_pair(params).c


def deploy_raw(args: Sequence[int]) -> Any:
    """Deploy with raw constructor arguments (the extension's, then WWWServe's, constructor checks)."""
    ext_d, core_d = deployers()
    ext = ext_d.deploy(*args)
    return core_d.deploy(*args, ext.address)


def with_params(**changes: int) -> DeploymentParams:
    return dataclasses.replace(TEST_PARAMS, **changes)


# ---------------------------------------------------------------------------------------------
# chain control


def fake_blockhash(number: int) -> bytes:
    """The hash block `number` has in these tests."""
    return bytes(keccak(b"wwwserve-test-block" + number.to_bytes(32, "big")))


def sync_blockhashes() -> None:
    """Make BLOCKHASH(n) return fake_blockhash(n) for the 256 blocks before the current one."""
    now = boa.env.evm.patch.block_number
    boa.env.evm.patch.prev_hashes = [fake_blockhash(now - 1 - i) for i in range(min(256, now))]


def evm_blockhash(number: int) -> bytes:
    """What BLOCKHASH(number) returns now (zero outside the last 256 blocks), for the model."""
    now = block_number()
    return fake_blockhash(number) if 0 <= now - number - 1 < 256 else ZERO32


def mine(blocks: int = 1) -> None:
    """Advance the block number (the timestamp does not move)."""
    boa.env.evm.patch.block_number += blocks
    sync_blockhashes()


def mine_to(number: int) -> None:
    """Mine until the block number is `number` (no-op when it is already there or past)."""
    if block_number() < number:
        mine(number - block_number())


def next_epoch(params: DeploymentParams = TEST_PARAMS) -> int:
    """Mine to the first block of the next epoch; returns it."""
    start = (block_number() // params.epoch_blocks + 1) * params.epoch_blocks
    mine_to(start)
    return start


def advance(seconds: int) -> None:
    """Advance the block timestamp (the block number does not move)."""
    boa.env.evm.patch.timestamp += seconds


def block_number() -> int:
    return int(boa.env.evm.patch.block_number)


def now_s() -> int:
    return int(boa.env.evm.patch.timestamp)


def chain_id() -> int:
    return int(boa.env.evm.patch.chain_id)


# ---------------------------------------------------------------------------------------------
# accounts and nodes


def new_account(label: str, funds_wei: int = FUNDS_WEI) -> LocalAccount:
    """A funded account with a known key (so it can sign vouchers and work)."""
    acct: LocalAccount = Account.from_key(keccak(b"wwwserve-test-" + label.encode()))
    boa.env.set_balance(acct.address, funds_wei)
    return acct


def pubkey_of(label: str) -> bytes:
    return bytes(keccak(b"ed25519-" + label.encode()))


def register(c: Any, who: LocalAccount | str, label: str = "", *, models: Sequence[str] = (MODEL,)) -> None:
    addr = who if isinstance(who, str) else who.address
    with boa.env.prank(addr):
        c.register(pubkey_of(label or addr), f"http://{label or 'node'}.example", list(models), "{}",
                   value=registration_value(c, addr))


def registration_value(c: Any, who: str) -> int:
    """What `register` must be sent by `who`: the registration bond, unless it holds a slot already."""
    return 0 if c.registeredOnce(who) else int(c.REGISTRATION_BOND())


def deposit(c: Any, who: str, amount_wei: int) -> None:
    with boa.env.prank(who):
        c.deposit(value=amount_wei)


def stake(c: Any, who: str, amount_wei: int) -> None:
    """Deposit and stake `amount_wei` (the node must be registered)."""
    with boa.env.prank(who):
        c.deposit(value=amount_wei)
        c.stake(amount_wei)


def make_node(c: Any, label: str, stake_wei: int = MIN_STAKE, credit_wei: int = ETH, *,
              models: Sequence[str] = (MODEL,)) -> LocalAccount:
    """A registered node with `stake_wei` staked and `credit_wei` of free credit. Its stake and
    models count for draws from the next epoch (`next_epoch()`)."""
    acct = new_account(label)
    register(c, acct, label, models=models)
    if stake_wei:
        stake(c, acct.address, stake_wei)
    if credit_wei:
        deposit(c, acct.address, credit_wei)
    return acct


@dataclass(frozen=True)
class Cast:
    """A duel's cast with a forced challenger: only the origin, A and B serve MODEL, so B is the only
    node a challenger draw can pick; the judges serve another model. Seats exclude nobody, so B (and A,
    when it holds MIN_STAKE) can hold seats in its own duel too; `judging_duel` picks duels whose seats
    all went to the judges unless a test asks otherwise."""

    origin: LocalAccount
    a: LocalAccount
    b: LocalAccount
    judges: tuple[LocalAccount, ...]


def make_cast(c: Any, judge_stakes: Sequence[int] = (MIN_STAKE, MIN_STAKE, MIN_STAKE), *,
              a_stake: int = MIN_STAKE - BOND, b_stake: int = 2 * MIN_STAKE, origin_stake: int = 0,
              prefix: str = "") -> Cast:
    """Register a cast and mine into the next epoch so that its stake and models count. By default A
    holds four bonds' worth, below MIN_STAKE, so it is never drawn (no seats); B holds 2 x MIN_STAKE,
    enough to lose several bonds and still bond a full one."""
    origin = make_node(c, prefix + "origin", origin_stake)
    a = make_node(c, prefix + "a", a_stake)
    b = make_node(c, prefix + "b", b_stake)
    judges = tuple(make_node(c, f"{prefix}j{i}", s, models=(OTHER_MODEL,)) for i, s in enumerate(judge_stakes))
    next_epoch()
    return Cast(origin, a, b, judges)


# ---------------------------------------------------------------------------------------------
# work attestations


@dataclass(frozen=True)
class Job:
    """A delegated request as the origin sent it and the executor attested it."""

    work: WorkAttestation  # signed
    salt: bytes  # opens the origin's commitment `work.inspect`
    request: bytes  # request_bytes(...): the preimage of work.request_hash
    answer: str  # the executor's answer text (work.answer_hash)


def chat_request(tag: str = "", *, model: str = MODEL, max_tokens: int = 64) -> bytes:
    return request_bytes("chat", {"model": model, "max_tokens": max_tokens,
                                  "messages": [{"role": "user", "content": f"question {tag}"}]})


def attest(c: Any, origin: str, executor: LocalAccount, tag: str = "", *, model: str = MODEL,
           wants_duel: bool = True, issued_at: int | None = None, request: bytes | None = None,
           answer: str | None = None, signer: LocalAccount | None = None, salt: bytes | None = None) -> Job:
    """Work `executor` did for `origin`, signed (by `signer`, by default the executor itself)."""
    request = chat_request(tag, model=model) if request is None else request
    answer = f"answer {tag}" if answer is None else answer
    salt = bytes(keccak(b"inspect-salt-" + tag.encode())) if salt is None else salt
    rid = request_id_hash(f"{origin}-{tag}")
    work = WorkAttestation(
        origin=to_checksum_address(origin), executor=executor.address, request_id=rid,
        request_hash=bytes(keccak(request)), model_hash=model_hash(model), answer_hash=answer_hash(answer),
        inspect=inspect_commitment(rid, wants_duel, salt), issued_at=now_s() if issued_at is None else issued_at,
    )
    if signer is None or signer.address == executor.address:
        work = sign_work(executor, chain_id(), str(c.address), work)
    else:  # someone else's key over the executor's work
        digest = work.digest(chain_id(), str(c.address))
        work = dataclasses.replace(work, signature=bytes(Account.unsafe_sign_hash(digest, signer.key).signature))
    return Job(work, salt, request, answer)


def open_args(job: Job, *, salt: bytes | None = None) -> tuple[Any, ...]:
    """openDuel's arguments over `job` (the same arguments publishRequest takes after the duel id)."""
    w = job.work
    return (w.executor, w.request_id, w.request_hash, w.model_hash, w.answer_hash,
            job.salt if salt is None else salt, w.issued_at, w.signature)


def publish_args(job: Job, request: bytes | None = None) -> tuple[Any, ...]:
    """publishRequest's arguments after the duel id: A's attestation (without A) and the request."""
    return (*open_args(job)[1:], job.request if request is None else request)


def open_duel(c: Any, origin: str, job: Job) -> int:
    with boa.env.prank(origin):
        duel_id: int = c.openDuel(*open_args(job))
    return duel_id


# ---------------------------------------------------------------------------------------------
# duel steps


class DuelView(NamedTuple):
    origin: str
    a: str
    b: str
    seed_block: int
    deadline: int
    bond: int
    round: int
    status: int
    outcome: int


def duel(c: Any, duel_id: int) -> DuelView:
    o, a, b, seed, deadline, bond, rnd, status, outcome = c.getDuel(duel_id)
    return DuelView(str(o), str(a), str(b), seed, deadline, bond, rnd, status, outcome)


def to_seed(c: Any, duel_id: int) -> None:
    """Mine to the first block after the duel's seed block (its hash is then known)."""
    mine_to(duel(c, duel_id).seed_block + 1)


def draw_challenger(c: Any, duel_id: int) -> str:
    to_seed(c, duel_id)
    c.drawChallenger(duel_id)
    return duel(c, duel_id).b


def answer(c: Any, duel_id: int, answer_hash_: bytes | None = None) -> tuple[str, list[str]]:
    """The drawn challenger answers (past the seed block); returns (B, the first round's seats)."""
    to_seed(c, duel_id)
    b = str(c.challengerOf(duel_id))
    assert b != ZERO_ADDRESS, "no challenger to answer"
    with boa.env.prank(b):
        c.answerDuel(duel_id, answer_hash(f"b-answer-{duel_id}") if answer_hash_ is None else answer_hash_)
    return b, seats(c, duel_id, 1)


def seats(c: Any, duel_id: int, round_: int) -> list[str]:
    return [str(j) for j in c.getJudges(duel_id, round_)]


def commitment(c: Any, duel_id: int, round_: int, judge: str, vote: int, salt: bytes = SALT) -> bytes:
    return vote_commitment(chain_id(), str(c.address), duel_id, round_, judge, vote, salt)


def commit(c: Any, duel_id: int, judge: str, vote: int, salt: bytes = SALT) -> None:
    with boa.env.prank(judge):
        c.commitVote(duel_id, commitment(c, duel_id, duel(c, duel_id).round, judge, vote, salt))


def reveal(c: Any, duel_id: int, judge: str, vote: int, salt: bytes = SALT) -> None:
    with boa.env.prank(judge):
        c.revealVote(duel_id, vote, salt)


def vote_round(c: Any, duel_id: int, votes: Mapping[str, int | None]) -> None:
    """Each judge in `votes` commits (a None vote commits to A and never reveals); then mine into the
    reveal window and reveal. Judges left out of `votes` do nothing."""
    for judge, v in votes.items():
        commit(c, duel_id, judge, v or A_VOTE)
    mine_to(duel(c, duel_id).deadline + 1)
    for judge, v in votes.items():
        if v is not None:
            reveal(c, duel_id, judge, v)


def reveal_end(c: Any, duel_id: int) -> int:
    return duel(c, duel_id).deadline + TEST_PARAMS.reveal_window_blocks


def settle(c: Any, duel_id: int) -> None:
    """Wait until the duel can be settled (past the appeal window in round 1, past the reveals in
    round 2) and settle it."""
    view = duel(c, duel_id)
    if view.status == JUDGING:
        end = reveal_end(c, duel_id)
        mine_to(end + 1 + (TEST_PARAMS.appeal_window_blocks if view.round == 1 else 0))
    elif view.status in (AWAITING_ANSWER, AWAITING_REQUEST):
        mine_to(view.deadline + 1)
    c.settleDuel(duel_id)


def judging_duel(c: Any, cast: Cast, tag: str = "", *, fits: Callable[[list[str]], bool] | None = None,
                 tries: int = 100) -> tuple[int, list[str]]:
    """Open a duel over A's work for the cast's origin and let B answer; returns (duel id, seats).
    The duel is the first over request ids `tag`, `tag/1`, `tag/2`, ... in which B was drawn (the
    challenger draw gives up after MAX_CHALLENGER_TRIES draws on judges) and whose first-round seats
    satisfy `fits` (by default: every seat went to one of the cast's judges, none to a duelist);
    every try that does not fit is rolled back."""
    judges = {j.address for j in cast.judges}
    ok = fits or (lambda drawn: set(drawn) <= judges)

    def run(t: str) -> tuple[int, list[str]] | None:
        duel_id = open_duel(c, cast.origin.address, attest(c, cast.origin.address, cast.a, t))
        to_seed(c, duel_id)
        if c.challengerOf(duel_id) == ZERO_ADDRESS:
            return None
        b, drawn = answer(c, duel_id)
        assert b == cast.b.address
        return duel_id, drawn

    for i in range(tries):
        t = tag if i == 0 else f"{tag}/{i}"
        with boa.env.anchor():
            got = run(t)
            fit = got is not None and ok(got[1])
        if fit:
            result = run(t)
            assert result is not None
            return result
    raise AssertionError(f"no duel's seats fit in {tries} request ids ({tag!r})")


# ---------------------------------------------------------------------------------------------
# vouchers


def sign_voucher(c: Any, origin: LocalAccount, executor: str, cumulative_wei: int) -> bytes:
    """Sign a fee voucher as a wallet would: EIP-712 typed data through eth_account."""
    signed = Account.sign_typed_data(
        origin.key,
        domain_data={"name": "WWWServe", "version": "1", "chainId": chain_id(), "verifyingContract": c.address},
        message_types={"Voucher": [{"name": "origin", "type": "address"}, {"name": "executor", "type": "address"},
                                   {"name": "cumulativeAmount", "type": "uint256"}]},
        message_data={"origin": origin.address, "executor": executor, "cumulativeAmount": cumulative_wei},
    )
    return bytes(signed.signature)


def sign_digest(c: Any, signer: LocalAccount, origin: str, executor: str, cumulative_wei: int) -> bytes:
    """Sign the voucher digest directly (lets a wrong key sign for `origin`)."""
    digest = voucher_digest(chain_id(), c.address, origin, executor, cumulative_wei)
    return bytes(Account.unsafe_sign_hash(digest, signer.key).signature)


# ---------------------------------------------------------------------------------------------
# logs and reverts


def normalize(value: Any) -> Any:
    """Make a decoded log argument comparable with the model's (addresses as str, lists as lists)."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, list | tuple):
        return [normalize(v) for v in value]
    return value


def decoded(c: Any, computation: Any = None) -> list[tuple[str, dict[str, Any]]]:
    """(event name, args) of the logs of `computation` (by default the last call)."""
    return [(type(log).__name__, {k: normalize(v) for k, v in log._asdict().items() if k != "address"})
            for log in c.get_logs(computation)]


def logs_named(c: Any, name: str) -> list[Any]:
    """Decoded logs of the last call with the given event name."""
    return [log for log in c.get_logs() if type(log).__name__ == name]


def revert_reason(output: bytes) -> str:
    """The reason string of a revert (Error(string)), or "" when there is none."""
    if output[:4] != ERROR_SELECTOR:
        return ""
    (reason,) = decode(["string"], output[4:])
    return str(reason)


# ---------------------------------------------------------------------------------------------
# the contract and the model in lockstep


VALUE_MASK = (1 << 112) - 1
GWEI = 10**9


@cache
def _hashmap_slot(slot: int, keys: tuple[int | str | bytes, ...]) -> int:
    for key in keys:
        if isinstance(key, str):
            key_bytes = bytes.fromhex(key[2:]).rjust(32, b"\x00")
        elif isinstance(key, bytes):
            key_bytes = key
        else:
            key_bytes = key.to_bytes(32, "big")
        slot = int.from_bytes(keccak(slot.to_bytes(32, "big") + key_bytes), "big")
    return slot


@cache
def _storage_slots() -> dict[str, int]:
    """Base slot of every storage variable of the shared layout (module prefixes dropped for core)."""
    layout = deployers()[1].compiler_data.storage_layout["storage_layout"]
    out: dict[str, int] = {}

    def walk(prefix: str, tree: dict[str, Any]) -> None:
        for name, info in tree.items():
            if "slot" in info:
                out[prefix + name] = info["slot"]
            else:
                walk(f"{prefix}{name}.", info)

    walk("", layout["core"])
    return out


class Storage:
    """Raw reads of WWWServe's storage words (Vyper layout: HashMap slot = keccak(slot ++ key)); an
    order of magnitude cheaper than view calls, so the stateful test can compare every word after
    every step."""

    def __init__(self, c: Any) -> None:
        self.base = _storage_slots()
        self.address = boa.util.abi.Address(c.address)

    def word(self, slot: int) -> int:
        return int(boa.env.evm.get_storage(self.address, slot))

    def slot(self, name: str, *keys: int | str | bytes) -> int:
        return _hashmap_slot(self.base[name], keys)

    def get(self, name: str, *keys: int | str | bytes, offset: int = 0) -> int:
        return self.word(self.slot(name, *keys) + offset)


def pack_account(m: WWWServeModel, who: str) -> int:
    """The model's stake account as the contract packs it: active | unbonding << 96 | bonded gwei << 192."""
    act, unb, bonded = m.active_stake.get(who, 0), m.unbonding_stake.get(who, 0), m.bonded.get(who, 0)
    return act | (unb << 96) | ((bonded // GWEI) << 192)


def pack_info(d: Any) -> int:
    """A model duel as the contract's `duelInfo` word (layout at its declaration in core.vy): status |
    outcome | round | b drawn | published | origin, a, b leaves (20 bits) | deadline | seed block |
    model id | the first round's seats (20 bits each) and votes (3 bits each) | first round drawn | the
    bond in 1023rds of DUEL_BOND (once B is drawn)."""
    word = (int(d.status) | (int(d.outcome) << 4) | (d.round << 8) | (int(d.b_drawn) << 10)
            | (int(d.published) << 11) | (d.origin_leaf << 12) | (d.a_leaf << 32) | (d.b_leaf << 52)
            | (d.deadline << 72) | (d.seed_block << 112) | (d.model_id << 152))
    if d.b_drawn:
        word |= d.bond_units << 246
    first = d.panels.get(1)
    if first is not None:
        word |= 1 << 245
        for i, (leaf, vote) in enumerate(zip(first.leaves, first.votes, strict=True)):
            word |= (leaf << (176 + 20 * i)) | (int(vote) << (236 + 3 * i))
    return word


def pack_panel(panel: Any) -> int:
    """A model panel as the contract's `duelPanel` word (the appeal round): seat leaves (20 bits),
    3-bit votes from bit 160, seat count at bit 184."""
    word = len(panel.leaves) << 184
    for i, (leaf, vote) in enumerate(zip(panel.leaves, panel.votes, strict=True)):
        word |= (leaf << (20 * i)) | (int(vote) << (160 + 3 * i))
    return word


class RevertedError(Exception):
    """Both the contract and the model reverted, with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Twin:
    """The contract (through the merged handle) and `ledger.model` driven in lockstep.

    Every call runs on both; both must succeed, or both revert with the same reason (then `RevertedError`
    is raised), and emit the same events. `check()` compares every balance, the reserve, the total
    draw weight, every duel view and conservation. Start it on a freshly deployed contract.
    """

    def __init__(self, c: Any, params: DeploymentParams = TEST_PARAMS) -> None:
        self.c = c
        self.p = params
        self.m = WWWServeModel(params, chain_id=chain_id(), address=str(c.address))
        assert boa.env.get_balance(c.address) == 0, "a Twin starts on a fresh deployment"
        self.addresses: list[str] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.storage = Storage(c)
        self._seen: dict[int, Any] = {}  # the model's view of each duel when last compared

    # -------------------------------------------------------------- lockstep core
    def tx(self, sender: str, name: str, args: Sequence[Any], model_call: Callable[[], Any], *,
           value: int = 0, check: bool = True) -> Any:
        """Run `name(*args)` from `sender` on the contract and `model_call()` on the model."""
        sender = to_checksum_address(sender)
        if sender not in self.addresses:
            self.addresses.append(sender)
        try:
            result, model_reason = model_call(), None
        except ModelRevert as exc:
            result, model_reason = None, exc.reason
        data = getattr(self.c, name).prepare_calldata(*args)
        computation = boa.env.execute_code(to_address=self.c.address, sender=sender, data=data, value=value)
        reason = revert_reason(bytes(computation.output)) if computation.is_error else None
        assert reason == model_reason, f"{name}: contract {reason!r}, model {model_reason!r}"
        if reason is not None:
            raise RevertedError(reason)
        self.events = decoded(self.c, computation)
        expected = [(ev.name, {k: normalize(v) for k, v in ev.args.items()}) for ev in self.m.events]
        assert self.events == expected, f"{name}: events differ"
        if name == "openDuel":
            assert int.from_bytes(computation.output, "big") == result
        if check:
            self.check()
        return result

    def check(self) -> None:
        """Contract and model agree on every balance, the reserve, the verdict counts, the weights,
        every duel; the contract holds exactly what it owes. Storage words every time (cheap); a
        duel's views whenever the model says the duel changed."""
        c, m, st = self.c, self.m, self.storage
        for a in self.addresses:
            got = (st.get("credit", a), st.get("pendingWithdrawal", a), st.get("accounts", a))
            want = (m.credit.get(a, 0), m.pending_withdrawal.get(a, 0), pack_account(m, a))
            assert got == want, (a, got, want)
        assert st.get("reserve") == m.reserve
        assert st.get("verdicts") == m.verdicts_a | (m.verdicts_b << 128)
        assert st.get("sortition.tree", 1) & VALUE_MASK == m.sortition.total_weight()
        assert st.get("sortition.leafCount") == m.sortition.leaf_count
        for leaf in range(m.sortition.leaf_count):
            want = int(m.sortition.owner(leaf), 16) | (m.sortition.leaf_since.get(leaf, 0) << 160)
            assert st.get("sortition.leafSlot", leaf) == want, leaf
        assert st.get("sortition.freeTail") - st.get("sortition.freeHead") == len(m.sortition.free)
        for duel_id, d in m.duels.items():
            assert st.get("duelInfo", duel_id) == pack_info(d), duel_id
            appeal_panel = d.panels.get(2)
            assert st.get("duelPanel", duel_id) == (0 if appeal_panel is None else pack_panel(appeal_panel)), duel_id
            view = (m.get_duel(duel_id), m.get_judges(duel_id, 1), m.get_votes(duel_id, 1),
                    m.get_judges(duel_id, 2), m.get_votes(duel_id, 2))
            if self._seen.get(duel_id) != view:
                self._seen[duel_id] = view
                assert tuple(normalize(x) for x in c.getDuel(duel_id)) == view[0], duel_id
                for r in (1, 2):
                    assert [str(j) for j in c.getJudges(duel_id, r)] == view[2 * r - 1], (duel_id, r)
                    assert list(c.getVotes(duel_id, r)) == view[2 * r], (duel_id, r)
        assert boa.env.get_balance(c.address) == m.balance_wei == m.liabilities_wei()

    def event(self, name: str) -> list[dict[str, Any]]:
        """Args of the last call's events with this name."""
        return [args for n, args in self.events if n == name]

    # -------------------------------------------------------------- registry and bank
    def register(self, who: LocalAccount | str, label: str, models: Sequence[str] = (MODEL,)) -> None:
        addr = who if isinstance(who, str) else who.address
        pk, ep, ms = pubkey_of(label), f"http://{label}.example", list(models)
        value = self.m.registration_value_wei(addr)
        self.tx(addr, "register", (pk, ep, ms, "{}"),
                lambda: self.m.register(addr, pk, ep, ms, "{}", block_number=block_number(), value_wei=value),
                value=value)

    def release_slot(self, who: str) -> None:
        self.tx(who, "releaseSlot", (), lambda: self.m.release_slot(who, block_number=block_number()))

    def update(self, who: str, label: str, models: Sequence[str]) -> None:
        pk, ep, ms = pubkey_of(label), f"http://{label}.example", list(models)
        self.tx(who, "updateNode", (pk, ep, ms, "{}"),
                lambda: self.m.update_node(who, pk, ep, ms, "{}", block_number=block_number()))

    def leave(self, who: str) -> None:
        self.tx(who, "leave", (), lambda: self.m.leave(who, block_number=block_number()))

    def deposit(self, who: str, amount_wei: int) -> None:
        boa.env.set_balance(who, max(boa.env.get_balance(who), amount_wei))
        self.tx(who, "deposit", (), lambda: self.m.deposit(who, amount_wei), value=amount_wei)

    def stake(self, who: str, amount_wei: int) -> None:
        self.tx(who, "stake", (amount_wei,), lambda: self.m.stake(who, amount_wei, block_number=block_number()))

    def request_unstake(self, who: str, amount_wei: int) -> None:
        self.tx(who, "requestUnstake", (amount_wei,),
                lambda: self.m.request_unstake(who, amount_wei, now_s=now_s(), block_number=block_number()))

    def withdraw_stake(self, who: str) -> int:
        amount: int = self.tx(who, "withdrawStake", (),
                              lambda: self.m.withdraw_stake(who, now_s=now_s(), block_number=block_number()))
        return amount

    def sync_weight(self, node: str, sender: str | None = None) -> None:
        s = sender or node
        self.tx(s, "syncWeight", (node,), lambda: self.m.sync_weight(s, node, block_number=block_number()))

    def node(self, label: str, stake_wei: int = MIN_STAKE, credit_wei: int = ETH, *,
             models: Sequence[str] = (MODEL,)) -> LocalAccount:
        """A registered, staked node with free credit (counts for draws from the next epoch)."""
        acct = new_account(label)
        self.register(acct, label, models)
        if stake_wei:
            self.deposit(acct.address, stake_wei)
            self.stake(acct.address, stake_wei)
        if credit_wei:
            self.deposit(acct.address, credit_wei)
        return acct

    # -------------------------------------------------------------- duels
    def open_duel(self, origin: str, job: Job, *, salt: bytes | None = None) -> int:
        s = job.salt if salt is None else salt
        duel_id: int = self.tx(origin, "openDuel", open_args(job, salt=s),
                               lambda: self.m.open_duel(origin, job.work, s, now_s=now_s(),
                                                        block_number=block_number()))
        return duel_id

    def draw_challenger(self, duel_id: int, sender: str) -> str:
        b: str = self.tx(sender, "drawChallenger", (duel_id,),
                         lambda: self.m.draw_challenger(sender, duel_id, block_number=block_number(),
                                                        blockhash=evm_blockhash))
        return b

    def challenger_of(self, duel_id: int) -> str:
        b = str(self.c.challengerOf(duel_id))
        assert b == self.m.challenger_of(duel_id, block_number=block_number(), blockhash=evm_blockhash)
        return b

    def answer(self, duel_id: int, b: str, answer_hash_: bytes) -> list[str]:
        drawn: list[str] = self.tx(b, "answerDuel", (duel_id, answer_hash_),
                                   lambda: self.m.answer_duel(b, duel_id, answer_hash_, block_number=block_number(),
                                                              blockhash=evm_blockhash))
        return drawn

    def publish(self, duel_id: int, job: Job, sender: str, request: bytes | None = None) -> None:
        req = job.request if request is None else request
        self.tx(sender, "publishRequest", (duel_id, *publish_args(job, req)),
                lambda: self.m.publish_request(sender, duel_id, job.work, job.salt, req, block_number=block_number()))

    def draw_judges(self, duel_id: int, sender: str) -> list[str]:
        drawn: list[str] = self.tx(sender, "drawJudges", (duel_id,),
                                   lambda: self.m.draw_judges(sender, duel_id, block_number=block_number(),
                                                              blockhash=evm_blockhash))
        return drawn

    def commit(self, duel_id: int, judge: str, vote: int, salt: bytes = SALT) -> None:
        rnd = max(self.m.duels[duel_id].round, 1)
        com = self.m.vote_commitment(duel_id, rnd, judge, vote, salt)
        self.tx(judge, "commitVote", (duel_id, com),
                lambda: self.m.commit_vote(judge, duel_id, com, block_number=block_number(), blockhash=evm_blockhash))

    def reveal(self, duel_id: int, judge: str, vote: int, salt: bytes = SALT) -> None:
        self.tx(judge, "revealVote", (duel_id, vote, salt),
                lambda: self.m.reveal_vote(judge, duel_id, vote, salt, block_number=block_number()))

    def vote_round(self, duel_id: int, votes: Mapping[str, int | None]) -> None:
        """Like the module-level `vote_round`, on both sides."""
        for judge, v in votes.items():
            self.commit(duel_id, judge, v or A_VOTE)
        mine_to(self.m.duels[duel_id].deadline + 1)
        for judge, v in votes.items():
            if v is not None:
                self.reveal(duel_id, judge, v)

    def appeal(self, duel_id: int, who: str) -> None:
        self.tx(who, "appeal", (duel_id,), lambda: self.m.appeal(who, duel_id, block_number=block_number()))

    def settle(self, duel_id: int, sender: str, *, wait: bool = True) -> None:
        if wait:
            d = self.m.duels[duel_id]
            if d.status == 3:
                mine_to(self.m.reveal_end(duel_id) + 1 + (self.p.appeal_window_blocks if d.round == 1 else 0))
            else:
                mine_to(d.deadline + 1)
        self.tx(sender, "settleDuel", (duel_id,),
                lambda: self.m.settle_duel(sender, duel_id, block_number=block_number(), blockhash=evm_blockhash))

    def seats(self, duel_id: int, round_: int = 1) -> list[str]:
        return self.m.get_judges(duel_id, round_)

    def judging(self, origin: str, a: LocalAccount, tag: str) -> tuple[int, str, list[str]]:
        """Open a duel over A's work, let the drawn challenger answer; (duel id, B, seats)."""
        job = attest(self.c, origin, a, tag)
        duel_id = self.open_duel(origin, job)
        mine_to(self.m.duels[duel_id].seed_block + 1)
        b = self.challenger_of(duel_id)
        drawn = self.answer(duel_id, b, answer_hash(f"b-{tag}"))
        return duel_id, b, drawn


    @contextlib.contextmanager
    def sandbox(self) -> Iterator[None]:
        """Run calls that are rolled back afterwards, on the chain and in the model."""
        saved, seen = copy.deepcopy(self.m), dict(self._seen)
        try:
            with boa.env.anchor():
                yield
        finally:
            self.m, self._seen = saved, seen

    def judging_where(self, origin: str, a: LocalAccount, fits: Callable[[list[str]], bool],
                      tag: str, tries: int = 40) -> tuple[int, str, list[str]]:
        """Like `judging`, over the first request id (tag + n) whose first-round seats satisfy `fits`."""
        for i in range(tries):
            with self.sandbox():
                ok = fits(self.judging(origin, a, f"{tag}{i}")[2])
            if ok:
                return self.judging(origin, a, f"{tag}{i}")
        raise AssertionError(f"no panel fits in {tries} duels ({tag})")


def distinct(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


# ---------------------------------------------------------------------------------------------
# fixtures. They carry explicit names, so test modules import them under these function names and
# take `c`/`dep`/`fresh` as parameters without shadowing an import.


@pytest.fixture(scope="module", name="module_deployment")
def module_deployment_fixture() -> Iterator[Deployment]:
    """One deployment per module; tests run inside snapshots of it."""
    with boa.env.anchor():
        sync_blockhashes()
        yield deploy_pair()


@pytest.fixture(name="dep")
def deployment_fixture(module_deployment: Deployment) -> Iterator[Deployment]:
    """The module's deployment, with every change a test makes rolled back afterwards."""
    with boa.env.anchor():
        sync_blockhashes()
        yield module_deployment


@pytest.fixture(name="c")
def contract_fixture(dep: Deployment) -> Any:
    """The module's WWWServe (merged ABI), rolled back after the test."""
    return dep.c


@pytest.fixture(name="fresh")
def fresh_fixture() -> Iterator[None]:
    """A snapshot for tests that deploy their own contracts."""
    with boa.env.anchor():
        sync_blockhashes()
        yield
