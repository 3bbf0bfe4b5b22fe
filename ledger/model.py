"""Pure-Python reference model of the WWWServe contract (contracts/core.vy + sortition.vy).

The model is a test oracle and the simulator's ledger: it holds the same state as the contract
(credit, pending withdrawals, packed stake accounts with bonded stake, the node registry with
sortition leaves, public-key owners and per-epoch model service, the versioned sortition sum tree,
claimed voucher amounts, duels with their rounds, the reserve) and implements every external function
with the same checks in the same order. A failed check raises `ModelRevert` carrying *exactly* the
contract's revert string, and leaves the state untouched, like a reverted transaction.

Nothing here reads a clock or a chain: each function takes the caller (`sender`) and, where the
contract reads them, the block timestamp (`now_s`), the block number (`block_number`) and the hash of
a block (`blockhash`, a function of the block number, as the EVM's BLOCKHASH). The draws, the
commitment and the EIP-712 digests use the contract's exact keccak encodings, so the model predicts
which challenger and which seats a duel draws, bit for bit; settlement uses the same integer floor
divisions. Events are recorded as `ModelEvent`s in emission order, so a test can compare them with the
contract's logs.

The sortition tree here keeps every level and walks every draw from the root (the specification); the
contract keeps only the subtree that covers the allocated leaves and starts there, which picks the
same leaves; the stateful test checks that they agree.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, update_wrapper
from typing import Concatenate, ParamSpec, TypeVar

from eth_abi.abi import encode
from eth_keys.datatypes import Signature
from eth_keys.exceptions import BadSignature
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from eth_utils.exceptions import ValidationError as EthValidationError

from wwwserve.errors import WWWServeError
from wwwserve.ledger.params import DeploymentParams, verdict_weight

# the contract's enums, re-exported (`X as X`): the simulator and tests import them from here
from wwwserve.ledger.records import CancelReason as CancelReason
from wwwserve.ledger.records import DuelOutcome as DuelOutcome
from wwwserve.ledger.records import DuelStatus as DuelStatus
from wwwserve.ledger.records import RewardReason as RewardReason
from wwwserve.ledger.records import SlashReason as SlashReason
from wwwserve.ledger.records import Vote as Vote
from wwwserve.ledger.work import WorkAttestation, duel_id_of, inspect_commitment, work_digest

# contract constants (core.vy / sortition.vy)
BPS = 10_000
MAX_K = 3
MAX_SEATS = 8
MAX_MODELS = 16
MAX_DEPTH = 20
MAX_DRAW = 8
MAX_CHALLENGER_TRIES = 8
MAX_REQUEST_BYTES = 65536
VERDICT_DECAY_AT = 1024
BOND_UNITS = 1023
WEI_PER_GWEI = 10**9
VALUE_MASK = (1 << 112) - 1
STAKE_MASK = (1 << 96) - 1
BLOCK_LIMIT = 1 << 40
SECP256K1N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1N_HALF = SECP256K1N // 2
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
ZERO_HASH = b"\x00" * 32
SIGNATURE_BYTES = 65
VOUCHER_SIGNATURE_BYTES = SIGNATURE_BYTES

EIP712_DOMAIN_TYPEHASH = keccak(
    text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
VOUCHER_TYPEHASH = keccak(text="Voucher(address origin,address executor,uint256 cumulativeAmount)")
EIP712_NAME = "WWWServe"
EIP712_VERSION = "1"


# The contract's enums are ledger.records' (one encoding for the client, the indexer, the judge and this
# model); `Outcome` is the name this module and the simulator have always used for DuelOutcome (the same
# class, not a copy).
Outcome = DuelOutcome


class ModelRevertError(WWWServeError):
    """The contract would revert. `reason` is its exact revert string ("" when it gives none)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# The short name the test-oracle API was specified with; same class.
ModelRevert = ModelRevertError


@dataclass(frozen=True)
class ModelEvent:
    """One event the contract would log: its name and its arguments by ABI name."""

    name: str
    args: dict[str, object]


BlockHash = Callable[[int], bytes]
"""The EVM's BLOCKHASH: block number -> its 32-byte hash."""


# ---------------------------------------------------------------------------------------------
# pure helpers (the contract's encodings)


@lru_cache(maxsize=4096)  # EIP-55 hashes the address; the same few addresses recur on every call
def checksum(address: str) -> str:
    """Canonical (EIP-55) form of an address, so dictionary keys never differ by case."""
    return str(to_checksum_address(address))


def domain_separator(chain_id: int, contract: str) -> bytes:
    """EIP-712 domain separator of a WWWServe deployment (the contract's DOMAIN_SEPARATOR())."""
    return bytes(keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [EIP712_DOMAIN_TYPEHASH, keccak(text=EIP712_NAME), keccak(text=EIP712_VERSION), chain_id,
             checksum(contract)],
        )
    ))


def voucher_digest(chain_id: int, contract: str, origin: str, executor: str, cumulative_amount_wei: int) -> bytes:
    """The EIP-712 digest an origin signs to owe `executor` a cumulative amount (voucherDigest)."""
    struct_hash = keccak(
        encode(["bytes32", "address", "address", "uint256"],
               [VOUCHER_TYPEHASH, checksum(origin), checksum(executor), cumulative_amount_wei])
    )
    return bytes(keccak(b"\x19\x01" + domain_separator(chain_id, contract) + struct_hash))


def vote_commitment(chain_id: int, contract: str, duel_id: int, round_: int, judge: str, vote: int,
                    salt: bytes) -> bytes:
    """The commitment a judge submits for a hidden vote (voteCommitment); the contract keeps its
    first 16 bytes."""
    return bytes(keccak(
        encode(["uint256", "address", "uint256", "uint256", "address", "uint8", "bytes32"],
               [chain_id, checksum(contract), duel_id, round_, checksum(judge), vote, salt])
    ))


def challenger_seed(blockhash: bytes, duel_id: int) -> bytes:
    """Seed of a duel's challenger draws: keccak256(abi_encode(blockhash(seed), duelId, 0))."""
    return bytes(keccak(encode(["bytes32", "uint256", "uint256"], [blockhash.rjust(32, b"\x00"), duel_id, 0])))


def panel_seed(blockhash: bytes, duel_id: int, round_: int) -> bytes:
    """Seed of a round's seats: keccak256(abi_encode(blockhash(seed), duelId, round))."""
    return bytes(keccak(encode(["bytes32", "uint256", "uint256"], [blockhash.rjust(32, b"\x00"), duel_id, round_])))


def ecrecover(digest: bytes, v: int, r: int, s: int) -> str:
    """The ecrecover precompile: the signer's address, or the zero address when recovery fails."""
    if v not in (27, 28) or not (1 <= r < SECP256K1N and 1 <= s < SECP256K1N):
        return ZERO_ADDRESS
    try:
        public_key = Signature(vrs=(v - 27, r, s)).recover_public_key_from_msg_hash(digest)
    except (BadSignature, EthValidationError):
        return ZERO_ADDRESS
    return checksum(public_key.to_checksum_address())


