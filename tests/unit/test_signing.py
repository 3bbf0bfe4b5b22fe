"""Unit tests of node/signing.py: result claims, their canonical bytes, signing and verification."""

from __future__ import annotations

import json
import operator
from dataclasses import dataclass, replace
from typing import Any

import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wwwserve.node.signing import (
    MAX_TEXT_FIELD_BYTES,
    RESULT_DOMAIN_TAG,
    ChainMismatchError,
    MalformedSignedResultError,
    OutputHashMismatchError,
    PromptHashMismatchError,
    ResultClaim,
    SignatureInvalidError,
    SignedResult,
    SignerMismatchError,
    SignerUnknownError,
    SigningError,
    TokenUsage,
    UsageMismatchError,
    prompt_hash,
    sha256_text,
    sign_result,
    verify_against_chain,
    verify_result,
)

EXECUTOR = "0x5B38Da6a701c568545dCfcB03FcB875f56beddC4"
ORIGIN = "0xAb8483F64d9C6d1EcF9b849Ae677dD3315835cb2"
HOP = "0x4B20993Bc481177ec7E8f571ceCaE8A9e22C02db"
MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Say hi in Français ✓"},
]
OUTPUT = "Salut !"
USAGE = TokenUsage(prompt_tokens=17, completion_tokens=3)
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
KEY = nacl.signing.SigningKey(bytes(range(32)))
OTHER_KEY = nacl.signing.SigningKey(bytes(range(1, 33)))


def make_claim(**overrides: Any) -> ResultClaim:
    fields: dict[str, Any] = {
        "chain_id": 31337,
        "request_id": "req-0001",
        "prompt_sha256": prompt_hash(MESSAGES, MODEL),
        "output_sha256": sha256_text(OUTPUT),
        "model": MODEL,
        "executor": EXECUTOR,
        "timestamp_ms": 1_700_000_000_123,
        "usage": USAGE,
    }
    fields.update(overrides)
    return ResultClaim(**fields)


def make_signed(route: tuple[str, ...] = (ORIGIN, EXECUTOR)) -> SignedResult:
    return sign_result(KEY, make_claim(), route=route)


# ---------------------------------------------------------------------------------------------
# hashing


def test_sha256_text_is_utf8_sha256() -> None:
    assert sha256_text("") == bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert sha256_text("é") != sha256_text("e")


def test_prompt_hash_is_canonical_over_key_order_and_nulls() -> None:
    reordered = [{"content": m["content"], "role": m["role"]} for m in MESSAGES]
    with_nulls = [{**m, "name": None} for m in MESSAGES]
    assert prompt_hash(reordered, MODEL) == prompt_hash(MESSAGES, MODEL)
    assert prompt_hash(with_nulls, MODEL) == prompt_hash(MESSAGES, MODEL)


def test_prompt_hash_matches_documented_json() -> None:
    import hashlib

    expected_doc = (
        '{"messages":[{"content":"Be brief.","role":"system"},'
        '{"content":"Say hi in Français ✓","role":"user"}],"model":"m"}'
    )
    assert prompt_hash(MESSAGES, "m") == hashlib.sha256(expected_doc.encode("utf-8")).digest()


def test_prompt_hash_distinguishes_content_model_and_kind() -> None:
    base = prompt_hash(MESSAGES, MODEL)
    assert prompt_hash([*MESSAGES[:1], {"role": "user", "content": "other"}], MODEL) != base
    assert prompt_hash(MESSAGES, MODEL + "x") != base
    assert prompt_hash(MESSAGES[::-1], MODEL) != base  # message order matters
    # A completion prompt never collides with a chat prompt, whatever the text.
    assert prompt_hash("hello", MODEL) != prompt_hash([{"role": "user", "content": "hello"}], MODEL)


def test_prompt_hash_rejects_non_json_values() -> None:
    with pytest.raises(MalformedSignedResultError):
        prompt_hash([{"role": "user", "content": float("nan")}], MODEL)
    with pytest.raises(MalformedSignedResultError):
        prompt_hash([{"role": "user", "content": object()}], MODEL)


