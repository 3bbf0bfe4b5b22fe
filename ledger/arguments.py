"""Check and encode what goes into a WWWServe call, and decode what comes out.

Inputs are validated before anything is sent (checksummed addresses, 32-byte keys and hashes, the
contract's integer ranges, string and list bounds, 65-byte signatures, a work attestation's type and
addresses), so a malformed call fails with a clear `LedgerValueError` naming the argument instead of an
ABI error or a bare revert. Rules that depend on chain state stay with the contract.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3 import Web3

from wwwserve.ledger.errors import InvalidAmountError, LedgerValueError
from wwwserve.ledger.records import Vote
from wwwserve.ledger.work import WorkAttestation

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


def uint(value: object, what: str, bits: int = 256) -> int:
    """`value` as an unsigned integer of `bits` bits (a bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**bits:
        raise LedgerValueError(f"{what} must be an integer in [0, 2**{bits}), got {value!r}")
    return value


def duel_id(value: object) -> int:
    """Duel ids are 63-bit numbers (`duelIdOf`); anything else names no duel."""
    return uint(value, "duel_id", DUEL_ID_BITS)


def round_number(value: object) -> int:
    """A duel round: 1 (the first round) or 2 (the appeal round)."""
    if isinstance(value, bool) or value not in ROUNDS:
        raise LedgerValueError(f"round must be 1 (first round) or 2 (appeal round), got {value!r}")
    return int(value)


def wei(value: object, what: str) -> int:
    """An amount of money: int wei that fits a uint256 (text amounts are parsed by `ledger.units`)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmountError(f"{what} must be int wei, got {type(value).__name__} (parse text with ledger.units)")
    if value < 0:
        raise InvalidAmountError(f"{what} must not be negative, got {value}")
    if value > MAX_UINT256:
        raise InvalidAmountError(f"{what} does not fit in uint256")
    return value


def text(value: object, what: str, max_bytes: int) -> str:
    """A string of at most `max_bytes` UTF-8 bytes (the contract's String[N])."""
    if not isinstance(value, str):
        raise LedgerValueError(f"{what} must be a string, got {type(value).__name__}")
    size = len(value.encode())
    if size > max_bytes:
        raise LedgerValueError(f"{what} is {size} bytes; the contract allows at most {max_bytes}")
    return value


def models(value: object) -> list[str]:
    """A node's list of model names, within the contract's DynArray[String[64], 16]."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise LedgerValueError(f"models must be a list of model names, got {type(value).__name__}")
    if len(value) > MAX_MODELS:
        raise LedgerValueError(f"{len(value)} models given; the contract allows at most {MAX_MODELS}")
    return [text(m, f"model name {m!r}", MAX_MODEL_BYTES) for m in value]


def vote(value: object) -> Vote:
    """Any `Vote` value, NONE included (as read back from the contract)."""
    try:
        return Vote(uint(value, "vote", 8))
    except ValueError:
        raise LedgerValueError(f"vote must be one of {[v.name for v in Vote]}, got {value!r}") from None


def cast_vote(value: object) -> Vote:
    """A vote a judge can reveal: A, B, ABSTAIN or NO_EVIDENCE (NONE means "not revealed")."""
    chosen = vote(value)
    if chosen is Vote.NONE:
        raise LedgerValueError("vote NONE (0) cannot be cast: reveal A, B, ABSTAIN or NO_EVIDENCE")
    return chosen


def signature(value: object, what: str = "voucher signature") -> bytes:
    """A 65-byte r || s || v signature (bytes or 0x-hex)."""
    if isinstance(value, str):
        value = HexBytes(value)
    if not isinstance(value, bytes | bytearray) or len(value) != 65:
        size = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise LedgerValueError(f"{what} must be 65 bytes (r, s, v), got {size}")
    return bytes(value)


def request_body(value: object) -> bytes:
    """The bytes of a duel's request as published on-chain (at most MAX_REQUEST_BYTES)."""
    if not isinstance(value, bytes | bytearray):
        raise LedgerValueError(
            f"request must be bytes (wwwserve.ledger.work.request_bytes), got {type(value).__name__}")
    if len(value) > MAX_REQUEST_BYTES:
        raise LedgerValueError(f"request is {len(value)} bytes; the contract takes at most {MAX_REQUEST_BYTES}")
    return bytes(value)


def work(value: object) -> WorkAttestation:
    """A signed work attestation: its type, its addresses and its signature's length."""
    if not isinstance(value, WorkAttestation):
        raise LedgerValueError(f"work must be a wwwserve.ledger.work.WorkAttestation, got {type(value).__name__}")
    checksum_address(value.origin, "work.origin")
    checksum_address(value.executor, "work.executor")
    signature(value.signature, "work signature")
    return value


def work_unsigned(work: object) -> WorkAttestation:
    """`work` checked for type and addresses (its signature is not needed to hash it)."""
    if not isinstance(work, WorkAttestation):
        raise LedgerValueError(f"work must be a wwwserve.ledger.work.WorkAttestation, got {type(work).__name__}")
    checksum_address(work.origin, "work.origin")
    checksum_address(work.executor, "work.executor")
    return work


def work_args(work: WorkAttestation, inspect_salt: bytes) -> list[Any]:
    """The attestation as openDuel/publishRequest take it (after the executor: requestId .. signature)."""
    return [work.request_id, work.request_hash, work.model_hash, work.answer_hash,
            bytes32(inspect_salt, "inspect_salt"), work.issued_at, work.signature]


def plain(value: Any) -> Any:
    """Event/call values as plain Python: bytes, tuples, dicts (no HexBytes/AttributeDict)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, list | tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value


def address_or_none(value: object) -> str | None:
    """An address the contract returned, None for the zero address ("nobody")."""
    text = str(value)
    return None if text == ZERO_ADDRESS else text