def _recover(digest: bytes, signature: bytes, malformed: str) -> str:
    """The contract's `_recover`: 65 bytes, low s, v in {27, 28} (v 0/1 accepted as 27/28)."""
    if len(signature) > SIGNATURE_BYTES:
        raise ModelRevert("")  # Bytes[65] argument: the ABI decoder rejects it, without a reason
    if len(signature) != SIGNATURE_BYTES:
        raise ModelRevert(malformed)
    r = int.from_bytes(signature[0:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v < 27:
        v += 27
    if not (s <= SECP256K1N_HALF and v in (27, 28)):
        raise ModelRevert(malformed)
    return ecrecover(digest, v, r, s)


def next_epoch_start(block_number: int, epoch_blocks: int) -> int:
    return (block_number // epoch_blocks + 1) * epoch_blocks


# ---------------------------------------------------------------------------------------------
# state records


@dataclass
class NodeRecord:
    """The contract's `Node` struct. `leaf` is valid while the address holds a registry slot."""

    pubkey: bytes = ZERO_HASH
    endpoint: str = ""
    models: tuple[str, ...] = ()
    metadata: str = ""
    active: bool = False
    leaf: int = 0


@dataclass
class Panel:
    """One round's seats (leaves, in draw order; a judge may hold several) and their votes."""

    leaves: list[int] = field(default_factory=list)
    votes: list[Vote] = field(default_factory=list)

    def tally(self) -> tuple[Outcome, int, int, int]:
        """(outcome, seats for A, seats for B, seats that revealed), as the contract's `_tally`."""
        n_a = self.votes.count(Vote.A)
        n_b = self.votes.count(Vote.B)
        n_no_ev = self.votes.count(Vote.NO_EVIDENCE)
        n_revealed = len(self.votes) - self.votes.count(Vote.NONE)
        outcome = Outcome.TIE
        if n_no_ev * 2 > len(self.votes):
            outcome = Outcome.VOIDED
        elif n_a > n_b:
            outcome = Outcome.A_WON
        elif n_b > n_a:
            outcome = Outcome.B_WON
        return outcome, n_a, n_b, n_revealed


@dataclass
class DuelStorage:
    """The model's copy of what the contract stores for a duel: `duelInfo[id]` unpacked (parties as
    registry leaves, not addresses), the panels of its rounds and the judges' commitments (high 128 bits).

    Not the chain's view of a duel: a client reads that as `ledger.records.DuelState` (addresses, votes
    per seat, windows), from the contract or the indexer."""

    status: DuelStatus
    origin_leaf: int
    a_leaf: int
    seed_block: int
    deadline: int
    bond_wei: int
    model_id: int
    bond_units: int = BOND_UNITS  # the bond in 1023rds of DUEL_BOND, as duelInfo keeps it once B is drawn
    outcome: Outcome = Outcome.NONE
    b_leaf: int = 0
    b_drawn: bool = False
    published: bool = False
    round: int = 0
    panels: dict[int, Panel] = field(default_factory=dict)
    commitments: dict[tuple[int, str], int] = field(default_factory=dict)


@dataclass(frozen=True)
class SettlementResult:
    """What `settleDuel` decided (the DuelSettled event's fields), or a cancellation."""

    outcome: Outcome
    round: int
    votes_a: int
    votes_b: int
    stake_moved_wei: int
    cancelled: CancelReason | None = None


# ---------------------------------------------------------------------------------------------
# sortition


class SortitionTree:
    """The heap-indexed sum tree of sortition.vy, root at 1, leaf i at 2**depth + i, every word with
    its live value, its value when its last-change epoch began, and that epoch.

    This is the specification: every level is kept and every draw walks down from the root. The
    contract keeps only the leftmost subtree that covers the allocated leaves (plus the root) and
    starts its draws there, which picks the same leaves.
    """

    def __init__(self, depth: int) -> None:
        if not 1 <= depth <= MAX_DEPTH:
            raise ModelRevert("Sortition: depth out of range")
        self.depth = depth
        self.leaves = 1 << depth
        self.cur: dict[int, int] = {}
        self.prev: dict[int, int] = {}
        self.epoch: dict[int, int] = {}
        self.leaf_owner: dict[int, str] = {}
        self.leaf_since: dict[int, int] = {}  # block the leaf's owner took it
        self.leaf_count = 0
        self.free: list[tuple[int, int]] = []  # released leaves, oldest first: (leaf, release block)

    def total_weight(self) -> int:
        """Sum of all leaf weights now (totalWeight)."""
        return self.cur.get(1, 0)

    def leaf_weight(self, leaf: int) -> int:
        return self.cur.get(self.leaves + leaf, 0)

    def frozen(self, node: int, epoch: int) -> int:
        """A tree word's value as it stood when `epoch` began."""
        if self.epoch.get(node, 0) < epoch:
            return self.cur.get(node, 0)
        return self.prev.get(node, 0)

    def frozen_leaf_weight(self, leaf: int, epoch: int) -> int:
        return self.frozen(self.leaves + leaf, epoch)

    def frozen_total(self, epoch: int) -> int:
        return self.frozen(1, epoch)

    def owner(self, leaf: int) -> str:
        return self.leaf_owner.get(leaf, ZERO_ADDRESS)

    def allocate(self, owner: str, *, block_number: int, reuse_before: int) -> int:
        """Give `owner` the oldest released leaf if it was released before block `reuse_before`, else the
        next never-used one."""
        if self.free and self.free[0][1] < reuse_before:
            leaf = self.free.pop(0)[0]
        else:
            leaf = self.leaf_count
            if leaf >= self.leaves:
                raise ModelRevert("Sortition: tree full")
            self.leaf_count = leaf + 1
        self.leaf_owner[leaf] = checksum(owner)
        self.leaf_since[leaf] = block_number
        return leaf

    def release(self, leaf: int, *, block_number: int) -> None:
        """Put a leaf on the free list (weight 0: its node left); its owner stays on record until it is reused."""
        self.free.append((leaf, block_number))

    def set(self, leaf: int, weight: int, epoch: int) -> None:
        """Set a leaf's live weight in `epoch` and fix the sums on its path to the root."""
        node = self.leaves + leaf
        delta = weight - self.cur.get(node, 0)
        if delta == 0:
            return
        while node >= 1:
            cur = self.cur.get(node, 0)
            if self.epoch.get(node, 0) < epoch:
                self.prev[node] = cur
            self.epoch[node] = epoch
            cur += delta
            if cur > VALUE_MASK:
                raise ModelRevert("Sortition: weight overflow")
            self.cur[node] = cur
            node >>= 1

    def draw(self, seed: bytes, count: int, excluded: Sequence[int], epoch: int) -> list[int]:
        """`count` leaves drawn independently by their weight frozen at `epoch`'s start, never one in
        `excluded` (sortition._draw); empty when no eligible weight is left."""
        ex_nodes: list[int] = []
        ex_weights: list[int] = []
        total = self.frozen(1, epoch)
        for leaf in excluded:
            node = self.leaves + leaf
            if node in ex_nodes:
                continue
            w = self.frozen(node, epoch)
            ex_nodes.append(node)
            ex_weights.append(w)
            total -= w
        drawn: list[int] = []
        if total == 0:
            return drawn
        for k in range(min(count, MAX_DRAW)):
            r = int.from_bytes(keccak(seed + k.to_bytes(32, "big")), "big") % total
            node = 1
            for level in range(self.depth):
                left = node << 1
                down = self.depth - level - 1
                lw = self.frozen(left, epoch)
                for ex_node, ex_weight in zip(ex_nodes, ex_weights, strict=True):
                    if ex_node >> down == left:
                        lw -= ex_weight
                if r < lw:
                    node = left
                else:
                    r -= lw
                    node = left + 1
            drawn.append(node - self.leaves)
        return drawn


# ---------------------------------------------------------------------------------------------
# the contract

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _transaction(method: Callable[Concatenate[WWWServeModel, _P], _R]) -> Callable[Concatenate[WWWServeModel, _P], _R]:
    """Run a state-changing method atomically: on `ModelRevert` the state is restored, like a revert.

    A model with `atomic = False` skips the copy (for callers such as the simulator that never
    expect a revert and run thousands of duels): a revert then leaves the state as it stood.
    """

    def run(model: WWWServeModel, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        model.events = []
        if not model.atomic:
            return method(model, *args, **kwargs)
        saved = copy.deepcopy(model.__dict__)
        try:
            return method(model, *args, **kwargs)
        except ModelRevert:
            model.__dict__.clear()
            model.__dict__.update(saved)
            model.events = []
            raise

    update_wrapper(run, method)
    return run


class WWWServeModel:
    """The WWWServe contract's state and functions, in Python. Money in wei; addresses checksummed.

    `events` holds the events of the last successful call (empty after a revert).
    `balance_wei` is the ETH the contract holds.
    """

    atomic = True

    def __init__(self, params: DeploymentParams, *, chain_id: int, address: str) -> None:
        """Deploy: the constructor's checks (same reasons), then the immutables."""
        p = params
        if p.min_stake_wei <= 0:
            raise ModelRevert("Params: min_stake must be > 0")
        if not 1 <= p.k_judges <= MAX_K:
            raise ModelRevert("Params: k_judges out of range")
        if not 2 <= p.epoch_blocks <= 250:
            raise ModelRevert("Params: epoch_blocks out of range")
        if not 1 <= p.answer_window_blocks < p.epoch_blocks - 1:
            raise ModelRevert("Params: answer_window out of range")
        if not 1 <= p.commit_window_blocks < p.epoch_blocks:
            raise ModelRevert("Params: commit_window out of range")
        if min(p.reveal_window_blocks, p.appeal_window_blocks, p.publish_window_blocks) < 1:
            raise ModelRevert("Params: windows must be >= 1")
        if not 1 <= p.attestation_ttl_s <= p.unbonding_period_s:
            raise ModelRevert("Params: attestation_ttl out of range")
        b = p.duel_bond_wei
        if not (b > 0 and b % WEI_PER_GWEI == 0 and b // WEI_PER_GWEI < 1 << 40):
            raise ModelRevert("Params: bad duel_bond")
        if b > p.min_stake_wei:
            raise ModelRevert("Params: duel_bond above min_stake")
        if p.reserve_payout_bps > BPS:
            raise ModelRevert("Params: bps > 10000")
        self.params = params
        self.chain_id = chain_id
        self.address = checksum(address)
        self.sortition = SortitionTree(p.tree_depth)
        self.duel_escrow_wei = p.duel_escrow_wei
        self.appeal_fee_wei = p.appeal_fee_wei
        self.duel_span_blocks = p.duel_span_blocks
        self.slot_cooldown_blocks = p.slot_cooldown_blocks
        self.domain_separator = domain_separator(chain_id, self.address)

        self.nodes: dict[str, NodeRecord] = {}
        self.registered_once: set[str] = set()
        self.pubkey_owner: dict[bytes, str] = {}
        self.active_node_count = 0
        self.model_id: dict[bytes, int] = {}
        self.model_count = 0
        self.model_epochs: dict[tuple[str, int], tuple[int, int]] = {}  # (node, id) -> (start, stop)
        self.credit: dict[str, int] = {}
        self.pending_withdrawal: dict[str, int] = {}
        self.withdrawable_at: dict[str, int] = {}
        self.active_stake: dict[str, int] = {}
        self.unbonding_stake: dict[str, int] = {}
        self.bonded: dict[str, int] = {}
        self.unbonding_end: dict[str, int] = {}
        self.unbonding_block: dict[str, int] = {}
        self.reserve = 0
        self.verdicts_a = 0  # decided verdicts A won / B won, decayed (the contract's `verdicts`)
        self.verdicts_b = 0
        self.claimed: dict[tuple[str, str], int] = {}
        self.duels: dict[int, DuelStorage] = {}
        self.balance_wei = 0
        self.events: list[ModelEvent] = []

    # ----------------------------------------------------------------- views
    def epoch(self, block_number: int) -> int:
        return block_number // self.params.epoch_blocks

    def node(self, address: str) -> NodeRecord:
        """`nodes(address)`; an unknown address gives the all-zero record."""
        return self.nodes.get(checksum(address), NodeRecord())

    def total_stake(self, address: str) -> int:
        a = checksum(address)
        return self.active_stake.get(a, 0) + self.unbonding_stake.get(a, 0)

    def free_stake(self, address: str) -> int:
        """Slashable stake not bonded by an open duel (`_free_stake`)."""
        a = checksum(address)
        return max(0, self.total_stake(a) - self.bonded.get(a, 0))

    def claimed_wei(self, origin: str, executor: str) -> int:
        return self.claimed.get((checksum(origin), checksum(executor)), 0)

    def voucher_digest(self, origin: str, executor: str, cumulative_amount_wei: int) -> bytes:
        return voucher_digest(self.chain_id, self.address, origin, executor, cumulative_amount_wei)

    def vote_commitment(self, duel_id: int, round_: int, judge: str, vote: int, salt: bytes) -> bytes:
        return vote_commitment(self.chain_id, self.address, duel_id, round_, judge, vote, salt)

    def work_digest(self, work: WorkAttestation) -> bytes:
        return work_digest(self.chain_id, self.address, work)

    def serves_model(self, node: str, model_hash: bytes, block_number: int) -> bool:
        """`servesModel(node, modelHash)` at `block_number`."""
        mid = self.model_id.get(model_hash, 0)
        return mid != 0 and self._serves(checksum(node), mid, self.epoch(block_number))

    def get_duel(self, duel_id: int) -> tuple[str, str, str, int, int, int, int, int, int]:
        """`getDuel`: (origin, a, b, seedBlock, deadline, bond, round, status, outcome)."""
        duel = self.duels.get(duel_id)
        if duel is None:
            raise ModelRevert("Duel: unknown duel")
        own = functools.partial(self.party, duel)
        b = own(duel.b_leaf) if duel.b_drawn else ZERO_ADDRESS
        return (own(duel.origin_leaf), own(duel.a_leaf), b, duel.seed_block, duel.deadline, duel.bond_wei,
                duel.round, int(duel.status), int(duel.outcome))

    def reveal_end(self, duel_id: int) -> int:
        """The current round's last reveal block."""
        return self.duels[duel_id].deadline + self.params.reveal_window_blocks

    def get_judges(self, duel_id: int, round_: int) -> list[str]:
        duel = self.duels.get(duel_id)
        if duel is None or round_ not in duel.panels:
            return []
        return [self.party(duel, leaf) for leaf in duel.panels[round_].leaves]

    def get_votes(self, duel_id: int, round_: int) -> list[int]:
        duel = self.duels.get(duel_id)
        panel = None if duel is None else duel.panels.get(round_)
        return [] if panel is None else [int(v) for v in panel.votes]

    def commitment_of(self, duel_id: int, round_: int, judge: str) -> bytes:
        """The first 16 bytes of the judge's commitment in that round (zero if none)."""
        duel = self.duels.get(duel_id)
        c = 0 if duel is None else duel.commitments.get((round_, checksum(judge)), 0)
        return c.to_bytes(16, "big")

    def challenger_of(self, duel_id: int, *, block_number: int, blockhash: BlockHash) -> str:
        """`challengerOf`: the recorded challenger, or the one a draw would pick now (zero if none)."""
        duel = self.duels.get(duel_id)
        if duel is None:
            raise ModelRevert("Duel: unknown duel")
        if duel.b_drawn:
            return self.party(duel, duel.b_leaf)
        if duel.status != DuelStatus.AWAITING_ANSWER or block_number <= duel.seed_block:
            return ZERO_ADDRESS
        if block_number > duel.deadline:
            return ZERO_ADDRESS
        leaf = self._challenger_leaf(duel_id, duel, blockhash)
        return ZERO_ADDRESS if leaf is None else self.party(duel, leaf)

    def preview_judges(self, duel_id: int, *, block_number: int, blockhash: BlockHash) -> list[str]:
        """`previewJudges`: the current round's seats, drawn or as a draw would pick them now."""
        duel = self.duels.get(duel_id)
        if duel is None:
            raise ModelRevert("Duel: unknown duel")
        if duel.status != DuelStatus.JUDGING:
            return []
        panel = duel.panels.get(duel.round)
        if panel is not None:
            return [self.party(duel, leaf) for leaf in panel.leaves]
        if block_number <= duel.seed_block or block_number > duel.deadline:
            return []
        return [self.party(duel, leaf) for leaf in self._panel_leaves(duel_id, duel, blockhash, duel.round)]

    def open_duel_ids(self) -> list[int]:
        """Duels whose escrow the contract still holds."""
        open_states = (DuelStatus.AWAITING_ANSWER, DuelStatus.AWAITING_REQUEST, DuelStatus.JUDGING)
        return [d for d, duel in self.duels.items() if duel.status in open_states]

    def escrow_held_wei(self) -> int:
        """Escrow of open duels plus the appeal fees of open appeals."""
        total = 0
        for duel_id in self.open_duel_ids():
            total += self.duel_escrow_wei
            if self.duels[duel_id].round == 2:
                total += self.appeal_fee_wei
        return total

    def liabilities_wei(self) -> int:
        """Everything the contract owes: credit + pending + stake + escrow of open duels + the reserve +
        the registration bonds of the slots held."""
        return (sum(self.credit.values()) + sum(self.pending_withdrawal.values())
                + sum(self.active_stake.values()) + sum(self.unbonding_stake.values())
                + self.escrow_held_wei() + self.reserve
                + self.params.registration_bond_wei * len(self.registered_once))

    def registration_value_wei(self, address: str) -> int:
        """What `register` must be sent by `address`: the bond, unless it holds a slot already."""
        return 0 if checksum(address) in self.registered_once else self.params.registration_bond_wei

    def party(self, duel: DuelStorage, leaf: int) -> str:
        """`_party`: the node `leaf` names in `duel`, or the zero address once a later node took the leaf."""
        if self.sortition.leaf_since.get(leaf, 0) > duel.seed_block + self.duel_span_blocks:
            return ZERO_ADDRESS
        return self.sortition.owner(leaf)

    def weight_of(self, who: str) -> int:
        """What the draw weight of `who` should be from its stake now (the tree may lag after slashes)."""
        w = checksum(who)
        node = self.nodes.get(w)
        stake = self.active_stake.get(w, 0)
        if node is not None and node.active and stake >= self.params.min_stake_wei:
            return stake
        return 0

    def eligible_weight_wei(self) -> int:
        """Sum of `weight_of` over all nodes (= totalWeight once every node's weight is in sync)."""
        return sum(self.weight_of(a) for a in self.registered_once)

    # ----------------------------------------------------------------- internals
    def _emit(self, name: str, **args: object) -> None:
        self.events.append(ModelEvent(name, dict(args)))

    def _add(self, book: dict[str, int], who: str, delta: int) -> None:
        book[who] = book.get(who, 0) + delta

    def _put_account(self, who: str, active: int, unbonding: int, bonded: int) -> None:
        if active > STAKE_MASK or unbonding > STAKE_MASK or bonded // WEI_PER_GWEI >= 1 << 64:
            raise ModelRevert("Bank: stake overflow")
        self.active_stake[who] = active
        self.unbonding_stake[who] = unbonding
        self.bonded[who] = bonded

    def _account(self, who: str) -> tuple[int, int, int]:
        return self.active_stake.get(who, 0), self.unbonding_stake.get(who, 0), self.bonded.get(who, 0)

    def _set_weight(self, who: str, leaf: int, active: int, block_number: int) -> None:
        node = self.nodes.get(who)
        w = active if node is not None and node.active and active >= self.params.min_stake_wei else 0
        self.sortition.set(leaf, w, self.epoch(block_number))

    def _sync_weight(self, who: str, block_number: int) -> None:
        if who not in self.registered_once:
            return
        self._set_weight(who, self.nodes[who].leaf, self.active_stake.get(who, 0), block_number)

    def _take_stake(self, who: str, amount: int, unbond: int) -> int:
        """Take up to `amount` (active first, then unbonding) and release `unbond` of the bonds; the draw
        weight is left as it is (the contract's lazy weights)."""
        act, unb, bonded = self._account(who)
        taken = min(amount, act + unb)
        from_active = min(taken, act)
        self._put_account(who, act - from_active, unb - (taken - from_active), bonded - min(bonded, unbond))
        return taken

    def _bond(self, who: str, amount: int) -> None:
        act, unb, bonded = self._account(who)
        self._put_account(who, act, unb, bonded + amount)

    def _validate_node_fields(self, sender: str, pubkey: bytes, models: Sequence[str]) -> None:
        if pubkey == ZERO_HASH:
            raise ModelRevert("Registry: empty public key")
        owner = self.pubkey_owner.get(pubkey, ZERO_ADDRESS)
        if owner not in (ZERO_ADDRESS, sender):
            raise ModelRevert("Registry: public key already registered")
        if len(models) == 0:
            raise ModelRevert("Registry: no models")

    def _model_id(self, model: str) -> int:
        h = bytes(keccak(text=model))
        mid = self.model_id.get(h, 0)
        if mid == 0:
            mid = self.model_count + 1
            self.model_count = mid
            self.model_id[h] = mid
        return mid

    def _serves(self, who: str, mid: int, epoch: int) -> bool:
        start, stop = self.model_epochs.get((who, mid), (0, 0))
        return start != 0 and start <= epoch and (stop == 0 or epoch < stop)

    def _set_models(self, who: str, old: Sequence[str], new: Sequence[str], block_number: int) -> None:
        nxt = self.epoch(block_number) + 1
        new_ids = [self._model_id(m) for m in new]
        for m in old:
            mid = self.model_id.get(bytes(keccak(text=m)), 0)
            if mid in new_ids:
                continue
            start, stop = self.model_epochs.get((who, mid), (0, 0))
            if start == 0 or stop != 0:
                continue
            self.model_epochs[(who, mid)] = (0, 0) if start >= nxt else (start, nxt)
        for mid in new_ids:
            start, stop = self.model_epochs.get((who, mid), (0, 0))
            if start != 0 and (stop == 0 or stop >= nxt):
                self.model_epochs[(who, mid)] = (start, 0)
            else:
                self.model_epochs[(who, mid)] = (nxt, 0)

    def _pay(self, duel_id: int, account: str, amount: int, reason: RewardReason) -> None:
        if amount == 0:
            return
        self._add(self.credit, account, amount)
        self._emit("DuelRewardPaid", duelId=duel_id, account=account, amount=amount, reason=int(reason))

    def _seat_mask(self, panel: Panel | None, who: str) -> int:
        if panel is None:
            return 0
        leaf = self.nodes[who].leaf if who in self.nodes else 0
        if leaf == 0 and self.sortition.owner(0) != who:
            return 0
        mask = 0
        for i, seat in enumerate(panel.leaves):
            if seat == leaf:
                mask |= 1 << i
        return mask

    def _check_work(self, origin: str, a: str, request_id: bytes, request_hash: bytes, model_hash: bytes,
                    answer_hash: bytes, inspect_salt: bytes, issued_at: int, signature: bytes) -> None:
        work = WorkAttestation(origin, a, request_id, request_hash, model_hash, answer_hash,
                               inspect_commitment(request_id, True, inspect_salt), issued_at)
        signer = _recover(self.work_digest(work), signature, "Duel: malformed attestation")
        if signer == ZERO_ADDRESS or signer != a:
            raise ModelRevert("Duel: bad attestation")

    def _challenger_leaf(self, duel_id: int, duel: DuelStorage, blockhash: BlockHash) -> int | None:
        epoch = self.epoch(duel.seed_block)
        seed = challenger_seed(blockhash(duel.seed_block), duel_id)
        for i in range(MAX_CHALLENGER_TRIES):
            drawn = self.sortition.draw(bytes(keccak(seed + i.to_bytes(32, "big"))), 1,
                                        [duel.origin_leaf, duel.a_leaf], epoch)
            if not drawn:
                return None
            if self._serves(self.sortition.owner(drawn[0]), duel.model_id, epoch):
                return drawn[0]
        return None

    def _panel_leaves(self, duel_id: int, duel: DuelStorage, blockhash: BlockHash, round_: int) -> list[int]:
        seats = self.params.k_judges if round_ == 1 else 2 * self.params.k_judges + 1
        seed = panel_seed(blockhash(duel.seed_block), duel_id, round_)
        return self.sortition.draw(seed, seats, [], self.epoch(duel.seed_block))

    def _cancel(self, duel_id: int, duel: DuelStorage, reason: CancelReason) -> None:
        duel.status = DuelStatus.CANCELLED
        own = functools.partial(self.party, duel)
        self._take_stake(own(duel.a_leaf), 0, duel.bond_wei)
        if duel.b_drawn:
            self._take_stake(own(duel.b_leaf), 0, duel.bond_wei)
        self._emit("DuelCancelled", duelId=duel_id, reason=int(reason))

    def _draw_challenger(self, duel_id: int, duel: DuelStorage, block_number: int, blockhash: BlockHash) -> bool:
        """Record B and bond its stake; False when the duel was cancelled for want of a challenger."""
        if block_number <= duel.seed_block:
            raise ModelRevert("Duel: seed block not mined yet")
        if block_number > duel.deadline:
            raise ModelRevert("Duel: answer window over")
        own = functools.partial(self.party, duel)
        leaf = self._challenger_leaf(duel_id, duel, blockhash)
        if leaf is None:
            self._cancel(duel_id, duel, CancelReason.NO_CHALLENGER)
            self._pay(duel_id, own(duel.origin_leaf), self.duel_escrow_wei, RewardReason.ESCROW_REFUND)
            return False
        b = own(leaf)
        units = self._bond_units_of(b)
        bond = self.bond_of_units(units)
        if bond < self.params.duel_bond_wei:
            self._take_stake(own(duel.a_leaf), 0, self.params.duel_bond_wei - bond)
        self._bond(b, bond)
        duel.b_leaf, duel.b_drawn, duel.bond_wei, duel.bond_units = leaf, True, bond, units
        self._emit("ChallengerDrawn", duelId=duel_id, b=b, bond=bond)
        return True

    def _bond_units_of(self, b: str) -> int:
        """Both duelists' bond when `b` is recorded as challenger now: the smaller of DUEL_BOND and its free
        stake, in 1023rds of DUEL_BOND."""
        return min(BOND_UNITS, self.free_stake(b) * BOND_UNITS // self.params.duel_bond_wei)

    def bond_of_units(self, units: int) -> int:
        """A bond of `units` 1023rds of DUEL_BOND, in whole gwei (the contract's `_duel_bond`)."""
        return self.params.duel_bond_wei * units // BOND_UNITS // WEI_PER_GWEI * WEI_PER_GWEI

    def _draw_appeal_panel(self, duel_id: int, duel: DuelStorage, block_number: int,
                           blockhash: BlockHash) -> Panel | None:
        if block_number <= duel.seed_block:
            raise ModelRevert("Duel: seed block not mined yet")
        if block_number > duel.deadline:
            raise ModelRevert("Duel: commit window over")
        leaves = self._panel_leaves(duel_id, duel, blockhash, 2)
        if not leaves:
            return None
        panel = Panel(list(leaves), [Vote.NONE] * len(leaves))
        duel.panels[2] = panel
        self._emit("JudgesDrawn", duelId=duel_id, round=2,
                   seats=[self.sortition.owner(leaf) for leaf in leaves], commitEnd=duel.deadline,
                   revealEnd=duel.deadline + self.params.reveal_window_blocks)
        return panel

    def weight(self, final: Outcome) -> tuple[int, int]:
        """The pay scale (numerator, denominator) of a seat coherent with `final` (the contract's `_weight`)."""
        if final == Outcome.A_WON:
            return verdict_weight(self.verdicts_a, self.verdicts_b)
        if final == Outcome.B_WON:
            return verdict_weight(self.verdicts_b, self.verdicts_a)
        return 1, 1

    def _count_verdict(self, final: Outcome) -> None:
        if final not in (Outcome.A_WON, Outcome.B_WON):
            return
        if final == Outcome.A_WON:
            self.verdicts_a += 1
        else:
            self.verdicts_b += 1
        if self.verdicts_a + self.verdicts_b >= VERDICT_DECAY_AT:
            self.verdicts_a //= 2
            self.verdicts_b //= 2

    def _judge_round(self, duel_id: int, panel: Panel, final_panel: Panel, final: Outcome, n_a: int, n_b: int,
                     budget: int, scales: dict[Outcome, tuple[int, int]]) -> tuple[int, int]:
        """One round's seats, each against the final round's verdict recounted without that judge's own seats
        (the contract's `_judge_round`): returns the fees paid from `budget` and the reserve after it (the
        caller stores it)."""
        p = self.params
        duel = self.duels[duel_id]
        reserve = self.reserve
        bonus = reserve * p.reserve_payout_bps // BPS
        paid = 0
        for leaf, vote in zip(panel.leaves, panel.votes, strict=True):
            judge = self.party(duel, leaf)
            ref: Outcome | None = None  # the recount's verdict; None for a void (no seat is paid)
            if final != Outcome.VOIDED:
                own_votes = [v for lf, v in zip(final_panel.leaves, final_panel.votes, strict=True) if lf == leaf]
                a, b = n_a - own_votes.count(Vote.A), n_b - own_votes.count(Vote.B)
                ref = Outcome.A_WON if a > b else Outcome.B_WON if b > a else Outcome.TIE
            num, den = scales.get(ref, (1, 1)) if ref is not None else (1, 1)
            sided = vote in (Vote.A, Vote.B)
            if sided and (ref == Outcome.TIE or (ref, vote) in ((Outcome.A_WON, Vote.A), (Outcome.B_WON, Vote.B))):
                fee = p.judge_fee_wei * num // den
                from_budget = min(fee, budget - paid)
                from_reserve = min(fee - from_budget + bonus * num // den, reserve)
                paid += from_budget
                reserve -= from_reserve
                self._pay(duel_id, judge, from_budget + from_reserve, RewardReason.JUDGE_FEE)
            elif vote == Vote.NONE or (sided and ref in (Outcome.A_WON, Outcome.B_WON)):
                cut, reason = p.silent_penalty_wei, SlashReason.SILENT_JUDGE
                if vote != Vote.NONE:
                    cut, reason = p.judge_penalty_wei * num // den, SlashReason.INCOHERENT_JUDGE
                cut = self._take_stake(judge, cut, 0)
                if cut > 0:
                    reserve += cut
                    self._emit("StakeSlashed", duelId=duel_id, node=judge, amount=cut, reason=int(reason))
        return paid, reserve

    def _settle_verdict(self, duel_id: int, duel: DuelStorage) -> SettlementResult:
        p = self.params
        own = functools.partial(self.party, duel)
        panel1 = duel.panels[1]
        panel2 = duel.panels.get(2) if duel.round == 2 else None
        out1, n_a, n_b, _ = panel1.tally()
        final, final_round = out1, 1
        if panel2 is not None:
            final, n_a, n_b, _ = panel2.tally()
            final_round = 2
        a, b, bond = own(duel.a_leaf), own(duel.b_leaf), duel.bond_wei
        reserve_before = self.reserve
        a_loses = bond if final == Outcome.B_WON else 0
        b_loses = bond if final == Outcome.A_WON else 0
        moved = self._take_stake(a, a_loses, bond) + self._take_stake(b, b_loses, bond)
        duel.status, duel.outcome = DuelStatus.SETTLED, final
        if moved > 0:
            if final == Outcome.B_WON:
                self._emit("StakeSlashed", duelId=duel_id, node=a, amount=moved, reason=int(SlashReason.LOST_DUEL))
                self._pay(duel_id, b, moved + p.duelist_fee_wei, RewardReason.STAKE_WON)
            else:
                self._emit("StakeSlashed", duelId=duel_id, node=b, amount=moved, reason=int(SlashReason.LOST_DUEL))
                self._pay(duel_id, b, p.duelist_fee_wei, RewardReason.DUELIST_FEE)
                self.reserve = reserve_before + moved
        else:
            self._pay(duel_id, b, p.duelist_fee_wei, RewardReason.DUELIST_FEE)
        round1_budget = p.k_judges * p.judge_fee_wei
        scales = {Outcome.A_WON: self.weight(Outcome.A_WON), Outcome.B_WON: self.weight(Outcome.B_WON)}
        self._count_verdict(final)
        final_panel = panel2 if panel2 is not None else panel1
        paid1, reserve = self._judge_round(duel_id, panel1, final_panel, final, n_a, n_b, round1_budget, scales)
        self.reserve = reserve
        if paid1 < round1_budget:
            self._pay(duel_id, own(duel.origin_leaf), round1_budget - paid1, RewardReason.ESCROW_REFUND)
        if duel.round == 2:
            appellant = a if out1 == Outcome.B_WON else b
            if panel2 is None:
                self._pay(duel_id, appellant, self.appeal_fee_wei, RewardReason.APPEAL_REFUND)
            else:
                paid2, reserve = self._judge_round(duel_id, panel2, panel2, final, n_a, n_b, self.appeal_fee_wei,
                                                   scales)
                if (appellant == a and final == Outcome.A_WON) or (appellant == b and final == Outcome.B_WON):
                    covered = min(paid2, reserve)
                    reserve -= covered
                    self._pay(duel_id, appellant, self.appeal_fee_wei - paid2 + covered, RewardReason.APPEAL_REFUND)
                else:
                    reserve += self.appeal_fee_wei - paid2
                self.reserve = reserve
        if self.reserve != reserve_before:
            self._emit("ReserveChanged", duelId=duel_id, amount=self.reserve)
        self._emit("DuelSettled", duelId=duel_id, outcome=int(final), round=final_round, votesA=n_a, votesB=n_b,
                   stakeMoved=moved)
        return SettlementResult(final, final_round, n_a, n_b, moved)

    # ----------------------------------------------------------------- registry
    @_transaction
    def register(self, sender: str, pubkey: bytes, endpoint: str, models: Sequence[str], metadata: str, *,
                 block_number: int, value_wei: int = 0) -> None:
        """register(): make `sender` a node. A node without a slot sends the registration bond (`value_wei`)
        and takes a leaf (a released one after the cooldown, else a new one); a returning node that kept its
        slot sends nothing and keeps its leaf."""
        s = checksum(sender)
        if self.node(s).active:
            raise ModelRevert("Registry: already registered")
        self._validate_node_fields(s, pubkey, models)
        old: Sequence[str] = self.nodes[s].models if s in self.nodes else ()
        if s in self.registered_once:
            if value_wei != 0:
                raise ModelRevert("Registry: slot held, send no bond")
            leaf = self.nodes[s].leaf
        else:
            if value_wei != self.params.registration_bond_wei:
                raise ModelRevert("Registry: send the registration bond")
            leaf = self.sortition.allocate(s, block_number=block_number,
                                           reuse_before=max(0, block_number - self.slot_cooldown_blocks))
            self.registered_once.add(s)
            self.balance_wei += value_wei
        self.nodes[s] = NodeRecord(pubkey, endpoint, tuple(models), metadata, True, leaf)
        self._set_models(s, old, models, block_number)
        self.pubkey_owner[pubkey] = s
        self.active_node_count += 1
        self._sync_weight(s, block_number)
        self._emit("NodeRegistered", node=s, pubkey=pubkey, endpoint=endpoint, models=list(models),
                   metadata=metadata, leaf=leaf)

    @_transaction
    def update_node(self, sender: str, pubkey: bytes, endpoint: str, models: Sequence[str], metadata: str, *,
                    block_number: int) -> None:
        """updateNode(): change key, endpoint, models or metadata; the old key is released."""
        s = checksum(sender)
        if not self.node(s).active:
            raise ModelRevert("Registry: not registered")
        self._validate_node_fields(s, pubkey, models)
        node = self.nodes[s]
        if node.pubkey != pubkey:
            self.pubkey_owner[node.pubkey] = ZERO_ADDRESS
            self.pubkey_owner[pubkey] = s
        self._set_models(s, node.models, models, block_number)
        node.pubkey, node.endpoint, node.models, node.metadata = pubkey, endpoint, tuple(models), metadata
        self._emit("NodeUpdated", node=s, pubkey=pubkey, endpoint=endpoint, models=list(models), metadata=metadata)

    @_transaction
    def leave(self, sender: str, *, block_number: int) -> None:
        """leave(): stop being routable and drawable (next epoch); the key is released, stake stays."""
        s = checksum(sender)
        if not self.node(s).active:
            raise ModelRevert("Registry: not registered")
        node = self.nodes[s]
        node.active = False
        self.pubkey_owner[node.pubkey] = ZERO_ADDRESS
        self.active_node_count -= 1
        self._sync_weight(s, block_number)
        self._emit("NodeLeft", node=s)

    @_transaction
    def release_slot(self, sender: str, *, block_number: int) -> None:
        """releaseSlot(): a node that left and holds no stake gives its leaf back; the bond becomes credit."""
        s = checksum(sender)
        if s not in self.registered_once:
            raise ModelRevert("Registry: no slot held")
        if self.nodes[s].active:
            raise ModelRevert("Registry: leave first")
        act, unb, _ = self._account(s)
        if act + unb != 0:
            raise ModelRevert("Registry: withdraw the stake first")
        self._put_account(s, 0, 0, 0)
        node = self.nodes[s]
        leaf = node.leaf
        node.leaf = 0
        self.registered_once.discard(s)
        self.sortition.release(leaf, block_number=block_number)
        self._add(self.credit, s, self.params.registration_bond_wei)
        self._emit("SlotReleased", node=s, leaf=leaf, bond=self.params.registration_bond_wei)

    # ----------------------------------------------------------------- credits
    @_transaction
    def deposit(self, sender: str, value_wei: int) -> None:
        """deposit(): `value_wei` of ETH becomes the sender's credit."""
        s = checksum(sender)
        if value_wei <= 0:
            raise ModelRevert("Bank: zero amount")
        self._add(self.credit, s, value_wei)
        self.balance_wei += value_wei
        self._emit("CreditDeposited", account=s, amount=value_wei)

    @_transaction
    def request_withdrawal(self, sender: str, amount_wei: int, *, now_s: int) -> None:
        """requestWithdrawal(): move credit to pending; the notice restarts for the whole amount."""
        s = checksum(sender)
        if amount_wei <= 0:
            raise ModelRevert("Bank: zero amount")
        if self.credit.get(s, 0) < amount_wei:
            raise ModelRevert("Bank: insufficient credit")
        self._add(self.credit, s, -amount_wei)
        self._add(self.pending_withdrawal, s, amount_wei)
        available_at = now_s + self.params.withdrawal_notice_s
        self.withdrawable_at[s] = available_at
        self._emit("WithdrawalRequested", account=s, amount=amount_wei, availableAt=available_at)

    @_transaction
    def cancel_withdrawal(self, sender: str) -> None:
        """cancelWithdrawal(): the whole pending amount returns to credit."""
        s = checksum(sender)
        amount = self.pending_withdrawal.get(s, 0)
        if amount <= 0:
            raise ModelRevert("Bank: no pending withdrawal")
        self.pending_withdrawal[s] = 0
        self._add(self.credit, s, amount)
        self._emit("WithdrawalCancelled", account=s, amount=amount)

    @_transaction
    def withdraw(self, sender: str, *, now_s: int) -> int:
        """withdraw(): pay out the pending amount once the notice is over. Returns the wei sent."""
        s = checksum(sender)
        amount = self.pending_withdrawal.get(s, 0)
        if amount <= 0:
            raise ModelRevert("Bank: no pending withdrawal")
        if now_s < self.withdrawable_at.get(s, 0):
            raise ModelRevert("Bank: withdrawal notice not over")
        self.pending_withdrawal[s] = 0
        self.balance_wei -= amount
        self._emit("CreditWithdrawn", account=s, amount=amount)
        return amount

    # ----------------------------------------------------------------- stake
    @_transaction
    def stake(self, sender: str, amount_wei: int, *, block_number: int) -> None:
        """stake(): move credit into active stake (registered nodes only)."""
        s = checksum(sender)
        if amount_wei <= 0:
            raise ModelRevert("Bank: zero amount")
        if not self.node(s).active:
            raise ModelRevert("Registry: not registered")
        if self.credit.get(s, 0) < amount_wei:
            raise ModelRevert("Bank: insufficient credit")
        self._add(self.credit, s, -amount_wei)
        act, unb, bonded = self._account(s)
        self._put_account(s, act + amount_wei, unb, bonded)
        self._set_weight(s, self.nodes[s].leaf, act + amount_wei, block_number)
        self._emit("Staked", node=s, amount=amount_wei)

    @_transaction
    def request_unstake(self, sender: str, amount_wei: int, *, now_s: int, block_number: int) -> None:
        """requestUnstake(): start unbonding; the period restarts for the whole unbonding amount."""
        s = checksum(sender)
        if amount_wei <= 0:
            raise ModelRevert("Bank: zero amount")
        act, unb, bonded = self._account(s)
        if act < amount_wei:
            raise ModelRevert("Bank: insufficient stake")
        self._put_account(s, act - amount_wei, unb + amount_wei, bonded)
        end = now_s + self.params.unbonding_period_s
        self.unbonding_end[s] = end
        self.unbonding_block[s] = block_number
        self._sync_weight(s, block_number)
        self._emit("UnstakeRequested", node=s, amount=amount_wei, unbondingEnd=end)

    @_transaction
    def withdraw_stake(self, sender: str, *, now_s: int, block_number: int) -> int:
        """withdrawStake(): unbonded stake, all but what open duels bond, returns to credit."""
        s = checksum(sender)
        act, unb, bonded = self._account(s)
        if unb <= 0:
            raise ModelRevert("Bank: nothing unbonding")
        if now_s < self.unbonding_end.get(s, 0):
            raise ModelRevert("Bank: still unbonding")
        if block_number <= self.unbonding_block.get(s, 0) + self.duel_span_blocks:
            raise ModelRevert("Bank: still unbonding")
        amount = min(unb, max(0, act + unb - bonded))
        if amount <= 0:
            raise ModelRevert("Bank: stake bonded by open duels")
        self._put_account(s, act, unb - amount, bonded)
        self._add(self.credit, s, amount)
        self._emit("StakeWithdrawn", node=s, amount=amount)
        return amount

    @_transaction
    def sync_weight(self, sender: str, node: str, *, block_number: int) -> None:
        """syncWeight(): bring a node's draw weight in line with its stake (anyone may)."""
        del sender
        self._sync_weight(checksum(node), block_number)

    # ----------------------------------------------------------------- vouchers
    @_transaction
    def claim_voucher(self, sender: str, origin: str, executor: str, cumulative_amount_wei: int,
                      signature: bytes) -> int:
        """claimVoucher(): pay the executor what the origin's signed voucher still owes it.

        Pays from the origin's credit, then from its pending withdrawal. Returns the wei paid.
        `sender` (any account may submit) does not affect the outcome.
        """
        del sender  # anyone may submit a voucher; the money always goes to the executor
        o, e = checksum(origin), checksum(executor)
        if len(signature) > VOUCHER_SIGNATURE_BYTES:
            raise ModelRevert("")  # Bytes[65] argument: the ABI decoder rejects it, without a reason
        if len(signature) != VOUCHER_SIGNATURE_BYTES:
            raise ModelRevert("Voucher: bad signature length")
        already = self.claimed.get((o, e), 0)
        if cumulative_amount_wei <= already:
            raise ModelRevert("Voucher: stale voucher")
        signer = _recover(self.voucher_digest(o, e, cumulative_amount_wei), signature, "Voucher: malformed signature")
        if signer == ZERO_ADDRESS or signer != o:
            raise ModelRevert("Voucher: bad signature")
        owed = cumulative_amount_wei - already
        from_credit = min(owed, self.credit.get(o, 0))
        from_pending = min(owed - from_credit, self.pending_withdrawal.get(o, 0))
        paid = from_credit + from_pending
        if paid <= 0:
            raise ModelRevert("Voucher: origin has no funds")
        self._add(self.credit, o, -from_credit)
        self._add(self.pending_withdrawal, o, -from_pending)
        self._add(self.credit, e, paid)
        self.claimed[(o, e)] = already + paid
        self._emit("VoucherClaimed", origin=o, executor=e, cumulativeAmount=cumulative_amount_wei, paid=paid)
        return paid

    # ----------------------------------------------------------------- duels
    @_transaction
    def open_duel(self, sender: str, work: WorkAttestation, inspect_salt: bytes, *, now_s: int,
                  block_number: int) -> int:
        """openDuel(a=work.executor, ...): duel attested work; returns the duel id.

        Only the attestation's fields the contract takes are used (the origin is `sender`, the
        commitment is recomputed from `inspect_salt`): a `work` whose `origin` or `inspect` differ
        from those fails the signature check, as on-chain.
        """
        p = self.params
        s, a = checksum(sender), checksum(work.executor)
        if not self.node(s).active:
            raise ModelRevert("Registry: not registered")
        if a == s:
            raise ModelRevert("Duel: origin cannot duel")
        if a not in self.registered_once:
            raise ModelRevert("Duel: duelist not registered")
        if now_s > work.issued_at + p.attestation_ttl_s:
            raise ModelRevert("Duel: attestation expired")
        self._check_work(s, a, work.request_id, work.request_hash, work.model_hash, work.answer_hash, inspect_salt,
                         work.issued_at, work.signature)
        mid = self.model_id.get(work.model_hash, 0)
        if mid == 0:
            raise ModelRevert("Duel: unknown model")
        duel_id = duel_id_of(s, work.request_id)
        if duel_id in self.duels:
            raise ModelRevert("Duel: work already dueled")
        act, unb, bonded = self._account(a)
        if act + unb < bonded + p.duel_bond_wei:
            raise ModelRevert("Duel: duelist stake too low")
        if self.credit.get(s, 0) < self.duel_escrow_wei:
            raise ModelRevert("Bank: insufficient credit")
        self._add(self.credit, s, -self.duel_escrow_wei)
        self._put_account(a, act, unb, bonded + p.duel_bond_wei)
        seed_block = next_epoch_start(block_number, p.epoch_blocks)
        deadline = seed_block + p.answer_window_blocks
        if deadline + self.duel_span_blocks >= BLOCK_LIMIT or mid >= 1 << 24:
            raise ModelRevert("Duel: field overflow")
        self.duels[duel_id] = DuelStorage(DuelStatus.AWAITING_ANSWER, self.nodes[s].leaf, self.nodes[a].leaf,
                                          seed_block, deadline, p.duel_bond_wei, mid)
        self._emit("DuelOpened", duelId=duel_id, origin=s, a=a, requestId=work.request_id,
                   requestHash=work.request_hash, modelHash=work.model_hash, answerAHash=work.answer_hash,
                   bond=p.duel_bond_wei, seedBlock=seed_block, answerDeadline=deadline, escrow=self.duel_escrow_wei)
        return duel_id

    @_transaction
    def draw_challenger(self, sender: str, duel_id: int, *, block_number: int, blockhash: BlockHash) -> str:
        """drawChallenger(): record B (anyone may). Returns B, or the zero address when cancelled."""
        del sender
        duel = self.duels.get(duel_id)
        if duel is None or duel.status != DuelStatus.AWAITING_ANSWER:
            raise ModelRevert("Duel: not awaiting an answer")
        if duel.b_drawn:
            raise ModelRevert("Duel: challenger already drawn")
        if not self._draw_challenger(duel_id, duel, block_number, blockhash):
            return ZERO_ADDRESS
        return self.party(duel, duel.b_leaf)

    @_transaction
    def answer_duel(self, sender: str, duel_id: int, answer_hash: bytes, *, block_number: int,
                    blockhash: BlockHash) -> list[str]:
        """answerDuel(): B commits its answer's hash (zero: "no request"); the first round's seats are
        drawn with it (from the same seed block) if they were not yet. Returns those seats (empty when
        the duel was cancelled for want of judge stake)."""
        p = self.params
        s = checksum(sender)
        duel = self.duels.get(duel_id)
        if duel is None or duel.status != DuelStatus.AWAITING_ANSWER:
            raise ModelRevert("Duel: not awaiting an answer")
        if not duel.b_drawn:
            if not self._draw_challenger(duel_id, duel, block_number, blockhash):
                raise ModelRevert("Duel: no challenger")
        else:
            if block_number <= duel.seed_block:
                raise ModelRevert("Duel: seed block not mined yet")
            if block_number > duel.deadline:
                raise ModelRevert("Duel: answer window over")
        own = functools.partial(self.party, duel)
        b = own(duel.b_leaf)
        if b != s:
            raise ModelRevert("Duel: not the challenger")
        if 1 not in duel.panels:
            leaves = self._panel_leaves(duel_id, duel, blockhash, 1)
            if not leaves:
                self._cancel(duel_id, duel, CancelReason.NO_JUDGES)
                self._pay(duel_id, b, p.duelist_fee_wei, RewardReason.DUELIST_FEE)
                self._pay(duel_id, own(duel.origin_leaf), self.duel_escrow_wei - p.duelist_fee_wei,
                          RewardReason.ESCROW_REFUND)
                return []
            duel.panels[1] = Panel(list(leaves), [Vote.NONE] * len(leaves))
        if answer_hash == ZERO_HASH:
            if duel.published:
                raise ModelRevert("Duel: request already published")
            duel.status = DuelStatus.AWAITING_REQUEST
            duel.deadline = block_number + p.publish_window_blocks
            self._emit("RequestMissing", duelId=duel_id, b=b, publishDeadline=duel.deadline)
            return [own(leaf) for leaf in duel.panels[1].leaves]
        commit_end = block_number + p.commit_window_blocks
        duel.status, duel.round, duel.deadline = DuelStatus.JUDGING, 1, commit_end
        self._emit("DuelAnswered", duelId=duel_id, b=b, answerBHash=answer_hash, commitEnd=commit_end)
        seats = [own(leaf) for leaf in duel.panels[1].leaves]
        self._emit("JudgesDrawn", duelId=duel_id, round=1, seats=seats, commitEnd=commit_end,
                   revealEnd=commit_end + p.reveal_window_blocks)
        return seats

    @_transaction
    def publish_request(self, sender: str, duel_id: int, work: WorkAttestation, inspect_salt: bytes, request: bytes,
                        *, block_number: int) -> None:
        """publishRequest(): put a request B could not get on-chain (anyone may, with A's attestation)."""
        del sender
        p = self.params
        if len(request) > MAX_REQUEST_BYTES:
            raise ModelRevert("")  # Bytes[65536] argument: the ABI decoder rejects it
        duel = self.duels.get(duel_id)
        if duel is None or duel.status != DuelStatus.AWAITING_REQUEST:
            raise ModelRevert("Duel: request not missing")
        if block_number > duel.deadline:
            raise ModelRevert("Duel: publish window over")
        own = functools.partial(self.party, duel)
        origin, a = own(duel.origin_leaf), own(duel.a_leaf)
        if duel_id_of(origin, work.request_id) != duel_id:
            raise ModelRevert("Duel: not this duel's work")
        self._check_work(origin, a, work.request_id, work.request_hash, work.model_hash, work.answer_hash,
                         inspect_salt, work.issued_at, work.signature)
        if bytes(keccak(request)) != work.request_hash:
            raise ModelRevert("Duel: request does not match its hash")
        duel.seed_block = next_epoch_start(block_number, p.epoch_blocks)
        duel.deadline = duel.seed_block + p.answer_window_blocks
        duel.status, duel.published = DuelStatus.AWAITING_ANSWER, True
        self._emit("RequestPublished", duelId=duel_id, request=request, seedBlock=duel.seed_block,
                   answerDeadline=duel.deadline)

    @_transaction
    def draw_judges(self, sender: str, duel_id: int, *, block_number: int, blockhash: BlockHash) -> list[str]:
        """drawJudges(): draw the current (appeal) round's seats (anyone may). Returns them."""
        del sender
        duel = self.duels.get(duel_id)
        if duel is None or duel.status != DuelStatus.JUDGING:
            raise ModelRevert("Duel: not judging")
        if duel.round != 2 or 2 in duel.panels:
            raise ModelRevert("Duel: judges already drawn")
        panel = self._draw_appeal_panel(duel_id, duel, block_number, blockhash)
        if panel is None:
            raise ModelRevert("Duel: no judges")
        return [self.party(duel, leaf) for leaf in panel.leaves]

    @_transaction
    def commit_vote(self, sender: str, duel_id: int, commitment: bytes, *, block_number: int,
                    blockhash: BlockHash) -> None:
        """commitVote(): a seat holder commits (the first commit of a round draws its seats)."""
        s = checksum(sender)
        duel = self.duels.get(duel_id)
        if duel is None or duel.status != DuelStatus.JUDGING:
            raise ModelRevert("Duel: not judging")
        if block_number > duel.deadline:
            raise ModelRevert("Duel: commit window over")
        panel = duel.panels.get(duel.round)
        if panel is None:
            panel = self._draw_appeal_panel(duel_id, duel, block_number, blockhash)
            if panel is None:
                raise ModelRevert("Duel: no judges")
        if self._seat_mask(panel, s) == 0:
            raise ModelRevert("Duel: not a judge of this duel")
        c = int.from_bytes(commitment, "big") >> 128
        if c == 0:
            raise ModelRevert("Duel: empty commitment")
        if duel.commitments.get((duel.round, s), 0) != 0:
            raise ModelRevert("Duel: already committed")
        duel.commitments[(duel.round, s)] = c
        self._emit("VoteCommitted", duelId=duel_id, judge=s, round=duel.round, commitment=commitment)

    @_transaction
    def reveal_vote(self, sender: str, duel_id: int, vote: int, salt: bytes, *, block_number: int) -> None:
        """revealVote(): open a committed vote within the reveal window; it counts once per seat."""
        s = checksum(sender)
        p = self.params
        if not 0 <= vote < 256:
            raise ModelRevert("")  # uint8 argument: the ABI decoder rejects it
        duel = self.duels.get(duel_id)
        if duel is None or duel.status != DuelStatus.JUDGING:
            raise ModelRevert("Duel: not judging")
        if block_number <= duel.deadline:
            raise ModelRevert("Duel: reveal window not open")
        if block_number > duel.deadline + p.reveal_window_blocks:
            raise ModelRevert("Duel: reveal window over")
        if not Vote.A <= vote <= Vote.NO_EVIDENCE:
            raise ModelRevert("Duel: invalid vote")
        panel = duel.panels.get(duel.round)
        mask = self._seat_mask(panel, s)
        if mask == 0 or panel is None:
            raise ModelRevert("Duel: not a judge of this duel")
        first = (mask & -mask).bit_length() - 1
        if panel.votes[first] != Vote.NONE:
            raise ModelRevert("Duel: already revealed")
        committed = duel.commitments.get((duel.round, s), 0)
        if committed == 0:
            raise ModelRevert("Duel: no commitment")
        if int.from_bytes(self.vote_commitment(duel_id, duel.round, s, vote, salt), "big") >> 128 != committed:
            raise ModelRevert("Duel: reveal does not match commitment")
        for i in range(len(panel.votes)):
            if mask & (1 << i):
                panel.votes[i] = Vote(vote)
        self._emit("VoteRevealed", duelId=duel_id, judge=s, round=duel.round, vote=vote)

    @_transaction
    def appeal(self, sender: str, duel_id: int, *, block_number: int) -> None:
        """appeal(): the first round's losing duelist pays APPEAL_FEE for a final 2K+1-seat round."""
        s = checksum(sender)
        p = self.params
        duel = self.duels.get(duel_id)
        if duel is None or duel.status != DuelStatus.JUDGING or duel.round != 1:
            raise ModelRevert("Duel: not appealable")
        reveal_end = duel.deadline + p.reveal_window_blocks
        if block_number <= reveal_end:
            raise ModelRevert("Duel: reveal window not over")
        if block_number > reveal_end + p.appeal_window_blocks:
            raise ModelRevert("Duel: appeal window over")
        outcome, _, _, _ = duel.panels[1].tally()
        if outcome == Outcome.B_WON:
            loser = duel.a_leaf
        elif outcome == Outcome.A_WON:
            loser = duel.b_leaf
        else:
            raise ModelRevert("Duel: no verdict to appeal")
        if self.party(duel, loser) != s:
            raise ModelRevert("Duel: only the losing duelist appeals")
        if self.credit.get(s, 0) < self.appeal_fee_wei:
            raise ModelRevert("Bank: insufficient credit")
        self._add(self.credit, s, -self.appeal_fee_wei)
        duel.round = 2
        duel.seed_block = next_epoch_start(block_number, p.epoch_blocks)
        duel.deadline = duel.seed_block + p.commit_window_blocks
        self._emit("DuelAppealed", duelId=duel_id, appellant=s, deposit=self.appeal_fee_wei,
                   seedBlock=duel.seed_block, commitEnd=duel.deadline)

    @_transaction
    def settle_duel(self, sender: str, duel_id: int, *, block_number: int,
                    blockhash: BlockHash | None = None) -> SettlementResult:
        """settleDuel(): end the duel once nothing can change it (see the contract's docstring).

        `blockhash` is needed only to settle a no-show challenger nobody recorded, within the seed
        block's epoch (the contract then draws it); without it such a duel is cancelled as if the
        epoch were over."""
        del sender  # anyone may settle
        p = self.params
        duel = self.duels.get(duel_id)
        status = DuelStatus.NONE if duel is None else duel.status
        if duel is not None:
            own = functools.partial(self.party, duel)
        if duel is not None and status == DuelStatus.AWAITING_ANSWER:
            if block_number <= duel.deadline:
                raise ModelRevert("Duel: answer window not over")
            reason = CancelReason.NO_CHALLENGER
            b_leaf: int | None = duel.b_leaf if duel.b_drawn else None
            if b_leaf is None and self.epoch(block_number) == self.epoch(duel.seed_block):
                if blockhash is None:
                    raise ValueError("settling an unanswered duel in its seed epoch needs `blockhash`")
                b_leaf = self._challenger_leaf(duel_id, duel, blockhash)
            if b_leaf is not None:
                reason = CancelReason.NO_ANSWER
                b = own(b_leaf)
                bond = duel.bond_wei  # _cancel releases a recorded bond
                if not duel.b_drawn:  # the bond it would have had if recorded now: never stake other duels bond
                    bond = self.bond_of_units(self._bond_units_of(b))
                cut = self._take_stake(b, bond, 0)
                if cut > 0:
                    self._emit("StakeSlashed", duelId=duel_id, node=b, amount=cut, reason=int(SlashReason.NO_ANSWER))
                    self.reserve += cut
                    self._emit("ReserveChanged", duelId=duel_id, amount=self.reserve)
                if not duel.b_drawn:
                    duel.b_leaf = b_leaf
            self._cancel(duel_id, duel, reason)
            self._pay(duel_id, own(duel.origin_leaf), self.duel_escrow_wei, RewardReason.ESCROW_REFUND)
            return SettlementResult(Outcome.NONE, 0, 0, 0, 0, reason)
        if duel is not None and status == DuelStatus.AWAITING_REQUEST:
            if block_number <= duel.deadline:
                raise ModelRevert("Duel: publish window not over")
            self._cancel(duel_id, duel, CancelReason.REQUEST_WITHHELD)
            self._pay(duel_id, own(duel.b_leaf), p.duelist_fee_wei, RewardReason.DUELIST_FEE)
            self.reserve += self.duel_escrow_wei - p.duelist_fee_wei
            self._emit("ReserveChanged", duelId=duel_id, amount=self.reserve)
            return SettlementResult(Outcome.NONE, 0, 0, 0, 0, CancelReason.REQUEST_WITHHELD)
        if duel is None or status != DuelStatus.JUDGING:
            raise ModelRevert("Duel: not open")
        panel = duel.panels.get(duel.round)
        if panel is None:
            if block_number <= duel.deadline:
                raise ModelRevert("Duel: commit window not over")
            return self._settle_verdict(duel_id, duel)
        reveal_end = duel.deadline + p.reveal_window_blocks
        if duel.round == 1:
            if block_number <= reveal_end + p.appeal_window_blocks:
                raise ModelRevert("Duel: appeal window not over")
        else:
            _, _, _, n_revealed = panel.tally()
            if not (block_number > reveal_end or n_revealed == len(panel.votes)):
                raise ModelRevert("Duel: reveal window not over")
        return self._settle_verdict(duel_id, duel)
