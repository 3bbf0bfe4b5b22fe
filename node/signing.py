"""Result signatures: the executor's ed25519 attestation that it produced an output for a prompt.

DESIGN.md §2 step 4. The executor signs a `ResultClaim` (chain id, request id, prompt hash, output hash,
model, executor address, timestamp, token usage) with its node identity key (`ledger/identity.py`); the
signature travels back hop by hop to the user in the response's `wwwserve` extension field, and anyone can
check it against the public key the executor registered on-chain (`verify_against_chain`).

What is signed is `ResultClaim.canonical_bytes()`: a domain tag followed by every field, each one
length-prefixed, in a fixed order. No JSON (key order, whitespace and number formats vary between
encoders) and no plain concatenation (`"ab" + "c"` == `"a" + "bc"`): two different claims can never
produce the same bytes, and the tag keeps a result signature from being valid as any other message the
same key signs (peer envelopes use `wwwserve/peer/v1`).

The token usage (`TokenUsage`: prompt and completion tokens) is signed since `wwwserve/result/v2`. No fee
in the network depends on it (fees are per request, `node.managers.fees`), but the answer states it and
OpenAI clients account cost and context by it: unsigned, any node on the route could change it unseen.
A verifier given the answer's `usage` refuses one that differs from the signed numbers
(`UsageMismatchError`); the numbers travel in the `wwwserve` extension too, so an answer whose `usage`
was stripped (a stream without `include_usage` has none) still says what was signed.

The `route` is deliberately *not* signed. It is routing metadata that the forwarding nodes add hop by hop;
the executor cannot vouch for hops it never saw (an upstream node can claim any route it likes), and
signing it would force every change of the route to be re-signed by someone whose signature the user can
tie to nothing. The signature answers "which registered node produced this output for this prompt with
this model"; the route is informational only and must not be used for payment or blame (fees are settled
with signed vouchers, duels with the signed result itself).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import nacl.exceptions
import nacl.signing
from eth_utils.address import is_address, is_checksum_address, to_canonical_address, to_checksum_address

from wwwserve.errors import WWWServeError
from wwwserve.ledger import safejson

RESULT_DOMAIN_TAG = b"wwwserve/result/v2\x00"
"""Prefix of every signed result; bump the version when the field list changes (v2 added the usage)."""

SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32
SHA256_BYTES = 32
MAX_TEXT_FIELD_BYTES = 256
"""Upper bound on `request_id` and `model` (UTF-8 bytes): keeps a hostile response from being huge."""
MAX_ROUTE_HOPS = 64
MAX_UINT64 = 2**64 - 1

_HEX_RE = re.compile(r"(?:0[xX])?([0-9a-fA-F]*)")


# ---------------------------------------------------------------------------------------------
# errors


class SigningError(WWWServeError):
    """Root of every error raised while building or checking a signed result."""


class MalformedSignedResultError(SigningError, ValueError):
    """A field is missing, has the wrong type, bad hex or the wrong length; nothing was verified."""


class SignerMismatchError(SigningError):
    """The result was signed by a key other than the one expected (e.g. the key registered on-chain)."""


class SignerUnknownError(SigningError, LookupError):
    """The executor named in the result never registered on-chain, so no key can vouch for it."""


class ChainMismatchError(SigningError):
    """The result was signed for another chain than the one it is checked against."""


class SignatureInvalidError(SigningError):
    """The signature does not verify over the claim with the given public key."""


class OutputHashMismatchError(SigningError):
    """The output text does not hash to the `output_sha256` the executor signed."""


class PromptHashMismatchError(SigningError):
    """The prompt does not hash to the `prompt_sha256` the executor signed."""


class UsageMismatchError(SigningError):
    """The answer's token usage is not the usage the executor signed."""


# ---------------------------------------------------------------------------------------------
# hashing helpers


