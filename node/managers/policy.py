"""The Policy manager: builds what the policy sees (a `LoadSnapshot`) and asks it what to do.

The policy itself (`node.policy`, the reference default or a custom class) is pure; this manager feeds
it live numbers: each local model's load from its backend (a backend that cannot report load is
represented by this node's slot occupancy), the node's two queues, and its free credit from the Ledger
manager. The same policy object decides dispatch, probe acceptance and (through the Ledger manager)
auto-stake, so one seeded rng replays a node's decisions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from wwwserve.node.managers.model import ModelManager
from wwwserve.node.managers.request import RequestManager
from wwwserve.node.policy import Decision, LoadSnapshot, ModelLoad, Policy, observed_load

__all__ = ["PolicyManager"]

logger = logging.getLogger(__name__)


class PolicyManager:
    """Live inputs for `policy`; `credit_wei()` reads the node's free credit (0 without a ledger)."""

    def __init__(
        self,
        policy: Policy,
        model_manager: ModelManager,
        request_manager: RequestManager,
        credit_wei: Callable[[], int] = lambda: 0,
    ) -> None:
        self.policy = policy
        self.model_manager = model_manager
        self.request_manager = request_manager
        self._credit_wei = credit_wei

    async def snapshot(self) -> LoadSnapshot:
        """The policy's view now: per-model load, the user and node queues, free credit."""
        loads = await self.model_manager.load()
        models: dict[str, ModelLoad] = {}
        occupancy = self.request_manager.occupancy
        for name, load in loads.items():
            if load is None:
                models[name] = ModelLoad(kv_usage=occupancy, running=self.request_manager.running,
                                         waiting=self.request_manager.waiting)
            else:
                # The node's own slots bound what the backend sees; the busier of the two is the truth. A
                # fixed-concurrency engine with every slot taken by requests admitted here (some perhaps not
                # handed to it yet) is full: one more would wait.
                full = load.max_running is not None and self.request_manager.active(name) >= load.max_running
                models[name] = observed_load(load.kv_usage, load.running, load.waiting, 1.0 if full else occupancy)
        try:
            credit = self._credit_wei()
        except Exception:
            logger.warning("reading the node's credit failed; treating it as 0", exc_info=True)
            credit = 0
        return LoadSnapshot(
            models=models,
            user_queue=self.request_manager.waiting_from("user"),
            node_queue=self.request_manager.waiting_from("node"),
            credit_wei=max(0, credit),
        )

    async def decide(self, model: str) -> Decision:
        """What to do with a request for `model` now (policy.decide_dispatch)."""
        return self.policy.decide_dispatch(model, await self.snapshot())

    async def fallback(self, model: str) -> Decision:
        """What to do after an offload found no peer (policy.decide_fallback)."""
        return self.policy.decide_fallback(model, await self.snapshot())

    async def accept_probe(self, model: str) -> bool:
        """Whether to take a peer's request for `model` now: served here and the policy agrees."""
        if model not in self.model_manager.models():
            return False
        return self.policy.accept_probe(await self.snapshot(), model)
