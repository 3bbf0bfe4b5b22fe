"""The duel feature, plugged into a serving node (`node.extensions`): the composition root passes
`duel_feature` to `create_app`, which calls it with the node's context. The node serves without it.

It builds the Duel manager when this node can take part in duels (peers, a ledger with an unlocked wallet,
`judge.enabled`), with a judge model (this node's own backend by default, or `judge.base_url`), and serves
`/peer/evidence` behind the peer API's envelope checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.types import ASGIApp

from wwwserve.judge.manager import PATH_EVIDENCE, DuelManager, EvidenceRefusedError, model_asker, request_runner
from wwwserve.node.backends.base import GenerationRequest
from wwwserve.node.backends.fake import FakeBackend
from wwwserve.node.backends.openai_compat import OpenAIBackend
from wwwserve.node.errors import InvalidRequestError, PeerRejectedError
from wwwserve.node.extensions import DuelHooks, NodeContext, PeerHandler
from wwwserve.node.settings import SettingsError

__all__ = ["DuelFeature", "duel_feature"]


class DuelFeature:
    """The Duel manager as a node feature: its hooks on the request path, its evidence route, its loops."""

    def __init__(self, manager: DuelManager) -> None:
        self.manager = manager

    @property
    def duels(self) -> DuelHooks:
        return self.manager

    def peer_routes(self) -> Mapping[str, PeerHandler]:
        return {PATH_EVIDENCE: self.evidence}

    def mounts(self) -> Mapping[str, ASGIApp]:
        return {}  # duels serve peers only

    async def evidence(self, sender: str, data: dict[str, Any]) -> Mapping[str, Any]:
        """`/peer/evidence` {duel_id}: the pieces this node holds, for a seat holder (the request alone for
        the challenger)."""
        duel_id = data.get("duel_id")
        if not isinstance(duel_id, int) or isinstance(duel_id, bool) or duel_id < 1:
            raise InvalidRequestError("duel_id must be a positive integer.", param="duel_id")
        try:
            pieces = await asyncio.to_thread(self.manager.evidence_for, duel_id, sender)
        except EvidenceRefusedError as exc:
            raise PeerRejectedError(str(exc), exc.http_status) from None
        return pieces.to_json()

    def start(self) -> None:
        self.manager.start()

    async def aclose(self) -> None:
        await self.manager.aclose()


def scripted_judge(rule: str) -> Callable[[str], str | None]:
    """A scripted judge for fake backends (`backend.fake.judge_rule`): for the judge prompt of `judge.prompt`,
    the slot whose answer is longer (or shorter), "#" when they are as long; None for any other prompt."""
    from wwwserve.judge.prompt import prompt_answers

    def verdict(prompt: str) -> str | None:
        answers = prompt_answers(prompt)
        if answers is None:
            return None
        answer_a, answer_b = answers
        if len(answer_a) == len(answer_b):
            return "#"
        a_longer = len(answer_a) > len(answer_b)
        return "A" if a_longer == (rule == "longer") else "B"

    return verdict


def duel_feature(node: NodeContext) -> DuelFeature | None:
    """The duel feature of `node`, or None when it cannot take part in duels (no peers, no unlocked wallet,
    `judge.enabled` off, no model to judge with)."""
    settings, ledger, requests = node.settings, node.ledger, node.requests
    for backend in node.backends:  # fake backends with a judge rule answer the judge prompt by script
        if isinstance(backend, FakeBackend) and backend.judge_rule is not None:
            backend.scripted = scripted_judge(backend.judge_rule)
    if node.communication is None or not settings.judge.enabled or not getattr(ledger, "has_account", False):
        return None
    from wwwserve.judge.journal import VoteJournal
    from wwwserve.judge.store import EvidenceStore

    judge = settings.judge
    served = node.model_manager.models()
    judge_model = judge.model or (served[0] if served else None)
    if judge_model is None:
        return None
    contract = ledger.contract_address
    on_close = None
    if judge.base_url is not None:
        # A separate judge: its own OpenAI-compatible endpoint, not this node's backend or queue.
        key = judge.api_key.get_secret_value() if judge.api_key is not None else None
        judge_backend = OpenAIBackend(judge.base_url, models=[judge_model], api_key=key, name="judge")
        ask: Callable[[GenerationRequest], Awaitable[Any]] = judge_backend.generate
        on_close = judge_backend.aclose
    else:
        if judge_model not in served:
            raise SettingsError([f"judge.model: {judge_model!r} is not served by this node (it serves "
                                 f"{', '.join(served)}); set judge.base_url to judge with another endpoint"])

        async def ask(req: GenerationRequest) -> Any:
            return await requests.generate(req, source="node")

    async def run(req: GenerationRequest) -> Any:  # the challenger's answer, on this node's own backend
        return await requests.generate(req, source="node")

    manager = DuelManager(
        my_address=node.node_address,
        ledger=ledger,
        communication=node.communication,
        should_inspect=node.policy.should_inspect,
        store=EvidenceStore(ledger.data_path("duels"), contract_address=contract),
        journal=VoteJournal(ledger.data_path("votes"), contract_address=contract),
        ask_model=model_asker(ask, judge_model),
        run_request=request_runner(run),
        poll_interval_s=judge.poll_interval_s,
        settle_grace_blocks=judge.settle_grace_blocks,
        judge_max_tokens=judge.max_tokens,
        appeal=judge.appeal,
        count=node.metrics.count,
        on_close=on_close,
    )
    return DuelFeature(manager)
