"""Signed peer envelopes: authenticate every HTTP message one node sends another.

Issue 3, Communication. The sender signs, with its node identity key, the canonical bytes

    b"wwwserve/peer/v1\\x00" | chain_id u64 | sender 20 | receiver 20 | timestamp_ms u64 | nonce 16
    | body_sha256 32 | len(path) u32 | path

(big-endian integers, raw address bytes; every field is fixed-width except the last, which is
length-prefixed, so the encoding is unambiguous). The envelope travels as `X-WWWServe-*` headers beside
the body. The receiver (`EnvelopeVerifier`) fails closed: a message without a signature, for another node,
outside the timestamp window, with another body, from an unregistered sender, with a key other than the
registered one, with a bad signature, or seen before, is rejected before anything executes it. Each
rejection is its own `EnvelopeError` subclass carrying the HTTP status to answer with.

Replays are detected by a digest of (sender, nonce), never by signature bytes (a signature is only one of
possibly many valid ones for the same message). Memory is bounded: entries leave the cache once their
timestamp falls out of the window (the timestamp check then refuses a replay by itself), and the cache has
a size cap. When the cap forces out an entry still inside the window, the verifier remembers the newest
timestamp it had to forget (the *horizon*) and refuses every message at or below it: under a flood the
effective window shrinks, but a replay is never accepted. The horizon also covers a wall clock that steps
backwards.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import hmac
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing
from eth_utils.address import is_address, is_checksum_address, to_canonical_address, to_checksum_address

from wwwserve.errors import WWWServeError


@functools.lru_cache(maxsize=4096)
def _checksum(raw: bytes) -> str:
    """EIP-55 form of a 20-byte address; cached, since keccak in pure Python costs ~0.1 ms and the same
    few peers recur on every message."""
    return str(to_checksum_address(raw))


_HEX = re.compile(r"[0-9a-fA-F]*")

PEER_DOMAIN_TAG = b"wwwserve/peer/v1\x00"
"""Prefix of every signed peer message; distinct from the result tag so neither can pass as the other."""

NONCE_BYTES = 16
SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32
SHA256_BYTES = 32
MAX_UINT64 = 2**64 - 1

HEADER_SENDER = "X-WWWServe-Sender"
HEADER_RECEIVER = "X-WWWServe-Receiver"
HEADER_TIMESTAMP = "X-WWWServe-Timestamp"
HEADER_NONCE = "X-WWWServe-Nonce"
HEADER_BODY_SHA256 = "X-WWWServe-Body-SHA256"
HEADER_SIGNATURE = "X-WWWServe-Signature"
HEADER_PUBLIC_KEY = "X-WWWServe-Public-Key"
ENVELOPE_HEADERS = (
    HEADER_SENDER,
    HEADER_RECEIVER,
    HEADER_TIMESTAMP,
    HEADER_NONCE,
    HEADER_BODY_SHA256,
    HEADER_SIGNATURE,
    HEADER_PUBLIC_KEY,
)

_TIMESTAMP_RE = re.compile(r"[0-9]{1,20}")


# ---------------------------------------------------------------------------------------------
# errors


class EnvelopeError(WWWServeError):
    """Root of every envelope rejection; `http_status` is what the peer API answers with."""

    http_status: int = 401


class EnvelopeMalformedError(EnvelopeError, ValueError):
    """A header value is unparseable (bad hex, wrong length, not an address, not an integer)."""

    http_status = 400


class EnvelopeMissingHeaderError(EnvelopeMalformedError):
    """A signed message lacks one of the other envelope headers."""


class EnvelopeUnsignedError(EnvelopeError):
    """The message carries no signature: it is refused, never treated as anonymous."""


class EnvelopeWrongReceiverError(EnvelopeError):
    """The message was addressed to another node (a relayed or misdirected message)."""


class EnvelopeStaleError(EnvelopeError):
    """The timestamp is outside the accepted window (too old, too far in the future, or below the horizon)."""


class EnvelopeBodyMismatchError(EnvelopeError):
    """The body does not hash to the signed `body_sha256`: it was altered or swapped."""


class EnvelopeUnknownSenderError(EnvelopeError):
    """The sender has no registered key (not on-chain, or not yet indexed)."""


class EnvelopeKeyMismatchError(EnvelopeError):
    """The public key in the message is not the one the sender registered."""


class EnvelopeSignatureInvalidError(EnvelopeError):
    """The signature does not verify over the envelope with the sender's registered key."""