# ---------------------------------------------------------------------------------------------
# claim validation and canonical bytes


def test_canonical_bytes_start_with_domain_tag_and_are_length_prefixed() -> None:
    data = make_claim().canonical_bytes()
    assert data.startswith(RESULT_DOMAIN_TAG)
    rest = data[len(RESULT_DOMAIN_TAG) :]
    parts = []
    while rest:
        size = int.from_bytes(rest[:4], "big")
        parts.append(rest[4 : 4 + size])
        rest = rest[4 + size :]
    assert [len(p) for p in parts] == [8, len(b"req-0001"), 32, 32, len(MODEL.encode()), 20, 8, 8, 8]
    assert int.from_bytes(parts[0], "big") == 31337
    assert parts[5] == bytes.fromhex(EXECUTOR[2:])
    assert [int.from_bytes(p, "big") for p in parts[7:]] == [17, 3]  # prompt, then completion tokens


def test_the_version_in_the_domain_tag_is_the_one_that_signs_usage() -> None:
    # A result signed before usage was (v1) must not verify as a v2 claim with any usage.
    assert RESULT_DOMAIN_TAG == b"wwwserve/result/v2\x00"


def test_canonical_bytes_unambiguous_across_field_boundaries() -> None:
    # Plain concatenation would make these equal ("ab"+"c" == "a"+"bc").
    a = make_claim(request_id="ab", model="c")
    b = make_claim(request_id="a", model="bc")
    assert a.canonical_bytes() != b.canonical_bytes()


def test_executor_case_does_not_change_canonical_bytes() -> None:
    lower = make_claim(executor=EXECUTOR.lower())
    assert lower.executor == EXECUTOR
    assert lower.canonical_bytes() == make_claim().canonical_bytes()


@pytest.mark.parametrize(
    ("field_name", "value"),
    [
        ("chain_id", 0),
        ("chain_id", -1),
        ("chain_id", 2**64),
        ("chain_id", True),
        ("chain_id", "1"),
        ("timestamp_ms", -1),
        ("timestamp_ms", 1.5),
        ("request_id", ""),
        ("request_id", 7),
        ("request_id", "x" * (MAX_TEXT_FIELD_BYTES + 1)),
        ("request_id", "\ud800"),
        ("model", ""),
        ("prompt_sha256", b"\x00" * 31),
        ("output_sha256", "00" * 32),
        ("executor", "0x1234"),
        ("executor", EXECUTOR.replace("B", "b", 1)),  # mixed case, wrong checksum
        ("usage", {"prompt_tokens": 1, "completion_tokens": 2}),  # a dict, not a TokenUsage
        ("usage", None),
    ],
)
def test_claim_rejects_bad_fields(field_name: str, value: object) -> None:
    with pytest.raises(MalformedSignedResultError):
        make_claim(**{field_name: value})


# ---------------------------------------------------------------------------------------------
# sign / verify


def test_round_trip_verifies_with_output_prompt_and_key() -> None:
    signed = make_signed()
    assert signed.public_key == bytes(KEY.verify_key)
    verify_result(signed, expected_public_key=bytes(KEY.verify_key), output_text=OUTPUT, prompt=MESSAGES)
    verify_result(signed)  # nothing to compare but the signature itself


def test_json_round_trip_preserves_everything() -> None:
    signed = make_signed()
    wire = signed.to_json()
    assert set(wire) == {
        "executor", "request_id", "route", "prompt_sha256", "output_sha256",
        "model", "chain_id", "timestamp_ms", "usage", "signature", "public_key",
    }  # fmt: skip
    assert wire["usage"] == {"prompt_tokens": 17, "completion_tokens": 3, "total_tokens": 20}
    assert wire["route"] == [ORIGIN, EXECUTOR]
    assert len(bytes.fromhex(wire["signature"])) == 64
    assert len(bytes.fromhex(wire["public_key"])) == 32
    text = json.dumps(wire)
    for source in (wire, text, text.encode()):
        back = SignedResult.from_json(source)
        assert back == signed
        verify_result(back, expected_public_key=bytes(KEY.verify_key), output_text=OUTPUT, prompt=MESSAGES)


