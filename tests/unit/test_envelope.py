"""Unit tests of node/envelope.py: sealing peer messages and the fail-closed verifier."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wwwserve.node.envelope import (
    ENVELOPE_HEADERS,
    HEADER_BODY_SHA256,
    HEADER_NONCE,
    HEADER_PUBLIC_KEY,
    HEADER_RECEIVER,
    HEADER_SENDER,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    PEER_DOMAIN_TAG,
    EnvelopeBodyMismatchError,
    EnvelopeError,
    EnvelopeKeyMismatchError,
    EnvelopeMalformedError,
    EnvelopeMissingHeaderError,
    EnvelopeReplayError,
    EnvelopeSignatureInvalidError,
    EnvelopeStaleError,
    EnvelopeUnknownSenderError,
    EnvelopeUnsignedError,
    EnvelopeVerifier,
    EnvelopeWrongReceiverError,
    envelope_bytes,
    seal,
)

CHAIN_ID = 31337
ALICE = "0x5B38Da6a701c568545dCfcB03FcB875f56beddC4"  # sender
BOB = "0xAb8483F64d9C6d1EcF9b849Ae677dD3315835cb2"  # receiver (the verifier)
CAROL = "0x4B20993Bc481177ec7E8f571ceCaE8A9e22C02db"  # a third node
ALICE_KEY = nacl.signing.SigningKey(bytes(range(32)))
CAROL_KEY = nacl.signing.SigningKey(bytes(range(1, 33)))
BODY = b'{"request_id":"r1","messages":[{"role":"user","content":"hi"}]}'
T0_MS = 1_700_000_000_000


class FakeClock:
    def __init__(self, now_ms: int = T0_MS) -> None:
        self.now_ms = now_ms

    def __call__(self) -> float:
        return self.now_ms / 1000


def registry(keys: dict[str, nacl.signing.SigningKey]) -> Callable[[str], bytes | None]:
    table = {addr: bytes(k.verify_key) for addr, k in keys.items()}
    return table.get


def make_verifier(clock: FakeClock | None = None, **kwargs: int) -> EnvelopeVerifier:
    return EnvelopeVerifier(
        BOB,
        CHAIN_ID,
        registry({ALICE: ALICE_KEY, CAROL: CAROL_KEY}),
        clock=clock or FakeClock(),
        **kwargs,
    )


def sealed(now_ms: int = T0_MS, body: bytes = BODY, **kwargs: str) -> dict[str, str]:
    return seal(ALICE_KEY, ALICE, BOB, body, CHAIN_ID, now_ms=now_ms, **kwargs)


# ---------------------------------------------------------------------------------------------
# happy path


def test_seal_produces_every_header() -> None:
    headers = sealed()
    assert set(headers) == set(ENVELOPE_HEADERS)
    assert headers[HEADER_SENDER] == ALICE
    assert headers[HEADER_RECEIVER] == BOB
    assert headers[HEADER_TIMESTAMP] == str(T0_MS)
    assert len(bytes.fromhex(headers[HEADER_NONCE])) == 16
    assert headers[HEADER_BODY_SHA256] == hashlib.sha256(BODY).hexdigest()
    assert len(bytes.fromhex(headers[HEADER_SIGNATURE])) == 64
    assert headers[HEADER_PUBLIC_KEY] == bytes(ALICE_KEY.verify_key).hex()


def test_round_trip_returns_sender() -> None:
    verifier = make_verifier()
    assert verifier.verify(sealed(), BODY) == ALICE
    assert verifier.replay_cache_len == 1


def test_nonces_are_fresh_per_seal() -> None:
    nonces = {sealed()[HEADER_NONCE] for _ in range(50)}
    assert len(nonces) == 50


def test_headers_are_case_insensitive_and_accept_pairs() -> None:
    verifier = make_verifier()
    assert verifier.verify({k.lower(): v for k, v in sealed().items()}, BODY) == ALICE
    assert verifier.verify(list(sealed().items()), BODY) == ALICE


def test_lowercase_addresses_are_accepted_and_normalised() -> None:
    headers = seal(ALICE_KEY, ALICE.lower(), BOB.lower(), BODY, CHAIN_ID, now_ms=T0_MS)
    assert headers[HEADER_SENDER] == ALICE
    assert make_verifier().verify(headers, BODY) == ALICE


def test_timestamp_edges_of_window_are_accepted() -> None:
    verifier = make_verifier(window_s=30)
    assert verifier.verify(sealed(now_ms=T0_MS - 30_000), BODY) == ALICE
    assert verifier.verify(sealed(now_ms=T0_MS + 30_000), BODY) == ALICE


def test_empty_body() -> None:
    assert make_verifier().verify(sealed(body=b""), b"") == ALICE


def test_canonical_bytes_layout() -> None:
    sender, receiver = bytes.fromhex(ALICE[2:]), bytes.fromhex(BOB[2:])
    data = envelope_bytes(CHAIN_ID, sender, receiver, T0_MS, b"n" * 16, b"h" * 32, "/peer/probe")
    assert data == (
        PEER_DOMAIN_TAG
        + struct.pack(">Q", CHAIN_ID)
        + sender
        + receiver
        + struct.pack(">Q", T0_MS)
        + b"n" * 16
        + b"h" * 32
        + struct.pack(">I", 11)
        + b"/peer/probe"
    )


# ---------------------------------------------------------------------------------------------
# every failure mode, with its status


def test_no_envelope_at_all_is_unsigned_401() -> None:
    with pytest.raises(EnvelopeUnsignedError) as info:
        make_verifier().verify({"Content-Type": "application/json"}, BODY)
    assert info.value.http_status == 401


def test_empty_signature_is_unsigned() -> None:
    headers = {**sealed(), HEADER_SIGNATURE: ""}
    with pytest.raises(EnvelopeUnsignedError):
        make_verifier().verify(headers, BODY)


@pytest.mark.parametrize("name", [h for h in ENVELOPE_HEADERS if h != HEADER_SIGNATURE])
def test_missing_header_is_400(name: str) -> None:
    headers = sealed()
    del headers[name]
    with pytest.raises(EnvelopeMissingHeaderError) as info:
        make_verifier().verify(headers, BODY)
    assert info.value.http_status == 400


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (HEADER_SENDER, "0x1234"),
        (HEADER_SENDER, ALICE.replace("B", "b", 1)),  # bad EIP-55 checksum
        (HEADER_RECEIVER, "bob"),
        (HEADER_TIMESTAMP, "-1"),
        (HEADER_TIMESTAMP, " 1700000000000"),
        (HEADER_TIMESTAMP, "1_700_000_000_000"),
        (HEADER_TIMESTAMP, "1700000000000.0"),
        (HEADER_TIMESTAMP, str(2**64)),
        (HEADER_NONCE, "00" * 15),
        (HEADER_NONCE, "zz" * 16),
        (HEADER_BODY_SHA256, "0x" + "00" * 31),
        (HEADER_SIGNATURE, "00" * 63 + " 0"),
        (HEADER_PUBLIC_KEY, "00" * 33),
    ],
)
def test_malformed_values_are_400(name: str, value: str) -> None:
    headers = {**sealed(), name: value}
    with pytest.raises(EnvelopeMalformedError) as info:
        make_verifier().verify(headers, BODY)
    assert info.value.http_status == 400


def test_conflicting_duplicate_headers_are_malformed() -> None:
    headers = sealed()
    pairs = [*headers.items(), (HEADER_RECEIVER.lower(), CAROL)]
    with pytest.raises(EnvelopeMalformedError):
        make_verifier().verify(pairs, BODY)


def test_wrong_receiver_is_401() -> None:
    headers = seal(ALICE_KEY, ALICE, CAROL, BODY, CHAIN_ID, now_ms=T0_MS)
    with pytest.raises(EnvelopeWrongReceiverError) as info:
        make_verifier().verify(headers, BODY)
    assert info.value.http_status == 401


@pytest.mark.parametrize("offset_ms", [-30_001, 30_001, -3_600_000, 3_600_000])
def test_timestamp_outside_window_is_stale(offset_ms: int) -> None:
    with pytest.raises(EnvelopeStaleError) as info:
        make_verifier(window_s=30).verify(sealed(now_ms=T0_MS + offset_ms), BODY)
    assert info.value.http_status == 401


def test_body_mismatch_is_401() -> None:
    with pytest.raises(EnvelopeBodyMismatchError) as info:
        make_verifier().verify(sealed(), BODY + b" ")
    assert info.value.http_status == 401


def test_unknown_sender_is_401() -> None:
    stranger = nacl.signing.SigningKey(bytes(range(2, 34)))
    address = "0x" + "11" * 20
    headers = seal(stranger, address, BOB, BODY, CHAIN_ID, now_ms=T0_MS)
    with pytest.raises(EnvelopeUnknownSenderError) as info:
        make_verifier().verify(headers, BODY)
    assert info.value.http_status == 401


def test_sender_using_another_key_than_registered() -> None:
    # Carol's key, claiming to be Alice: the registry says Alice's key is different.
    headers = seal(CAROL_KEY, ALICE, BOB, BODY, CHAIN_ID, now_ms=T0_MS)
    with pytest.raises(EnvelopeKeyMismatchError) as info:
        make_verifier().verify(headers, BODY)
    assert info.value.http_status == 401


def test_registered_key_in_header_but_signed_by_another_key() -> None:
    headers = seal(CAROL_KEY, ALICE, BOB, BODY, CHAIN_ID, now_ms=T0_MS)
    headers[HEADER_PUBLIC_KEY] = bytes(ALICE_KEY.verify_key).hex()
    with pytest.raises(EnvelopeSignatureInvalidError) as info:
        make_verifier().verify(headers, BODY)
    assert info.value.http_status == 401


def test_wrong_chain_fails_signature() -> None:
    headers = seal(ALICE_KEY, ALICE, BOB, BODY, CHAIN_ID + 1, now_ms=T0_MS)
    with pytest.raises(EnvelopeSignatureInvalidError):
        make_verifier().verify(headers, BODY)


def test_path_is_bound_when_given() -> None:
    headers = sealed(path="/peer/probe")
    with pytest.raises(EnvelopeSignatureInvalidError):
        make_verifier().verify(headers, BODY, path="/peer/delegate")
    with pytest.raises(EnvelopeSignatureInvalidError):
        make_verifier().verify(headers, BODY)
    assert make_verifier().verify(headers, BODY, path="/peer/probe") == ALICE


def test_all_errors_share_the_root_and_carry_a_status() -> None:
    errors = [
        EnvelopeMalformedError, EnvelopeMissingHeaderError, EnvelopeUnsignedError, EnvelopeWrongReceiverError,
        EnvelopeStaleError, EnvelopeBodyMismatchError, EnvelopeUnknownSenderError, EnvelopeKeyMismatchError,
        EnvelopeSignatureInvalidError, EnvelopeReplayError,
    ]  # fmt: skip
    assert all(issubclass(e, EnvelopeError) for e in errors)
    assert {e.http_status for e in errors} == {400, 401, 409}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (HEADER_SENDER, CAROL),
        (HEADER_TIMESTAMP, str(T0_MS + 1)),
        (HEADER_NONCE, "ab" * 16),
        (HEADER_BODY_SHA256, hashlib.sha256(b"other").hexdigest()),
        (HEADER_SIGNATURE, "00" * 64),
    ],
)
def test_tampering_any_single_field_is_rejected(name: str, value: str) -> None:
    headers = {**sealed(), name: value}
    with pytest.raises(EnvelopeError) as info:
        make_verifier().verify(headers, BODY)
    assert info.value.http_status == 401


def test_tampering_any_byte_of_the_signature_is_rejected() -> None:
    headers = sealed()
    signature = bytes.fromhex(headers[HEADER_SIGNATURE])
    verifier = make_verifier()
    for i in range(0, 64, 7):
        flipped = bytearray(signature)
        flipped[i] ^= 0x80
        with pytest.raises(EnvelopeSignatureInvalidError):
            verifier.verify({**headers, HEADER_SIGNATURE: flipped.hex()}, BODY)
    assert verifier.replay_cache_len == 0


# ---------------------------------------------------------------------------------------------
# cheap checks first: the signature (and the registry) are not reached by cheaply refusable messages


def test_cheap_checks_run_before_key_lookup_and_signature() -> None:
    lookups: list[str] = []

    def lookup(address: str) -> bytes | None:
        lookups.append(address)
        return bytes(ALICE_KEY.verify_key)

    clock = FakeClock()
    verifier = EnvelopeVerifier(BOB, CHAIN_ID, lookup, clock=clock)
    bad_sig = {**sealed(), HEADER_SIGNATURE: "00" * 64}
    for headers in (
        seal(ALICE_KEY, ALICE, CAROL, BODY, CHAIN_ID, now_ms=T0_MS),  # wrong receiver
        {**bad_sig, HEADER_TIMESTAMP: str(T0_MS - 60_000)},  # stale
        {**bad_sig, HEADER_NONCE: "zz" * 16},  # malformed
    ):
        with pytest.raises(EnvelopeError):
            verifier.verify(headers, BODY)
    assert lookups == []


def test_forged_copy_does_not_burn_the_genuine_nonce() -> None:
    verifier = make_verifier()
    headers = sealed()
    with pytest.raises(EnvelopeBodyMismatchError):
        verifier.verify(headers, b"attacker body")
    with pytest.raises(EnvelopeSignatureInvalidError):
        verifier.verify({**headers, HEADER_SIGNATURE: "00" * 64}, BODY)
    assert verifier.verify(headers, BODY) == ALICE


def test_lookup_failure_propagates_and_nothing_is_accepted() -> None:
    def broken(address: str) -> bytes | None:
        raise ConnectionError("registry down")

    verifier = EnvelopeVerifier(BOB, CHAIN_ID, broken, clock=FakeClock())
    with pytest.raises(ConnectionError):
        verifier.verify(sealed(), BODY)
    assert verifier.replay_cache_len == 0


# ---------------------------------------------------------------------------------------------
# replay


def test_replay_within_window_is_409() -> None:
    clock = FakeClock()
    verifier = make_verifier(clock)
    headers = sealed()
    verifier.verify(headers, BODY)
    clock.now_ms += 29_000
    with pytest.raises(EnvelopeReplayError) as info:
        verifier.verify(headers, BODY)
    assert info.value.http_status == 409


def test_replay_detected_by_sender_and_nonce_not_signature() -> None:
    # Same (sender, nonce), a different (validly re-signed) message: still a replay.
    verifier = make_verifier()
    first = sealed()
    verifier.verify(first, BODY)
    again = seal(ALICE_KEY, ALICE, BOB, b"other body", CHAIN_ID, now_ms=T0_MS + 5)
    nonce = bytes.fromhex(first[HEADER_NONCE])
    body_sha = hashlib.sha256(b"other body").digest()
    message = envelope_bytes(CHAIN_ID, bytes.fromhex(ALICE[2:]), bytes.fromhex(BOB[2:]), T0_MS + 5, nonce, body_sha)
    again[HEADER_NONCE] = nonce.hex()
    again[HEADER_SIGNATURE] = ALICE_KEY.sign(message).signature.hex()
    with pytest.raises(EnvelopeReplayError):
        verifier.verify(again, b"other body")


def test_same_nonce_from_another_sender_is_not_a_replay() -> None:
    verifier = make_verifier()
    first = sealed()
    verifier.verify(first, BODY)
    nonce = bytes.fromhex(first[HEADER_NONCE])
    message = envelope_bytes(
        CHAIN_ID, bytes.fromhex(CAROL[2:]), bytes.fromhex(BOB[2:]), T0_MS, nonce, hashlib.sha256(BODY).digest()
    )
    headers = seal(CAROL_KEY, CAROL, BOB, BODY, CHAIN_ID, now_ms=T0_MS)
    headers[HEADER_NONCE] = nonce.hex()
    headers[HEADER_SIGNATURE] = CAROL_KEY.sign(message).signature.hex()
    assert verifier.verify(headers, BODY) == CAROL


def test_replay_after_window_is_rejected_by_timestamp() -> None:
    clock = FakeClock()
    verifier = make_verifier(clock)
    headers = sealed()
    verifier.verify(headers, BODY)
    clock.now_ms += 30_001
    with pytest.raises(EnvelopeStaleError):
        verifier.verify(headers, BODY)
    assert verifier.replay_cache_len == 0  # the expired entry was dropped


def test_expired_entries_are_evicted() -> None:
    clock = FakeClock()
    verifier = make_verifier(clock)
    for i in range(20):
        verifier.verify(sealed(now_ms=T0_MS + i), BODY)
    assert verifier.replay_cache_len == 20
    clock.now_ms += 31_000
    verifier.verify(sealed(now_ms=clock.now_ms), BODY)
    assert verifier.replay_cache_len == 1


def test_cache_size_is_capped_and_never_lets_a_replay_through() -> None:
    clock = FakeClock()
    verifier = make_verifier(clock, replay_cache_size=10)
    accepted = []
    for i in range(25):
        headers = sealed(now_ms=T0_MS - 20_000 + i)
        verifier.verify(headers, BODY)
        accepted.append(headers)
        assert verifier.replay_cache_len <= 10
    assert verifier.replay_cache_len == 10
    # Every earlier message is still inside the window; each is refused, either as a remembered nonce
    # or because the cache had to forget it and its timestamp is at or below the horizon.
    for headers in accepted:
        with pytest.raises((EnvelopeReplayError, EnvelopeStaleError)):
            verifier.verify(headers, BODY)
    assert verifier.horizon_ms == T0_MS - 20_000 + 14
    # Fresh messages newer than the horizon still pass.
    assert verifier.verify(sealed(now_ms=T0_MS), BODY) == ALICE


def test_clock_stepping_back_does_not_reopen_expired_nonces() -> None:
    clock = FakeClock()
    verifier = make_verifier(clock)
    headers = sealed()
    verifier.verify(headers, BODY)
    clock.now_ms += 31_000
    verifier.verify(sealed(now_ms=clock.now_ms), BODY)  # triggers expiry of the first nonce
    clock.now_ms = T0_MS + 1_000  # wall clock jumps back (NTP step)
    with pytest.raises(EnvelopeStaleError):
        verifier.verify(headers, BODY)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError):
        EnvelopeVerifier(BOB, CHAIN_ID, registry({}), window_s=0)
    with pytest.raises(ValueError):
        EnvelopeVerifier(BOB, CHAIN_ID, registry({}), replay_cache_size=0)
    with pytest.raises(EnvelopeMalformedError):
        EnvelopeVerifier("me", CHAIN_ID, registry({}))


# ---------------------------------------------------------------------------------------------
# property: any body round-trips; any flipped byte of the signed bytes fails


@settings(max_examples=60, deadline=None)
@given(
    body=st.binary(max_size=512),
    chain_id=st.integers(0, 2**64 - 1),
    offset_ms=st.integers(-30_000, 30_000),
    path=st.text(max_size=20),
    position=st.integers(min_value=0),
    bit=st.integers(0, 7),
)
def test_property_seal_verify_and_flip(
    body: bytes, chain_id: int, offset_ms: int, path: str, position: int, bit: int
) -> None:
    path = path.encode("utf-8", "replace").decode("utf-8")
    verifier = EnvelopeVerifier(BOB, chain_id, registry({ALICE: ALICE_KEY}), clock=FakeClock())
    headers = seal(ALICE_KEY, ALICE, BOB, body, chain_id, now_ms=T0_MS + offset_ms, path=path)
    assert verifier.verify(headers, body, path=path) == ALICE
    message = bytearray(
        envelope_bytes(
            chain_id,
            bytes.fromhex(ALICE[2:]),
            bytes.fromhex(BOB[2:]),
            T0_MS + offset_ms,
            bytes.fromhex(headers[HEADER_NONCE]),
            hashlib.sha256(body).digest(),
            path,
        )
    )
    signature = bytes.fromhex(headers[HEADER_SIGNATURE])
    ALICE_KEY.verify_key.verify(bytes(message), signature)
    message[position % len(message)] ^= 1 << bit
    with pytest.raises(Exception, match="forged or corrupt"):
        ALICE_KEY.verify_key.verify(bytes(message), signature)
