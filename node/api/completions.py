"""The serving class of the OpenAI-compatible API (as vLLM's `OpenAIServingChat`): one chat or completion
request validated, dispatched (here or to a peer, `Dispatcher`), and answered, whole or as SSE, with the
executor's signed `wwwserve` attestation; a peer's request is answered with a work attestation too.

Routes (`node.api.routes`) only read the body and call `serve`; this holds everything between.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from wwwserve.node.api.io import SSE_HEADERS, ClosingStreamingResponse, unless_disconnected, validate
from wwwserve.node.attestation import ResultSigner, WorkSigner
from wwwserve.node.backends.base import GenerationRequest
from wwwserve.node.errors import BackendUnavailableError, UpstreamTimeoutError, sse_error_events
from wwwserve.node.managers.communication import PeerFailedError, RemoteStream
from wwwserve.node.managers.dispatch import Dispatcher, Source
from wwwserve.node.managers.request import LocalStream
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
    Usage,
    chat_completion_body,
    completion_body,
    new_request_id,
    sse_event,
)
from wwwserve.node.recent import RecentRequests
from wwwserve.node.signing import SignedResult, TokenUsage

__all__ = ["EXECUTOR_HEADER", "CompletionsServing", "sse_events"]

CLIENT_CLOSED_STATUS = 499
"""The status logged for a request whose client hung up first (nginx's "client closed request")."""

EXECUTOR_HEADER = "X-WWWServe-Executor"
"""Names the node that executed a request; sent on every generation answer, streamed or not."""


class CompletionsServing:
    """Serves `/v1/chat/completions` and `/v1/completions`, for this node's users and for peers."""

    def __init__(self, dispatcher: Dispatcher, signer: ResultSigner, work_signer: WorkSigner,
                 recent: RecentRequests | None = None) -> None:
        self.dispatcher = dispatcher
        self.signer = signer
        self.work_signer = work_signer
        self.recent = recent  # the log of requests answered, which the explorer shows (node.recent)

    async def serve(
        self,
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
        started_s = time.time()
        job = _Job.of(kind, raw, route, source, request_id, inspect)
        try:
            if not job.req.stream:
                return await self._whole(job, receive, started_s)
            return await self._stream(job, receive, on_unanswered, started_s)
        except BaseException as exc:  # logged with its status, then answered as before
            gone = isinstance(exc, ClientDisconnect | asyncio.CancelledError)
            self._log(job, started_s, None, getattr(exc, "http_status", CLIENT_CLOSED_STATUS if gone else 500),
                      error=str(getattr(exc, "code", None) or type(exc).__name__))
            raise

    def _log(self, job: _Job, started_s: float, remote: SignedResult | None, status: int, *,
             executor: str | None = None, error: str | None = None) -> None:
        """Log the request for the explorer (`node.recent`): its route, executor, latency and status."""
        if self.recent is None:
            return
        me = self.signer.node_address
        if remote is not None:
            executor = remote.executor
        # The unsigned route of a peer's answer lists every hop to its executor; a local answer's ends here.
        hops = remote.route if remote is not None and remote.route else (*job.route, me)
        if executor is not None and (not hops or hops[-1] != executor):
            hops = (*hops, executor)
        self.recent.record(request_id=job.request_id, started_s=started_s, model=job.model, kind=job.kind,
                           source="user" if job.source == "user" else "peer", route=hops, executor=executor,
                           status=status, stream=bool(job.req.stream), signature_checked=remote is not None,
                           error=error)

    def _own_work(self, job: _Job, text: str) -> dict[str, Any]:
        """This node's work over a peer's request it ran itself (kept as evidence too)."""
        work = self.work_signer.sign(job.kind, job.raw, job.route, job.request_id, job.model, text, job.inspect)
        if self.dispatcher.duels is not None:  # the duel feature keeps it as evidence
            self.dispatcher.duels.keep_work(work, job.kind, job.raw, text)
        return work.to_json()

    async def _whole(self, job: _Job, receive: Receive | None, started_s: float) -> Response:
        generating = self.dispatcher.generate(job.greq, job.kind, job.raw, job.prompt, job.route, job.source,
                                              job.inspect)
        result, remote, work = await (generating if receive is None else unless_disconnected(receive, generating))
        usage = TokenUsage(result.prompt_tokens, result.completion_tokens)
        attestation = (remote.to_json() if remote is not None
                       else self.signer.sign(job.request_id, job.prompt, job.model, result.text, usage, job.route))
        executor = remote.executor if remote is not None else self.signer.node_address
        build = chat_completion_body if job.kind == "chat" else completion_body
        body = build(job.request_id, job.model, result.text, result.finish_reason, result.prompt_tokens,
                     result.completion_tokens, attestation)
        if job.route:
            body["wwwserve_work"] = work.to_json() if work is not None else self._own_work(job, result.text)
        self._log(job, started_s, remote, 200, executor=executor)
        return JSONResponse(body, headers={EXECUTOR_HEADER: executor})

    async def _stream(self, job: _Job, receive: Receive | None, on_unanswered: Callable[[], object] | None,
                      started_s: float) -> Response:
        opening = self.dispatcher.open_stream(job.greq, job.kind, job.raw, job.prompt, job.route, job.source,
                                              job.inspect)
        # A stream may wait long for its first output (a busy engine's queue): a client that leaves meanwhile
        # gives its place up at once instead of when the first write fails.
        stream = await (opening if receive is None else unless_disconnected(receive, opening))
        answered = False
        checked: SignedResult | None = None

        def sign(text: str, usage: TokenUsage) -> dict[str, Any]:
            nonlocal answered, checked
            answered = True
            extensions: dict[str, Any] = {}
            if isinstance(stream, RemoteStream):
                # The text reached the user already: a failed work check keeps it (no duel over it).
                attestation, work = self.dispatcher.finish_remote(stream, text, job.prompt, usage,
                                                                  strict_work=False)
                checked = attestation
                extensions["wwwserve"] = attestation.to_json()
                if job.route and work is not None:
                    extensions["wwwserve_work"] = work.to_json()
            else:
                extensions["wwwserve"] = self.signer.sign(job.request_id, job.prompt, job.model, text, usage,
                                                          job.route)
                if job.route:
                    extensions["wwwserve_work"] = self._own_work(job, text)
            return extensions

        executor = stream.peer.address if isinstance(stream, RemoteStream) else self.signer.node_address

        async def close() -> None:
            await stream.aclose()
            # Ended without its signed answer: the client left, or the executor failed midway (the client saw
            # the error event); both logged as 502, the answer the client did not get.
            self._log(job, started_s, checked, 200 if answered else 502, executor=executor,
                      error=None if answered else "stream_ended_unanswered")
            if not answered and on_unanswered is not None:
                on_unanswered()

        return ClosingStreamingResponse(_chunks(job, stream, sign), on_close=close, media_type="text/event-stream",
                                        headers={**SSE_HEADERS, EXECUTOR_HEADER: executor})


@dataclass(frozen=True)
class _Job:
    """One validated request and what serving it needs to know."""

    kind: Literal["chat", "completion"]
    raw: dict[str, Any]  # as the client sent it (hashed for the work attestation)
    route: Sequence[str]
    source: Source
    inspect: bytes | None
    req: ChatCompletionRequest | CompletionRequest
    greq: GenerationRequest
    prompt: list[Mapping[str, Any]] | str  # what the result signature's prompt hash covers
    request_id: str

    @property
    def model(self) -> str:
        return self.req.model

    @classmethod
    def of(cls, kind: Literal["chat", "completion"], raw: dict[str, Any], route: Sequence[str], source: Source,
           request_id: str | None, inspect: bytes | None) -> _Job:
        req: ChatCompletionRequest | CompletionRequest
        if kind == "chat":
            req = validate(ChatCompletionRequest, raw)
            request_id = request_id or new_request_id("chatcmpl")
            greq = GenerationRequest.from_chat(req, request_id)
            # The prompt hash covers the messages exactly as the client sent them (node.signing).
            prompt: list[Mapping[str, Any]] | str = raw["messages"]
        else:
            req = validate(CompletionRequest, raw)
            request_id = request_id or new_request_id("cmpl")
            greq = GenerationRequest.from_completion(req, request_id)
            prompt = req.prompt_text
        return cls(kind, raw, route, source, inspect, req, greq, prompt, request_id)


def _chunks(job: _Job, stream: LocalStream | RemoteStream, sign: Callable[[str, TokenUsage], dict[str, Any]],
            ) -> AsyncIterator[bytes]:
    """The SSE body of `job`'s streamed answer, with the chunk shapes of its kind."""
    created = int(time.time())
    rid, model, usage_wanted = job.request_id, job.model, job.req.include_usage
    if job.kind == "chat":

        def chat(**fields: Any) -> BaseModel:
            return ChatCompletionChunk(id=rid, created=created, model=model, **fields)

        return sse_events(
            stream,
            opening=chat(choices=[ChatCompletionChunkChoice(delta=ChatCompletionDelta(role="assistant", content=""))]),
            text_chunk=lambda text: chat(choices=[ChatCompletionChunkChoice(delta=ChatCompletionDelta(content=text))]),
            finish_chunk=lambda reason, ext: chat(
                choices=[ChatCompletionChunkChoice(delta=ChatCompletionDelta(), finish_reason=reason)], **ext),
            usage_chunk=lambda usage, ext: chat(choices=[], usage=usage, **ext),
            include_usage=usage_wanted,
            sign=sign,
        )

    def completion(**fields: Any) -> BaseModel:
        return CompletionChunk(id=rid, created=created, model=model, **fields)

    return sse_events(
        stream,
        opening=None,
        text_chunk=lambda text: completion(choices=[CompletionChoice(text=text, finish_reason=None)]),
        finish_chunk=lambda reason, ext: completion(choices=[CompletionChoice(text="", finish_reason=reason)], **ext),
        usage_chunk=lambda usage, ext: completion(choices=[], usage=usage, **ext),
        include_usage=usage_wanted,
        sign=sign,
    )


async def sse_events(
    stream: LocalStream | RemoteStream,
    *,
    opening: BaseModel | None,
    text_chunk: Callable[[str], BaseModel],
    finish_chunk: Callable[[FinishReason, dict[str, Any]], BaseModel],
    usage_chunk: Callable[[Usage, dict[str, Any]], BaseModel],
    include_usage: bool,
    sign: Callable[[str, TokenUsage], dict[str, Any]],
) -> AsyncIterator[bytes]:
    """The SSE body of a streamed chat or completion answer; the chunk factories say which.

    Text deltas as they come; then the finish chunk, which carries the signed `wwwserve` attestation over
    the whole output and its token usage (and, to a peer, the `wwwserve_work` attestation) — or the usage
    chunk does, when the client asked for usage; then [DONE]. `sign(text, usage)` gives those extension
    fields. A failure after the stream started becomes an OpenAI error event, and the stream is always
    closed.
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
            usage = TokenUsage(delta.prompt_tokens or 0, delta.completion_tokens or 0)
            attestation = sign("".join(pieces), usage)
            yield sse_event(finish_chunk(delta.finish_reason, {} if include_usage else attestation))
            if include_usage:
                yield sse_event(usage_chunk(Usage.of(usage.prompt_tokens, usage.completion_tokens), attestation))
            yield SSE_DONE
            return
        raise BackendUnavailableError("The model backend ended the stream unexpectedly. Please retry.")
    except Exception as exc:
        if isinstance(exc, PeerFailedError):
            exc = UpstreamTimeoutError("The peer executing this request failed mid-answer. Please retry.")
        yield sse_error_events(exc)
    finally:
        await stream.aclose()