def test_from_json_accepts_0x_prefixed_hex() -> None:
    wire = make_signed().to_json()
    wire["signature"] = "0x" + wire["signature"].upper()
    verify_result(SignedResult.from_json(wire))


def test_route_can_change_without_breaking_signature() -> None:
    signed = make_signed(route=())
    for route in [(), (ORIGIN,), (ORIGIN, HOP, EXECUTOR), (HOP,)]:
        verify_result(signed.with_route(route), expected_public_key=bytes(KEY.verify_key))
    extended = signed.with_hop(ORIGIN).with_hop(HOP.lower())
    assert extended.route == (ORIGIN, HOP)
    verify_result(SignedResult.from_json(extended.to_json()))


def test_wrong_output_prompt_key_and_chain_are_distinct_errors() -> None:
    signed = make_signed()
    with pytest.raises(OutputHashMismatchError):
        verify_result(signed, output_text=OUTPUT + " ")
    with pytest.raises(PromptHashMismatchError):
        verify_result(signed, prompt=[{"role": "user", "content": "something else"}])
    with pytest.raises(PromptHashMismatchError):
        verify_result(signed, prompt="Say hi")  # completion-style prompt for a chat result
    with pytest.raises(SignerMismatchError):
        verify_result(signed, expected_public_key=bytes(OTHER_KEY.verify_key))
    with pytest.raises(ChainMismatchError):
        verify_result(signed, expected_chain_id=1)
    for error in (OutputHashMismatchError, PromptHashMismatchError, SignerMismatchError, ChainMismatchError):
        assert issubclass(error, SigningError)


def test_usage_other_than_the_signed_one_fails() -> None:
    signed = make_signed()
    verify_result(signed, usage=TokenUsage(17, 3))
    for usage in (TokenUsage(17, 4), TokenUsage(16, 3), TokenUsage(3, 17), TokenUsage(0, 0)):
        with pytest.raises(UsageMismatchError, match="does not match the signed usage"):
            verify_result(signed, usage=usage)
    directory = FakeDirectory({EXECUTOR: bytes(KEY.verify_key)})
    with pytest.raises(UsageMismatchError):
        verify_against_chain(signed, directory, output_text=OUTPUT, usage=TokenUsage(17, 30))


def test_a_result_signed_before_usage_was_is_refused_saying_so() -> None:
    wire = _wire_without("usage")
    with pytest.raises(MalformedSignedResultError, match="older than result v2"):
        SignedResult.from_json(wire)


