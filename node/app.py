"""The node's HTTP app, composed: managers, the serving class, the routes, the features plugged in.

The user API is OpenAI-compatible (`/v1/chat/completions`, `/v1/completions`, `/v1/models`), served from
this node's backends or a peer's (PoS delegation through the Dispatcher); every answer carries the
executor's signed `wwwserve` attestation and every error leaves in the OpenAI shape. With a Communication
manager the app also serves the peer API (`node.api.peer`). Where things live:

- `node.api.routes`: the thin routes; `node.api.completions`: the serving class (validate, dispatch,
  format, sign); `node.api.peer`: the peer API; `node.api.io`: body limits, JSON, disconnects;
- `node.recent`: the log of requests answered (route, executor, latency, status), which the explorer shows;
- `node.attestation`: this node's signatures; `node.managers`: model, request, policy, dispatch (with
  `node.planner`), communication, ledger; `node.extensions`: how a feature plugs in (the duel feature,
  `wwwserve.judge.feature`, is one: the node serves without it).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import nacl.signing
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from wwwserve.ledger.work import WorkAttestation
from wwwserve.node.api import routes
from wwwserve.node.api.completions import EXECUTOR_HEADER, CompletionsServing
from wwwserve.node.api.peer import PeerAPI
from wwwserve.node.attestation import ResultSigner, WorkSigner
from wwwserve.node.backends.base import Backend
from wwwserve.node.billing import PeerBilling, PeerStanding
from wwwserve.node.errors import NodeError, error_response, install_error_handlers
from wwwserve.node.extensions import FeatureFactory, NodeContext, NodeFeature
from wwwserve.node.managers.communication import PATH_DELEGATE, PATH_PROBE, PATH_VOUCHER, CommunicationManager
from wwwserve.node.managers.dispatch import Dispatcher
from wwwserve.node.managers.fees import FeeBook
from wwwserve.node.managers.model import ModelManager
from wwwserve.node.managers.policy import PolicyManager
from wwwserve.node.managers.request import RequestManager
from wwwserve.node.metrics import Metrics, MetricsMiddleware, measured
from wwwserve.node.policy import Policy, load_policy
from wwwserve.node.recent import RecentRequests
from wwwserve.node.settings import NodeSettings

__all__ = ["EXECUTOR_HEADER", "ROUTES", "NodeApp", "NodeLedger", "create_app"]

logger = logging.getLogger(__name__)
# The status counted for a request whose client hung up before its answer (nginx's "client closed request").
CLIENT_CLOSED_REQUEST = 499

ROUTES = (
    "/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/ready", "/metrics",
    PATH_PROBE, PATH_DELEGATE, PATH_VOUCHER,
)


class NodeLedger(Protocol):
    """What the app needs from the Ledger manager (`node.managers.ledger.LedgerManager` fits)."""

    contract_address: str

    @property
    def has_account(self) -> bool: ...

    def sign_work(self, work: WorkAttestation) -> WorkAttestation: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    def credit_wei(self) -> int: ...

    def pubkey_of(self, address: str) -> bytes | None: ...

    def recent_block_hash(self) -> bytes: ...

    def record_fee(self, executor: str, fee_wei: int) -> Any: ...

    def accept_voucher(self, voucher: Any) -> int: ...

    def standing(self, address: str) -> PeerStanding: ...


Handler = Callable[[Request], Awaitable[Response]]


class NodeApp(FastAPI):
    """FastAPI, with the request-path routes (generation, peer probe and delegation) answered directly.

    FastAPI's stack (six middlewares, the router, the exit stack) cost about 0.3 ms a request on the
    2-core reference machine, and a delegation hop pays it on two nodes. These routes read and validate
    their own input and answer errors in the OpenAI shape, so `__call__` runs them without the stack,
    counting them in the metrics all the same. Every other route, other methods on these paths (405)
    and the lifespan go through FastAPI as usual.
    """

    def __init__(self, *args: Any, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast_routes: dict[str, Handler] = {}
        self.node_metrics = metrics

    def add_fast_route(self, path: str, handler: Handler) -> None:
        """Serve `POST path` with `handler`, directly (and through FastAPI for other methods: 405)."""
        self.fast_routes[path] = handler
        self.add_route(path, handler, methods=["POST"])

    def use_feature(self, feature: NodeFeature) -> None:
        """Plug `feature` in: its duel hooks into the request path, its peer routes behind the envelope checks,
        its background work into the lifespan (when the app has not started yet)."""
        node: routes.NodeServices = self.state.node
        if feature.duels is not None:
            node.serving.dispatcher.duels = feature.duels
        for path, handler in feature.peer_routes().items():
            if node.peer_api is None:
                raise ValueError(f"{path}: a node without peers has no peer API")
            self.node_metrics.known_routes = self.node_metrics.known_routes | {path}
            self.add_route(path, node.peer_api.feature_route(path, handler), methods=["POST"])
        for prefix, sub_app in feature.mounts().items():
            self.node_metrics.known_routes = self.node_metrics.known_routes | {prefix}
            self.mount(prefix, sub_app)
        self.state.parts.features.append(feature)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Direct dispatch of the fast routes; everything else through FastAPI."""
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self.fast_routes.get(scope["path"])
            if handler is not None:
                scope["app"] = self

                async def run(scope: Scope, receive: Receive, send: Send) -> None:
                    request = Request(scope, receive, send)
                    try:
                        response = await handler(request)
                    except ClientDisconnect:
                        # The client hung up before its answer: nothing went wrong here, and nobody is left to
                        # answer (the server drops what is sent); counted as 499, nginx's "client closed".
                        logger.info("%s: the client hung up before its answer", scope["path"])
                        response = Response(status_code=CLIENT_CLOSED_REQUEST)
                    except Exception as exc:
                        if not isinstance(exc, NodeError | ValidationError):
                            logger.exception("unexpected error answering %s", scope["path"])
                        response = error_response(exc, request)
                    await response(scope, receive, send)

                await measured(self.node_metrics, run, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


@dataclass
class _Parts:
    """What the app starts and stops, in order (the lifespan)."""

    backends: Sequence[Backend]
    model_manager: ModelManager
    dispatcher: Dispatcher
    ledger: NodeLedger | None
    communication: CommunicationManager | None
    features: list[NodeFeature] = field(default_factory=list)


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    parts: _Parts = app.state.parts
    for backend in parts.backends:
        # Backends that own a process (vllm) start it here, so /ready reports it while it loads.
        start = getattr(backend, "start", None)
        if start is not None:
            started = start()
            if inspect.isawaitable(started):
                await started
    if parts.ledger is not None:
        await parts.ledger.start()
    if parts.communication is not None:
        parts.communication.start()
    for feature in parts.features:
        feature.start()
    try:
        yield
    finally:
        for feature in reversed(parts.features):
            await feature.aclose()
        await parts.dispatcher.fees.aclose()  # pay what is owed before the node stops
        if parts.communication is not None:
            await parts.communication.aclose()
        if parts.ledger is not None:
            await parts.ledger.aclose()
        await parts.model_manager.aclose()


def create_app(
    settings: NodeSettings,
    backends: list[Backend],
    signing_key: nacl.signing.SigningKey,
    node_address: str,
    chain_id: int,
    *,
    queue_limit: int | None = None,
    policy: Policy | None = None,
    ledger: NodeLedger | None = None,
    communication: CommunicationManager | None = None,
    features: Sequence[FeatureFactory] = (),
) -> NodeApp:
    """The node's app: the user API, and the peer API when `communication` is given.

    At most `settings.server.max_concurrent_requests` generations run at once; `queue_limit` more may
    wait (default: as many as may run). `node_address` is the node's on-chain id, named as executor.
    Without `communication` every request runs locally (no peers). `ledger` (the Ledger manager) gives
    the free credit, the peers' keys and fee vouchers; the app starts and stops it and `communication`.
    `features` build what plugs in (`node.extensions`), each given the node's context.
    """
    server, peers = settings.server, settings.peers
    model_manager = ModelManager(backends)
    requests = RequestManager(model_manager, max_concurrent=server.max_concurrent_requests,
                              queue_limit=server.max_concurrent_requests if queue_limit is None else queue_limit,
                              request_timeout_s=server.request_timeout_s)
    if policy is None:
        policy = load_policy(settings.policy.policy_class, settings.policy.to_config(),
                             random.Random(settings.policy.rng_seed))
    fees = FeeBook(ledger, peers.fee_wei, communication.send_voucher_soon if communication is not None else None,
                   flush_interval_s=peers.fee_flush_interval_s)

    # Fees owed but not yet in a voucher are spent already, as far as the policy is concerned.
    def free_credit_wei() -> int:
        return 0 if ledger is None else max(0, ledger.credit_wei() - fees.pending_wei())

    policy_manager = PolicyManager(policy, model_manager, requests, credit_wei=free_credit_wei)
    metrics = Metrics(known_routes=ROUTES)
    attach = getattr(ledger, "use_policy", None)
    if attach is not None:  # the Ledger manager's auto-stake reads the policy and the live load dispatch reads
        attach(policy, policy_manager.snapshot)
    config = policy.config
    dispatcher = Dispatcher(
        my_address=node_address, chain_id=chain_id, requests=requests, policy=policy_manager,
        communication=communication, ledger=ledger, fees=fees, max_hops=peers.max_hops,
        no_peer_wait_s=peers.no_peer_wait_s, max_redispatches=peers.max_redispatches, k_exec=config.k_exec,
        retry_delay_s=config.retry_delay_s, reoffer_interval_s=config.reoffer_interval_s, metrics=metrics)
    recent = RecentRequests()
    serving = CompletionsServing(dispatcher, ResultSigner(signing_key, node_address, chain_id),
                                 WorkSigner(ledger, node_address), recent)
    billing = PeerBilling(peers.fee_wei, peers.credit_limit_fees * peers.fee_wei)
    peer_api = None if communication is None else PeerAPI(settings, communication, serving, policy_manager,
                                                          ledger, billing, metrics)
    app = NodeApp(title="wwwserve node", strict_content_type=False, docs_url=None, redoc_url=None,
                  lifespan=_lifespan, metrics=metrics)
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.state.node = routes.NodeServices(server, serving, model_manager, metrics, communication, peer_api)
    app.state.parts = _Parts(backends, model_manager, dispatcher, ledger, communication)
    # Handles tests and operators' tools reach for.
    app.state.model_manager, app.state.request_manager = model_manager, requests
    app.state.policy_manager, app.state.dispatcher = policy_manager, dispatcher
    app.state.billing, app.state.metrics, app.state.recent = billing, metrics, recent
    # The request-path routes take the raw Request and validate it themselves: served directly (NodeApp).
    app.add_fast_route("/v1/chat/completions", routes.chat_completions)
    app.add_fast_route("/v1/completions", routes.completions)
    for path, route in (("/v1/models", routes.list_models), ("/health", routes.health), ("/ready", routes.ready),
                        ("/metrics", routes.metrics)):
        app.add_api_route(path, route, methods=["GET"])
    if peer_api is not None:
        app.state.peer_limiter = peer_api.limiter
        app.add_fast_route(PATH_PROBE, peer_api.probe)
        app.add_fast_route(PATH_DELEGATE, peer_api.delegate)
        app.add_api_route(PATH_VOUCHER, peer_api.voucher, methods=["POST"])
    context = NodeContext(settings, node_address, ledger, communication, policy, requests, model_manager,
                          backends, metrics, recent)
    for factory in features:
        feature = factory(context)
        if feature is not None:
            app.use_feature(feature)
    return app
