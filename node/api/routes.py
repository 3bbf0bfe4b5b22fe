"""The node's routes, module-level and thin (as vLLM's `api_router`): each checks the caller, reads its input
and hands it to the serving object that does the work (`NodeServices`, in `app.state.node`).

User API: `/v1/chat/completions`, `/v1/completions`, `/v1/models`; operations: `/health`, `/ready`,
`/metrics`. The peer API's handlers are `node.api.peer.PeerAPI`'s.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from wwwserve.node.api.completions import CompletionsServing
from wwwserve.node.api.io import parse_json_object, read_body
from wwwserve.node.api.peer import PeerAPI
from wwwserve.node.errors import AuthenticationError, BackendUnavailableError
from wwwserve.node.managers.communication import CommunicationManager
from wwwserve.node.managers.model import ModelManager
from wwwserve.node.metrics import Metrics
from wwwserve.node.protocol import ModelCard, ModelList
from wwwserve.node.settings import ServerSettings

__all__ = ["NodeServices", "chat_completions", "completions", "health", "list_models", "metrics", "ready"]


@dataclass
class NodeServices:
    """What the routes of one node reach: its serving objects and the checks every user route makes."""

    server: ServerSettings
    serving: CompletionsServing
    model_manager: ModelManager
    metrics: Metrics
    communication: CommunicationManager | None = None
    peer_api: PeerAPI | None = None

    def __post_init__(self) -> None:
        self._api_keys = [key.get_secret_value().encode() for key in self.server.api_keys]

    def check_api_key(self, request: Request) -> None:
        if not self._api_keys:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        presented = token.strip().encode()
        # Compare against every key (no early exit) in constant time, so timing reveals nothing.
        matched = False
        for key in self._api_keys:
            matched |= hmac.compare_digest(presented, key)
        if scheme.lower() != "bearer" or not matched:
            raise AuthenticationError()

    async def read_json(self, request: Request) -> dict[str, Any]:
        return parse_json_object(await read_body(request, self.server.max_body_bytes, self.server.body_timeout_s))


def services(request: Request) -> NodeServices:
    node: NodeServices = request.app.state.node
    return node


async def chat_completions(request: Request) -> Response:
    node = services(request)
    node.check_api_key(request)
    return await node.serving.serve("chat", await node.read_json(request), (), "user", receive=request.receive)


async def completions(request: Request) -> Response:
    node = services(request)
    node.check_api_key(request)
    return await node.serving.serve("completion", await node.read_json(request), (), "user", receive=request.receive)


async def list_models(request: Request) -> Response:
    node = services(request)
    node.check_api_key(request)
    counts = node.communication.network_models() if node.communication is not None else {}
    local = node.model_manager.models()
    names = list(local) + sorted(m for m in counts if m not in local)
    # A local model this node has not (yet) registered still counts this node once.
    cards = [ModelCard(id=m, wwwserve_nodes=max(counts.get(m, 0), 1 if m in local else 0)) for m in names]
    return JSONResponse(ModelList(data=cards).model_dump())


async def health(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    """Readiness: at least one backend can serve now."""
    manager = services(request).model_manager
    status = await manager.health()
    if not any(status.values()):
        # A backend may say why (the local model: "loading: ..."), which the progress display shows.
        details = "; ".join(f"{b.name}: {getattr(b, 'status', '')}" for b in manager.backends
                            if isinstance(getattr(b, "status", None), str))
        message = "No model backend of this node is ready" + (f" ({details})." if details else ".")
        raise BackendUnavailableError(message, retry_after_s=1.0)
    return JSONResponse({"status": "ready", "backends": status, "models": manager.models()})


async def metrics(request: Request) -> Response:
    """Prometheus exposition of the node's metrics (prometheus_client)."""
    from wwwserve.node.metrics import PROMETHEUS_CONTENT_TYPE

    return Response(services(request).metrics.render(), media_type=PROMETHEUS_CONTENT_TYPE)
