"""This node's signatures over what it executes, in one room.

Signing: `ResultSigner` signs the `wwwserve` result claim every answer carries (ed25519, `node.signing`);
`WorkSigner` signs the work attestation (`ledger.work`, the wallet key) an executor returns to the peer
that delegated to it.

Checking a peer's answer: `check_result` (its result claim, against the executor's registered key) and
`WorkTerms.check` (its work attestation, against exactly what this node sent and relayed). The Dispatcher
calls them and bans a peer that fails.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

import nacl.signing

from wwwserve.ledger.work import (
    WorkAttestation,
    WorkError,
    answer_hash,
    check_work,
    model_hash,
    request_hash,
    request_id_hash,
)
from wwwserve.node.errors import BackendUnavailableError
from wwwserve.node.extensions import Inspection
from wwwserve.node.signing import (
    ResultClaim,
    SignedResult,
    SigningError,
    TokenUsage,
    check_address,
    prompt_hash,
    sha256_text,
    sign_result,
    verify_result,
)

__all__ = ["WORK_CLOCK_SKEW_S", "ResultSigner", "WorkLedger", "WorkSigner", "WorkTerms", "check_result"]

WORK_CLOCK_SKEW_S = 60
"""Most an executor's `issuedAt` may differ from this node's clock."""


class WorkLedger(Protocol):
    """What signing work needs of the Ledger manager: the unlocked wallet."""

    @property
    def has_account(self) -> bool: ...

    def sign_work(self, work: WorkAttestation) -> WorkAttestation: ...


class ResultSigner:
    """Builds the `wwwserve` extension: the executor's signature over one request's result."""

    def __init__(self, key: nacl.signing.SigningKey, node_address: str, chain_id: int) -> None:
        self.key = key
        self.node_address = check_address(node_address, "node_address")
        self.chain_id = chain_id

    def sign(
        self,
        request_id: str,
        prompt: Sequence[Mapping[str, Any]] | str,
        model: str,
        output: str,
        usage: TokenUsage,
        route: Sequence[str] = (),
    ) -> dict[str, Any]:
        """`SignedResult.to_json()` of this node's claim over one result (its output and the token usage the
        answer states); route = `route` + this node."""
        claim = ResultClaim(
            chain_id=self.chain_id,
            request_id=request_id,
            prompt_sha256=prompt_hash(prompt, model),
            output_sha256=sha256_text(output),
            model=model,
            executor=self.node_address,
            timestamp_ms=int(time.time() * 1000),
            usage=usage,
        )
        return sign_result(self.key, claim, route=[*route, self.node_address]).to_json()


class WorkSigner:
    """Builds this node's work attestations (`ledger.work`) over the peers' requests it runs, signed with
    the operator wallet the Ledger manager holds."""

    def __init__(self, ledger: WorkLedger | None, node_address: str) -> None:
        self.ledger = ledger
        self.node_address = check_address(node_address, "node_address")

    @property
    def ready(self) -> bool:
        """Whether this node can sign work (an unlocked wallet): without it, it takes no delegations."""
        return self.ledger is not None and bool(getattr(self.ledger, "has_account", False))

    def sign(
        self,
        kind: Literal["chat", "completion"],
        raw_request: Mapping[str, Any],
        route: Sequence[str],
        request_id: str,
        model: str,
        text: str,
        inspect: bytes | None,
    ) -> WorkAttestation:
        """This node's signed work over `text`, the answer to `raw_request` as received from `route`."""
        if self.ledger is None:
            raise BackendUnavailableError("This node keeps no ledger; it cannot sign work.")
        work = WorkAttestation(
            origin=route[0],
            executor=self.node_address,
            request_id=request_id_hash(request_id),
            request_hash=request_hash(kind, raw_request),
            model_hash=model_hash(model),
            answer_hash=answer_hash(text),
            inspect=inspect if inspect is not None else b"\x00" * 32,
            issued_at=int(time.time()),
        )
        return self.ledger.sign_work(work)


