"""Work attestations: what an executor signs with its wallet key so that its answer can be dueled.

When a node executes a delegated request it hands back, beside the ed25519 result signature users
check, an EIP-712 `Work` attestation signed with its operator wallet (secp256k1, so the contract can
`ecrecover` it cheaply):

    Work(address origin, address executor, bytes32 requestId, bytes32 requestHash, bytes32 modelHash,
         bytes32 answerHash, bytes32 inspect, uint64 issuedAt)

- `requestHash` = keccak256 of the request's canonical bytes (`request_bytes`): the model, the prompt
  and every sampling parameter, so nobody can duel an answer against a different question, and judges
  can check that both duelists got the same request (and derive the truncation from its max_tokens);
- `answerHash` = keccak256 of the answer's UTF-8 text;
- `inspect` = the origin's commitment keccak256(abi_encode(requestId, wantsDuel, salt)), sent with the
  request before any answer existed: `openDuel` takes the salt and requires wantsDuel = true, so an
  origin can duel only answers it committed to duel before seeing them;
- `issuedAt` (unix seconds) bounds how long the work can be dueled (ATTESTATION_TTL).

`openDuel` verifies the signature on-chain, so nobody can name a node in a duel over work it did not
do. Everything here is pure (no chain access) and matches the contract's encodings bit for bit; the
contract's `workDigest`, `inspectCommitment` and `duelIdOf` views are the cross-check in the tests.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import Hash32
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from wwwserve.errors import WWWServeError
from wwwserve.ledger import safejson

__all__ = [
    "TRANSPORT_FIELDS",
    "WORK_TYPEHASH",
    "WorkAttestation",
    "WorkError",
    "answer_hash",
    "check_work",
    "duel_id_of",
    "inspect_commitment",
    "model_hash",
    "parse_request_bytes",
    "recover_work_signer",
    "request_bytes",
    "request_hash",
    "request_id_hash",
    "sign_work",
    "work_digest",
]

WORK_TYPEHASH = keccak(
    text="Work(address origin,address executor,bytes32 requestId,bytes32 requestHash,bytes32 modelHash,"
    "bytes32 answerHash,bytes32 inspect,uint64 issuedAt)"
)
EIP712_DOMAIN_TYPEHASH = keccak(
    text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
SECP256K1N_HALF = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141 // 2
DUEL_ID_SHIFT = 193  # duel ids are the top 63 bits of keccak256(abi_encode(origin, requestId))

# How a request travels (streamed or not) is not part of the work: an executor asked for a stream and
# one asked for a whole answer did the same work.
TRANSPORT_FIELDS = frozenset({"stream", "stream_options"})


class WorkError(WWWServeError, ValueError):
    """A work attestation that is malformed, or signed by someone else than its executor."""


def request_bytes(kind: str, request: Mapping[str, Any]) -> bytes:
    """The canonical bytes of a request, the preimage of its `requestHash` (and what `publishRequest`
    puts on-chain): UTF-8 JSON of {"kind", "request"} with sorted keys and no spaces, transport fields
    (`stream`, `stream_options`) left out."""
    if kind not in ("chat", "completion"):
        raise WorkError(f"kind must be 'chat' or 'completion', got {kind!r}")
    body = {k: v for k, v in request.items() if k not in TRANSPORT_FIELDS}
    try:
        text = json.dumps({"kind": kind, "request": body}, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise WorkError(f"request is not canonical JSON: {exc}") from None
    return text.encode("utf-8")


def parse_request_bytes(data: bytes) -> tuple[str, dict[str, Any]]:
    """(kind, request) back from `request_bytes`; `WorkError` if the bytes are not of that form."""
    try:
        obj = safejson.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise WorkError(f"request bytes are not JSON: {exc}") from None
    if not isinstance(obj, dict) or set(obj) != {"kind", "request"} or not isinstance(obj["request"], dict):
        raise WorkError("request bytes must hold exactly {kind, request}")
    kind = obj["kind"]
    if kind not in ("chat", "completion"):
        raise WorkError(f"unknown request kind {kind!r}")
    if request_bytes(kind, obj["request"]) != data:
        raise WorkError("request bytes are not in canonical form")
    return kind, obj["request"]


def request_hash(kind: str, request: Mapping[str, Any]) -> bytes:
    """keccak256 of `request_bytes`."""
    return bytes(keccak(request_bytes(kind, request)))


def answer_hash(text: str) -> bytes:
    """keccak256 of the answer's UTF-8 text."""
    return bytes(keccak(text.encode("utf-8")))


def model_hash(model: str) -> bytes:
    """keccak256 of the model name, as the contract keys models (`modelId`, `servesModel`)."""
    return bytes(keccak(model.encode("utf-8")))


def request_id_hash(request_id: str) -> bytes:
    """The bytes32 a request id string becomes in a work attestation."""
    return bytes(keccak(request_id.encode("utf-8")))


def inspect_commitment(request_id: bytes, wants_duel: bool, salt: bytes) -> bytes:
    """keccak256(abi_encode(requestId, wantsDuel, salt)): the origin's commitment, sent with the request."""
    return bytes(keccak(encode(["bytes32", "bool", "bytes32"], [_b32(request_id), wants_duel, _b32(salt)])))


def duel_id_of(origin: str, request_id: bytes) -> int:
    """The id a duel over this origin's request gets: the top 63 bits of keccak256(origin, requestId)."""
    digest = keccak(encode(["address", "bytes32"], [to_checksum_address(origin), _b32(request_id)]))
    return int.from_bytes(digest, "big") >> DUEL_ID_SHIFT


