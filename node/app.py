"""The node's HTTP app: the OpenAI-compatible user API served from this node's own backends.

Routes stay thin: check the API key, read the body within the size limit, validate it with the
`node.protocol` models, hand it to the Request manager, and format the answer, each with the
executor's signed `wwwserve` attestation (`node.signing`). Every error leaves in the OpenAI shape
(`node.errors`): as a JSON answer when nothing was sent yet, as an SSE error event plus `[DONE]` when
a stream had already started.

With a Communication manager the app also serves the peer API (`/peer/probe`, `/peer/delegate`,
`/peer/voucher`, `/peer/evidence`), every message checked as a signed envelope before it runs, and the
Dispatcher may hand user requests to peers (PoS delegation); a delegated answer streams back with the
executor's attestation. An executor answers every delegated request with a work attestation too
(`wwwserve_work`, `ledger.work`, signed with its wallet over the origin's inspection commitment) and
keeps the request and its answer as duel evidence; a node whose wallet is locked cannot sign work and
takes no delegations.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, Protocol, TypeVar

import anyio
import nacl.signing
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from wwwserve.ledger import safejson
from wwwserve.ledger.work import WorkAttestation, answer_hash, model_hash, request_hash, request_id_hash
from wwwserve.node.backends.base import Backend, GenerationRequest
from wwwserve.node.backends.openai_compat import OpenAIBackend
from wwwserve.node.billing import PeerBilling, PeerStanding
from wwwserve.node.envelope import HEADER_SENDER, EnvelopeError
from wwwserve.node.errors import (
    AuthenticationError,
    BackendUnavailableError,
    InvalidRequestError,
    NodeError,
    PaymentRequiredError,
    PeerRejectedError,
    ProbeDeclinedError,
    RateLimitError,
    RequestTimeoutError,
    RequestTooLargeError,
    UpstreamTimeoutError,
    error_response,
    from_validation_error,
    install_error_handlers,
    sse_error_events,
)
from wwwserve.node.managers.communication import (
    PATH_DELEGATE,
    PATH_EVIDENCE,
    PATH_PROBE,
    PATH_VOUCHER,
    CommunicationManager,
    DelegateBody,
    PeerFailedError,
    ProbeBody,
    RemoteStream,
)
from wwwserve.node.managers.dispatch import Dispatcher, Source
from wwwserve.node.managers.duel import DuelManager, EvidenceRefusedError, model_asker, request_runner
from wwwserve.node.managers.model import ModelManager
from wwwserve.node.managers.policy import PolicyManager
from wwwserve.node.managers.request import LocalStream, RequestManager
from wwwserve.node.metrics import PROMETHEUS_CONTENT_TYPE, Metrics, MetricsMiddleware, measured
from wwwserve.node.policy import Policy, load_policy
from wwwserve.node.protocol import (
    SSE_DONE,
    ChatCompletionChunk,
    ChatCompletionChunkChoice,
    ChatCompletionDelta,
    ChatCompletionRequest,
    CompletionChoice,
    CompletionChunk,
    CompletionRequest,
    FinishReason,
    ModelCard,
    ModelList,
    Usage,
    chat_completion_body,
    completion_body,
    new_request_id,
    sse_event,
)
from wwwserve.node.serving import PeerRateLimiter
from wwwserve.node.settings import NodeSettings, SettingsError
from wwwserve.node.signing import ResultClaim, check_address, prompt_hash, sha256_text, sign_result

__all__ = ["EXECUTOR_HEADER", "ROUTES", "NodeApp", "create_app"]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

logger = logging.getLogger(__name__)

EXECUTOR_HEADER = "X-WWWServe-Executor"
"""Names the node that executed a request; sent on every generation answer, streamed or not."""

ROUTES = (
    "/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/ready", "/metrics",
    "/peer/probe", "/peer/delegate", "/peer/voucher", "/peer/evidence",
)

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


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


async def _read_body(request: Request, limit_bytes: int, timeout_s: float | None = None) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit_bytes` (header or bytes read),
    and with 408 when it has not all arrived `timeout_s` after the headers (a slow-body client)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _read_body_bytes(request, limit_bytes)
    except TimeoutError:
        raise RequestTimeoutError(timeout_s or 0.0) from None


async def _read_body_bytes(request: Request, limit_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit_bytes:
                raise RequestTooLargeError(limit_bytes)
        except ValueError:
            raise InvalidRequestError("The Content-Length header is not a number.") from None
    chunks: list[bytes] = []
    size = 0
    # Straight from the ASGI messages (Starlette's `stream()` costs more than the rest of reading);
    # counted as they come, since a chunked body has no Content-Length to trust.
    receive = request.receive
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit_bytes:
            raise RequestTooLargeError(limit_bytes)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _until_disconnected(receive: Receive) -> None:
    """Return once the client has gone: after the body, the ASGI server's next message is `http.disconnect`,
    sent when the connection closes (or once the response is complete)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """`work`'s result, or `ClientDisconnect` as soon as the client hangs up first, `work` cancelled: a whole
    answer nobody will read stops using the engine (a stream stops on its own: its writes fail)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_until_disconnected(receive))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        watch.cancel()
        raise
    if task.done():
        watch.cancel()
        return task.result()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    raise ClientDisconnect()


def _parse_json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise InvalidRequestError("The request needs a JSON body.", code="missing_body")
    try:
        # Depth, non-finite numbers and lone surrogates are refused before they reach the parser's C stack,
        # the prompt hash or a backend (ledger.safejson); NaN/Infinity are not JSON.
        data = safejson.loads(body)
    except safejson.UnsafeJSONError as exc:
        raise InvalidRequestError(
            f"We could not use the JSON body of your request: {exc}.", code="invalid_json"
        ) from None
    except ValueError:  # UnicodeDecodeError included
        raise InvalidRequestError(
            "We could not parse the JSON body of your request. The body must be valid JSON.", code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequestError("The request body must be a JSON object.", code="invalid_type")
    return data


def _validate(model: type[M], data: Mapping[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


class _ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that always runs `on_close`, even when the client disconnects mid-stream.

    Starlette neither closes the body iterator nor runs background tasks on a disconnect, so without
    this the backend would keep generating for nobody.
    """

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], Awaitable[None]], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Shielded: under a cancelled scope every await would be cancelled again at once.
            with anyio.CancelScope(shield=True):
                await self._on_close()