def sha256_text(text: str) -> bytes:
    """SHA-256 of `text` encoded as UTF-8 (32 bytes)."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def _drop_none(value: Any) -> Any:
    # `{"name": null}` and a missing "name" mean the same to the OpenAI API, and pydantic models dump
    # unset optionals as None: dropping them makes the user's raw JSON and the node's parsed model hash alike.
    if isinstance(value, Mapping):
        return {str(k): _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_drop_none(v) for v in value]
    return value


def canonical_json(value: Any) -> bytes:
    """`value` as canonical JSON: sorted keys, no whitespace, UTF-8, None-valued keys dropped, no NaN."""
    try:
        text = json.dumps(_drop_none(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise MalformedSignedResultError(f"prompt is not canonical-JSON serialisable: {exc}") from None
    return text.encode("utf-8")


def prompt_hash(prompt: Sequence[Mapping[str, Any]] | str, model: str) -> bytes:
    """The canonical 32-byte hash of a request's prompt for `model`.

    Chat requests pass their `messages` (list of message objects, exactly as the client sent them);
    completion requests pass the prompt string. The two are hashed under different keys
    (`{"messages": ..., "model": ...}` vs `{"model": ..., "prompt": ...}`), so a chat prompt never
    collides with a completion prompt. Sampling parameters are not part of the hash.
    """
    if isinstance(prompt, str):
        doc: dict[str, Any] = {"model": model, "prompt": prompt}
    else:
        doc = {"messages": list(prompt), "model": model}
    return hashlib.sha256(canonical_json(doc)).digest()


# ---------------------------------------------------------------------------------------------
# the claim


def _lp(data: bytes) -> bytes:
    """`data` prefixed with its length as a 4-byte big-endian integer."""
    return struct.pack(">I", len(data)) + data


def _u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def _check_uint64(value: object, what: str, minimum: int = 0) -> int:
    # bool is an int subclass: `True` as a chain id is a bug, not chain 1.
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= MAX_UINT64:
        raise MalformedSignedResultError(f"{what} must be an integer in [{minimum}, 2**64-1], got {value!r}")
    return value


def _check_text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise MalformedSignedResultError(f"{what} must be a non-empty string, got {value!r}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise MalformedSignedResultError(f"{what} is not valid Unicode (lone surrogate)") from None
    if size > MAX_TEXT_FIELD_BYTES:
        raise MalformedSignedResultError(f"{what} is {size} bytes, the limit is {MAX_TEXT_FIELD_BYTES}")
    return value


def _check_bytes(value: object, what: str, size: int) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        got = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise MalformedSignedResultError(f"{what} must be {size} bytes, got {got}")
    return value


@functools.lru_cache(maxsize=4096)
def _checksummed(value: str) -> tuple[bool, str]:
    """(True, checksummed address) or (False, the problem). Cached: the same few addresses recur on every
    result, and EIP-55 (keccak in pure Python) was a tenth of a busy node's CPU."""
    if not is_address(value):
        return False, "must be a 20-byte hex address"
    digits = value[2:] if value.startswith(("0x", "0X")) else value
    # All-lower or all-upper hex carries no checksum; mixed case does and must match (EIP-55).
    if digits != digits.lower() and digits != digits.upper() and not is_checksum_address(value):
        return False, "has a wrong EIP-55 checksum"
    return True, str(to_checksum_address(value))


def check_address(value: object, what: str) -> str:
    """`value` as a checksummed EVM address; a mixed-case address with a wrong EIP-55 checksum is refused."""
    ok, result = _checksummed(value) if isinstance(value, str) else (False, "must be a 20-byte hex address")
    if not ok:
        raise MalformedSignedResultError(f"{what} {result}, got {value!r}")
    return result