def check_result(att: SignedResult | None, request_id: str, model: str, key_of: Callable[[str], bytes | None],
                 output_text: str, prompt: Sequence[Mapping[str, Any]] | str, usage: TokenUsage, *,
                 chain_id: int) -> SignedResult:
    """The executor's result claim of a delegated answer, checked: for this request and model, signed by
    the key its executor registered on-chain (`key_of`), over exactly `output_text`, `prompt` and `usage`
    (what this node will pass on: the executor may be further down a multi-hop route than the peer
    asked). `SigningError` otherwise."""
    if att is None:
        raise SigningError("no attestation")
    if att.request_id != request_id or att.claim.model != model:
        raise SigningError("attestation is for another request or model")
    key = key_of(att.executor)
    if key is None:
        raise SigningError(f"executor {att.executor} has no registered key")
    verify_result(att, key, output_text, prompt, usage=usage, expected_chain_id=chain_id)
    return att


class WorkTerms:
    """What the executor of one request must attest (`ledger.work.WorkAttestation`), as the node that
    delegates it sent it: origin, request id, request hash, model, inspection commitment.

    Built for every request that may be delegated; the costly parts (the request's canonical hash, the
    origin's duel draw) are computed only when a delegation actually leaves. `inspection` is the origin's
    own draw (None on a relaying hop, which only passes the commitment on)."""

    def __init__(
        self,
        *,
        kind: Literal["chat", "completion"],
        raw_request: Mapping[str, Any],
        request_id: str,
        model: str,
        origin: str,
        inspect: bytes | None = None,
        draw: Callable[[], bool] | None = None,
    ) -> None:
        self.kind = kind
        self.raw_request = raw_request
        self.request_id = request_id
        self.model = model
        self.origin = origin
        self._inspect = inspect
        self._draw = draw

    @functools.cached_property
    def inspection(self) -> Inspection | None:
        """The origin's draw (made on first use: before the first delegation leaves)."""
        if self._inspect is not None:
            return None
        return Inspection.draw(self.request_id, bool(self._draw()) if self._draw is not None else False)

    @property
    def inspect(self) -> bytes:
        """The commitment sent with (or relayed with) the request."""
        if self._inspect is not None:
            return self._inspect
        inspection = self.inspection
        assert inspection is not None
        return inspection.commitment

    @functools.cached_property
    def request_hash(self) -> bytes:
        """keccak256 of the request's canonical bytes, as relayed."""
        return request_hash(self.kind, self.raw_request)

    def check(self, work: WorkAttestation | None, executor: str, text: str, *, chain_id: int, contract: str,
              now_s: float | None = None) -> WorkAttestation:
        """`work` if it is signed by `executor` and says exactly these terms over `text`; else `WorkError`."""
        if work is None:
            raise WorkError("no work attestation")
        check_work(chain_id, contract, work)  # signed by its executor
        if work.executor.lower() != executor.lower():
            raise WorkError(f"work attested by {work.executor}, the result by {executor}")
        if work.origin.lower() != self.origin.lower():
            raise WorkError(f"work attested for origin {work.origin}, not {self.origin}")
        if work.request_id != request_id_hash(self.request_id):
            raise WorkError("work attested for another request id")
        if work.request_hash != self.request_hash:
            raise WorkError("work attested over another request (model, prompt or sampling parameters differ)")
        if work.model_hash != model_hash(self.model):
            raise WorkError("work attested for another model")
        if work.answer_hash != answer_hash(text):
            raise WorkError("work attested over another answer")
        if work.inspect != self.inspect:
            raise WorkError("work attested with another inspection commitment")
        now = time.time() if now_s is None else now_s
        if abs(work.issued_at - now) > WORK_CLOCK_SKEW_S:
            raise WorkError(f"work issued at {work.issued_at}, {work.issued_at - now:+.0f} s from now")
        return work
