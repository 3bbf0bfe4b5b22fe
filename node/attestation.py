"""This node's signatures over what it executes, in one room.

`ResultSigner` signs the `wwwserve` result claim every answer carries (ed25519, `node.signing`); `WorkSigner`
signs the work attestation (`ledger.work`, the wallet key) an executor returns to the peer that delegated
to it. Checking a peer's answer (`verify_result`, `check_work`) is the Dispatcher's, which holds the terms
it sent.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

import nacl.signing

from wwwserve.ledger.work import WorkAttestation, answer_hash, model_hash, request_hash, request_id_hash
from wwwserve.node.errors import BackendUnavailableError
from wwwserve.node.signing import ResultClaim, check_address, prompt_hash, sha256_text, sign_result

__all__ = ["ResultSigner", "WorkLedger", "WorkSigner"]


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
        route: Sequence[str] = (),
    ) -> dict[str, Any]:
        """`SignedResult.to_json()` of this node's claim over one result; route = `route` + this node."""
        claim = ResultClaim(
            chain_id=self.chain_id,
            request_id=request_id,
            prompt_sha256=prompt_hash(prompt, model),
            output_sha256=sha256_text(output),
            model=model,
            executor=self.node_address,
            timestamp_ms=int(time.time() * 1000),
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