@pytest.mark.parametrize("bad", [{"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 4}, [1, 2], None,
                                 {"prompt_tokens": 2**64, "completion_tokens": 0}])
def test_token_usage_from_json_refuses_what_is_not_a_usage(bad: object) -> None:
    with pytest.raises(MalformedSignedResultError):
        TokenUsage.from_json(bad)
    assert TokenUsage.from_json({"prompt_tokens": 1, "completion_tokens": 2, "prompt_tokens_details": {}}) == (
        TokenUsage(1, 2))


def test_signature_is_checked_before_hashes() -> None:
    # A forged result with a wrong output must be reported as a forgery, not as a mere output mismatch.
    signed = make_signed()
    forged = replace(signed, signature=bytes(64))
    with pytest.raises(SignatureInvalidError):
        verify_result(forged, output_text="wrong", prompt="wrong")


def test_key_mismatch_is_checked_before_signature() -> None:
    forged = sign_result(OTHER_KEY, make_claim())
    with pytest.raises(SignerMismatchError):
        verify_result(forged, expected_public_key=bytes(KEY.verify_key))


def test_signature_by_other_key_with_swapped_public_key_fails() -> None:
    forged = replace(sign_result(OTHER_KEY, make_claim()), public_key=bytes(KEY.verify_key))
    with pytest.raises(SignatureInvalidError):
        verify_result(forged, expected_public_key=bytes(KEY.verify_key))


def test_invalid_public_key_point_is_signature_invalid() -> None:
    signed = replace(make_signed(), public_key=b"\xff" * 32)
    with pytest.raises(SignatureInvalidError):
        verify_result(signed)


TAMPERED_VALUES: dict[str, Any] = {
    "executor": HOP,
    "request_id": "req-0002",
    "prompt_sha256": "11" * 32,
    "output_sha256": "22" * 32,
    "model": "other-model",
    "chain_id": 1,
    "timestamp_ms": 1_700_000_000_124,
    "usage": {"prompt_tokens": 17, "completion_tokens": 4, "total_tokens": 21},
}


@pytest.mark.parametrize("field_name", sorted(TAMPERED_VALUES))
def test_tampering_any_signed_field_breaks_verification(field_name: str) -> None:
    wire = make_signed().to_json()
    wire[field_name] = TAMPERED_VALUES[field_name]
    with pytest.raises(SignatureInvalidError):
        verify_result(SignedResult.from_json(wire))


def test_tampering_signature_bytes_breaks_verification() -> None:
    signed = make_signed()
    for i in (0, 31, 32, 63):
        sig = bytearray(signed.signature)
        sig[i] ^= 0x01
        with pytest.raises(SignatureInvalidError):
            verify_result(replace(signed, signature=bytes(sig)))


def _wire_without(name: str) -> dict[str, Any]:
    wire = make_signed().to_json()
    del wire[name]
    return wire


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        b"\xff\xfe",
        "[1, 2]",
        *[_wire_without(name) for name in ("signature", "public_key", "executor", "route", "chain_id", "usage")],
        {**make_signed().to_json(), "signature": "00" * 63},
        {**make_signed().to_json(), "signature": "zz" * 64},
        {**make_signed().to_json(), "signature": " " + "00" * 63 + " 0"},
        {**make_signed().to_json(), "public_key": "00" * 33},
        {**make_signed().to_json(), "prompt_sha256": 5},
        {**make_signed().to_json(), "chain_id": "31337"},
        {**make_signed().to_json(), "timestamp_ms": 1.0},
        {**make_signed().to_json(), "route": ORIGIN},
        {**make_signed().to_json(), "route": ["0xnope"]},
        {**make_signed().to_json(), "route": [ORIGIN] * 65},
        {**make_signed().to_json(), "usage": 20},
        {**make_signed().to_json(), "usage": {"prompt_tokens": 17}},
        {**make_signed().to_json(), "usage": {"prompt_tokens": 17, "completion_tokens": -3}},
        {**make_signed().to_json(), "usage": {"prompt_tokens": 17, "completion_tokens": 3.0}},
        {**make_signed().to_json(), "usage": {"prompt_tokens": True, "completion_tokens": 3}},
        {**make_signed().to_json(), "usage": {"prompt_tokens": 17, "completion_tokens": 3, "total_tokens": 21}},
    ],
)
def test_from_json_rejects_malformed(bad: Any) -> None:
    with pytest.raises(MalformedSignedResultError):
        SignedResult.from_json(bad)


def test_malformed_error_is_a_value_error() -> None:
    assert issubclass(MalformedSignedResultError, ValueError)
    assert issubclass(MalformedSignedResultError, SigningError)


# ---------------------------------------------------------------------------------------------
# against the chain (a fake directory: no chain needed)


@dataclass
class FakeNode:
    pubkey: bytes


class FakeDirectory:
    def __init__(self, nodes: dict[str, bytes], chain_id: int | None = None) -> None:
        self.nodes = nodes
        self.asked: list[str] = []
        if chain_id is not None:
            self.chain_id = chain_id

    def node(self, address: str) -> FakeNode | None:
        self.asked.append(address)
        key = self.nodes.get(address)
        return None if key is None else FakeNode(pubkey=key)


