"""Typed client of the WWWServe contract: one method per contract function, frozen dataclasses out.

`WWWServeClient(w3, address, sender)` wraps the deployed contract. Views work without a sender;
state-changing methods need a `TxSender` (the account that acts) and return a `TxResult` with the
receipt's decoded events. Inputs are validated before anything is sent (checksummed addresses,
32-byte keys and hashes, the contract's string and list bounds), so malformed calls fail with a
clear `LedgerValueError` instead of an ABI or bare-revert error; rules that depend on chain state
stay with the contract and come back as the typed errors of `ledger.errors`.

Off-chain helpers mirror the contract byte for byte: `voucher_typed_data`/`sign_voucher` (EIP-712,
domain "WWWServe" version "1") and `vote_commitment`.
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

from contracts import load_artifact
from ledger.errors import (
    ChainRequestError,
    DeploymentNotFoundError,
    InvalidAmountError,
    LedgerError,
    LedgerValueError,
    UnknownDuelError,
)
from ledger.params import DeploymentParams
from ledger.tx import RetryPolicy, TxSender, call_with_retries

T = TypeVar("T")

CONTRACT_NAME = "WWWServe"
EIP712_NAME = "WWWServe"
EIP712_VERSION = "1"
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"

# Bounds of the contract's types (WWWServe.vy: String[256], DynArray[String[64], 16], String[1024]).
MAX_ENDPOINT_BYTES = 256
MAX_MODELS = 16
MAX_MODEL_BYTES = 64
MAX_METADATA_BYTES = 1024
MAX_UINT256 = 2**256 - 1


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
    AWAITING_JUDGES = 1
    VOTING = 2
    SETTLED = 3
    CANCELLED = 4


class DuelOutcome(enum.IntEnum):
    """How a settled duel ended (contract OUTCOME_*); NONE until settled."""

    NONE = 0
    A_WON = 1
    B_WON = 2
    TIE = 3
    VOIDED = 4


class SlashReason(enum.IntEnum):
    """`reason` of the StakeSlashed event (contract SLASH_*)."""

    LOST_DUEL = 1
    MINORITY_JUDGE = 2
    ABSTAINED_JUDGE = 3


class RewardReason(enum.IntEnum):
    """`reason` of the DuelRewardPaid event (contract REWARD_*)."""

    STAKE_WON = 1
    JUDGE_POOL = 2
    DUELIST_FEE = 3
    JUDGE_FEE = 4
    ESCROW_REFUND = 5


class CancelReason(enum.IntEnum):
    """`reason` of the DuelCancelled event (contract CANCEL_*)."""

    TOO_FEW_JUDGES = 1
    NOT_DRAWN = 2


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
    # set by open_duel only
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
    locked_until_block: int

    @property
    def stake_wei(self) -> int:
        """Active plus unbonding stake (both are slashable)."""
        return self.active_stake_wei + self.unbonding_stake_wei

    @property
    def total_wei(self) -> int:
        """Credit, pending withdrawal and stake together."""
        return self.credit_wei + self.pending_withdrawal_wei + self.stake_wei


@dataclass(frozen=True)
class DuelInfo:
    """A duel as the contract stores it. Block numbers are 0 until the phase is reached."""

    duel_id: int
    origin: str
    a: str
    b: str
    seed_block: int
    commit_end_block: int
    reveal_end_block: int
    status: DuelStatus
    outcome: DuelOutcome
    judges: tuple[str, ...]
    votes: tuple[Vote, ...]


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


def _signature(value: object) -> bytes:
    if isinstance(value, str):
        value = HexBytes(value)
    if not isinstance(value, bytes | bytearray) or len(value) != 65:
        size = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise LedgerValueError(f"voucher signature must be 65 bytes (r, s, v), got {size}")
    return bytes(value)


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


def vote_commitment(chain_id: int, contract: str, duel_id: int, judge: str, vote: int, salt: bytes | str) -> bytes:
    """keccak256(abi_encode(chainId, contract, duelId, judge, vote, salt)), as WWWServe.voteCommitment."""
    return keccak(
        abi_encode(
            ["uint256", "address", "uint256", "address", "uint8", "bytes32"],
            [
                _uint(chain_id, "chain_id"),
                checksum_address(contract, "contract"),
                _uint(duel_id, "duel_id"),
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


# Deployment parameter <- public immutable getter.
_PARAM_GETTERS: dict[str, str] = {
    "min_stake_wei": "MIN_STAKE",
    "unbonding_period_s": "UNBONDING_PERIOD",
    "withdrawal_notice_s": "WITHDRAWAL_NOTICE",
    "k_judges": "K_JUDGES",
    "seed_delay_blocks": "SEED_DELAY",
    "draw_window_blocks": "DRAW_WINDOW",
    "commit_window_blocks": "COMMIT_WINDOW",
    "reveal_window_blocks": "REVEAL_WINDOW",
    "settle_window_blocks": "SETTLE_WINDOW",
    "gamma_bps": "GAMMA_BPS",
    "minority_slash_bps": "MINORITY_SLASH_BPS",
    "abstain_slash_bps": "ABSTAIN_SLASH_BPS",
    "duelist_fee_wei": "DUELIST_FEE",
    "judge_fee_wei": "JUDGE_FEE",
    "tree_depth": "DEPTH",
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
    def deploy(
        cls, w3: Web3, sender: TxSender, params: DeploymentParams | None = None
    ) -> tuple[ChecksumAddress, int]:
        """Deploy WWWServe with `params` from `sender`; returns (contract address, block number)."""
        artifact = load_artifact(CONTRACT_NAME)
        factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        data = factory.constructor(*(params or DeploymentParams()).constructor_args()).data_in_transaction
        receipt = sender.send(to=None, data=data, function=f"{CONTRACT_NAME}.constructor")
        address = receipt["contractAddress"]
        if address is None:  # pragma: no cover - a successful creation always has one
            raise DeploymentNotFoundError("the deployment receipt has no contract address")
        return Web3.to_checksum_address(address), int(receipt["blockNumber"])

    @classmethod
    def deploy_and_connect(
        cls, w3: Web3, sender: TxSender, params: DeploymentParams | None = None
    ) -> tuple[WWWServeClient, int]:
        """Deploy, then return a client bound to the new contract and the deployment block."""
        address, block = cls.deploy(w3, sender, params)
        return cls(w3, address, sender), block

    def ensure_deployed(self) -> None:
        """Raise DeploymentNotFoundError unless WWWServe's runtime code is at `address`."""
        code = bytes(self._view_raw(lambda: self._w3.eth.get_code(self._address), "eth_getCode"))
        if not code:
            raise DeploymentNotFoundError(f"no contract at {self._address} on chain {self.chain_id}")
        expected = HexBytes(load_artifact(CONTRACT_NAME).deployed_bytecode)
        # Vyper appends the immutables after the runtime code, so compare the prefix.
        if not code.startswith(bytes(expected)):
            raise DeploymentNotFoundError(
                f"the contract at {self._address} on chain {self.chain_id} is not this version of {CONTRACT_NAME}"
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

    # -- plumbing -------------------------------------------------------------------------------
    def _view_raw(self, op: Callable[[], T], function: str) -> T:
        return call_with_retries(self._w3, op, function=function, retry=self._retry)

    def _view(self, name: str, *args: Any) -> Any:
        fn = self._contract.functions[name](*args)
        return self._view_raw(fn.call, f"{CONTRACT_NAME}.{name}")

    def _transact(self, name: str, *args: Any, value_wei: int = 0) -> TxResult:
        if self._sender is None:
            raise LedgerValueError(f"{CONTRACT_NAME}.{name} changes state: create the client with a TxSender")
        data = self._contract.encode_abi(name, args=list(args))
        receipt = self._sender.send(
            to=self._address, data=data, value_wei=value_wei, function=f"{CONTRACT_NAME}.{name}"
        )
        return self._result(receipt)

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

    # -- registry -------------------------------------------------------------------------------
    def register(
        self, pubkey: bytes | str, endpoint: str, models: Sequence[str], metadata: str = ""
    ) -> TxResult:
        """Register the sender as a node serving `models` at `endpoint`, results signed by `pubkey`."""
        return self._transact("register", *self._node_fields(pubkey, endpoint, models, metadata))

    def update_node(
        self, pubkey: bytes | str, endpoint: str, models: Sequence[str], metadata: str = ""
    ) -> TxResult:
        """Replace the sender's key, endpoint, models and metadata."""
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
        """Stop being routable and a judge candidate (stake stays until unstaked)."""
        return self._transact("leave")

    def node(self, address: str) -> NodeInfo | None:
        """The registry entry of `address`; None if it never registered."""
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
        return bool(self._view("registeredOnce", checksum_address(address)))

    def pubkey_owner(self, pubkey: bytes | str) -> str | None:
        """The active node that registered `pubkey`, if any."""
        owner = str(self._view("pubkeyOwner", bytes32(pubkey, "pubkey")))
        return None if owner == ZERO_ADDRESS else owner

    def active_node_count(self) -> int:
        return int(self._view("activeNodeCount"))

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
        """Move fully unbonded stake back to credit."""
        return self._transact("withdrawStake")

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
        """Unix time (s) at which the unbonding stake can be withdrawn."""
        return int(self._view("unbondingEnd", checksum_address(address)))

    def locked_until(self, address: str) -> int:
        """Block number until which the stake cannot be withdrawn (open duels)."""
        return int(self._view("lockedUntil", checksum_address(address)))

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
            locked_until_block=self.locked_until(who),
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

    # -- duels ----------------------------------------------------------------------------------
    def open_duel(
        self,
        a: str,
        b: str,
        question_hash: bytes | str,
        answer_a_hash: bytes | str,
        answer_b_hash: bytes | str,
    ) -> TxResult:
        """Open a duel between executors `a` and `b`; the result carries the new `duel_id`."""
        result = self._transact(
            "openDuel",
            checksum_address(a, "duelist a"),
            checksum_address(b, "duelist b"),
            bytes32(question_hash, "question_hash"),
            bytes32(answer_a_hash, "answer_a_hash"),
            bytes32(answer_b_hash, "answer_b_hash"),
        )
        duel_id = int(result.event("DuelOpened").args["duelId"])
        return TxResult(
            tx_hash=result.tx_hash,
            block_number=result.block_number,
            gas_used=result.gas_used,
            events=result.events,
            duel_id=duel_id,
        )

    def draw_judges(self, duel_id: int) -> TxResult:
        """Draw the judges (or cancel the duel if too little stake is eligible)."""
        return self._transact("drawJudges", _uint(duel_id, "duel_id"))

    def cancel_undrawn_duel(self, duel_id: int) -> TxResult:
        return self._transact("cancelUndrawnDuel", _uint(duel_id, "duel_id"))

    def commit_vote(self, duel_id: int, commitment: bytes | str) -> TxResult:
        """Commit to a hidden vote; compute `commitment` with `vote_commitment`."""
        return self._transact("commitVote", _uint(duel_id, "duel_id"), bytes32(commitment, "commitment"))

    def reveal_vote(self, duel_id: int, vote: Vote | int, salt: bytes | str) -> TxResult:
        return self._transact("revealVote", _uint(duel_id, "duel_id"), int(_vote(vote)), bytes32(salt, "salt"))

    def settle_duel(self, duel_id: int) -> TxResult:
        return self._transact("settleDuel", _uint(duel_id, "duel_id"))

    def vote_commitment(self, duel_id: int, judge: str, vote: Vote | int, salt: bytes | str) -> bytes:
        """The commitment for `vote` with `salt`, computed locally (equals the contract's voteCommitment)."""
        return vote_commitment(self.chain_id, self._address, duel_id, judge, vote, salt)

    def vote_commitment_onchain(self, duel_id: int, judge: str, vote: Vote | int, salt: bytes | str) -> bytes:
        return bytes(
            self._view(
                "voteCommitment",
                _uint(duel_id, "duel_id"),
                checksum_address(judge, "judge"),
                _uint(vote, "vote", 8),
                bytes32(salt, "salt"),
            )
        )

    def duel(self, duel_id: int) -> DuelInfo:
        """A duel's state, judges and revealed votes; UnknownDuelError if there is none."""
        did = _uint(duel_id, "duel_id")
        origin, a, b, seed, commit_end, reveal_end, status, outcome = self._view("getDuel", did)
        return DuelInfo(
            duel_id=did,
            origin=str(origin),
            a=str(a),
            b=str(b),
            seed_block=int(seed),
            commit_end_block=int(commit_end),
            reveal_end_block=int(reveal_end),
            status=DuelStatus(status),
            outcome=DuelOutcome(outcome),
            judges=self.get_judges(did),
            votes=self.get_votes(did),
        )

    def get_judges(self, duel_id: int) -> tuple[str, ...]:
        return tuple(str(j) for j in self._view("getJudges", _uint(duel_id, "duel_id")))

    def get_votes(self, duel_id: int) -> tuple[Vote, ...]:
        """Revealed votes in panel order (Vote.NONE = not revealed)."""
        return tuple(Vote(v) for v in self._view("getVotes", _uint(duel_id, "duel_id")))

    def duel_hashes(self, duel_id: int, from_block: int = 0) -> tuple[bytes, bytes, bytes]:
        """(question, answer A, answer B) hashes of a duel, from its DuelOpened event (not kept in storage).

        `from_block` narrows the log search on chains whose RPC limits ranges (use the deployment block).
        """
        did = _uint(duel_id, "duel_id")
        logs = self._view_raw(
            lambda: self._contract.events.DuelOpened().get_logs(
                from_block=from_block, argument_filters={"duelId": did}
            ),
            "eth_getLogs(DuelOpened)",
        )
        if not logs:
            raise UnknownDuelError("Duel: unknown duel", "WWWServe.duel_hashes")
        args = logs[0]["args"]
        return bytes(args["questionHash"]), bytes(args["answerAHash"]), bytes(args["answerBHash"])

    def duel_settlement(self, duel_id: int, from_block: int = 0) -> dict[str, int] | None:
        """What settling a duel moved, from its DuelSettled event: outcome, votes_a, votes_b, stake_moved_wei,
        judge_pool_wei; None while it is not settled."""
        did = _uint(duel_id, "duel_id")
        logs = self._view_raw(
            lambda: self._contract.events.DuelSettled().get_logs(
                from_block=from_block, argument_filters={"duelId": did}
            ),
            "eth_getLogs(DuelSettled)",
        )
        if not logs:
            return None
        args = logs[0]["args"]
        return {"outcome": int(args["outcome"]), "votes_a": int(args["votesA"]), "votes_b": int(args["votesB"]),
                "stake_moved_wei": int(args["stakeMoved"]), "judge_pool_wei": int(args["judgePool"])}

    def duel_count(self) -> int:
        """Duels opened so far (ids run 1..duel_count)."""
        return int(self._view("duelCount"))

    def commitment(self, duel_id: int, judge: str) -> bytes:
        """A judge's unrevealed commitment (zero bytes when none or already revealed)."""
        return bytes(self._view("commitments", _uint(duel_id, "duel_id"), checksum_address(judge, "judge")))

    # -- sortition ------------------------------------------------------------------------------
    def total_weight(self) -> int:
        """Total routable stake (wei) in the sortition tree."""
        return int(self._view("totalWeight"))

    def leaf_weight(self, leaf: int) -> int:
        return int(self._view("leafWeight", _uint(leaf, "leaf")))

    def leaf_owner(self, leaf: int) -> str | None:
        owner = str(self._view("leafOwner", _uint(leaf, "leaf")))
        return None if owner == ZERO_ADDRESS else owner

    def leaf_count(self) -> int:
        return int(self._view("leafCount"))

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
        """What an origin escrows per duel (2 duelist fees + K judge fees)."""
        return int(self._view("DUEL_ESCROW"))

    def domain_separator(self) -> bytes:
        """The contract's EIP-712 domain separator."""
        return bytes(self._view("DOMAIN_SEPARATOR"))