def _b32(value: bytes) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise WorkError(f"expected 32 bytes, got {value!r}")
    return bytes(value)


def _domain_separator(chain_id: int, contract: str) -> bytes:
    return bytes(keccak(encode(
        ["bytes32", "bytes32", "bytes32", "uint256", "address"],
        [EIP712_DOMAIN_TYPEHASH, keccak(text="WWWServe"), keccak(text="1"), chain_id, to_checksum_address(contract)],
    )))


@dataclass(frozen=True)
class WorkAttestation:
    """A signed Work record (see the module docstring). Addresses are checksummed, hashes 32 bytes."""

    origin: str
    executor: str
    request_id: bytes
    request_hash: bytes
    model_hash: bytes
    answer_hash: bytes
    inspect: bytes
    issued_at: int
    signature: bytes = b""

    def __post_init__(self) -> None:
        for name in ("request_id", "request_hash", "model_hash", "answer_hash", "inspect"):
            _b32(getattr(self, name))
        if not isinstance(self.issued_at, int) or isinstance(self.issued_at, bool) or not 0 <= self.issued_at < 2**64:
            raise WorkError(f"issued_at must be a uint64, got {self.issued_at!r}")

    def digest(self, chain_id: int, contract: str) -> bytes:
        """The EIP-712 digest the executor signs (the contract's `workDigest`)."""
        return work_digest(chain_id, contract, self)

    def to_json(self) -> dict[str, Any]:
        """Wire form: hex strings."""
        return {
            "origin": self.origin, "executor": self.executor, "request_id": "0x" + self.request_id.hex(),
            "request_hash": "0x" + self.request_hash.hex(), "model_hash": "0x" + self.model_hash.hex(),
            "answer_hash": "0x" + self.answer_hash.hex(), "inspect": "0x" + self.inspect.hex(),
            "issued_at": self.issued_at, "signature": "0x" + self.signature.hex(),
        }

    @classmethod
    def from_json(cls, data: object) -> WorkAttestation:
        """Parse the wire form; `WorkError` says what is wrong."""
        if not isinstance(data, Mapping):
            raise WorkError("a work attestation must be a JSON object")
        try:
            def hx(key: str) -> bytes:
                value = data[key]
                if not isinstance(value, str) or not value.startswith("0x"):
                    raise WorkError(f"{key} must be a 0x-prefixed hex string")
                return bytes.fromhex(value[2:])

            issued = data["issued_at"]
            if not isinstance(issued, int) or isinstance(issued, bool):
                raise WorkError("issued_at must be an integer")
            return cls(
                origin=to_checksum_address(str(data["origin"])), executor=to_checksum_address(str(data["executor"])),
                request_id=hx("request_id"), request_hash=hx("request_hash"), model_hash=hx("model_hash"),
                answer_hash=hx("answer_hash"), inspect=hx("inspect"), issued_at=issued, signature=hx("signature"),
            )
        except KeyError as exc:
            raise WorkError(f"work attestation lacks {exc.args[0]!r}") from None
        except ValueError as exc:
            if isinstance(exc, WorkError):
                raise
            raise WorkError(f"work attestation is malformed: {exc}") from None


def work_digest(chain_id: int, contract: str, work: WorkAttestation) -> bytes:
    """EIP-712 digest of a Work record (signature ignored)."""
    struct_hash = keccak(encode(
        ["bytes32", "address", "address", "bytes32", "bytes32", "bytes32", "bytes32", "bytes32", "uint64"],
        [WORK_TYPEHASH, to_checksum_address(work.origin), to_checksum_address(work.executor), work.request_id,
         work.request_hash, work.model_hash, work.answer_hash, work.inspect, work.issued_at],
    ))
    return bytes(keccak(b"\x19\x01" + _domain_separator(chain_id, contract) + struct_hash))


def sign_work(account: LocalAccount, chain_id: int, contract: str, work: WorkAttestation) -> WorkAttestation:
    """`work` signed by `account` (which must be its executor), as a 65-byte r||s||v signature."""
    if to_checksum_address(account.address) != to_checksum_address(work.executor):
        raise WorkError(f"{account.address} cannot sign work attested for {work.executor}")
    signed = account.unsafe_sign_hash(Hash32(work_digest(chain_id, contract, work)))
    return WorkAttestation(**{**work.__dict__, "signature": bytes(signed.signature)})


def recover_work_signer(chain_id: int, contract: str, work: WorkAttestation) -> str:
    """The address that signed `work`, with the contract's checks (65 bytes, low s, v 27/28)."""
    sig = work.signature
    if len(sig) != 65:
        raise WorkError("a work signature has 65 bytes")
    s = int.from_bytes(sig[32:64], "big")
    v = sig[64] + 27 if sig[64] < 27 else sig[64]
    if s > SECP256K1N_HALF or v not in (27, 28):
        raise WorkError("malformed work signature")
    try:
        digest = work_digest(chain_id, contract, work)
        signer = Account._recover_hash(digest, vrs=(v, int.from_bytes(sig[:32], "big"), s))
    except Exception as exc:  # eth-keys raises several types for garbage
        raise WorkError(f"work signature does not recover: {exc}") from None
    return str(to_checksum_address(signer))


def check_work(chain_id: int, contract: str, work: WorkAttestation) -> None:
    """Raise `WorkError` unless `work` is signed by its executor."""
    if recover_work_signer(chain_id, contract, work) != to_checksum_address(work.executor):
        raise WorkError(f"work attestation is not signed by its executor {work.executor}")
