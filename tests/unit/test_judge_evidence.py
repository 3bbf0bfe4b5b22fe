"""Duel evidence (judge/evidence.py): the hashes the origin records, and a judge's checks of what it is
served: tampered answers, wrong signers, hash mismatches and mixed-up requests are all refused."""

from __future__ import annotations

import dataclasses

import nacl.signing
import pytest
from eth_utils.address import to_checksum_address

from judge.evidence import (
    DuelRecord,
    Evidence,
    EvidenceMalformedError,
    EvidenceMismatchError,
    EvidenceSignatureError,
    duel_hashes,
    verify_evidence,
)
from node.signing import ResultClaim, SignedResult, prompt_hash, sha256_text, sign_result

CHAIN = 31337
MODEL = "smollm2-135m"
PROMPT = [{"role": "user", "content": "What is the capital of France?"}]
A = to_checksum_address("0x" + "aa" * 20)
B = to_checksum_address("0x" + "bb" * 20)
ORIGIN = to_checksum_address("0x" + "01" * 20)
KEYS = {A: nacl.signing.SigningKey(b"\x0a" * 32), B: nacl.signing.SigningKey(b"\x0b" * 32)}


def signed(executor: str, text: str, *, request_id: str = "chatcmpl-1", prompt: object = PROMPT,
           model: str = MODEL, chain_id: int = CHAIN, key: nacl.signing.SigningKey | None = None) -> SignedResult:
    claim = ResultClaim(chain_id=chain_id, request_id=request_id, prompt_sha256=prompt_hash(prompt, model),  # type: ignore[arg-type]
                        output_sha256=sha256_text(text), model=model, executor=executor, timestamp_ms=1)
    return sign_result(key or KEYS[executor], claim, route=[ORIGIN, executor])


def key_of(address: str) -> bytes | None:
    key = KEYS.get(to_checksum_address(address))
    return None if key is None else bytes(key.verify_key)


def duel(answer_a: str = "Paris.", answer_b: str = "Lyon.") -> tuple[DuelRecord, Evidence]:
    ra, rb = signed(A, answer_a), signed(B, answer_b)
    q, ha, hb = duel_hashes(ra, rb)
    record = DuelRecord(7, ORIGIN, A, B, q, ha, hb)
    return record, Evidence(7, PROMPT, 64, answer_a, answer_b, ra, rb)


def test_honest_evidence_verifies_and_survives_the_wire() -> None:
    record, evidence = duel()
    verify_evidence(record, evidence, key_of, chain_id=CHAIN)
    again = Evidence.from_json(evidence.to_json())
    assert again == evidence
    verify_evidence(record, again, key_of, chain_id=CHAIN)
    assert record.question_hash == prompt_hash(PROMPT, MODEL)
    assert (record.answer_a_hash, record.answer_b_hash) == (sha256_text("Paris."), sha256_text("Lyon."))


def test_tampered_answer_text_is_refused() -> None:
    record, evidence = duel()
    with pytest.raises(EvidenceSignatureError, match="answer A"):
        verify_evidence(record, dataclasses.replace(evidence, answer_a="Paris!"), key_of, chain_id=CHAIN)
    with pytest.raises(EvidenceSignatureError, match="answer B"):
        verify_evidence(record, dataclasses.replace(evidence, answer_b="Marseille."), key_of, chain_id=CHAIN)


def test_tampered_question_is_refused() -> None:
    record, evidence = duel()
    other = [{"role": "user", "content": "What is the capital of Italy?"}]
    with pytest.raises(EvidenceSignatureError, match="prompt"):
        verify_evidence(record, dataclasses.replace(evidence, prompt=other), key_of, chain_id=CHAIN)


def test_answers_swapped_between_slots_are_refused() -> None:
    record, evidence = duel()
    swapped = dataclasses.replace(evidence, answer_a=evidence.answer_b, answer_b=evidence.answer_a,
                                  result_a=evidence.result_b, result_b=evidence.result_a)
    with pytest.raises(EvidenceMismatchError, match="duel names"):
        verify_evidence(record, swapped, key_of, chain_id=CHAIN)


