"""Pure-Python reference model of the WWWServe contract (contracts/WWWServe.vy + sortition.vy).

The model is a test oracle: it holds the same state as the contract (credit, pending withdrawals,
active and unbonding stake, duel locks, the node registry with sortition leaves and public-key
owners, the sortition sum tree, claimed voucher amounts, duels) and implements every external
function with the same checks in the same order. A failed check raises `ModelRevert` carrying
*exactly* the contract's revert string, and leaves the state untouched, like a reverted transaction.

Nothing here reads a clock or a chain: each function takes the caller (`sender`) and, where the
contract reads them, the block timestamp (`now_s`), the block number (`block_number`) and the seed
block's hash (`blockhash`) explicitly. The sortition draw and the commitment / voucher digests use
the contract's exact keccak encodings, so the model predicts which judges a duel draws, bit for bit;
settlement uses the same integer floor divisions (dust of the judge pool goes to the first majority
judge). Events are recorded as `ModelEvent`s in emission order, so a test can compare them with the
contract's logs.

Packed duel storage (`duelInfo`, `duelPanel`) is kept unpacked as dataclasses, with `pack`/`unpack`
that reproduce the contract's bit layout.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from functools import lru_cache, update_wrapper
from typing import Concatenate, ParamSpec, TypeVar

from eth_abi.abi import encode
from eth_keys.datatypes import Signature
from eth_keys.exceptions import BadSignature
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from eth_utils.exceptions import ValidationError as EthValidationError

from ledger.params import DeploymentParams

# contract constants (WWWServe.vy / sortition.vy)
BPS = 10_000
MAX_K = 8
MAX_MODELS = 16
MAX_DEPTH = 20
MAX_DRAW = 8
LEAF_BITS = 24
BLOCK_BITS = 40
SECP256K1N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1N_HALF = SECP256K1N // 2
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
ZERO_HASH = b"\x00" * 32
VOUCHER_SIGNATURE_BYTES = 65

EIP712_DOMAIN_TYPEHASH = keccak(
    text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
VOUCHER_TYPEHASH = keccak(text="Voucher(address origin,address executor,uint256 cumulativeAmount)")
EIP712_NAME = "WWWServe"
EIP712_VERSION = "1"

# duelInfo bit offsets
_I_STATUS, _I_OUTCOME, _I_ORIGIN, _I_A, _I_B = 0, 4, 8, 32, 56
_I_SEED, _I_COMMIT_END, _I_REVEAL_END = 80, 120, 160
# duelPanel bit offsets
_P_VOTES, _P_SIZE = 192, 216


class Vote(IntEnum):
    """A judge's revealed vote (0 = not revealed)."""

    NONE = 0
    A = 1
    B = 2
    ABSTAIN = 3
    NO_EVIDENCE = 4


class DuelStatus(IntEnum):
    NONE = 0
    AWAITING_JUDGES = 1
    VOTING = 2
    SETTLED = 3
    CANCELLED = 4


class Outcome(IntEnum):
    NONE = 0
    A_WON = 1
    B_WON = 2
    TIE = 3
    VOIDED = 4  # a majority of judges got no evidence from the origin


class SlashReason(IntEnum):
    LOST_DUEL = 1
    MINORITY_JUDGE = 2
    ABSTAINED_JUDGE = 3


class RewardReason(IntEnum):
    STAKE_WON = 1
    JUDGE_POOL = 2
    DUELIST_FEE = 3
    JUDGE_FEE = 4
    ESCROW_REFUND = 5


class CancelReason(IntEnum):
    TOO_FEW_JUDGES = 1
    NOT_DRAWN = 2


class ModelRevertError(Exception):
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


# ---------------------------------------------------------------------------------------------
# pure helpers (the contract's encodings)


@lru_cache(maxsize=4096)  # EIP-55 hashes the address; the same few addresses recur on every call
def checksum(address: str) -> str:
    """Canonical (EIP-55) form of an address, so dictionary keys never differ by case."""
    return str(to_checksum_address(address))


def domain_separator(chain_id: int, contract: str) -> bytes:
    """EIP-712 domain separator of a WWWServe deployment (the contract's DOMAIN_SEPARATOR)."""
    return keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [EIP712_DOMAIN_TYPEHASH, keccak(text=EIP712_NAME), keccak(text=EIP712_VERSION), chain_id,
             checksum(contract)],
        )
    )


def voucher_digest(chain_id: int, contract: str, origin: str, executor: str, cumulative_amount_wei: int) -> bytes:
    """The EIP-712 digest an origin signs to owe `executor` a cumulative amount (voucherDigest)."""
    struct_hash = keccak(
        encode(["bytes32", "address", "address", "uint256"],
               [VOUCHER_TYPEHASH, checksum(origin), checksum(executor), cumulative_amount_wei])
    )
    return keccak(b"\x19\x01" + domain_separator(chain_id, contract) + struct_hash)