class EnvelopeReplayError(EnvelopeError):
    """This (sender, nonce) was already accepted within the window."""

    http_status = 409


# ---------------------------------------------------------------------------------------------
# canonical bytes and sealing


def _u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def envelope_bytes(
    chain_id: int,
    sender: bytes,
    receiver: bytes,
    timestamp_ms: int,
    nonce: bytes,
    body_sha256: bytes,
    path: str = "",
) -> bytes:
    """The exact bytes a peer message's signature covers (addresses as 20 raw bytes)."""
    for value, what, size in (
        (sender, "sender", 20),
        (receiver, "receiver", 20),
        (nonce, "nonce", NONCE_BYTES),
        (body_sha256, "body_sha256", SHA256_BYTES),
    ):
        if len(value) != size:
            raise EnvelopeMalformedError(f"{what} must be {size} bytes, got {len(value)}")
    for value_int, what in ((chain_id, "chain_id"), (timestamp_ms, "timestamp_ms")):
        if not 0 <= value_int <= MAX_UINT64:
            raise EnvelopeMalformedError(f"{what} must fit in 64 bits, got {value_int}")
    path_bytes = path.encode("utf-8")
    return b"".join(
        (
            PEER_DOMAIN_TAG,
            _u64(chain_id),
            sender,
            receiver,
            _u64(timestamp_ms),
            nonce,
            body_sha256,
            struct.pack(">I", len(path_bytes)),
            path_bytes,
        )
    )


@functools.lru_cache(maxsize=4096)
def _parse_address(value: str) -> bytes | str:
    """The 20 raw bytes of `value`, or the problem with it. Cached: a node talks to few peers, and the
    EIP-55 check (a keccak in pure Python) was a tenth of a busy node's CPU."""
    if not is_address(value):
        return "must be a 20-byte hex address"
    digits = value[2:] if value.startswith(("0x", "0X")) else value
    # Mixed case carries an EIP-55 checksum and must match it; all-lower/upper carries none.
    if digits != digits.lower() and digits != digits.upper() and not is_checksum_address(value):
        return "has a wrong EIP-55 checksum"
    return bytes(to_canonical_address(value))


def _address_bytes(value: object, what: str) -> bytes:
    parsed = _parse_address(value) if isinstance(value, str) else "must be a 20-byte hex address"
    if isinstance(parsed, str):
        raise EnvelopeMalformedError(f"{what} {parsed}, got {value!r}")
    return parsed


def seal(
    key: nacl.signing.SigningKey,
    sender: str,
    receiver: str,
    body: bytes,
    chain_id: int,
    now_ms: int | None = None,
    *,
    path: str = "",
) -> dict[str, str]:
    """Sign a peer message; returns the `X-WWWServe-*` headers to send with `body`.

    `path` (e.g. "/peer/delegate") is bound into the signature when given, so a message sealed for one
    endpoint fails on another; the verifier must then pass the same path. A fresh 16-byte random nonce
    is drawn per call.
    """
    sender_raw = _address_bytes(sender, "sender")
    receiver_raw = _address_bytes(receiver, "receiver")
    timestamp_ms = int(time.time() * 1000) if now_ms is None else now_ms
    nonce = os.urandom(NONCE_BYTES)
    body_sha256 = hashlib.sha256(body).digest()
    message = envelope_bytes(chain_id, sender_raw, receiver_raw, timestamp_ms, nonce, body_sha256, path)
    signature = bytes(key.sign(message).signature)
    return {
        HEADER_SENDER: _checksum(sender_raw),
        HEADER_RECEIVER: _checksum(receiver_raw),
        HEADER_TIMESTAMP: str(timestamp_ms),
        HEADER_NONCE: nonce.hex(),
        HEADER_BODY_SHA256: body_sha256.hex(),
        HEADER_SIGNATURE: signature.hex(),
        HEADER_PUBLIC_KEY: bytes(key.verify_key).hex(),
    }


