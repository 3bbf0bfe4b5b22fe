"""Typed client of the WWWServe contract: one method per contract function, frozen dataclasses out.

`WWWServeClient(w3, address, sender)` wraps the deployed contract. WWWServe is two contracts behind
one address (WWWServe delegatecalls WWWServeExt for every function it does not run itself, see
`contracts/`): the client talks to WWWServe's address with the merged ABI and never needs to know
which half runs a function. Views work without a sender; state-changing methods need a `TxSender`
(the account that acts) and return a `TxResult` with the receipt's decoded events. Inputs are
validated before anything is sent (checksummed addresses, 32-byte keys and hashes, the contract's
string and list bounds, a work attestation's signature and commitment), so malformed calls fail
with a clear `LedgerValueError` instead of an ABI or bare-revert error; rules that depend on chain
state stay with the contract and come back as the typed errors of `ledger.errors`.

Off-chain helpers mirror the contract byte for byte: `voucher_typed_data`/`sign_voucher` (EIP-712,
domain "WWWServe" version "1"), `vote_commitment`, and (through `ledger.work`) work digests and duel
ids.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.abi import event_abi_to_log_topic
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.types import TxReceipt

from wwwserve.contracts import EXTENSION_CONTRACT, MAIN_CONTRACT, load_artifact
from wwwserve.ledger.chain import RetryPolicy, call_with_retries
from wwwserve.ledger.errors import (
    ChainRequestError,
    DeploymentNotFoundError,
    InvalidAmountError,
    LedgerError,
    LedgerValueError,
    UnknownDuelError,
)
from wwwserve.ledger.params import DeploymentParams, verdict_weight
from wwwserve.ledger.tx import TxSender
from wwwserve.ledger.work import WorkAttestation, WorkError, check_work, inspect_commitment, model_hash, sign_work
from wwwserve.ledger.work import duel_id_of as _duel_id_of
from wwwserve.ledger.work import work_digest as _work_digest

T = TypeVar("T")

CONTRACT_NAME = MAIN_CONTRACT
EIP712_NAME = "WWWServe"
EIP712_VERSION = "1"
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
# What a challenger answers when it could not get the request from the origin or from A.
NO_REQUEST = bytes(32)

# Bounds of the contract's types (core.vy: String[256], DynArray[String[64], 16], String[1024]).
MAX_ENDPOINT_BYTES = 256
MAX_MODELS = 16
MAX_MODEL_BYTES = 64
MAX_METADATA_BYTES = 1024
MAX_REQUEST_BYTES = 65536
MAX_UINT256 = 2**256 - 1
DUEL_ID_BITS = 63  # duel ids are the top 63 bits of keccak256(origin, requestId)
ROUNDS = (1, 2)  # the first round, and the appeal round


class Vote(enum.IntEnum):
    """A judge's vote (contract VOTE_*)."""

    NONE = 0
    A = 1
    B = 2
    ABSTAIN = 3
    NO_EVIDENCE = 4


class DuelStatus(enum.IntEnum):
    """Where a duel is in its life (contract DUEL_*)."""

    NONE = 0
    AWAITING_ANSWER = 1  # the challenger is (to be) drawn and answers
    AWAITING_REQUEST = 2  # the challenger could not get the request: anyone may publish it
    JUDGING = 3  # a panel (round 1, or the appeal round 2) commits and reveals
    SETTLED = 4
    CANCELLED = 5


class DuelOutcome(enum.IntEnum):
    """How a settled duel ended (contract OUTCOME_*); NONE until settled."""

    NONE = 0
    A_WON = 1
    B_WON = 2
    TIE = 3
    VOIDED = 4  # a majority of seats could not get the evidence


class SlashReason(enum.IntEnum):
    """`reason` of the StakeSlashed event (contract SLASH_*)."""

    LOST_DUEL = 1
    INCOHERENT_JUDGE = 2  # voted for the side that lost the final verdict
    SILENT_JUDGE = 3  # held a seat and revealed nothing
    NO_ANSWER = 4  # a drawn challenger that never answered


class RewardReason(enum.IntEnum):
    """`reason` of the DuelRewardPaid event (contract REWARD_*)."""

    STAKE_WON = 1  # the winning challenger: A's bond plus its duelist fee, one payment
    RESERVE_BONUS = 2  # not emitted today: a judge's reserve share is paid with its fee (JUDGE_FEE)
    DUELIST_FEE = 3
    JUDGE_FEE = 4  # a coherent seat: JUDGE_FEE plus its share of the reserve
    ESCROW_REFUND = 5
    APPEAL_REFUND = 6


class CancelReason(enum.IntEnum):
    """`reason` of the DuelCancelled event (contract CANCEL_*)."""

    NO_CHALLENGER = 1  # nobody serving the model could be drawn, or none was drawn in time
    NO_ANSWER = 2  # the drawn challenger never answered (its bond went to the reserve)
    REQUEST_WITHHELD = 3  # the challenger could not get the request and nobody published it
    NO_JUDGES = 4  # no eligible judge stake to draw a panel from


# ---------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class DecodedEvent:
    """One contract event from a receipt, with its arguments as plain Python values."""

    name: str
    args: Mapping[str, Any]
    log_index: int


@dataclass(frozen=True)
class TxResult:
    """What a mined state-changing call produced."""

    tx_hash: str
    block_number: int
    gas_used: int
    events: tuple[DecodedEvent, ...]
    # the duel the transaction was about (open_duel: the new duel's id, from DuelOpened)
    duel_id: int | None = None

    def events_named(self, name: str) -> tuple[DecodedEvent, ...]:
        """The events called `name`, in log order."""
        return tuple(e for e in self.events if e.name == name)

    def event(self, name: str) -> DecodedEvent:
        """The first event called `name`; LookupError when there is none."""
        for e in self.events:
            if e.name == name:
                return e
        raise LookupError(f"transaction {self.tx_hash} emitted no {name} event")


@dataclass(frozen=True)
class DeployedContracts:
    """Where `WWWServeClient.deploy_contracts` put the two contracts (users only need `address`)."""

    address: ChecksumAddress  # WWWServe: the one address users call
    extension: ChecksumAddress  # WWWServeExt, which WWWServe delegatecalls
    block_number: int  # WWWServe's deployment block (every event is emitted from it on)
    extension_block_number: int


@dataclass(frozen=True)
class NodeInfo:
    """A node's registry entry. `active` is False once it left (the entry and its leaf remain)."""

    address: str
    pubkey: bytes
    endpoint: str
    models: tuple[str, ...]
    metadata: str
    active: bool
    leaf: int