def test_verify_against_chain_accepts_registered_key() -> None:
    directory = FakeDirectory({EXECUTOR: bytes(KEY.verify_key)})
    verify_against_chain(make_signed(), directory, output_text=OUTPUT, prompt=MESSAGES)
    assert directory.asked == [EXECUTOR]


def test_verify_against_chain_unknown_executor() -> None:
    with pytest.raises(SignerUnknownError):
        verify_against_chain(make_signed(), FakeDirectory({}))


def test_verify_against_chain_rotated_key() -> None:
    directory = FakeDirectory({EXECUTOR: bytes(OTHER_KEY.verify_key)})
    with pytest.raises(SignerMismatchError):
        verify_against_chain(make_signed(), directory)


def test_verify_against_chain_checks_output() -> None:
    directory = FakeDirectory({EXECUTOR: bytes(KEY.verify_key)})
    with pytest.raises(OutputHashMismatchError):
        verify_against_chain(make_signed(), directory, output_text="tampered")


def test_verify_against_chain_uses_client_chain_id_before_lookup() -> None:
    directory = FakeDirectory({EXECUTOR: bytes(KEY.verify_key)}, chain_id=1)
    with pytest.raises(ChainMismatchError):
        verify_against_chain(make_signed(), directory)
    assert directory.asked == []
    verify_against_chain(make_signed(), FakeDirectory({EXECUTOR: bytes(KEY.verify_key)}, chain_id=31337))


def test_verify_against_chain_executor_with_forged_self_key() -> None:
    # An attacker signs a claim naming EXECUTOR with its own key: the chain key exposes it.
    forged = sign_result(OTHER_KEY, make_claim())
    verify_result(forged)  # self-consistent...
    with pytest.raises(SignerMismatchError):
        verify_against_chain(forged, FakeDirectory({EXECUTOR: bytes(KEY.verify_key)}))


# ---------------------------------------------------------------------------------------------
# properties

text_field = st.text(min_size=1, max_size=40).filter(lambda s: len(s.encode("utf-8", "surrogatepass")) <= 256)
claims = st.builds(
    ResultClaim,
    chain_id=st.integers(1, 2**64 - 1),
    request_id=text_field.filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)),
    prompt_sha256=st.binary(min_size=32, max_size=32),
    output_sha256=st.binary(min_size=32, max_size=32),
    model=text_field.filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)),
    executor=st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex()),
    timestamp_ms=st.integers(0, 2**64 - 1),
    usage=st.builds(TokenUsage, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(claim=claims, position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_property_sign_verify_and_any_flipped_byte_fails(claim: ResultClaim, position: int, bit: int) -> None:
    signed = sign_result(KEY, claim)
    verify_result(SignedResult.from_json(json.dumps(signed.to_json())), expected_public_key=bytes(KEY.verify_key))
    data = bytearray(claim.canonical_bytes())
    data[position % len(data)] ^= 1 << bit
    with pytest.raises(Exception, match="forged or corrupt"):
        KEY.verify_key.verify(bytes(data), signed.signature)


FIELD_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    name: claims.map(operator.attrgetter(name))
    for name in ("chain_id", "request_id", "prompt_sha256", "output_sha256", "model", "executor", "timestamp_ms",
                 "usage")
}


@settings(max_examples=150, deadline=None)
@given(claim=claims, data=st.data())
def test_property_canonical_bytes_injective(claim: ResultClaim, data: st.DataObject) -> None:
    # Change one field (or move bytes between the two text fields): the bytes change iff the claim does.
    name = data.draw(st.sampled_from(sorted(FIELD_STRATEGIES)))
    other = replace(claim, **{name: data.draw(FIELD_STRATEGIES[name])})
    assert (other.canonical_bytes() == claim.canonical_bytes()) == (other == claim)
    joined = claim.request_id + claim.model
    cut = data.draw(st.integers(1, len(joined) - 1)) if len(joined) > 1 else 1
    shifted = replace(claim, request_id=joined[:cut] or "x", model=joined[cut:] or "y")
    assert (shifted.canonical_bytes() == claim.canonical_bytes()) == (shifted == claim)