# ---------------------------------------------------------------------------------------------
# verification


@dataclass(frozen=True)
class _Parsed:
    sender: bytes
    receiver: bytes
    timestamp_ms: int
    nonce: bytes
    body_sha256: bytes
    signature: bytes
    public_key: bytes


def _header_map(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    # HTTP header names are case-insensitive, and a header sent twice with two values is ambiguous:
    # which one was signed? Refuse rather than pick one.
    items = headers.items() if isinstance(headers, Mapping) else headers
    wanted = {name.lower() for name in ENVELOPE_HEADERS}
    found: dict[str, str] = {}
    for name, value in items:
        lower = name.lower()
        if lower not in wanted:
            continue
        if lower in found and found[lower] != value:
            raise EnvelopeMalformedError(f"header {name} appears twice with different values")
        found[lower] = value
    return found


def _hex(value: str, what: str, size: int) -> bytes:
    # Strict: exactly 2*size hex digits, no prefix, no whitespace (bytes.fromhex would accept "ab cd").
    if len(value) != 2 * size or _HEX.fullmatch(value) is None:
        raise EnvelopeMalformedError(f"{what} must be {size} bytes as hex, got {value!r}")
    return bytes.fromhex(value)


def _parse(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> _Parsed:
    found = _header_map(headers)
    if not found.get(HEADER_SIGNATURE.lower()):
        raise EnvelopeUnsignedError("message has no signature")
    missing = [name for name in ENVELOPE_HEADERS if name.lower() not in found]
    if missing:
        raise EnvelopeMissingHeaderError(f"message lacks {', '.join(missing)}")
    timestamp = found[HEADER_TIMESTAMP.lower()]
    # int() would also take " 12", "+12" and "1_2": only plain digits are a timestamp.
    if not _TIMESTAMP_RE.fullmatch(timestamp) or int(timestamp) > MAX_UINT64:
        raise EnvelopeMalformedError(f"timestamp must be unix milliseconds, got {timestamp!r}")
    return _Parsed(
        sender=_address_bytes(found[HEADER_SENDER.lower()], "sender"),
        receiver=_address_bytes(found[HEADER_RECEIVER.lower()], "receiver"),
        timestamp_ms=int(timestamp),
        nonce=_hex(found[HEADER_NONCE.lower()], "nonce", NONCE_BYTES),
        body_sha256=_hex(found[HEADER_BODY_SHA256.lower()], "body_sha256", SHA256_BYTES),
        signature=_hex(found[HEADER_SIGNATURE.lower()], "signature", SIGNATURE_BYTES),
        public_key=_hex(found[HEADER_PUBLIC_KEY.lower()], "public_key", PUBLIC_KEY_BYTES),
    )


class EnvelopeVerifier:
    """Checks the envelopes of messages addressed to `my_address`; keeps the replay cache.

    `key_lookup(address)` returns the sender's registered 32-byte ed25519 key (checksummed address in),
    or None if it has none; if it raises, the exception propagates and the message is not accepted.
    Thread-safe.
    """

    def __init__(
        self,
        my_address: str,
        chain_id: int,
        key_lookup: Callable[[str], bytes | None],
        window_s: float = 30,
        replay_cache_size: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        if replay_cache_size < 1:
            raise ValueError(f"replay_cache_size must be at least 1, got {replay_cache_size}")
        self._me = _address_bytes(my_address, "my_address")
        self._chain_id = chain_id
        self._key_lookup = key_lookup
        self._window_ms = int(window_s * 1000)
        self._cap = replay_cache_size
        self._clock = clock
        self._lock = threading.Lock()
        # digest -> timestamp_ms, mirrored by a min-heap on timestamp so the oldest leaves first.
        self._seen: dict[bytes, int] = {}
        self._heap: list[tuple[int, bytes]] = []
        # Every message with a timestamp <= horizon is refused: its nonce may have been forgotten.
        self._horizon_ms = -1

    @property
    def address(self) -> str:
        """The checksummed address this verifier accepts messages for."""
        return _checksum(bytes(self._me))

    @property
    def replay_cache_len(self) -> int:
        """How many (sender, nonce) digests are remembered now."""
        return len(self._seen)

    @property
    def horizon_ms(self) -> int:
        """Messages with a timestamp at or below this are refused (-1 until something was forgotten)."""
        return self._horizon_ms

    def verify(
        self,
        headers: Mapping[str, str] | Iterable[tuple[str, str]],
        body: bytes,
        *,
        path: str = "",
    ) -> str:
        """Check the envelope of (`headers`, `body`); returns the sender's checksummed address.

        Raises an `EnvelopeError` subclass on any failure; the message must then not be executed.
        Order: parse, receiver, timestamp window, replay lookup, sender key lookup, key match,
        signature, body hash; the nonce is recorded only once every check has passed, so a forged
        or altered copy cannot burn the nonce of a genuine message.
        """
        env = _parse(headers)
        if not hmac.compare_digest(env.receiver, self._me):
            raise EnvelopeWrongReceiverError(
                f"message is for {_checksum(bytes(env.receiver))}, this node is {self.address}"
            )
        now_ms = int(self._clock() * 1000)
        with self._lock:
            # Every message drops the entries that fell out of the window, accepted or not.
            self._expire(now_ms)
        if abs(now_ms - env.timestamp_ms) > self._window_ms:
            raise EnvelopeStaleError(
                f"timestamp {env.timestamp_ms} is {(now_ms - env.timestamp_ms) / 1000:+.1f} s from now, "
                f"the window is ±{self._window_ms / 1000:g} s"
            )
        digest = self._digest(env.sender, env.nonce)
        with self._lock:
            self._check_fresh(digest, env.timestamp_ms)
        sender = _checksum(bytes(env.sender))
        registered = self._key_lookup(sender)
        if registered is None:
            raise EnvelopeUnknownSenderError(f"sender {sender} has no registered key")
        if not hmac.compare_digest(bytes(registered), env.public_key):
            raise EnvelopeKeyMismatchError(f"public key of {sender} is not its registered key")
        message = envelope_bytes(
            self._chain_id, env.sender, env.receiver, env.timestamp_ms, env.nonce, env.body_sha256, path
        )
        try:
            nacl.signing.VerifyKey(bytes(registered)).verify(message, env.signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, nacl.exceptions.TypeError):
            raise EnvelopeSignatureInvalidError(f"signature of {sender} does not verify") from None
        # After the signature: hashing the body costs more than an ed25519 check for any real body.
        if not hmac.compare_digest(hashlib.sha256(body).digest(), env.body_sha256):
            raise EnvelopeBodyMismatchError(f"body from {sender} does not match its signed hash")
        with self._lock:
            # Checked again under the same lock as the insert: two copies racing past the first check
            # must not both be accepted.
            self._check_fresh(digest, env.timestamp_ms)
            self._remember(digest, env.timestamp_ms)
        return sender

    # -- replay cache -----------------------------------------------------------------------------
    @staticmethod
    def _digest(sender: bytes, nonce: bytes) -> bytes:
        return hashlib.blake2b(sender + nonce, digest_size=16, person=b"wwwserve-replay").digest()

    def _check_fresh(self, digest: bytes, timestamp_ms: int) -> None:
        if digest in self._seen:
            raise EnvelopeReplayError("message was already received (same sender and nonce)")
        if timestamp_ms <= self._horizon_ms:
            raise EnvelopeStaleError(
                f"timestamp {timestamp_ms} is at or below the replay horizon {self._horizon_ms} "
                "(the replay cache had to forget newer nonces); resend with a fresh timestamp"
            )

    def _forget_oldest(self) -> None:
        timestamp_ms, digest = heapq.heappop(self._heap)
        del self._seen[digest]
        self._horizon_ms = max(self._horizon_ms, timestamp_ms)

    def _expire(self, now_ms: int) -> None:
        while self._heap and self._heap[0][0] < now_ms - self._window_ms:
            self._forget_oldest()

    def _remember(self, digest: bytes, timestamp_ms: int) -> None:
        self._seen[digest] = timestamp_ms
        heapq.heappush(self._heap, (timestamp_ms, digest))
        while len(self._seen) > self._cap:
            self._forget_oldest()