@dataclass(frozen=True)
class Balances:
    """Everything an account holds in the contract. Money in wei, times in unix seconds."""

    credit_wei: int
    pending_withdrawal_wei: int
    withdrawable_at_s: int
    active_stake_wei: int
    unbonding_stake_wei: int
    unbonding_end_s: int
    # block of the last unstake request: unbonding stake also waits DUEL_SPAN_BLOCKS blocks after it
    unbonding_block: int
    # stake bonded by open duels in which the node is a duelist: part of the stake above (nothing
    # leaves the stake when bonded), slashable, and not withdrawable until those duels end
    bonded_wei: int

    @property
    def stake_wei(self) -> int:
        """Active plus unbonding stake (both are slashable; bonded stake is part of it)."""
        return self.active_stake_wei + self.unbonding_stake_wei

    @property
    def free_stake_wei(self) -> int:
        """Stake no open duel bonds (what could be bonded by a new duel)."""
        return max(0, self.stake_wei - self.bonded_wei)

    @property
    def total_wei(self) -> int:
        """Credit, pending withdrawal and stake together."""
        return self.credit_wei + self.pending_withdrawal_wei + self.stake_wei


@dataclass(frozen=True)
class DuelRound:
    """One round's panel: its seats in seat order (a judge drawn twice holds two seats) and each
    seat's revealed vote (Vote.NONE = not revealed). Empty until the round's seats are drawn."""

    round: int
    judges: tuple[str, ...]
    votes: tuple[Vote, ...]


@dataclass(frozen=True)
class DuelInfo:
    """A duel as the contract stores it (hashes live in the events: see `duel_hashes`).

    `deadline` means what the status says: the answer deadline (awaiting answer), the publish
    deadline (awaiting request) or the current round's commit end (judging); the derived block
    fields below spell it out and are None when they do not apply. `judges`/`votes` are the CURRENT
    round's; `rounds` holds every round reached (round 1, and round 2 after an appeal), in order.
    """

    duel_id: int
    origin: str
    a: str
    b: str | None  # None until the challenger is drawn
    seed_block: int  # the block whose hash seeds the current step's draws
    deadline: int
    bond_wei: int  # what each duelist has at risk (equal for both)
    round: int  # 0 before B answered, then 1, or 2 after an appeal
    status: DuelStatus
    outcome: DuelOutcome
    judges: tuple[str, ...]
    votes: tuple[Vote, ...]
    rounds: tuple[DuelRound, ...] = ()
    answer_deadline_block: int | None = None  # awaiting answer: last block B may answer in
    publish_deadline_block: int | None = None  # awaiting request: last block to publish the request
    commit_end_block: int | None = None  # judging: last block of the current round's commits
    reveal_end_block: int | None = None  # judging: last block of its reveals
    appeal_end_block: int | None = None  # judging round 1: last block the loser may appeal in

    def judges_of(self, round: int) -> tuple[str, ...]:
        """The seats of `round` (empty when not drawn or not reached)."""
        return next((r.judges for r in self.rounds if r.round == round), ())

    def votes_of(self, round: int) -> tuple[Vote, ...]:
        """The revealed votes of `round`, per seat (empty when not drawn or not reached)."""
        return next((r.votes for r in self.rounds if r.round == round), ())

    @property
    def is_open(self) -> bool:
        """Not settled nor cancelled yet."""
        return self.status in (DuelStatus.AWAITING_ANSWER, DuelStatus.AWAITING_REQUEST, DuelStatus.JUDGING)


@dataclass(frozen=True)
class DuelHashes:
    """What a duel is about, from its events: the request, A's answer and B's (None until B answered)."""

    request_hash: bytes
    answer_a_hash: bytes
    answer_b_hash: bytes | None

    def __iter__(self) -> Any:
        # unpacks like the tuple it replaces: request, answer_a, answer_b = client.duel_hashes(id)
        return iter((self.request_hash, self.answer_a_hash, self.answer_b_hash))


@dataclass(frozen=True)
class DuelSettlement:
    """What settling a duel decided, from its DuelSettled event."""

    outcome: DuelOutcome
    round: int  # the round whose verdict is final
    votes_a: int  # seats of that round for A
    votes_b: int
    stake_moved_wei: int  # the loser's bond taken (0 on a tie or a void)
    block_number: int
    tx_hash: str




@dataclass(frozen=True)
class VerdictCounts:
    """Decided verdicts so far (the contract's `verdicts`): how many A won and how many B won, both
    halved whenever they reach VERDICT_DECAY_AT (1024) together. Ties and voids are not counted."""

    a_won: int
    b_won: int

    def pay_scale(self, outcome: DuelOutcome) -> tuple[int, int]:
        """(numerator, denominator) by which the next settlement scales the JUDGE_FEE, reserve share and
        JUDGE_PENALTY of a seat whose recount (the final verdict without its own judge's seats) is
        `outcome`: 1 / (2p), p the smoothed share (+1 each side) of past verdicts like it, within
        [1/4, 4]; (1, 1) for an even recount or a void (the contract's `_weight`)."""
        if outcome == DuelOutcome.A_WON:
            return verdict_weight(self.a_won, self.b_won)
        if outcome == DuelOutcome.B_WON:
            return verdict_weight(self.b_won, self.a_won)
        return 1, 1


# ---------------------------------------------------------------------------------------------
# input validation


def checksum_address(value: object, what: str = "address") -> ChecksumAddress:
    """`value` as a checksummed address; a mixed-case address with a wrong checksum is refused."""
    if isinstance(value, bytes) and len(value) == 20:
        return Web3.to_checksum_address(value)
    if not isinstance(value, str) or not Web3.is_address(value):
        raise LedgerValueError(f"{what} must be a 20-byte hex address with a valid checksum, got {value!r}")
    digits = value[2:] if value.startswith(("0x", "0X")) else value
    # All-lower or all-upper hex carries no checksum; mixed case does and must match (EIP-55).
    if digits != digits.lower() and digits != digits.upper() and not Web3.is_checksum_address(value):
        raise LedgerValueError(f"{what} must be a 20-byte hex address with a valid checksum, got {value!r}")
    return Web3.to_checksum_address(value)


def bytes32(value: object, what: str) -> bytes:
    """`value` (32 bytes, or 0x-hex of 32 bytes) as bytes."""
    if isinstance(value, str):
        text = value[2:] if value.startswith(("0x", "0X")) else value
        try:
            value = bytes.fromhex(text)
        except ValueError:
            raise LedgerValueError(f"{what} must be 32 bytes of hex, got {value!r}") from None
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        size = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise LedgerValueError(f"{what} must be exactly 32 bytes, got {size}")
    return bytes(value)


def _uint(value: object, what: str, bits: int = 256) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**bits:
        raise LedgerValueError(f"{what} must be an integer in [0, 2**{bits}), got {value!r}")
    return value


def _duel_id(value: object) -> int:
    """Duel ids are 63-bit numbers (`duelIdOf`); anything else names no duel."""
    return _uint(value, "duel_id", DUEL_ID_BITS)