@dataclass(frozen=True)
class TokenUsage:
    """An answer's token counts, as the OpenAI `usage` object states them (`total_tokens` is their sum)."""

    prompt_tokens: int
    completion_tokens: int

    def __post_init__(self) -> None:
        _check_uint64(self.prompt_tokens, "usage.prompt_tokens")
        _check_uint64(self.completion_tokens, "usage.completion_tokens")

    @property
    def total_tokens(self) -> int:
        """Prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens

    def to_json(self) -> dict[str, int]:
        """The OpenAI `usage` object."""
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens}

    @classmethod
    def from_json(cls, data: object, what: str = "usage") -> TokenUsage:
        """Parse an OpenAI `usage` object; a `total_tokens` that is not the sum is refused (other keys,
        such as `prompt_tokens_details`, are ignored). `MalformedSignedResultError` otherwise."""
        if not isinstance(data, Mapping):
            raise MalformedSignedResultError(f"{what} must be an object with prompt_tokens and completion_tokens, "
                                             f"got {data!r}")
        missing = [name for name in ("prompt_tokens", "completion_tokens") if name not in data]
        if missing:
            raise MalformedSignedResultError(f"{what} lacks {', '.join(missing)}")
        usage = cls(_check_uint64(data["prompt_tokens"], f"{what}.prompt_tokens"),
                    _check_uint64(data["completion_tokens"], f"{what}.completion_tokens"))
        total = data.get("total_tokens")
        if total is not None and total != usage.total_tokens:
            raise MalformedSignedResultError(f"{what}.total_tokens is {total!r}, not prompt_tokens + "
                                             f"completion_tokens = {usage.total_tokens}")
        return usage

    def __str__(self) -> str:
        return f"{self.prompt_tokens} prompt + {self.completion_tokens} completion tokens"


@dataclass(frozen=True)
class ResultClaim:
    """What the executor attests: it produced the output with this hash for this prompt with this model.

    Fields are validated on construction; `executor` is normalised to its checksummed form.
    """

    chain_id: int
    request_id: str
    prompt_sha256: bytes
    output_sha256: bytes
    model: str
    executor: str
    timestamp_ms: int
    usage: TokenUsage

    def __post_init__(self) -> None:
        _check_uint64(self.chain_id, "chain_id", minimum=1)
        _check_text(self.request_id, "request_id")
        _check_bytes(self.prompt_sha256, "prompt_sha256", SHA256_BYTES)
        _check_bytes(self.output_sha256, "output_sha256", SHA256_BYTES)
        _check_text(self.model, "model")
        object.__setattr__(self, "executor", check_address(self.executor, "executor"))
        _check_uint64(self.timestamp_ms, "timestamp_ms")
        if not isinstance(self.usage, TokenUsage):
            raise MalformedSignedResultError(f"usage must be a TokenUsage, got {type(self.usage).__name__}")

    def canonical_bytes(self) -> bytes:
        """The exact bytes the executor signs: domain tag, then every field length-prefixed, in order."""
        return RESULT_DOMAIN_TAG + b"".join(
            _lp(part)
            for part in (
                _u64(self.chain_id),
                self.request_id.encode("utf-8"),
                self.prompt_sha256,
                self.output_sha256,
                self.model.encode("utf-8"),
                # Raw 20 bytes, so the address's letter case can never change what is signed.
                to_canonical_address(self.executor),
                _u64(self.timestamp_ms),
                _u64(self.usage.prompt_tokens),
                _u64(self.usage.completion_tokens),
            )
        )


# ---------------------------------------------------------------------------------------------
# the signed result (wire form)


def _parse_hex(value: object, what: str, size: int) -> bytes:
    # bytes.fromhex would accept spaces ("ab cd"): only an optional 0x prefix and exact-length hex pass.
    match = _HEX_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None or len(match.group(1)) != 2 * size:
        raise MalformedSignedResultError(f"{what} must be {size} bytes as hex, got {value!r}")
    return bytes.fromhex(match.group(1))


@dataclass(frozen=True)
class SignedResult:
    """A `ResultClaim`, the executor's signature over it, its public key, and the (unsigned) route."""

    claim: ResultClaim
    signature: bytes
    public_key: bytes
    route: tuple[str, ...] = field(default=())
    """Node addresses the request passed, origin first. Not covered by the signature (module docstring)."""

    def __post_init__(self) -> None:
        if not isinstance(self.claim, ResultClaim):
            raise MalformedSignedResultError(f"claim must be a ResultClaim, got {type(self.claim).__name__}")
        _check_bytes(self.signature, "signature", SIGNATURE_BYTES)
        _check_bytes(self.public_key, "public_key", PUBLIC_KEY_BYTES)
        if isinstance(self.route, str | bytes) or not isinstance(self.route, Sequence):
            raise MalformedSignedResultError(f"route must be a list of addresses, got {self.route!r}")
        if len(self.route) > MAX_ROUTE_HOPS:
            raise MalformedSignedResultError(f"route has {len(self.route)} hops, the limit is {MAX_ROUTE_HOPS}")
        route = tuple(check_address(hop, f"route[{i}]") for i, hop in enumerate(self.route))
        object.__setattr__(self, "route", route)

    @property
    def executor(self) -> str:
        """The checksummed address (node id) of the node that produced and signed the result."""
        return self.claim.executor

    @property
    def request_id(self) -> str:
        """The request id the result answers."""
        return self.claim.request_id

    def with_route(self, route: Sequence[str]) -> SignedResult:
        """The same signed result with another route (the signature stays valid: the route is unsigned)."""
        return replace(self, route=tuple(route))

    def with_hop(self, address: str) -> SignedResult:
        """The same signed result with `address` appended to the route."""
        return self.with_route((*self.route, address))

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the response's `wwwserve` extension field (hex without 0x, ints as ints)."""
        return {
            "executor": self.claim.executor,
            "request_id": self.claim.request_id,
            "route": list(self.route),
            "prompt_sha256": self.claim.prompt_sha256.hex(),
            "output_sha256": self.claim.output_sha256.hex(),
            "model": self.claim.model,
            "chain_id": self.claim.chain_id,
            "timestamp_ms": self.claim.timestamp_ms,
            "usage": self.claim.usage.to_json(),
            "signature": self.signature.hex(),
            "public_key": self.public_key.hex(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str | bytes) -> SignedResult:
        """Parse the `wwwserve` extension (an object, or its JSON text); unknown keys are ignored.

        Raises `MalformedSignedResultError` for invalid JSON, a missing field, a wrong type, bad hex or
        a wrong length. Parsing checks shape only; call `verify_result` to check the signature.
        """
        if isinstance(data, str | bytes):
            try:
                data = safejson.loads(data)
            except (ValueError, UnicodeDecodeError) as exc:
                raise MalformedSignedResultError(f"wwwserve extension is not valid JSON: {exc}") from None
        if not isinstance(data, Mapping):
            raise MalformedSignedResultError(f"wwwserve extension must be a JSON object, got {type(data).__name__}")
        required = (
            "executor", "request_id", "route", "prompt_sha256", "output_sha256",
            "model", "chain_id", "timestamp_ms", "usage", "signature", "public_key",
        )  # fmt: skip
        missing = [name for name in required if name not in data]
        if missing:
            older = " (signed by a wwwserve node older than result v2, which did not sign the usage)" if (
                missing == ["usage"]) else ""
            raise MalformedSignedResultError(f"wwwserve extension lacks {', '.join(missing)}{older}")
        route = data["route"]
        if not isinstance(route, list):
            raise MalformedSignedResultError(f"route must be a list of addresses, got {route!r}")
        claim = ResultClaim(
            chain_id=data["chain_id"],
            request_id=data["request_id"],
            prompt_sha256=_parse_hex(data["prompt_sha256"], "prompt_sha256", SHA256_BYTES),
            output_sha256=_parse_hex(data["output_sha256"], "output_sha256", SHA256_BYTES),
            model=data["model"],
            executor=data["executor"],
            timestamp_ms=data["timestamp_ms"],
            usage=TokenUsage.from_json(data["usage"], "wwwserve.usage"),
        )
        return cls(
            claim=claim,
            signature=_parse_hex(data["signature"], "signature", SIGNATURE_BYTES),
            public_key=_parse_hex(data["public_key"], "public_key", PUBLIC_KEY_BYTES),
            route=tuple(route),
        )


# ---------------------------------------------------------------------------------------------
# sign and verify


def sign_result(key: nacl.signing.SigningKey, claim: ResultClaim, route: Sequence[str] = ()) -> SignedResult:
    """Sign `claim` with the executor's identity key."""
    signature = key.sign(claim.canonical_bytes()).signature
    return SignedResult(claim=claim, signature=bytes(signature), public_key=bytes(key.verify_key), route=tuple(route))


def verify_result(
    signed: SignedResult,
    expected_public_key: bytes | None = None,
    output_text: str | None = None,
    prompt: Sequence[Mapping[str, Any]] | str | None = None,
    *,
    usage: TokenUsage | None = None,
    expected_chain_id: int | None = None,
) -> None:
    """Check `signed`; returns None if it holds, raises a `SigningError` subclass otherwise.

    Order: cheap comparisons (chain id, expected key), then the signature, then the usage the answer
    states (`usage`, when given), then the hashes of the output and prompt (proportional to their size).
    Without `expected_public_key` this only proves that *some* key signed the claim;
    `verify_against_chain` ties the key to the executor's registration.
    """
    if not isinstance(signed, SignedResult):
        raise MalformedSignedResultError(f"expected a SignedResult, got {type(signed).__name__}")
    claim = signed.claim
    if expected_chain_id is not None and claim.chain_id != expected_chain_id:
        raise ChainMismatchError(f"result was signed for chain {claim.chain_id}, expected chain {expected_chain_id}")
    if expected_public_key is not None and bytes(expected_public_key) != signed.public_key:
        raise SignerMismatchError(
            f"result for {claim.executor} was signed by key {signed.public_key.hex()}, "
            f"expected {bytes(expected_public_key).hex()}"
        )
    try:
        nacl.signing.VerifyKey(signed.public_key).verify(claim.canonical_bytes(), signed.signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, nacl.exceptions.TypeError):
        raise SignatureInvalidError(f"signature of request {claim.request_id!r} does not verify") from None
    if usage is not None and usage != claim.usage:
        raise UsageMismatchError(f"usage of request {claim.request_id!r} ({usage}) does not match the signed "
                                 f"usage ({claim.usage})")
    if output_text is not None and sha256_text(output_text) != claim.output_sha256:
        raise OutputHashMismatchError(f"output of request {claim.request_id!r} does not match the signed hash")
    if prompt is not None and prompt_hash(prompt, claim.model) != claim.prompt_sha256:
        raise PromptHashMismatchError(f"prompt of request {claim.request_id!r} does not match the signed hash")


class RegisteredKey(Protocol):
    """What `verify_against_chain` needs from a registry entry (`ledger.client.NodeInfo` fits)."""

    @property
    def pubkey(self) -> bytes: ...


class NodeDirectory(Protocol):
    """What `verify_against_chain` needs from the chain (`ledger.client.WWWServeClient` fits)."""

    def node(self, address: str) -> RegisteredKey | None: ...


def verify_against_chain(
    signed: SignedResult,
    client: NodeDirectory,
    output_text: str | None = None,
    prompt: Sequence[Mapping[str, Any]] | str | None = None,
    *,
    usage: TokenUsage | None = None,
    expected_chain_id: int | None = None,
) -> None:
    """Check `signed` against the public key its executor registered on-chain.

    Raises `SignerUnknownError` if the executor never registered, `SignerMismatchError` if it signed with
    another key, and whatever `verify_result` raises. A node that has since left (`active == False`) still
    verifies: its past results were honestly signed. If `expected_chain_id` is None and the client has an
    integer `chain_id` attribute (`WWWServeClient` does), that chain id is required of the claim. Errors of
    the chain client itself (unreachable RPC) propagate unchanged.
    """
    if expected_chain_id is None:
        client_chain = getattr(client, "chain_id", None)
        if isinstance(client_chain, int) and not isinstance(client_chain, bool):
            expected_chain_id = client_chain
    if expected_chain_id is not None and signed.claim.chain_id != expected_chain_id:
        # Before the RPC: a result from another chain is refused without asking this one.
        raise ChainMismatchError(
            f"result was signed for chain {signed.claim.chain_id}, expected chain {expected_chain_id}"
        )
    info = client.node(signed.executor)
    if info is None:
        raise SignerUnknownError(f"executor {signed.executor} is not registered on-chain")
    verify_result(
        signed,
        expected_public_key=bytes(info.pubkey),
        output_text=output_text,
        prompt=prompt,
        usage=usage,
        expected_chain_id=expected_chain_id,
    )