def vote_commitment(chain_id: int, contract: str, duel_id: int, judge: str, vote: int, salt: bytes) -> bytes:
    """The commitment a judge submits for a hidden vote (voteCommitment)."""
    return keccak(
        encode(["uint256", "address", "uint256", "address", "uint8", "bytes32"],
               [chain_id, checksum(contract), duel_id, checksum(judge), vote, salt])
    )


def draw_seed(blockhash: bytes, duel_id: int) -> bytes:
    """Seed of a duel's judge draw: keccak256(abi_encode(blockhash(seedBlock), duelId))."""
    return keccak(encode(["bytes32", "uint256"], [blockhash.rjust(32, b"\x00"), duel_id]))


def ecrecover(digest: bytes, v: int, r: int, s: int) -> str:
    """The ecrecover precompile: the signer's address, or the zero address when recovery fails."""
    if v not in (27, 28) or not (1 <= r < SECP256K1N and 1 <= s < SECP256K1N):
        return ZERO_ADDRESS
    try:
        public_key = Signature(vrs=(v - 27, r, s)).recover_public_key_from_msg_hash(digest)
    except (BadSignature, EthValidationError):
        return ZERO_ADDRESS
    return checksum(public_key.to_checksum_address())


def _check_field(value: int, bits: int) -> int:
    """The contract's `_with` guard: every packed field must fit its width."""
    if value >= 1 << bits:
        raise ModelRevert("Duel: field overflow")
    return value


def _field(word: int, offset: int, bits: int) -> int:
    return (word >> offset) & ((1 << bits) - 1)


# ---------------------------------------------------------------------------------------------
# state records


@dataclass
class NodeRecord:
    """The contract's `Node` struct. `leaf` is valid once the address has registered once."""

    pubkey: bytes = ZERO_HASH
    endpoint: str = ""
    models: tuple[str, ...] = ()
    metadata: str = ""
    active: bool = False
    leaf: int = 0


@dataclass
class DuelInfo:
    """`duelInfo[duelId]`, unpacked: nodes are named by their sortition leaf, windows by block."""

    status: DuelStatus
    outcome: Outcome
    origin_leaf: int
    a_leaf: int
    b_leaf: int
    seed_block: int
    commit_end: int = 0
    reveal_end: int = 0

    def pack(self) -> int:
        """The storage word, with the contract's layout and overflow checks."""
        word = _check_field(int(self.status), 4) << _I_STATUS
        word |= _check_field(int(self.outcome), 4) << _I_OUTCOME
        word |= _check_field(self.origin_leaf, LEAF_BITS) << _I_ORIGIN
        word |= _check_field(self.a_leaf, LEAF_BITS) << _I_A
        word |= _check_field(self.b_leaf, LEAF_BITS) << _I_B
        word |= _check_field(self.seed_block, BLOCK_BITS) << _I_SEED
        word |= _check_field(self.commit_end, BLOCK_BITS) << _I_COMMIT_END
        word |= _check_field(self.reveal_end, BLOCK_BITS) << _I_REVEAL_END
        return word

    @classmethod
    def unpack(cls, word: int) -> DuelInfo:
        """Decode a `duelInfo` storage word."""
        return cls(
            status=DuelStatus(_field(word, _I_STATUS, 4)),
            outcome=Outcome(_field(word, _I_OUTCOME, 4)),
            origin_leaf=_field(word, _I_ORIGIN, LEAF_BITS),
            a_leaf=_field(word, _I_A, LEAF_BITS),
            b_leaf=_field(word, _I_B, LEAF_BITS),
            seed_block=_field(word, _I_SEED, BLOCK_BITS),
            commit_end=_field(word, _I_COMMIT_END, BLOCK_BITS),
            reveal_end=_field(word, _I_REVEAL_END, BLOCK_BITS),
        )


@dataclass
class DuelPanel:
    """`duelPanel[duelId]`, unpacked: judge leaves in draw order and their revealed votes."""

    judge_leaves: list[int] = field(default_factory=list)
    votes: list[Vote] = field(default_factory=list)

    def pack(self) -> int:
        """The storage word, with the contract's layout."""
        word = _check_field(len(self.judge_leaves), 4) << _P_SIZE
        for i, leaf in enumerate(self.judge_leaves):
            word |= _check_field(leaf, LEAF_BITS) << (i * LEAF_BITS)
        for i, vote in enumerate(self.votes):
            word |= _check_field(int(vote), 3) << (_P_VOTES + 3 * i)
        return word

    @classmethod
    def unpack(cls, word: int) -> DuelPanel:
        """Decode a `duelPanel` storage word."""
        size = _field(word, _P_SIZE, 4)
        return cls(
            judge_leaves=[_field(word, i * LEAF_BITS, LEAF_BITS) for i in range(size)],
            votes=[Vote(_field(word, _P_VOTES + 3 * i, 3)) for i in range(size)],
        )