def test_wrong_signer_is_refused() -> None:
    record, evidence = duel()
    # Executor a's claim signed with some other key than the one a registered.
    forged = signed(A, "Paris.", key=nacl.signing.SigningKey(b"\x66" * 32))
    with pytest.raises(EvidenceSignatureError, match="answer A"):
        verify_evidence(record, dataclasses.replace(evidence, result_a=forged), key_of, chain_id=CHAIN)
    # A duelist that never registered a key.
    with pytest.raises(EvidenceSignatureError, match="no registered key"):
        verify_evidence(record, evidence, lambda _: None, chain_id=CHAIN)


def test_hash_mismatch_with_the_chain_is_refused() -> None:
    record, evidence = duel()
    # A different, validly signed answer from a than the one recorded on-chain.
    other = signed(A, "It is Paris.")
    with pytest.raises(EvidenceMismatchError, match="recorded on-chain"):
        verify_evidence(record, dataclasses.replace(evidence, result_a=other, answer_a="It is Paris."), key_of,
                        chain_id=CHAIN)
    with pytest.raises(EvidenceMismatchError, match="another question"):
        verify_evidence(dataclasses.replace(record, question_hash=b"\x00" * 32), evidence, key_of, chain_id=CHAIN)
    with pytest.raises(EvidenceMismatchError, match="duel 8"):
        verify_evidence(dataclasses.replace(record, duel_id=8), evidence, key_of, chain_id=CHAIN)


def test_results_for_different_requests_or_chains_are_refused() -> None:
    ra = signed(A, "Paris.")
    with pytest.raises(EvidenceMismatchError, match="same request"):
        duel_hashes(ra, signed(B, "Lyon.", request_id="chatcmpl-2"))
    with pytest.raises(EvidenceMismatchError, match="same request"):
        duel_hashes(ra, signed(B, "Lyon.", model="other-model"))
    with pytest.raises(EvidenceMismatchError, match="different prompts"):
        duel_hashes(ra, signed(B, "Lyon.", prompt="What is the capital of France?"))
    with pytest.raises(EvidenceMismatchError, match="same executor"):
        duel_hashes(ra, signed(A, "Lyon."))
    record, evidence = duel()
    with pytest.raises(EvidenceSignatureError, match="chain"):
        verify_evidence(record, evidence, key_of, chain_id=1)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: "not an object",
        lambda d: {k: v for k, v in d.items() if k != "result_b"},
        lambda d: {**d, "duel_id": 0},
        lambda d: {**d, "duel_id": True},
        lambda d: {**d, "prompt": []},
        lambda d: {**d, "prompt": 3},
        lambda d: {**d, "max_tokens": -1},
        lambda d: {**d, "answer_a": None},
        lambda d: {**d, "result_a": {**d["result_a"], "signature": "zz"}},
    ],
)
def test_malformed_evidence_is_a_typed_error(mutate: object) -> None:
    _, evidence = duel()
    with pytest.raises(EvidenceMalformedError):
        Evidence.from_json(mutate(evidence.to_json()))  # type: ignore[operator]


def test_the_origin_store_keeps_evidence_per_duel_durably(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from judge.store import EvidenceStore

    _, evidence = duel()
    store = EvidenceStore(tmp_path / "evidence.sqlite", contract_address="0x" + "cc" * 20)
    assert store.get(7) is None
    store.put(evidence)
    store.put(dataclasses.replace(evidence, answer_a="something else"))  # a second put keeps the first
    store.close()
    reopened = EvidenceStore(tmp_path / "evidence.sqlite", contract_address="0x" + "cc" * 20)
    assert reopened.get(7) == evidence and reopened.duel_ids() == [7]
    other_contract = EvidenceStore(tmp_path / "evidence.sqlite", contract_address="0x" + "dd" * 20)
    assert other_contract.get(7) is None