def _round(value: object) -> int:
    if isinstance(value, bool) or value not in ROUNDS:
        raise LedgerValueError(f"round must be 1 (first round) or 2 (appeal round), got {value!r}")
    return int(value)


def _wei(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmountError(f"{what} must be int wei, got {type(value).__name__} (parse text with ledger.units)")
    if value < 0:
        raise InvalidAmountError(f"{what} must not be negative, got {value}")
    if value > MAX_UINT256:
        raise InvalidAmountError(f"{what} does not fit in uint256")
    return value


def _text(value: object, what: str, max_bytes: int) -> str:
    if not isinstance(value, str):
        raise LedgerValueError(f"{what} must be a string, got {type(value).__name__}")
    size = len(value.encode())
    if size > max_bytes:
        raise LedgerValueError(f"{what} is {size} bytes; the contract allows at most {max_bytes}")
    return value


def _models(value: object) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise LedgerValueError(f"models must be a list of model names, got {type(value).__name__}")
    if len(value) > MAX_MODELS:
        raise LedgerValueError(f"{len(value)} models given; the contract allows at most {MAX_MODELS}")
    return [_text(m, f"model name {m!r}", MAX_MODEL_BYTES) for m in value]


def _vote(value: object) -> Vote:
    try:
        return Vote(_uint(value, "vote", 8))
    except ValueError:
        raise LedgerValueError(f"vote must be one of {[v.name for v in Vote]}, got {value!r}") from None


def _cast_vote(value: object) -> Vote:
    """A vote a judge can reveal: A, B, ABSTAIN or NO_EVIDENCE (NONE means "not revealed")."""
    vote = _vote(value)
    if vote is Vote.NONE:
        raise LedgerValueError("vote NONE (0) cannot be cast: reveal A, B, ABSTAIN or NO_EVIDENCE")
    return vote


def _signature(value: object, what: str = "voucher signature") -> bytes:
    if isinstance(value, str):
        value = HexBytes(value)
    if not isinstance(value, bytes | bytearray) or len(value) != 65:
        size = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise LedgerValueError(f"{what} must be 65 bytes (r, s, v), got {size}")
    return bytes(value)


def _request(value: object) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise LedgerValueError(
            f"request must be bytes (wwwserve.ledger.work.request_bytes), got {type(value).__name__}")
    if len(value) > MAX_REQUEST_BYTES:
        raise LedgerValueError(f"request is {len(value)} bytes; the contract takes at most {MAX_REQUEST_BYTES}")
    return bytes(value)


def _work(value: object) -> WorkAttestation:
    if not isinstance(value, WorkAttestation):
        raise LedgerValueError(f"work must be a wwwserve.ledger.work.WorkAttestation, got {type(value).__name__}")
    checksum_address(value.origin, "work.origin")
    checksum_address(value.executor, "work.executor")
    _signature(value.signature, "work signature")
    return value


def _work_args(work: WorkAttestation, inspect_salt: bytes) -> list[Any]:
    """The attestation as openDuel/publishRequest take it (after the executor: requestId .. signature)."""
    return [work.request_id, work.request_hash, work.model_hash, work.answer_hash,
            bytes32(inspect_salt, "inspect_salt"), work.issued_at, work.signature]


# ---------------------------------------------------------------------------------------------
# off-chain mirrors of the contract's hashes


def voucher_typed_data(
    chain_id: int, contract: str, origin: str, executor: str, cumulative_wei: int
) -> dict[str, Any]:
    """The EIP-712 typed data of a fee voucher, as WWWServe.voucherDigest hashes it."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Voucher": [
                {"name": "origin", "type": "address"},
                {"name": "executor", "type": "address"},
                {"name": "cumulativeAmount", "type": "uint256"},
            ],
        },
        "primaryType": "Voucher",
        "domain": {
            "name": EIP712_NAME,
            "version": EIP712_VERSION,
            "chainId": _uint(chain_id, "chain_id"),
            "verifyingContract": checksum_address(contract, "contract"),
        },
        "message": {
            "origin": checksum_address(origin, "origin"),
            "executor": checksum_address(executor, "executor"),
            "cumulativeAmount": _wei(cumulative_wei, "cumulative_wei"),
        },
    }


def _voucher_message(
    chain_id: int, contract: str, origin: str, executor: str, cumulative_wei: int
) -> SignableMessage:
    return encode_typed_data(full_message=voucher_typed_data(chain_id, contract, origin, executor, cumulative_wei))


def voucher_digest(chain_id: int, contract: str, origin: str, executor: str, cumulative_wei: int) -> bytes:
    """The 32-byte EIP-712 digest an origin signs (equals WWWServe.voucherDigest)."""
    message = _voucher_message(chain_id, contract, origin, executor, cumulative_wei)
    return keccak(b"\x19" + message.version + message.header + message.body)


def sign_voucher_offline(
    account: LocalAccount, chain_id: int, contract: str, executor: str, cumulative_wei: int
) -> bytes:
    """`account` (the origin) signs a voucher owing `executor` `cumulative_wei` in total: 65 bytes r||s||v."""
    message = _voucher_message(chain_id, contract, account.address, executor, cumulative_wei)
    return bytes(account.sign_message(message).signature)


def recover_voucher_signer(
    chain_id: int, contract: str, origin: str, executor: str, cumulative_wei: int, signature: bytes
) -> str:
    """The address that signed a voucher (the executor checks it equals `origin` before serving)."""
    message = _voucher_message(chain_id, contract, origin, executor, cumulative_wei)
    try:
        return str(Account.recover_message(message, signature=_signature(signature)))
    except LedgerError:
        raise
    except Exception as exc:
        raise LedgerValueError(f"voucher signature cannot be recovered: {exc}") from exc


def vote_commitment(
    chain_id: int, contract: str, duel_id: int, round: int, judge: str, vote: int, salt: bytes | str
) -> bytes:
    """keccak256(abi_encode(chainId, contract, duelId, round, judge, uint8 vote, bytes32 salt)), as
    WWWServe.voteCommitment: bound to the chain, the contract, the duel, the round and the judge, so a
    commitment can be replayed nowhere else (the contract keeps its first 16 bytes)."""
    return keccak(
        abi_encode(
            ["uint256", "address", "uint256", "uint256", "address", "uint8", "bytes32"],
            [
                _uint(chain_id, "chain_id"),
                checksum_address(contract, "contract"),
                _duel_id(duel_id),
                _round(round),
                checksum_address(judge, "judge"),
                int(_vote(vote)),
                bytes32(salt, "salt"),
            ],
        )
    )


def _plain(value: Any) -> Any:
    """Event/call values as plain Python: bytes, tuples, dicts (no HexBytes/AttributeDict)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _address_or_none(value: object) -> str | None:
    text = str(value)
    return None if text == ZERO_ADDRESS else text


# Deployment parameter <- public immutable getter.
_PARAM_GETTERS: dict[str, str] = {
    "min_stake_wei": "MIN_STAKE",
    "unbonding_period_s": "UNBONDING_PERIOD",
    "withdrawal_notice_s": "WITHDRAWAL_NOTICE",
    "k_judges": "K_JUDGES",
    "epoch_blocks": "EPOCH_BLOCKS",
    "answer_window_blocks": "ANSWER_WINDOW",
    "commit_window_blocks": "COMMIT_WINDOW",
    "reveal_window_blocks": "REVEAL_WINDOW",
    "appeal_window_blocks": "APPEAL_WINDOW",
    "publish_window_blocks": "PUBLISH_WINDOW",
    "attestation_ttl_s": "ATTESTATION_TTL",
    "duel_bond_wei": "DUEL_BOND",
    "duelist_fee_wei": "DUELIST_FEE",
    "judge_fee_wei": "JUDGE_FEE",
    "judge_penalty_wei": "JUDGE_PENALTY",
    "silent_penalty_wei": "SILENT_PENALTY",
    "reserve_payout_bps": "RESERVE_PAYOUT_BPS",
    "tree_depth": "DEPTH",
    "registration_bond_wei": "REGISTRATION_BOND",
}


class WWWServeClient:
    """The WWWServe contract at `address`, with `sender` acting for state-changing calls."""

    def __init__(
        self, w3: Web3, address: str, sender: TxSender | None = None, *, retry: RetryPolicy | None = None
    ) -> None:
        self._w3 = w3
        self._address = checksum_address(address, "contract address")
        self._sender = sender
        self._retry = retry or (sender.retry if sender is not None else RetryPolicy())
        self._contract: Contract = w3.eth.contract(address=self._address, abi=load_artifact(CONTRACT_NAME).abi)
        self._event_by_topic: dict[bytes, str] = {
            event_abi_to_log_topic(item): item["name"]
            for item in self._contract.abi
            if item["type"] == "event"
        }
        self._chain_id: int | None = None
        self._params: DeploymentParams | None = None

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def deploy_contracts(
        cls, w3: Web3, sender: TxSender, params: DeploymentParams | None = None
    ) -> DeployedContracts:
        """Deploy WWWServeExt, then WWWServe over it, both with `params`, from `sender`.

        Two transactions: WWWServe's constructor checks that the extension was built with the same
        parameters (`paramsDigest`), so a mismatched pair cannot be deployed."""
        args = (params or DeploymentParams()).constructor_args()
        ext_address, ext_block = cls._create(w3, sender, EXTENSION_CONTRACT, args)
        address, block = cls._create(w3, sender, CONTRACT_NAME, [*args, ext_address])
        return DeployedContracts(address, ext_address, block, ext_block)

    @staticmethod
    def _create(w3: Web3, sender: TxSender, name: str, args: Sequence[Any]) -> tuple[ChecksumAddress, int]:
        artifact = load_artifact(name)
        factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        data = factory.constructor(*args).data_in_transaction
        receipt = sender.send(to=None, data=data, function=f"{name}.constructor")
        address = receipt["contractAddress"]
        if address is None:  # pragma: no cover - a successful creation always has one
            raise DeploymentNotFoundError(f"the {name} deployment receipt has no contract address")
        return Web3.to_checksum_address(address), int(receipt["blockNumber"])

    @classmethod
    def deploy(
        cls, w3: Web3, sender: TxSender, params: DeploymentParams | None = None
    ) -> tuple[ChecksumAddress, int]:
        """Deploy both contracts (see `deploy_contracts`); returns (WWWServe's address, its block)."""
        deployed = cls.deploy_contracts(w3, sender, params)
        return deployed.address, deployed.block_number

    @classmethod
    def deploy_and_connect(
        cls, w3: Web3, sender: TxSender, params: DeploymentParams | None = None
    ) -> tuple[WWWServeClient, int]:
        """Deploy, then return a client bound to the new contract and WWWServe's deployment block."""
        address, block = cls.deploy(w3, sender, params)
        return cls(w3, address, sender), block

    def ensure_deployed(self) -> None:
        """Raise DeploymentNotFoundError unless this version of WWWServe is at `address` and this
        version of WWWServeExt at the extension address it delegates to."""
        self._ensure_code(self._address, CONTRACT_NAME)
        self._ensure_code(self.extension(), EXTENSION_CONTRACT)

    def _ensure_code(self, address: str, name: str) -> None:
        code = bytes(self._view_raw(lambda: self._w3.eth.get_code(Web3.to_checksum_address(address)), "eth_getCode"))
        if not code:
            raise DeploymentNotFoundError(f"no {name} contract at {address} on chain {self.chain_id}")
        expected = HexBytes(load_artifact(name).deployed_bytecode)
        # Vyper appends the immutables after the runtime code, so compare the prefix.
        if not code.startswith(bytes(expected)):
            raise DeploymentNotFoundError(
                f"the contract at {address} on chain {self.chain_id} is not this version of {name}"
            )

    # -- properties -----------------------------------------------------------------------------
    @property
    def address(self) -> ChecksumAddress:
        return self._address

    @property
    def w3(self) -> Web3:
        return self._w3

    @property
    def contract(self) -> Contract:
        """The underlying web3 contract (for event filters and log queries)."""
        return self._contract

    @property
    def sender(self) -> TxSender | None:
        return self._sender

    def with_sender(self, sender: TxSender) -> WWWServeClient:
        """The same contract, acting as another account."""
        return WWWServeClient(self._w3, self._address, sender, retry=self._retry)

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self._view_raw(lambda: self._w3.eth.chain_id, "eth_chainId"))
        return self._chain_id

    def extension(self) -> ChecksumAddress:
        """The WWWServeExt address this WWWServe delegatecalls (fixed at deployment)."""
        return Web3.to_checksum_address(str(self._view("EXTENSION")))

    # -- plumbing -------------------------------------------------------------------------------
    def _view_raw(self, op: Callable[[], T], function: str) -> T:
        return call_with_retries(self._w3, op, function=function, retry=self._retry)

    def _view(self, name: str, *args: Any) -> Any:
        fn = self._contract.functions[name](*args)
        return self._view_raw(fn.call, f"{CONTRACT_NAME}.{name}")

    def _transact(self, name: str, *args: Any, value_wei: int = 0, duel_id: int | None = None) -> TxResult:
        if self._sender is None:
            raise LedgerValueError(f"{CONTRACT_NAME}.{name} changes state: create the client with a TxSender")
        data = self._contract.encode_abi(name, args=list(args))
        receipt = self._sender.send(
            to=self._address, data=data, value_wei=value_wei, function=f"{CONTRACT_NAME}.{name}"
        )
        return self._result(receipt, duel_id)

    def _result(self, receipt: TxReceipt, duel_id: int | None = None) -> TxResult:
        return TxResult(
            tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            events=self.decode_events(receipt),
            duel_id=duel_id,
        )

    def decode_events(self, receipt: TxReceipt) -> tuple[DecodedEvent, ...]:
        """The WWWServe events in `receipt`, in log order (logs of other contracts are skipped)."""
        out: list[DecodedEvent] = []
        for log in receipt["logs"]:
            if log["address"] != self._address or not log["topics"]:
                continue
            name = self._event_by_topic.get(bytes(log["topics"][0]))
            if name is None:
                continue
            decoded = self._contract.events[name]().process_log(log)
            out.append(DecodedEvent(name=name, args=_plain(dict(decoded["args"])), log_index=int(log["logIndex"])))
        return tuple(out)

    def _me(self) -> str:
        if self._sender is None:
            raise LedgerValueError("this client has no sender; pass the account address explicitly")
        return self._sender.address

    def _duel_logs(self, event: str, duel_id: int, from_block: int) -> list[Any]:
        """Logs of `event` about one duel (every duel event indexes its duelId), in chain order."""
        did = _duel_id(duel_id)
        logs = self._view_raw(
            lambda: self._contract.events[event]().get_logs(
                from_block=_uint(from_block, "from_block"), argument_filters={"duelId": did}
            ),
            f"eth_getLogs({event})",
        )
        return sorted(logs, key=lambda lg: (lg["blockNumber"], lg["logIndex"]))

    # -- registry -------------------------------------------------------------------------------
    def register(
        self, pubkey: bytes | str, endpoint: str, models: Sequence[str], metadata: str = ""
    ) -> TxResult:
        """Register the sender as a node serving `models` at `endpoint`, results signed by `pubkey`. A sender
        without a registry slot sends the registration bond with the call (`release_slot` returns it)."""
        fields = self._node_fields(pubkey, endpoint, models, metadata)
        return self._transact("register", *fields, value_wei=self.registration_value_wei(self._me()))

    def registration_value_wei(self, address: str) -> int:
        """What `register` must be sent by `address`: the registration bond, unless it holds a slot already."""
        return 0 if self.registered_once(address) else self.params().registration_bond_wei

    def update_node(
        self, pubkey: bytes | str, endpoint: str, models: Sequence[str], metadata: str = ""
    ) -> TxResult:
        """Replace the sender's key, endpoint, models and metadata (model changes count from the
        next epoch, for challenger draws)."""
        return self._transact("updateNode", *self._node_fields(pubkey, endpoint, models, metadata))

    @staticmethod
    def _node_fields(
        pubkey: bytes | str, endpoint: str, models: Sequence[str], metadata: str
    ) -> tuple[bytes, str, list[str], str]:
        return (
            bytes32(pubkey, "pubkey (ed25519 public key)"),
            _text(endpoint, "endpoint", MAX_ENDPOINT_BYTES),
            _models(models),
            _text(metadata, "metadata", MAX_METADATA_BYTES),
        )

    def leave(self) -> TxResult:
        """Stop being routable and drawable (stake stays until unstaked; attested work stays duelable)."""
        return self._transact("leave")

    def release_slot(self) -> TxResult:
        """Give the registry slot back after leaving and withdrawing all stake; the registration bond
        becomes free credit. Registering again takes a new slot and a new bond."""
        return self._transact("releaseSlot")

    def node(self, address: str) -> NodeInfo | None:
        """The registry entry of `address`; None if it holds no registry slot (never registered, or gave
        its slot back)."""
        who = checksum_address(address)
        if not self.registered_once(who):
            return None
        pubkey, endpoint, models, metadata, active, leaf = self._view("nodes", who)
        return NodeInfo(
            address=who,
            pubkey=bytes(pubkey),
            endpoint=str(endpoint),
            models=tuple(str(m) for m in models),
            metadata=str(metadata),
            active=bool(active),
            leaf=int(leaf),
        )

    def get_models(self, address: str) -> tuple[str, ...]:
        """The models `address` serves (empty if it never registered)."""
        return tuple(str(m) for m in self._view("getModels", checksum_address(address)))

    def registered_once(self, address: str) -> bool:
        """Whether `address` holds a registry slot (registered, and has not released it)."""
        return bool(self._view("registeredOnce", checksum_address(address)))

    def pubkey_owner(self, pubkey: bytes | str) -> str | None:
        """The active node that registered `pubkey`, if any."""
        return _address_or_none(self._view("pubkeyOwner", bytes32(pubkey, "pubkey")))

    def active_node_count(self) -> int:
        return int(self._view("activeNodeCount"))

    def serves_model(self, address: str, model: str) -> bool:
        """Whether `address` counts as serving `model` (by name) in this epoch: only such nodes are
        drawn as challengers of a duel over that model. Registrations count from the next epoch."""
        name = _text(model, "model", MAX_MODEL_BYTES)
        return bool(self._view("servesModel", checksum_address(address), model_hash(name)))

    def model_id(self, model: str) -> int:
        """The contract's small id of a model name (0 if no node ever registered it)."""
        return int(self._view("modelId", model_hash(_text(model, "model", MAX_MODEL_BYTES))))

    def model_count(self) -> int:
        """How many distinct model names were ever registered."""
        return int(self._view("modelCount"))

    # -- credits and stake ----------------------------------------------------------------------
    def deposit(self, amount_wei: int) -> TxResult:
        """Deposit `amount_wei` of the sender's ETH as credit."""
        return self._transact("deposit", value_wei=_wei(amount_wei, "amount_wei"))

    def request_withdrawal(self, amount_wei: int) -> TxResult:
        """Move free credit into a pending withdrawal (payable after the notice period)."""
        return self._transact("requestWithdrawal", _wei(amount_wei, "amount_wei"))

    def cancel_withdrawal(self) -> TxResult:
        return self._transact("cancelWithdrawal")

    def withdraw(self) -> TxResult:
        """Pay the pending withdrawal out to the sender once the notice has passed."""
        return self._transact("withdraw")

    def stake(self, amount_wei: int) -> TxResult:
        """Move free credit into active stake (registered nodes only)."""
        return self._transact("stake", _wei(amount_wei, "amount_wei"))

    def request_unstake(self, amount_wei: int) -> TxResult:
        """Start unbonding `amount_wei` of active stake."""
        return self._transact("requestUnstake", _wei(amount_wei, "amount_wei"))

    def withdraw_stake(self) -> TxResult:
        """Move unbonded stake back to credit (all of it but what open duels bond)."""
        return self._transact("withdrawStake")

    def sync_weight(self, node: str) -> TxResult:
        """Bring `node`'s draw weight in line with its stake after duel slashes (anyone may; slashes
        leave the sortition tree alone to keep settlements cheap)."""
        return self._transact("syncWeight", checksum_address(node, "node"))

    def credit(self, address: str) -> int:
        return int(self._view("credit", checksum_address(address)))

    def pending_withdrawal(self, address: str) -> int:
        return int(self._view("pendingWithdrawal", checksum_address(address)))

    def withdrawable_at(self, address: str) -> int:
        """Unix time (s) from which the pending withdrawal can be paid out."""
        return int(self._view("withdrawableAt", checksum_address(address)))

    def active_stake(self, address: str) -> int:
        return int(self._view("activeStake", checksum_address(address)))

    def unbonding_stake(self, address: str) -> int:
        return int(self._view("unbondingStake", checksum_address(address)))

    def unbonding_end(self, address: str) -> int:
        """Unix time (s) at which the unbonding stake can be withdrawn (see also `unbonding_block`)."""
        return int(self._view("unbondingEnd", checksum_address(address)))

    def unbonding_block(self, address: str) -> int:
        """Block of the last unstake request: withdrawing also waits DUEL_SPAN_BLOCKS blocks after it."""
        return int(self._view("unbondingBlock", checksum_address(address)))

    def reserved(self, address: str) -> int:
        """Stake (wei) bonded by open duels in which `address` is a duelist (part of its stake)."""
        return int(self._view("reserved", checksum_address(address)))

    def reserve(self) -> int:
        """The duel reserve (wei): lost bonds and judge penalties, paid out to coherent judges."""
        return int(self._view("reserve"))

    def verdicts(self) -> VerdictCounts:
        """Decided verdicts so far, decayed (A won, B won): the counts behind the verdict weight that
        scales coherent seats' pay (`VerdictCounts.pay_scale`). The contract packs them in one word,
        A won in the low 128 bits, B won in the high 128."""
        word = int(self._view("verdicts"))
        return VerdictCounts(a_won=word & (2**128 - 1), b_won=word >> 128)

    def balances(self, address: str) -> Balances:
        """All of `address`'s money in the contract."""
        who = checksum_address(address)
        return Balances(
            credit_wei=self.credit(who),
            pending_withdrawal_wei=self.pending_withdrawal(who),
            withdrawable_at_s=self.withdrawable_at(who),
            active_stake_wei=self.active_stake(who),
            unbonding_stake_wei=self.unbonding_stake(who),
            unbonding_end_s=self.unbonding_end(who),
            unbonding_block=self.unbonding_block(who),
            bonded_wei=self.reserved(who),
        )

    # -- fee vouchers ---------------------------------------------------------------------------
    def sign_voucher(self, account: LocalAccount, executor: str, cumulative_wei: int) -> bytes:
        """`account` (the origin) signs a voucher owing `executor` `cumulative_wei` in total."""
        return sign_voucher_offline(account, self.chain_id, self._address, executor, cumulative_wei)

    def voucher_digest(self, origin: str, executor: str, cumulative_wei: int) -> bytes:
        """The EIP-712 digest of a voucher, computed locally."""
        return voucher_digest(self.chain_id, self._address, origin, executor, cumulative_wei)

    def voucher_digest_onchain(self, origin: str, executor: str, cumulative_wei: int) -> bytes:
        """The contract's own voucherDigest (to cross-check the local one)."""
        return bytes(
            self._view(
                "voucherDigest",
                checksum_address(origin, "origin"),
                checksum_address(executor, "executor"),
                _wei(cumulative_wei, "cumulative_wei"),
            )
        )

    def recover_voucher_signer(self, origin: str, executor: str, cumulative_wei: int, signature: bytes) -> str:
        return recover_voucher_signer(self.chain_id, self._address, origin, executor, cumulative_wei, signature)

    def claim_voucher(self, origin: str, executor: str, cumulative_wei: int, signature: bytes | str) -> TxResult:
        """Pay `executor` what `origin` owes under the signed voucher (anyone may submit it)."""
        return self._transact(
            "claimVoucher",
            checksum_address(origin, "origin"),
            checksum_address(executor, "executor"),
            _wei(cumulative_wei, "cumulative_wei"),
            _signature(signature),
        )

    def claimed(self, origin: str, executor: str) -> int:
        """Cumulative wei already paid from `origin` to `executor` under vouchers."""
        return int(self._view("claimed", checksum_address(origin, "origin"), checksum_address(executor, "executor")))

    # -- work attestations ----------------------------------------------------------------------
    def work_digest(self, work: WorkAttestation) -> bytes:
        """The EIP-712 digest the executor signs (computed locally with `ledger.work`)."""
        return _work_digest(self.chain_id, self._address, _work_unsigned(work))

    def work_digest_onchain(self, work: WorkAttestation) -> bytes:
        """The contract's own workDigest (to cross-check the local one)."""
        w = _work_unsigned(work)
        return bytes(self._view(
            "workDigest", checksum_address(w.origin, "work.origin"), checksum_address(w.executor, "work.executor"),
            w.request_id, w.request_hash, w.model_hash, w.answer_hash, w.inspect, w.issued_at,
        ))

    def sign_work(self, account: LocalAccount, work: WorkAttestation) -> WorkAttestation:
        """`account` (the executor) signs `work` for this contract and chain."""
        try:
            return sign_work(account, self.chain_id, self._address, _work_unsigned(work))
        except WorkError as exc:
            raise LedgerValueError(str(exc)) from None

    def inspect_commitment_onchain(self, request_id: bytes | str, wants_duel: bool, salt: bytes | str) -> bytes:
        """The contract's inspectCommitment (ledger.work.inspect_commitment computes it locally)."""
        if not isinstance(wants_duel, bool):
            raise LedgerValueError(f"wants_duel must be a bool, got {wants_duel!r}")
        return bytes(self._view("inspectCommitment", bytes32(request_id, "request_id"), wants_duel,
                                bytes32(salt, "salt")))

    def duel_id_of(self, origin: str, request_id: bytes | str) -> int:
        """The id a duel over this origin's request gets (computed locally; whether or not opened)."""
        return _duel_id_of(checksum_address(origin, "origin"), bytes32(request_id, "request_id"))

    def duel_id_of_onchain(self, origin: str, request_id: bytes | str) -> int:
        """The contract's duelIdOf (to cross-check `duel_id_of`)."""
        return int(self._view("duelIdOf", checksum_address(origin, "origin"), bytes32(request_id, "request_id")))

    # -- duels: transactions --------------------------------------------------------------------
    def open_duel(self, work: WorkAttestation, inspect_salt: bytes | str) -> TxResult:
        """Duel the answer `work.executor` (A) gave the sender (the origin): escrows DUEL_ESCROW of
        the sender's credit and bonds DUEL_BOND of A's stake. The result carries the new `duel_id`.

        Checked here first: the sender is `work.origin`, the signature recovers to the executor, and
        `inspect_salt` opens `work.inspect` as a commitment to duel (the contract checks them too)."""
        w = _work(work)
        salt = bytes32(inspect_salt, "inspect_salt")
        origin = checksum_address(w.origin, "work.origin")
        if self._sender is not None and origin != self._sender.address:
            raise LedgerValueError(f"only the work's origin {origin} can open its duel, not {self._sender.address}")
        self._check_attestation(w, salt)
        result = self._transact("openDuel", checksum_address(w.executor, "work.executor"), *_work_args(w, salt))
        duel_id = int(result.event("DuelOpened").args["duelId"])
        return TxResult(result.tx_hash, result.block_number, result.gas_used, result.events, duel_id)

    def _check_attestation(self, work: WorkAttestation, salt: bytes) -> None:
        if inspect_commitment(work.request_id, True, salt) != work.inspect:
            raise LedgerValueError("inspect_salt does not open work.inspect as a commitment to duel "
                                   "(wrong salt, or the origin committed not to duel this request)")
        try:
            check_work(self.chain_id, self._address, work)
        except WorkError as exc:
            raise LedgerValueError(f"work attestation: {exc}") from None

    def draw_challenger(self, duel_id: int) -> TxResult:
        """Record the duel's challenger B in its answer window (anyone may; B's answer does it too).
        Cancels the duel (escrow refunded) when nobody serving the model can be drawn."""
        did = _duel_id(duel_id)
        return self._transact("drawChallenger", did, duel_id=did)

    def answer_duel(self, duel_id: int, answer_hash: bytes | str) -> TxResult:
        """The challenger commits to its answer (keccak256 of its UTF-8 text) and the first panel is
        drawn. `NO_REQUEST` (32 zero bytes) says it could not get the request: then anyone may
        `publish_request` within PUBLISH_WINDOW blocks."""
        did = _duel_id(duel_id)
        return self._transact("answerDuel", did, bytes32(answer_hash, "answer_hash"), duel_id=did)

    def publish_request(
        self, duel_id: int, work: WorkAttestation, inspect_salt: bytes | str, request: bytes
    ) -> TxResult:
        """Put the request of a duel whose challenger could not get it on-chain (anyone may, with A's
        attestation and the origin's salt); B then answers in the next epoch's answer window.
        `request` is `ledger.work.request_bytes(...)`, which must hash to `work.request_hash`."""
        did = _duel_id(duel_id)
        w = _work(work)
        salt = bytes32(inspect_salt, "inspect_salt")
        body = _request(request)
        if self.duel_id_of(w.origin, w.request_id) != did:
            raise LedgerValueError(f"that work is not the work of duel {did}")
        if keccak(body) != w.request_hash:
            raise LedgerValueError("request does not hash to work.request_hash")
        self._check_attestation(w, salt)
        return self._transact("publishRequest", did, *_work_args(w, salt), body, duel_id=did)

    def draw_judges(self, duel_id: int) -> TxResult:
        """Draw the appeal round's seats in its commit window (anyone may; a judge's first commit
        does it too; the first round's are drawn with B's answer)."""
        did = _duel_id(duel_id)
        return self._transact("drawJudges", did, duel_id=did)

    def commit_vote(self, duel_id: int, commitment: bytes | str) -> TxResult:
        """Commit to a hidden vote for the current round; compute `commitment` with `vote_commitment`."""
        did = _duel_id(duel_id)
        return self._transact("commitVote", did, bytes32(commitment, "commitment"), duel_id=did)

    def reveal_vote(self, duel_id: int, vote: Vote | int, salt: bytes | str) -> TxResult:
        """Reveal the committed vote; it counts once per seat the judge holds."""
        did = _duel_id(duel_id)
        return self._transact("revealVote", did, int(_cast_vote(vote)), bytes32(salt, "salt"), duel_id=did)

    def appeal(self, duel_id: int) -> TxResult:
        """The duelist that lost round 1 pays APPEAL_FEE from its credit for a 2K+1-seat round 2."""
        did = _duel_id(duel_id)
        return self._transact("appeal", did, duel_id=did)

    def settle_duel(self, duel_id: int) -> TxResult:
        """End a duel once nothing can change it (anyone may; succeeds once): a verdict, or a
        cancellation when nobody answered, published or could be drawn."""
        did = _duel_id(duel_id)
        return self._transact("settleDuel", did, duel_id=did)

    # -- duels: views ---------------------------------------------------------------------------
    def duel(self, duel_id: int) -> DuelInfo:
        """A duel's state with the seats and revealed votes of every round reached; UnknownDuelError
        if there is none."""
        did = _duel_id(duel_id)
        origin, a, b, seed, deadline, bond, round_, status_, outcome = self._view("getDuel", did)
        status = DuelStatus(int(status_))
        round_no = int(round_)
        rounds = tuple(DuelRound(r, self.judges(did, r), self.votes(did, r)) for r in range(1, round_no + 1))
        deadline = int(deadline)
        blocks: dict[str, int | None] = {}
        if status is DuelStatus.AWAITING_ANSWER:
            blocks["answer_deadline_block"] = deadline
        elif status is DuelStatus.AWAITING_REQUEST:
            blocks["publish_deadline_block"] = deadline
        elif status is DuelStatus.JUDGING:
            p = self.params()
            blocks["commit_end_block"] = deadline
            blocks["reveal_end_block"] = deadline + p.reveal_window_blocks
            if round_no == 1:
                blocks["appeal_end_block"] = deadline + p.reveal_window_blocks + p.appeal_window_blocks
        current = rounds[-1] if rounds else DuelRound(0, (), ())
        return DuelInfo(
            duel_id=did,
            origin=str(origin),
            a=str(a),
            b=_address_or_none(b),
            seed_block=int(seed),
            deadline=deadline,
            bond_wei=int(bond),
            round=round_no,
            status=status,
            outcome=DuelOutcome(int(outcome)),
            judges=current.judges,
            votes=current.votes,
            rounds=rounds,
            **blocks,
        )

    def judges(self, duel_id: int, round: int) -> tuple[str, ...]:
        """The seats of a round in seat order (a judge drawn twice appears twice); empty if not drawn."""
        return tuple(str(j) for j in self._view("getJudges", _duel_id(duel_id), _round(round)))

    def votes(self, duel_id: int, round: int) -> tuple[Vote, ...]:
        """Revealed votes of a round, per seat (Vote.NONE = not revealed)."""
        return tuple(Vote(v) for v in self._view("getVotes", _duel_id(duel_id), _round(round)))

    def challenger_of(self, duel_id: int) -> str | None:
        """The challenger: the recorded one, or (in the answer window, before anyone drew it) the one
        a draw would pick now; None when there is none (yet)."""
        return _address_or_none(self._view("challengerOf", _duel_id(duel_id)))

    def commitment_of(self, duel_id: int, round: int, judge: str) -> bytes:
        """The first 16 bytes of the judge's commitment in that round (16 zero bytes if none)."""
        return bytes(self._view("commitmentOf", _duel_id(duel_id), _round(round), checksum_address(judge, "judge")))

    def vote_commitment(
        self, duel_id: int, round: int, judge: str, vote: Vote | int, salt: bytes | str
    ) -> bytes:
        """The commitment for `vote` with `salt`, computed locally (equals the contract's voteCommitment)."""
        return vote_commitment(self.chain_id, self._address, duel_id, round, judge, vote, salt)

    def vote_commitment_onchain(
        self, duel_id: int, round: int, judge: str, vote: Vote | int, salt: bytes | str
    ) -> bytes:
        return bytes(
            self._view(
                "voteCommitment",
                _duel_id(duel_id),
                _round(round),
                checksum_address(judge, "judge"),
                int(_vote(vote)),
                bytes32(salt, "salt"),
            )
        )

    def duel_hashes(self, duel_id: int, from_block: int = 0) -> DuelHashes:
        """(request, answer A, answer B) hashes of a duel, from its DuelOpened and DuelAnswered events
        (the contract keeps no hashes in storage). Answer B is None until B answered.

        `from_block` narrows the log search on chains whose RPC limits ranges (use the deployment block).
        """
        opened = self._duel_logs("DuelOpened", duel_id, from_block)
        if not opened:
            raise UnknownDuelError("Duel: unknown duel", f"{CONTRACT_NAME}.duel_hashes")
        args = opened[0]["args"]
        answered = self._duel_logs("DuelAnswered", duel_id, int(opened[0]["blockNumber"]))
        return DuelHashes(
            request_hash=bytes(args["requestHash"]),
            answer_a_hash=bytes(args["answerAHash"]),
            answer_b_hash=bytes(answered[-1]["args"]["answerBHash"]) if answered else None,
        )

    def published_request(self, duel_id: int, from_block: int = 0) -> bytes | None:
        """The request bytes published on-chain for a duel whose challenger could not get them, if any."""
        logs = self._duel_logs("RequestPublished", duel_id, from_block)
        return bytes(logs[-1]["args"]["request"]) if logs else None

    def duel_settlement(self, duel_id: int, from_block: int = 0) -> DuelSettlement | None:
        """What settling a duel decided, from its DuelSettled event; None while it is not settled (and
        for a cancelled duel, which has no verdict: see its DuelCancelled event)."""
        logs = self._duel_logs("DuelSettled", duel_id, from_block)
        if not logs:
            return None
        args = logs[0]["args"]
        return DuelSettlement(
            outcome=DuelOutcome(int(args["outcome"])),
            round=int(args["round"]),
            votes_a=int(args["votesA"]),
            votes_b=int(args["votesB"]),
            stake_moved_wei=int(args["stakeMoved"]),
            block_number=int(logs[0]["blockNumber"]),
            tx_hash="0x" + bytes(logs[0]["transactionHash"]).hex(),
        )

    def duel_cancel_reason(self, duel_id: int, from_block: int = 0) -> CancelReason | None:
        """Why a cancelled duel was cancelled, from its DuelCancelled event; None if it was not."""
        logs = self._duel_logs("DuelCancelled", duel_id, from_block)
        return CancelReason(int(logs[0]["args"]["reason"])) if logs else None

    def duel_ids(self, from_block: int = 0) -> list[int]:
        """Ids of every duel opened since `from_block`, oldest first (from DuelOpened events: duel
        ids are hashes, not a counter)."""
        logs = self._view_raw(
            lambda: self._contract.events.DuelOpened().get_logs(from_block=_uint(from_block, "from_block")),
            "eth_getLogs(DuelOpened)",
        )
        ordered = sorted(logs, key=lambda lg: (lg["blockNumber"], lg["logIndex"]))
        return [int(lg["args"]["duelId"]) for lg in ordered]

    # -- sortition ------------------------------------------------------------------------------
    def total_weight(self) -> int:
        """Total drawable stake (wei) in the sortition tree (live; draws read it frozen per epoch)."""
        return int(self._view("totalWeight"))

    def leaf_weight(self, leaf: int) -> int:
        return int(self._view("leafWeight", _uint(leaf, "leaf")))

    def leaf_owner(self, leaf: int) -> str | None:
        return _address_or_none(self._view("leafOwner", _uint(leaf, "leaf")))

    def leaf_count(self) -> int:
        """Leaves ever handed out (released ones included)."""
        return int(self._view("leafCount"))

    def leaf_since(self, leaf: int) -> int:
        """The block in which the leaf's current owner took it."""
        return int(self._view("leafSince", _uint(leaf, "leaf")))

    def free_leaf_count(self) -> int:
        """Released leaves waiting for a new owner."""
        return int(self._view("freeLeafCount"))

    # -- deployment parameters -----------------------------------------------------------------
    def params(self) -> DeploymentParams:
        """The deployment parameters, read once from the contract's public immutables."""
        if self._params is None:
            values = {f.name: int(self._view(_PARAM_GETTERS[f.name])) for f in fields(DeploymentParams)}
            try:
                self._params = DeploymentParams(**values)
            except ValueError as exc:
                raise ChainRequestError(f"{CONTRACT_NAME} immutables", f"out-of-range parameters: {exc}") from exc
        return self._params

    def duel_escrow_wei(self) -> int:
        """What an origin escrows per duel (the duelist fee + K judge fees)."""
        return int(self._view("DUEL_ESCROW"))

    def appeal_fee_wei(self) -> int:
        """What an appeal costs the losing duelist ((2K + 1) judge fees)."""
        return int(self._view("APPEAL_FEE"))

    def duel_span_blocks(self) -> int:
        """The most blocks a duel can stay open (appeal included)."""
        return int(self._view("DUEL_SPAN_BLOCKS"))

    def slot_cooldown_blocks(self) -> int:
        """Blocks a released registry slot waits before another node gets it."""
        return int(self._view("SLOT_COOLDOWN_BLOCKS"))

    def params_digest(self) -> bytes:
        """keccak256 of every deployment parameter (WWWServe and its extension agree on it)."""
        return bytes(self._view("paramsDigest"))

    def domain_separator(self) -> bytes:
        """The contract's EIP-712 domain separator (vouchers and work attestations)."""
        return bytes(self._view("DOMAIN_SEPARATOR"))


def _work_unsigned(work: object) -> WorkAttestation:
    """`work` checked for type and addresses (its signature is not needed to hash it)."""
    if not isinstance(work, WorkAttestation):
        raise LedgerValueError(f"work must be a wwwserve.ledger.work.WorkAttestation, got {type(work).__name__}")
    checksum_address(work.origin, "work.origin")
    checksum_address(work.executor, "work.executor")
    return work