@dataclass
class Duel:
    """One duel: packed info and panel and the judges' open commitments."""

    info: DuelInfo
    panel: DuelPanel = field(default_factory=DuelPanel)
    commitments: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class SettlementResult:
    """What `settleDuel` decided (the DuelSettled event's fields)."""

    outcome: Outcome
    votes_a: int
    votes_b: int
    stake_moved_wei: int
    judge_pool_wei: int


# ---------------------------------------------------------------------------------------------
# sortition


class SortitionTree:
    """The heap-indexed sum tree of sortition.vy: root at 1, leaf i at 2**depth + i.

    This is the specification: every level is kept and every draw walks down from the root. The
    contract keeps only the leftmost subtree that covers the allocated leaves (plus the root) and
    starts its draws there, which picks the same leaves; the stateful test checks that they agree.
    """

    def __init__(self, depth: int) -> None:
        if not 1 <= depth <= MAX_DEPTH:
            raise ModelRevert("Sortition: depth out of range")
        self.depth = depth
        self.leaves = 1 << depth
        self.tree: dict[int, int] = {}
        self.leaf_owner: dict[int, str] = {}
        self.leaf_count = 0

    def total_weight(self) -> int:
        """Sum of all leaf weights (totalWeight)."""
        return self.tree.get(1, 0)

    def leaf_weight(self, leaf: int) -> int:
        return self.tree.get(self.leaves + leaf, 0)

    def owner(self, leaf: int) -> str:
        return self.leaf_owner.get(leaf, ZERO_ADDRESS)

    def allocate(self, owner: str) -> int:
        """Give `owner` the next free leaf (leaves are never reused by another owner)."""
        leaf = self.leaf_count
        if leaf >= self.leaves:
            raise ModelRevert("Sortition: tree full")
        self.leaf_count = leaf + 1
        self.leaf_owner[leaf] = checksum(owner)
        return leaf

    def set(self, leaf: int, weight: int) -> None:
        """Set a leaf's weight and fix the sums on its path to the root."""
        node = self.leaves + leaf
        delta = weight - self.tree.get(node, 0)
        if delta == 0:
            return
        while node >= 1:
            self.tree[node] = self.tree.get(node, 0) + delta
            node >>= 1

    def draw(self, seed: bytes, count: int, excluded: Sequence[int]) -> list[int]:
        """Draw up to `count` distinct leaves by weight, never one in `excluded` (sortition._draw)."""
        ex_nodes: list[int] = []
        ex_weights: list[int] = []
        total = self.total_weight()
        for leaf in excluded:
            node = self.leaves + leaf
            if node in ex_nodes:
                continue
            w = self.tree.get(node, 0)
            ex_nodes.append(node)
            ex_weights.append(w)
            total -= w
        drawn: list[int] = []
        for k in range(MAX_DRAW):
            if k == count or total == 0:
                break
            r = int.from_bytes(keccak(seed + k.to_bytes(32, "big")), "big") % total
            node = 1
            for level in range(self.depth):
                left = node << 1
                down = self.depth - level - 1
                lw = self.tree.get(left, 0)
                for ex_node, ex_weight in zip(ex_nodes, ex_weights, strict=True):
                    if ex_node >> down == left:
                        lw -= ex_weight
                if r < lw:
                    node = left
                else:
                    r -= lw
                    node = left + 1
            w = self.tree.get(node, 0)
            drawn.append(node - self.leaves)
            ex_nodes.append(node)
            ex_weights.append(w)
            total -= w
        return drawn