class _Signer:
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


class _WorkSigner:
    """Builds this node's work attestations (`ledger.work`) over the peers' requests it runs, signed with
    the operator wallet the Ledger manager holds."""

    def __init__(self, ledger: NodeLedger | None, node_address: str) -> None:
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


async def _sse_events(
    stream: LocalStream | RemoteStream,
    *,
    opening: BaseModel | None,
    text_chunk: Callable[[str], BaseModel],
    finish_chunk: Callable[[FinishReason, dict[str, Any]], BaseModel],
    usage_chunk: Callable[[Usage, dict[str, Any]], BaseModel],
    include_usage: bool,
    sign: Callable[[str], dict[str, Any]],
) -> AsyncIterator[bytes]:
    """The SSE body of a streamed chat or completion answer; the chunk factories say which.

    Text deltas as they come; then the finish chunk, which carries the signed `wwwserve` attestation over
    the whole output (and, to a peer, the `wwwserve_work` attestation) — or the usage chunk does, when the
    client asked for usage; then [DONE]. `sign(text)` gives those extension fields. A failure after the
    stream started becomes an OpenAI error event, and the stream is always closed.
    """
    pieces: list[str] = []
    try:
        if opening is not None:
            yield sse_event(opening)
        async for delta in stream:
            if delta.text:
                pieces.append(delta.text)
                yield sse_event(text_chunk(delta.text))
            if delta.finish_reason is None:
                continue
            attestation = sign("".join(pieces))
            yield sse_event(finish_chunk(delta.finish_reason, {} if include_usage else attestation))
            if include_usage:
                usage = Usage.of(delta.prompt_tokens or 0, delta.completion_tokens or 0)
                yield sse_event(usage_chunk(usage, attestation))
            yield SSE_DONE
            return
        raise BackendUnavailableError("The model backend ended the stream unexpectedly. Please retry.")
    except Exception as exc:
        if isinstance(exc, PeerFailedError):
            exc = UpstreamTimeoutError("The peer executing this request failed mid-answer. Please retry.")
        yield sse_error_events(exc)
    finally:
        await stream.aclose()


