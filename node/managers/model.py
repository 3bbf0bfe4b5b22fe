"""The Model manager: which local backend serves which model, and their health and load.

It is a lookup table plus fan-out helpers; it owns no queue (that is the Request manager's) and never
raises from `health`/`load` for one broken backend (a dead engine must not break `/ready` for the
others).
"""

from __future__ import annotations

import asyncio
import logging

from wwwserve.node.backends.base import Backend, BackendLoad
from wwwserve.node.errors import ModelNotFoundError

__all__ = ["ModelManager"]

logger = logging.getLogger(__name__)


class ModelManager:
    """Model name → backend for the backends this node runs; the first backend listing a model wins."""

    def __init__(self, backends: list[Backend]) -> None:
        self.backends: list[Backend] = list(backends)
        self._by_model: dict[str, Backend] = {}
        for backend in self.backends:
            for model in backend.models:
                # First one wins: a config listing a model twice must not silently move it.
                self._by_model.setdefault(model, backend)

    def models(self) -> list[str]:
        """The model names served locally, in configuration order."""
        return list(self._by_model)

    def backend_for(self, model: str) -> Backend:
        """The backend serving `model`; `ModelNotFoundError` (404) when none does."""
        backend = self._by_model.get(model)
        if backend is None:
            raise ModelNotFoundError(model)
        return backend

    async def health(self) -> dict[str, bool]:
        """Backend name → healthy, checked concurrently; a backend whose check raises counts as down."""
        results = await asyncio.gather(*(b.health() for b in self.backends), return_exceptions=True)
        out: dict[str, bool] = {}
        for backend, result in zip(self.backends, results, strict=True):
            if isinstance(result, BaseException):
                logger.warning("health check of backend %s raised", backend.name, exc_info=result)
            out[backend.name] = result is True
        return out

    async def any_healthy(self) -> bool:
        """Whether at least one backend can serve now."""
        return any((await self.health()).values())

    async def load(self) -> dict[str, BackendLoad | None]:
        """Model name → its backend's load now (None when the backend cannot report it).

        One backend after the other, not gathered: `load()` is cheap (cached or computed in memory), and
        awaiting coroutines that do not suspend keeps a dispatch decision and the admission that follows
        it in one step of the event loop, so a burst of requests cannot all decide on the same stale load.
        """
        loads: dict[int, BackendLoad | None] = {}
        for backend in self.backends:
            try:
                loads[id(backend)] = await backend.load()
            except Exception as exc:
                logger.warning("load of backend %s raised", backend.name, exc_info=exc)
                loads[id(backend)] = None
        return {model: loads[id(backend)] for model, backend in self._by_model.items()}

    def engine_kv_usage(self) -> dict[str, float]:
        """Backend name → the KV-cache usage (0..1) its engine last reported, for the backends that report one
        (`engine_kv_usage()`: the openai and vllm backends over an engine with /metrics); no I/O."""
        out: dict[str, float] = {}
        for backend in self.backends:
            report = getattr(backend, "engine_kv_usage", None)
            usage = report() if callable(report) else None
            if usage is not None:
                out[backend.name] = float(usage)
        return out

    async def aclose(self) -> None:
        """Close every backend (errors are logged, so one cannot keep the others open)."""
        for backend in self.backends:
            try:
                await backend.aclose()
            except Exception:
                logger.warning("closing backend %s failed", backend.name, exc_info=True)