# ---------------------------------------------------------------------------------------------
# the contract

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _transaction(method: Callable[Concatenate[WWWServeModel, _P], _R]) -> Callable[Concatenate[WWWServeModel, _P], _R]:
    """Run a state-changing method atomically: on `ModelRevert` the state is restored, like a revert."""

    def run(model: WWWServeModel, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        saved = copy.deepcopy(model.__dict__)
        model.events = []
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

    def __init__(self, params: DeploymentParams, *, chain_id: int, address: str) -> None:
        """Deploy: the constructor's checks (same reasons), then the immutables."""
        p = params
        if p.min_stake_wei <= 0:
            raise ModelRevert("Params: min_stake must be > 0")
        if not 1 <= p.k_judges <= MAX_K:
            raise ModelRevert("Params: k_judges out of range")
        if p.seed_delay_blocks < 1:
            raise ModelRevert("Params: seed_delay must be >= 1")
        if not 1 <= p.draw_window_blocks <= 250:
            raise ModelRevert("Params: draw_window out of range")
        if min(p.commit_window_blocks, p.reveal_window_blocks, p.settle_window_blocks) < 1:
            raise ModelRevert("Params: windows must be >= 1")
        if max(p.gamma_bps, p.minority_slash_bps, p.abstain_slash_bps) > BPS:
            raise ModelRevert("Params: bps > 10000")
        self.params = params
        self.chain_id = chain_id
        self.address = checksum(address)
        self.sortition = SortitionTree(p.tree_depth)
        self.duel_escrow_wei = 2 * p.duelist_fee_wei + p.k_judges * p.judge_fee_wei
        self.domain_separator = domain_separator(chain_id, self.address)

        self.nodes: dict[str, NodeRecord] = {}
        self.registered_once: set[str] = set()
        self.pubkey_owner: dict[bytes, str] = {}
        self.active_node_count = 0
        self.credit: dict[str, int] = {}
        self.pending_withdrawal: dict[str, int] = {}
        self.withdrawable_at: dict[str, int] = {}
        self.active_stake: dict[str, int] = {}
        self.unbonding_stake: dict[str, int] = {}
        self.unbonding_end: dict[str, int] = {}
        self.claimed: dict[tuple[str, str], int] = {}
        self.duels: dict[int, Duel] = {}
        self.duel_count = 0
        self.locked_until: dict[str, int] = {}
        self.balance_wei = 0
        self.events: list[ModelEvent] = []

    # ----------------------------------------------------------------- views
    def node(self, address: str) -> NodeRecord:
        """`nodes(address)`; an unknown address gives the all-zero record."""
        return self.nodes.get(checksum(address), NodeRecord())

    def total_stake(self, address: str) -> int:
        a = checksum(address)
        return self.active_stake.get(a, 0) + self.unbonding_stake.get(a, 0)

    def claimed_wei(self, origin: str, executor: str) -> int:
        return self.claimed.get((checksum(origin), checksum(executor)), 0)

    def commitment(self, duel_id: int, judge: str) -> bytes:
        duel = self.duels.get(duel_id)
        return ZERO_HASH if duel is None else duel.commitments.get(checksum(judge), ZERO_HASH)

    def voucher_digest(self, origin: str, executor: str, cumulative_amount_wei: int) -> bytes:
        return voucher_digest(self.chain_id, self.address, origin, executor, cumulative_amount_wei)

    def vote_commitment(self, duel_id: int, judge: str, vote: int, salt: bytes) -> bytes:
        return vote_commitment(self.chain_id, self.address, duel_id, judge, vote, salt)

    def get_duel(self, duel_id: int) -> tuple[str, str, str, int, int, int, int, int]:
        """`getDuel`: (origin, a, b, seedBlock, commitEnd, revealEnd, status, outcome)."""
        duel = self.duels.get(duel_id)
        if duel is None:
            raise ModelRevert("Duel: unknown duel")
        i = duel.info
        own = self.sortition.owner
        return (own(i.origin_leaf), own(i.a_leaf), own(i.b_leaf), i.seed_block,
                i.commit_end, i.reveal_end, int(i.status), int(i.outcome))

    def get_judges(self, duel_id: int) -> list[str]:
        duel = self.duels.get(duel_id)
        return [] if duel is None else [self.sortition.owner(leaf) for leaf in duel.panel.judge_leaves]

    def get_votes(self, duel_id: int) -> list[int]:
        duel = self.duels.get(duel_id)
        return [] if duel is None else [int(v) for v in duel.panel.votes]

    def open_duel_ids(self) -> list[int]:
        """Duels whose escrow the contract still holds (awaiting judges or voting)."""
        open_states = (DuelStatus.AWAITING_JUDGES, DuelStatus.VOTING)
        return [d for d, duel in self.duels.items() if duel.info.status in open_states]

    def liabilities_wei(self) -> int:
        """Everything the contract owes: credit + pending + stake + escrow of open duels."""
        return (sum(self.credit.values()) + sum(self.pending_withdrawal.values())
                + sum(self.active_stake.values()) + sum(self.unbonding_stake.values())
                + self.duel_escrow_wei * len(self.open_duel_ids()))

    def eligible_weight_wei(self) -> int:
        """Sum of the active stake of active nodes holding at least MIN_STAKE (= totalWeight)."""
        return sum(self._weight_of(a) for a in self.registered_once)

    # ----------------------------------------------------------------- internals
    def _emit(self, name: str, **args: object) -> None:
        self.events.append(ModelEvent(name, dict(args)))

    def _add(self, book: dict[str, int], who: str, delta: int) -> None:
        book[who] = book.get(who, 0) + delta

    def _weight_of(self, who: str) -> int:
        node = self.nodes.get(who)
        stake = self.active_stake.get(who, 0)
        if node is not None and node.active and stake >= self.params.min_stake_wei:
            return stake
        return 0

    def _sync_weight(self, who: str) -> None:
        if who not in self.registered_once:
            return
        self.sortition.set(self.nodes[who].leaf, self._weight_of(who))

    def _slash(self, who: str, amount: int) -> int:
        act = self.active_stake.get(who, 0)
        unb = self.unbonding_stake.get(who, 0)
        taken = min(amount, act + unb)
        from_active = min(taken, act)
        self.active_stake[who] = act - from_active
        self.unbonding_stake[who] = unb - (taken - from_active)
        self._sync_weight(who)
        return taken

    def _validate_node_fields(self, sender: str, pubkey: bytes, models: Sequence[str]) -> None:
        if pubkey == ZERO_HASH:
            raise ModelRevert("Registry: empty public key")
        owner = self.pubkey_owner.get(pubkey, ZERO_ADDRESS)
        if owner not in (ZERO_ADDRESS, sender):
            raise ModelRevert("Registry: public key already registered")
        if len(models) == 0:
            raise ModelRevert("Registry: no models")

    def _lock(self, who: str, until_block: int) -> None:
        if self.locked_until.get(who, 0) < until_block:
            self.locked_until[who] = until_block

    def _pay(self, duel_id: int, account: str, amount: int, reason: RewardReason) -> None:
        if amount == 0:
            return
        self._add(self.credit, account, amount)
        self._emit("DuelRewardPaid", duelId=duel_id, account=account, amount=amount, reason=int(reason))

    def _panel_position(self, panel: DuelPanel, who: str) -> int:
        """1-based position of `who` on the panel, 0 if not a judge."""
        if who not in self.registered_once:
            return 0
        leaf = self.nodes[who].leaf
        for i, judge_leaf in enumerate(panel.judge_leaves):
            if judge_leaf == leaf:
                return i + 1
        return 0

    def _cancel(self, duel_id: int, duel: Duel, reason: CancelReason) -> None:
        p = self.params
        duel.info.status = DuelStatus.CANCELLED
        self._emit("DuelCancelled", duelId=duel_id, reason=int(reason))
        own = self.sortition.owner
        self._pay(duel_id, own(duel.info.a_leaf), p.duelist_fee_wei, RewardReason.DUELIST_FEE)
        self._pay(duel_id, own(duel.info.b_leaf), p.duelist_fee_wei, RewardReason.DUELIST_FEE)
        self._pay(duel_id, own(duel.info.origin_leaf), p.k_judges * p.judge_fee_wei, RewardReason.ESCROW_REFUND)

    # ----------------------------------------------------------------- registry
    @_transaction
    def register(self, sender: str, pubkey: bytes, endpoint: str, models: Sequence[str], metadata: str) -> None:
        """register(): make `sender` a node; a returning node keeps its sortition leaf."""
        s = checksum(sender)
        if self.node(s).active:
            raise ModelRevert("Registry: already registered")
        self._validate_node_fields(s, pubkey, models)
        if s in self.registered_once:
            leaf = self.nodes[s].leaf
        else:
            leaf = self.sortition.allocate(s)
            self.registered_once.add(s)
        self.nodes[s] = NodeRecord(pubkey, endpoint, tuple(models), metadata, True, leaf)
        self.pubkey_owner[pubkey] = s
        self.active_node_count += 1
        self._sync_weight(s)
        self._emit("NodeRegistered", node=s, pubkey=pubkey, endpoint=endpoint, models=list(models),
                   metadata=metadata, leaf=leaf)

    @_transaction
    def update_node(self, sender: str, pubkey: bytes, endpoint: str, models: Sequence[str], metadata: str) -> None:
        """updateNode(): change key, endpoint, models or metadata; the old key is released."""
        s = checksum(sender)
        if not self.node(s).active:
            raise ModelRevert("Registry: not registered")
        self._validate_node_fields(s, pubkey, models)
        node = self.nodes[s]
        if node.pubkey != pubkey:
            self.pubkey_owner[node.pubkey] = ZERO_ADDRESS
            self.pubkey_owner[pubkey] = s
        node.pubkey, node.endpoint, node.models, node.metadata = pubkey, endpoint, tuple(models), metadata
        self._emit("NodeUpdated", node=s, pubkey=pubkey, endpoint=endpoint, models=list(models), metadata=metadata)

    @_transaction
    def leave(self, sender: str) -> None:
        """leave(): stop being routable and drawable; the public key is released, stake stays."""
        s = checksum(sender)
        if not self.node(s).active:
            raise ModelRevert("Registry: not registered")
        node = self.nodes[s]
        node.active = False
        self.pubkey_owner[node.pubkey] = ZERO_ADDRESS
        self.active_node_count -= 1
        self._sync_weight(s)
        self._emit("NodeLeft", node=s)

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
    def stake(self, sender: str, amount_wei: int) -> None:
        """stake(): move credit into active stake (registered nodes only)."""
        s = checksum(sender)
        if amount_wei <= 0:
            raise ModelRevert("Bank: zero amount")
        if not self.node(s).active:
            raise ModelRevert("Registry: not registered")
        if self.credit.get(s, 0) < amount_wei:
            raise ModelRevert("Bank: insufficient credit")
        self._add(self.credit, s, -amount_wei)
        self._add(self.active_stake, s, amount_wei)
        self._sync_weight(s)
        self._emit("Staked", node=s, amount=amount_wei)

    @_transaction
    def request_unstake(self, sender: str, amount_wei: int, *, now_s: int) -> None:
        """requestUnstake(): start unbonding; the period restarts for the whole unbonding amount."""
        s = checksum(sender)
        if amount_wei <= 0:
            raise ModelRevert("Bank: zero amount")
        if self.active_stake.get(s, 0) < amount_wei:
            raise ModelRevert("Bank: insufficient stake")
        self._add(self.active_stake, s, -amount_wei)
        self._add(self.unbonding_stake, s, amount_wei)
        end = now_s + self.params.unbonding_period_s
        self.unbonding_end[s] = end
        self._sync_weight(s)
        self._emit("UnstakeRequested", node=s, amount=amount_wei, unbondingEnd=end)

    @_transaction
    def withdraw_stake(self, sender: str, *, now_s: int, block_number: int) -> int:
        """withdrawStake(): unbonded stake returns to credit once unbonded and unlocked."""
        s = checksum(sender)
        amount = self.unbonding_stake.get(s, 0)
        if amount <= 0:
            raise ModelRevert("Bank: nothing unbonding")
        if now_s < self.unbonding_end.get(s, 0):
            raise ModelRevert("Bank: still unbonding")
        if block_number <= self.locked_until.get(s, 0):
            raise ModelRevert("Bank: stake locked by an open duel")
        self.unbonding_stake[s] = 0
        self._add(self.credit, s, amount)
        self._emit("StakeWithdrawn", node=s, amount=amount)
        return amount

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
        r = int.from_bytes(signature[0:32], "big")
        s = int.from_bytes(signature[32:64], "big")
        v = signature[64]
        if v < 27:
            v += 27
        if not (s <= SECP256K1N_HALF and v in (27, 28)):
            raise ModelRevert("Voucher: malformed signature")
        signer = ecrecover(self.voucher_digest(o, e, cumulative_amount_wei), v, r, s)
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
    def open_duel(self, sender: str, a: str, b: str, question_hash: bytes, answer_a_hash: bytes,
                  answer_b_hash: bytes, *, block_number: int) -> int:
        """openDuel(): escrow the fees, fix the seed block and lock both duelists. Returns the duel id."""
        p = self.params
        s, a, b = checksum(sender), checksum(a), checksum(b)
        if a == b:
            raise ModelRevert("Duel: duelists must differ")
        if s in (a, b):
            raise ModelRevert("Duel: origin cannot duel")
        if not self.node(s).active:
            raise ModelRevert("Registry: not registered")
        if not (self.node(a).active and self.node(b).active):
            raise ModelRevert("Duel: duelist not registered")
        if self.credit.get(s, 0) < self.duel_escrow_wei:
            raise ModelRevert("Bank: insufficient credit")
        self._add(self.credit, s, -self.duel_escrow_wei)
        duel_id = self.duel_count + 1
        self.duel_count = duel_id
        seed_block = block_number + p.seed_delay_blocks
        info = DuelInfo(DuelStatus.AWAITING_JUDGES, Outcome.NONE, self.nodes[s].leaf, self.nodes[a].leaf,
                        self.nodes[b].leaf, seed_block)
        info.pack()  # the contract packs here: a seed block beyond 40 bits reverts
        self.duels[duel_id] = Duel(info=info)
        latest_end = (seed_block + p.draw_window_blocks + p.commit_window_blocks + p.reveal_window_blocks
                      + p.settle_window_blocks)
        self._lock(a, latest_end)
        self._lock(b, latest_end)
        self._emit("DuelOpened", duelId=duel_id, origin=s, a=a, b=b, questionHash=question_hash,
                   answerAHash=answer_a_hash, answerBHash=answer_b_hash, seedBlock=seed_block,
                   escrow=self.duel_escrow_wei)
        return duel_id

    def predict_judges(self, duel_id: int, blockhash: bytes) -> list[str]:
        """The judges `drawJudges` would pick now given the seed block's hash (fewer = cancelled)."""
        duel = self.duels[duel_id]
        i = duel.info
        seed = draw_seed(blockhash, duel_id)
        leaves = self.sortition.draw(seed, self.params.k_judges, [i.origin_leaf, i.a_leaf, i.b_leaf])
        return [self.sortition.owner(leaf) for leaf in leaves]

    @_transaction
    def draw_judges(self, sender: str, duel_id: int, *, block_number: int, blockhash: bytes) -> list[str]:
        """drawJudges(): draw the panel from `blockhash` (= blockhash(seedBlock) as the EVM sees it).

        Returns the judges drawn; an empty list means the duel was cancelled for lack of judges.
        """
        del sender  # anyone may draw
        p = self.params
        duel = self.duels.get(duel_id)
        if duel is None or duel.info.status != DuelStatus.AWAITING_JUDGES:
            raise ModelRevert("Duel: not awaiting judges")
        info = duel.info
        if block_number <= info.seed_block:
            raise ModelRevert("Duel: seed block not mined yet")
        if block_number > info.seed_block + p.draw_window_blocks:
            raise ModelRevert("Duel: draw window over")
        seed = draw_seed(blockhash, duel_id)
        leaves = self.sortition.draw(seed, p.k_judges, [info.origin_leaf, info.a_leaf, info.b_leaf])
        if len(leaves) < p.k_judges:
            self._cancel(duel_id, duel, CancelReason.TOO_FEW_JUDGES)
            return []
        commit_end = block_number + p.commit_window_blocks
        reveal_end = commit_end + p.reveal_window_blocks
        judges = [self.sortition.owner(leaf) for leaf in leaves]
        for judge in judges:
            self._lock(judge, reveal_end + p.settle_window_blocks)
        duel.panel = DuelPanel(list(leaves), [Vote.NONE] * len(leaves))
        info.status, info.commit_end, info.reveal_end = DuelStatus.VOTING, commit_end, reveal_end
        info.pack()  # window ends beyond 40 bits revert
        self._emit("JudgesDrawn", duelId=duel_id, judges=judges, commitEnd=commit_end, revealEnd=reveal_end)
        return judges

    @_transaction
    def cancel_undrawn_duel(self, sender: str, duel_id: int, *, block_number: int) -> None:
        """cancelUndrawnDuel(): anyone may cancel a duel whose judges were not drawn in time."""
        del sender
        duel = self.duels.get(duel_id)
        if duel is None or duel.info.status != DuelStatus.AWAITING_JUDGES:
            raise ModelRevert("Duel: not awaiting judges")
        if block_number <= duel.info.seed_block + self.params.draw_window_blocks:
            raise ModelRevert("Duel: draw window not over")
        self._cancel(duel_id, duel, CancelReason.NOT_DRAWN)

    @_transaction
    def commit_vote(self, sender: str, duel_id: int, commitment: bytes, *, block_number: int) -> None:
        """commitVote(): a drawn judge commits to a hidden vote within the commit window."""
        s = checksum(sender)
        duel = self.duels.get(duel_id)
        if duel is None or duel.info.status != DuelStatus.VOTING:
            raise ModelRevert("Duel: not in voting")
        if block_number > duel.info.commit_end:
            raise ModelRevert("Duel: commit window over")
        if self._panel_position(duel.panel, s) == 0:
            raise ModelRevert("Duel: not a judge of this duel")
        if commitment == ZERO_HASH:
            raise ModelRevert("Duel: empty commitment")
        if duel.commitments.get(s, ZERO_HASH) != ZERO_HASH:
            raise ModelRevert("Duel: already committed")
        duel.commitments[s] = commitment
        self._emit("VoteCommitted", duelId=duel_id, judge=s, commitment=commitment)

    @_transaction
    def reveal_vote(self, sender: str, duel_id: int, vote: int, salt: bytes, *, block_number: int) -> None:
        """revealVote(): open a committed vote within the reveal window."""
        s = checksum(sender)
        duel = self.duels.get(duel_id)
        if duel is None or duel.info.status != DuelStatus.VOTING:
            raise ModelRevert("Duel: not in voting")
        if block_number <= duel.info.commit_end:
            raise ModelRevert("Duel: reveal window not open")
        if block_number > duel.info.reveal_end:
            raise ModelRevert("Duel: reveal window over")
        if not Vote.A <= vote <= Vote.NO_EVIDENCE:
            raise ModelRevert("Duel: invalid vote")
        pos = self._panel_position(duel.panel, s)
        if pos == 0:
            raise ModelRevert("Duel: not a judge of this duel")
        if duel.panel.votes[pos - 1] != Vote.NONE:
            raise ModelRevert("Duel: already revealed")
        committed = duel.commitments.get(s, ZERO_HASH)
        if committed == ZERO_HASH:
            raise ModelRevert("Duel: no commitment")
        if self.vote_commitment(duel_id, s, vote, salt) != committed:
            raise ModelRevert("Duel: reveal does not match commitment")
        duel.commitments[s] = ZERO_HASH
        duel.panel.votes[pos - 1] = Vote(vote)
        self._emit("VoteRevealed", duelId=duel_id, judge=s, vote=vote)

    @_transaction
    def settle_duel(self, sender: str, duel_id: int, *, block_number: int) -> SettlementResult:
        """settleDuel(): apply the verdict: move stake, slash judges, pay fees, refund the rest."""
        del sender  # anyone may settle
        p = self.params
        duel = self.duels.get(duel_id)
        if duel is None or duel.info.status != DuelStatus.VOTING:
            raise ModelRevert("Duel: not in voting")
        info, ballots = duel.info, list(duel.panel.votes)
        size = len(ballots)
        judges = [self.sortition.owner(leaf) for leaf in duel.panel.judge_leaves]
        n_a = ballots.count(Vote.A)
        n_b = ballots.count(Vote.B)
        n_no_ev = ballots.count(Vote.NO_EVIDENCE)
        n_revealed = size - ballots.count(Vote.NONE)
        if not (block_number > info.reveal_end or n_revealed == size):
            raise ModelRevert("Duel: reveal window not over")
        own = self.sortition.owner
        a, b = own(info.a_leaf), own(info.b_leaf)

        outcome, moved, pool = Outcome.TIE, 0, 0
        if n_no_ev * 2 > size:
            outcome = Outcome.VOIDED
        elif n_a != n_b:
            if n_b > n_a:
                winner, loser, win_vote, lose_vote, outcome = b, a, Vote.B, Vote.A, Outcome.B_WON
            else:
                winner, loser, win_vote, lose_vote, outcome = a, b, Vote.A, Vote.B, Outcome.A_WON
            moved = self._slash(loser, self.total_stake(loser) * p.gamma_bps // BPS)
            if moved > 0:
                self._emit("StakeSlashed", duelId=duel_id, node=loser, amount=moved,
                           reason=int(SlashReason.LOST_DUEL))
                self._pay(duel_id, winner, moved, RewardReason.STAKE_WON)
            majority: list[str] = []
            for judge, ballot in zip(judges, ballots, strict=True):
                if ballot == win_vote:
                    majority.append(judge)
                    continue
                bps, reason = p.abstain_slash_bps, SlashReason.ABSTAINED_JUDGE
                if ballot == lose_vote:
                    bps, reason = p.minority_slash_bps, SlashReason.MINORITY_JUDGE
                cut = self._slash(judge, self.total_stake(judge) * bps // BPS)
                if cut > 0:
                    pool += cut
                    self._emit("StakeSlashed", duelId=duel_id, node=judge, amount=cut, reason=int(reason))
            share = pool // len(majority)
            for i, judge in enumerate(majority):
                amount = share + (pool - share * len(majority) if i == 0 else 0)
                self._pay(duel_id, judge, amount, RewardReason.JUDGE_POOL)

        info.status, info.outcome = DuelStatus.SETTLED, outcome
        self._pay(duel_id, a, p.duelist_fee_wei, RewardReason.DUELIST_FEE)
        self._pay(duel_id, b, p.duelist_fee_wei, RewardReason.DUELIST_FEE)
        for judge, ballot in zip(judges, ballots, strict=True):
            if ballot != Vote.NONE:
                self._pay(duel_id, judge, p.judge_fee_wei, RewardReason.JUDGE_FEE)
        self._pay(duel_id, own(info.origin_leaf), (p.k_judges - n_revealed) * p.judge_fee_wei,
                  RewardReason.ESCROW_REFUND)
        self._emit("DuelSettled", duelId=duel_id, outcome=int(outcome), votesA=n_a, votesB=n_b,
                   stakeMoved=moved, judgePool=pool)
        return SettlementResult(outcome, n_a, n_b, moved, pool)