def _duel_manager(
    settings: NodeSettings,
    node_address: str,
    ledger: Any,
    communication: CommunicationManager | None,
    policy: Policy,
    requests: RequestManager,
    model_manager: ModelManager,
    metrics: Metrics,
) -> DuelManager | None:
    """The duel manager when this node can take part in duels: peers, a ledger with a wallet, judging on."""
    if communication is None or not settings.judge.enabled or not getattr(ledger, "has_account", False):
        return None
    from wwwserve.judge.journal import VoteJournal
    from wwwserve.judge.store import EvidenceStore

    judge = settings.judge
    served = model_manager.models()
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

    return DuelManager(
        my_address=node_address,
        ledger=ledger,
        communication=communication,
        should_inspect=policy.should_inspect,
        store=EvidenceStore(ledger.data_path("duels"), contract_address=contract),
        journal=VoteJournal(ledger.data_path("votes"), contract_address=contract),
        ask_model=model_asker(ask, judge_model),
        run_request=request_runner(run),
        poll_interval_s=judge.poll_interval_s,
        settle_grace_blocks=judge.settle_grace_blocks,
        judge_max_tokens=judge.max_tokens,
        appeal=judge.appeal,
        count=metrics.count,
        on_close=on_close,
    )


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
                    except Exception as exc:
                        if not isinstance(exc, NodeError | ValidationError):
                            logger.exception("unexpected error answering %s", scope["path"])
                        response = error_response(exc, request)
                    await response(scope, receive, send)

                await measured(self.node_metrics, run, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


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
) -> NodeApp:
    """The node's FastAPI app: the user API, and the peer API when `communication` is given.

    At most `settings.server.max_concurrent_requests` generations run at once; `queue_limit` more may
    wait (default: as many as may run). `node_address` is the node's on-chain id, named as executor.
    Without `communication` every request runs locally (no peers). `ledger` (the Ledger manager) gives
    the free credit, the peers' keys and fee vouchers; the app starts and stops it and `communication`.
    """
    server = settings.server
    model_manager = ModelManager(backends)
    requests = RequestManager(
        model_manager,
        max_concurrent=server.max_concurrent_requests,
        queue_limit=server.max_concurrent_requests if queue_limit is None else queue_limit,
        request_timeout_s=server.request_timeout_s,
    )
    if policy is None:
        rng = random.Random(settings.policy.rng_seed)
        policy = load_policy(settings.policy.policy_class, settings.policy.to_config(), rng)
    def free_credit_wei() -> int:
        # Fees owed but not yet in a voucher are spent already, as far as the policy is concerned.
        return 0 if ledger is None else max(0, ledger.credit_wei() - dispatcher.pending_fees_wei())

    policy_manager = PolicyManager(policy, model_manager, requests, credit_wei=free_credit_wei)
    metrics = Metrics(known_routes=ROUTES)
    attach = getattr(ledger, "use_policy", None)
    if attach is not None:
        # The Ledger manager's auto-stake reads the same policy and the same live load as dispatch.
        attach(policy, policy_manager.snapshot)
    dispatcher = Dispatcher(
        my_address=node_address,
        chain_id=chain_id,
        requests=requests,
        policy=policy_manager,
        communication=communication,
        ledger=ledger,
        fee_wei=settings.peers.fee_wei,
        max_hops=settings.peers.max_hops,
        no_peer_wait_s=settings.peers.no_peer_wait_s,
        max_redispatches=settings.peers.max_redispatches,
        k_exec=policy.config.k_exec,
        retry_delay_s=policy.config.retry_delay_s,
        reoffer_interval_s=policy.config.reoffer_interval_s,
        metrics=metrics,
    )
    signer = _Signer(signing_key, node_address, chain_id)
    api_keys = [key.get_secret_value().encode() for key in server.api_keys]
    duels = _duel_manager(settings, node_address, ledger, communication, policy, requests, model_manager, metrics)
    dispatcher.duels = duels
    work_signer = _WorkSigner(ledger, node_address)
    billing = PeerBilling(settings.peers.fee_wei, settings.peers.credit_limit_fees * settings.peers.fee_wei)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for backend in backends:
            # Backends that own a process (vllm) start it here, so /ready reports it while it loads.
            start = getattr(backend, "start", None)
            if start is not None:
                started = start()
                if inspect.isawaitable(started):
                    await started
        if ledger is not None:
            await ledger.start()
        if communication is not None:
            communication.start()
        if duels is not None:
            duels.start()
        try:
            yield
        finally:
            if duels is not None:
                await duels.aclose()
            await dispatcher.aclose()
            if communication is not None:
                await communication.aclose()
            if ledger is not None:
                await ledger.aclose()
            await model_manager.aclose()

    app = NodeApp(
        title="wwwserve node", strict_content_type=False, docs_url=None, redoc_url=None, lifespan=lifespan,
        metrics=metrics,
    )
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.state.model_manager = model_manager
    app.state.billing = billing
    app.state.request_manager = requests
    app.state.policy_manager = policy_manager
    app.state.dispatcher = dispatcher
    app.state.metrics = metrics

    def check_api_key(request: Request) -> None:
        if not api_keys:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        presented = token.strip().encode()
        # Compare against every key (no early exit) in constant time, so timing reveals nothing.
        matched = False
        for key in api_keys:
            matched |= hmac.compare_digest(presented, key)
        if scheme.lower() != "bearer" or not matched:
            raise AuthenticationError()

    async def read_json(request: Request) -> dict[str, Any]:
        return _parse_json_object(await _read_body(request, server.max_body_bytes, server.body_timeout_s))

    async def serve(
        kind: Literal["chat", "completion"],
        raw: dict[str, Any],
        route: Sequence[str],
        source: Source,
        request_id: str | None = None,
        inspect: bytes | None = None,
        receive: Receive | None = None,
        on_unanswered: Callable[[], object] | None = None,
    ) -> Response:
        """Validate, dispatch (here or a peer) and format one chat or completion request. A peer's request
        (`route` not empty) is answered with a work attestation too: this node's, signed over `inspect`,
        if it ran here; the executor's, relayed unchanged, if it went on to another peer. A whole answer,
        or a stream still waiting for its first output, is abandoned (the engine stops) when the client
        behind `receive` hangs up first. `on_unanswered` is called when a stream ends without its signed
        answer (it was abandoned or failed: the peer that asked will not pay for it)."""
        req: ChatCompletionRequest | CompletionRequest
        if kind == "chat":
            req = _validate(ChatCompletionRequest, raw)
            request_id = request_id or new_request_id("chatcmpl")
            greq = GenerationRequest.from_chat(req, request_id)
            # The prompt hash covers the messages exactly as the client sent them (node.signing).
            prompt: list[Mapping[str, Any]] | str = raw["messages"]
        else:
            req = _validate(CompletionRequest, raw)
            request_id = request_id or new_request_id("cmpl")
            greq = GenerationRequest.from_completion(req, request_id)
            prompt = req.prompt_text
        model = req.model
        rid = request_id

        def own_work(text: str) -> dict[str, Any]:
            """This node's work over a peer's request it ran itself (kept as evidence too)."""
            work = work_signer.sign(kind, raw, route, rid, model, text, inspect)
            if dispatcher.duels is not None:  # (the attribute, not `duels`: tests attach a manager of their own)
                dispatcher.duels.keep_work(work, kind, raw, text)
            return work.to_json()

        if not req.stream:
            generating = dispatcher.generate(greq, kind, raw, prompt, route, source, inspect)
            result, remote, work = await (generating if receive is None
                                          else _unless_disconnected(receive, generating))
            attestation = (
                remote.to_json() if remote is not None else signer.sign(rid, prompt, model, result.text, route)
            )
            executor = remote.executor if remote is not None else signer.node_address
            build = chat_completion_body if kind == "chat" else completion_body
            body = build(rid, model, result.text, result.finish_reason, result.prompt_tokens,
                         result.completion_tokens, attestation)
            if route:
                body["wwwserve_work"] = work.to_json() if work is not None else own_work(result.text)
            return JSONResponse(body, headers={EXECUTOR_HEADER: executor})

        opening = dispatcher.open_stream(greq, kind, raw, prompt, route, source, inspect)
        # A stream may wait long for its first output (a busy engine's queue): a client that leaves meanwhile
        # gives its place up at once instead of when the first write fails.
        stream = await (opening if receive is None else _unless_disconnected(receive, opening))
        answered = False

        def sign(text: str) -> dict[str, Any]:
            nonlocal answered
            answered = True
            extensions: dict[str, Any] = {}
            if isinstance(stream, RemoteStream):
                # The text reached the user already: a failed work check keeps it (no duel over it).
                attestation, work = dispatcher.finish_remote(stream, text, prompt, strict_work=False)
                extensions["wwwserve"] = attestation.to_json()
                if route and work is not None:
                    extensions["wwwserve_work"] = work.to_json()
            else:
                extensions["wwwserve"] = signer.sign(rid, prompt, model, text, route)
                if route:
                    extensions["wwwserve_work"] = own_work(text)
            return extensions

        created = int(time.time())
        if kind == "chat":

            def chunk(**fields: Any) -> BaseModel:
                return ChatCompletionChunk(id=rid, created=created, model=model, **fields)

            events = _sse_events(
                stream,
                opening=chunk(
                    choices=[ChatCompletionChunkChoice(delta=ChatCompletionDelta(role="assistant", content=""))]
                ),
                text_chunk=lambda text: chunk(
                    choices=[ChatCompletionChunkChoice(delta=ChatCompletionDelta(content=text))]
                ),
                finish_chunk=lambda reason, ext: chunk(
                    choices=[ChatCompletionChunkChoice(delta=ChatCompletionDelta(), finish_reason=reason)], **ext
                ),
                usage_chunk=lambda usage, ext: chunk(choices=[], usage=usage, **ext),
                include_usage=req.include_usage,
                sign=sign,
            )
        else:

            def chunk(**fields: Any) -> BaseModel:
                return CompletionChunk(id=rid, created=created, model=model, **fields)

            events = _sse_events(
                stream,
                opening=None,
                text_chunk=lambda text: chunk(choices=[CompletionChoice(text=text, finish_reason=None)]),
                finish_chunk=lambda reason, ext: chunk(
                    choices=[CompletionChoice(text="", finish_reason=reason)], **ext
                ),
                usage_chunk=lambda usage, ext: chunk(choices=[], usage=usage, **ext),
                include_usage=req.include_usage,
                sign=sign,
            )
        executor_name = stream.peer.address if isinstance(stream, RemoteStream) else signer.node_address

        async def close() -> None:
            await stream.aclose()
            if not answered and on_unanswered is not None:
                on_unanswered()

        return _ClosingStreamingResponse(
            events,
            on_close=close,
            media_type="text/event-stream",
            headers={**_SSE_HEADERS, EXECUTOR_HEADER: executor_name},
        )

    # The request-path routes take the raw Request and validate it themselves: served directly (NodeApp).
    async def chat_completions(request: Request) -> Response:
        check_api_key(request)
        return await serve("chat", await read_json(request), (), "user", receive=request.receive)

    async def completions(request: Request) -> Response:
        check_api_key(request)
        return await serve("completion", await read_json(request), (), "user", receive=request.receive)

    app.add_fast_route("/v1/chat/completions", chat_completions)
    app.add_fast_route("/v1/completions", completions)

    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        check_api_key(request)
        counts = communication.network_models() if communication is not None else {}
        local = model_manager.models()
        names = list(local) + sorted(m for m in counts if m not in local)
        # A local model this node has not (yet) registered still counts this node once.
        cards = [ModelCard(id=m, wwwserve_nodes=max(counts.get(m, 0), 1 if m in local else 0)) for m in names]
        return JSONResponse(ModelList(data=cards).model_dump())

    @app.get("/health")
    async def health() -> Response:
        """Liveness: the process answers."""
        return JSONResponse({"status": "ok"})

    @app.get("/ready")
    async def ready() -> Response:
        """Readiness: at least one backend can serve now."""
        status = await model_manager.health()
        if not any(status.values()):
            # A backend may say why (the local model: "loading: ..."), which the progress display shows.
            details = "; ".join(f"{b.name}: {getattr(b, 'status', '')}" for b in model_manager.backends
                                if isinstance(getattr(b, "status", None), str))
            message = "No model backend of this node is ready" + (f" ({details})." if details else ".")
            raise BackendUnavailableError(message, retry_after_s=1.0)
        return JSONResponse({"status": "ready", "backends": status, "models": model_manager.models()})

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition of the node's counters."""
        return Response(metrics.render(), media_type=PROMETHEUS_CONTENT_TYPE)

    if communication is None:
        return app

    # ---- the peer API: every message is a signed envelope, checked before anything runs ----------

    comm = communication

    peer_limiter = PeerRateLimiter(settings.peers.rate_limit_per_s, 2 * settings.peers.rate_limit_per_s)
    app.state.peer_limiter = peer_limiter

    async def verified(request: Request, path: str) -> tuple[str, dict[str, Any]]:
        # Cheap checks first (Bittensor's blacklist -> priority -> verify): an unregistered sender and a
        # sender over its rate cost a lookup, before the body is read or a signature checked.
        claimed = request.headers.get(HEADER_SENDER, "")
        if not claimed or comm.directory.pubkey_of(claimed) is None:
            metrics.count("wwwserve_peer_messages_total", path=path, outcome="rejected")
            raise PeerRejectedError("peer message rejected: the sender is not a registered node", 401)
        wait = peer_limiter.take(claimed, request.client.host if request.client else "", time.monotonic())
        if wait is not None:
            metrics.count("wwwserve_peer_messages_total", path=path, outcome="rate_limited")
            raise RateLimitError("Too many peer messages from this sender; retry later.", retry_after_s=wait)
        body = await _read_body(request, server.max_body_bytes, server.body_timeout_s)
        try:
            sender = comm.verifier.verify(request.headers, body, path=path)
        except EnvelopeError as exc:
            metrics.count("wwwserve_peer_messages_total", path=path, outcome="rejected")
            raise PeerRejectedError(f"peer message rejected: {exc}", exc.http_status) from None
        metrics.count("wwwserve_peer_messages_total", path=path, outcome="accepted")
        return sender, _parse_json_object(body)

    async def peer_probe(request: Request) -> Response:
        sender, data = await verified(request, PATH_PROBE)
        probe = _validate(ProbeBody, data)
        me = signer.node_address.lower()
        on_route = any(hop.lower() == me for hop in probe.route)
        accept = not on_route and bool(probe.route) and probe.route[-1].lower() == sender.lower()
        # A node that cannot sign work takes no delegations: its answers could never be dueled.
        accept = accept and work_signer.ready and await policy_manager.accept_probe(probe.model)
        return JSONResponse({"accept": accept})

    async def peer_delegate(request: Request) -> Response:
        sender, data = await verified(request, PATH_DELEGATE)
        body = _validate(DelegateBody, data)
        me = signer.node_address.lower()
        if body.route[-1].lower() != sender.lower():
            raise InvalidRequestError("The route must end with the sending node.", param="route")
        if any(hop.lower() == me for hop in body.route):
            raise InvalidRequestError("This node is already on the route (a cycle).", param="route")
        if len(body.route) > settings.peers.max_hops:
            raise InvalidRequestError(f"The route is longer than {settings.peers.max_hops} hops.", param="route")
        if not work_signer.ready:
            raise ProbeDeclinedError("This node cannot sign work attestations (its wallet is locked); it takes "
                                     "no delegations.")
        model = body.request.get("model")
        if body.accept_check and not (isinstance(model, str) and await policy_manager.accept_probe(model)):
            raise ProbeDeclinedError()
        # Peers pay or are not served: the fee is billed now and taken back if no answer comes of it.
        refusal = billing.refusal(sender, ledger.standing(sender)) if ledger is not None else None
        if refusal is not None:
            metrics.count("wwwserve_peer_messages_total", path=PATH_DELEGATE, outcome="payment_required")
            raise PaymentRequiredError(f"Delegation refused: {refusal}.")
        if ledger is not None:
            billing.bill(sender)
        # A stream that ends without its signed answer (the origin abandoned it: T1, a re-offer it no longer
        # needed, its user left) will not be paid for: its fee is taken back, or an honest origin would drift
        # towards the credit limit one abandoned stream at a time.
        unbill = (lambda: billing.refund(sender)) if ledger is not None else None
        try:
            return await serve(body.kind, body.request, body.route, "node", request_id=body.request_id,
                               inspect=body.inspect_bytes(), receive=request.receive, on_unanswered=unbill)
        except BaseException:
            if ledger is not None:
                billing.refund(sender)
            raise

    app.add_fast_route(PATH_PROBE, peer_probe)
    app.add_fast_route(PATH_DELEGATE, peer_delegate)

    @app.post(PATH_EVIDENCE)
    async def peer_evidence(request: Request) -> Response:
        sender, data = await verified(request, PATH_EVIDENCE)
        duel_id = data.get("duel_id")
        if not isinstance(duel_id, int) or isinstance(duel_id, bool) or duel_id < 1:
            raise InvalidRequestError("duel_id must be a positive integer.", param="duel_id")
        manager = dispatcher.duels
        if manager is None:
            raise BackendUnavailableError("This node takes no part in duels (judge.enabled is off or no wallet).")
        try:
            pieces = await asyncio.to_thread(manager.evidence_for, duel_id, sender)
        except EvidenceRefusedError as exc:
            raise PeerRejectedError(str(exc), exc.http_status) from None
        return JSONResponse(pieces.to_json())

    @app.post(PATH_VOUCHER)
    async def peer_voucher(request: Request) -> Response:
        sender, data = await verified(request, PATH_VOUCHER)
        from wwwserve.node.vouchers import SignedVoucher, VoucherError

        if ledger is None:
            raise BackendUnavailableError("This node keeps no ledger; it cannot take vouchers.")
        try:
            voucher = SignedVoucher.from_json(data)
            if voucher.origin.lower() != sender.lower():
                raise InvalidRequestError("A voucher must come from its origin.", param="origin")
            earned = ledger.accept_voucher(voucher)
        except VoucherError as exc:
            raise InvalidRequestError(f"Voucher refused: {exc}", param="voucher") from None
        return JSONResponse({"accepted": True, "earned_wei": str(earned)})

    return app
