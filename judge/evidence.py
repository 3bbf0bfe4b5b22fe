"""Duel evidence: what the origin commits on-chain, what it serves to judges, and how a judge checks it.

When a delegated request becomes a duel, two executors (a, b) answered the same question and each signed
its result (`node.signing.SignedResult`). The origin opens the duel on-chain with three hashes
(`duel_hashes`):

- question hash  = the prompt hash both executors signed (`ResultClaim.prompt_sha256`, which covers the
  model too), so the question cannot be swapped after the fact;
- answer A / B hash = each executor's signed output hash (`ResultClaim.output_sha256`).

A judge fetches the `Evidence` (question, both answers, both signed results) from the origin and accepts
it only if `verify_evidence` holds: each result is signed by the key its executor registered, names the
duel's duelist in the right slot, is for the same request, model and chain as the other, and hashes to
exactly what the chain recorded; the texts hash to the signed output hashes; the question hashes to the
signed prompt hash. Anything else raises an `EvidenceError` and the judge must not vote on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from node.signing import (
    MalformedSignedResultError,
    SignedResult,
    SigningError,
    check_address,
    verify_result,
)

__all__ = [
    "DuelRecord",
    "Evidence",
    "EvidenceError",
    "EvidenceMalformedError",
    "EvidenceMismatchError",
    "EvidenceSignatureError",
    "duel_hashes",
    "verify_evidence",
]

Prompt = Sequence[Mapping[str, Any]] | str


class EvidenceError(Exception):
    """The evidence for a duel does not hold; a judge must not vote on it."""


class EvidenceMalformedError(EvidenceError, ValueError):
    """The evidence is not well formed (missing fields, wrong types)."""


class EvidenceMismatchError(EvidenceError):
    """The evidence disagrees with the on-chain record or with itself (hashes, duelists, request)."""


class EvidenceSignatureError(EvidenceError):
    """A result's signature does not hold under the key its executor registered."""


@dataclass(frozen=True)
class DuelRecord:
    """What the chain recorded when the duel opened (`DuelOpened` event)."""

    duel_id: int
    origin: str
    a: str
    b: str
    question_hash: bytes
    answer_a_hash: bytes
    answer_b_hash: bytes


@dataclass(frozen=True)
class Evidence:
    """What the origin serves to the duel's judges."""

    duel_id: int
    prompt: Prompt
    max_tokens: int | None
    answer_a: str
    answer_b: str
    result_a: SignedResult
    result_b: SignedResult

    @property
    def model(self) -> str:
        """The model both executors ran (as signed by executor a)."""
        return self.result_a.claim.model

    def to_json(self) -> dict[str, Any]:
        """The wire form (JSON-safe)."""
        return {
            "duel_id": self.duel_id,
            "prompt": self.prompt if isinstance(self.prompt, str) else [dict(m) for m in self.prompt],
            "max_tokens": self.max_tokens,
            "answer_a": self.answer_a,
            "answer_b": self.answer_b,
            "result_a": self.result_a.to_json(),
            "result_b": self.result_b.to_json(),
        }

    @classmethod
    def from_json(cls, data: object) -> Evidence:
        """Parse the wire form; `EvidenceMalformedError` says what is wrong."""
        if not isinstance(data, Mapping):
            raise EvidenceMalformedError("evidence must be a JSON object")
        missing = [k for k in ("duel_id", "prompt", "answer_a", "answer_b", "result_a", "result_b") if k not in data]
        if missing:
            raise EvidenceMalformedError(f"evidence lacks {missing}")
        duel_id, prompt, max_tokens = data["duel_id"], data["prompt"], data.get("max_tokens")
        if not isinstance(duel_id, int) or isinstance(duel_id, bool) or duel_id < 1:
            raise EvidenceMalformedError(f"duel_id must be a positive integer, got {duel_id!r}")
        if not isinstance(prompt, str) and not (
            isinstance(prompt, list) and all(isinstance(m, Mapping) for m in prompt) and prompt
        ):
            raise EvidenceMalformedError("prompt must be a string or a non-empty list of messages")
        if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)
                                       or max_tokens < 1):
            raise EvidenceMalformedError(f"max_tokens must be a positive integer or null, got {max_tokens!r}")
        for key in ("answer_a", "answer_b"):
            if not isinstance(data[key], str):
                raise EvidenceMalformedError(f"{key} must be a string")
        try:
            result_a = SignedResult.from_json(data["result_a"])
            result_b = SignedResult.from_json(data["result_b"])
        except MalformedSignedResultError as exc:
            raise EvidenceMalformedError(f"a signed result is malformed: {exc}") from None
        return cls(duel_id, prompt, max_tokens, data["answer_a"], data["answer_b"], result_a, result_b)


def duel_hashes(result_a: SignedResult, result_b: SignedResult) -> tuple[bytes, bytes, bytes]:
    """(question, answer A, answer B) hashes the origin records on-chain for a duel of these two results.

    Raises `EvidenceMismatchError` if the two results are not answers to the same signed question.
    """
    _same_question(result_a, result_b)
    return result_a.claim.prompt_sha256, result_a.claim.output_sha256, result_b.claim.output_sha256


def _same_question(result_a: SignedResult, result_b: SignedResult) -> None:
    ca, cb = result_a.claim, result_b.claim
    if ca.request_id != cb.request_id or ca.model != cb.model or ca.chain_id != cb.chain_id:
        raise EvidenceMismatchError("the two results are not for the same request, model and chain")
    if ca.prompt_sha256 != cb.prompt_sha256:
        raise EvidenceMismatchError("the two results were signed over different prompts")
    if ca.executor == cb.executor:
        raise EvidenceMismatchError("both results come from the same executor")


def verify_evidence(
    record: DuelRecord,
    evidence: Evidence,
    key_of: Callable[[str], bytes | None],
    *,
    chain_id: int,
) -> None:
    """Check `evidence` against the on-chain `record`; raises an `EvidenceError` if anything is off.

    `key_of(address)` gives the ed25519 key an address registered on-chain (None if it never did).
    """
    if evidence.duel_id != record.duel_id:
        raise EvidenceMismatchError(f"evidence is for duel {evidence.duel_id}, not duel {record.duel_id}")
    slots = (
        ("a", record.a, record.answer_a_hash, evidence.result_a, evidence.answer_a),
        ("b", record.b, record.answer_b_hash, evidence.result_b, evidence.answer_b),
    )
    for slot, duelist, onchain_hash, result, text in slots:
        if result.claim.executor != check_address(duelist, f"duelist {slot}"):
            raise EvidenceMismatchError(
                f"answer {slot.upper()} was signed by {result.claim.executor}, the duel names {duelist}"
            )
        if result.claim.output_sha256 != onchain_hash:
            raise EvidenceMismatchError(f"answer {slot.upper()}'s signed hash is not the one recorded on-chain")
        if result.claim.prompt_sha256 != record.question_hash:
            raise EvidenceMismatchError(f"answer {slot.upper()} was signed over another question")
        key = key_of(duelist)
        if key is None:
            raise EvidenceSignatureError(f"duelist {duelist} has no registered key")
        try:
            # Signature under the registered key, the text's hash, the question's hash, the chain id.
            verify_result(result, bytes(key), text, evidence.prompt, expected_chain_id=chain_id)
        except SigningError as exc:
            raise EvidenceSignatureError(f"answer {slot.upper()}: {exc}") from None
    _same_question(evidence.result_a, evidence.result_b)
