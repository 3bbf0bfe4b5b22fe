"""A deterministic in-process backend for routing tests and the serving benchmark.

The answer is derived from the prompt and the seed only: the prompt's words in reverse order, rotated
by `seed`, cut to `max_tokens` words (finish "length") or at a stop sequence (finish "stop"). With
`words=N` the reversed prompt is cycled to exactly N words instead, for long outputs. Tokens are
whitespace-separated words, for the prompt, the output and the context limit alike.

It behaves like a small engine where tests need it to: at most `capacity` requests run at once and
the rest wait (so `load()` reports `kv_usage = running / capacity` and a waiting count), an optional
first-token latency and token rate, `abort`, `set_down(True)` for a dead backend, `fail=True` for one
that looks healthy but errors, and `fail_after_words` for a stream that dies midway. With
`judge_rule` it is also a scripted duel judge: the judge prompt gets "A" or "B" by answer length (the duel
feature installs the script, `wwwserve.judge.feature.scripted_judge`, as `scripted`: the judge prompt is
the judge package's). With
`random_words` it is a random responder: nonsense words, seeded by the request id (incentive experiments).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import string
from collections.abc import AsyncGenerator, Callable

from wwwserve.errors import WWWServeError
from wwwserve.node.backends.base import (
    BackendLoad,
    GenerationAbortedError,
    GenerationRequest,
    GenerationResult,
    StreamDelta,
    estimate_tokens,
)
from wwwserve.node.errors import (
    BackendUnavailableError,
    ContextLengthExceededError,
    ModelNotFoundError,
    RequestInFlightError,
)
from wwwserve.node.protocol import FinishReason

__all__ = ["FakeBackend"]

_LETTERS = string.ascii_lowercase


class _AbortedError(WWWServeError):
    """Internal: the request was aborted while it ran."""


class FakeBackend:
    """An instant (or paced) deterministic backend that keeps engine-like load accounting."""

    def __init__(
        self,
        models: list[str],
        latency_s: float = 0.0,
        tokens_per_s: float | None = None,
        capacity: int = 4,
        fail: bool = False,
        words: int | None = None,
        *,
        max_context_tokens: int | None = None,
        fail_after_words: int | None = None,
        name: str = "fake",
        judge_rule: str | None = None,
        random_words: bool = False,
    ) -> None:
        if not models:
            raise ValueError("a FakeBackend needs at least one model")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if latency_s < 0 or (tokens_per_s is not None and tokens_per_s <= 0):
            raise ValueError("latency_s must be >= 0 and tokens_per_s > 0")
        if words is not None and words < 1:
            raise ValueError(f"words must be >= 1, got {words}")
        if judge_rule not in (None, "longer", "shorter"):
            raise ValueError(f"judge_rule must be 'longer', 'shorter' or None, got {judge_rule!r}")
        self.judge_rule = judge_rule
        # A scripted reply for a prompt it recognises (None: not one of its prompts), set by a feature.
        self.scripted: Callable[[str], str | None] | None = None
        self.random_words = random_words
        self.name = name
        self.models = list(models)
        self.latency_s = latency_s
        self.tokens_per_s = tokens_per_s
        self.capacity = capacity
        self.fail = fail
        self.words = words
        self.max_context_tokens = max_context_tokens
        self.fail_after_words = fail_after_words
        self.requests_seen = 0  # generations started (for tests and the benchmark)
        self.last_request: GenerationRequest | None = None
        self._down = False
        self._closed = False
        self._running = 0
        self._waiting = 0
        self._slots = asyncio.Semaphore(capacity)
        # request id -> event set on abort; only in-flight requests are here, so it cannot grow.
        self._active: dict[str, asyncio.Event] = {}

    # ---- pure part: what the answer is ------------------------------------------------------

    def answer(self, req: GenerationRequest) -> tuple[str, FinishReason]:
        """The text and finish reason `req` gets, without any timing or load effects."""
        if self.scripted is not None:
            reply = self.scripted(req.prompt_text)
            if reply is not None:
                return reply, "stop"
        if self.random_words:
            # Reproducible per request: nonsense words drawn with the request id (and seed) as the seed.
            rng = random.Random(f"{req.request_id}/{req.seed}")
            source = ["".join(rng.choice(_LETTERS) for _ in range(rng.randint(1, 9))) for _ in range(64)]
        else:
            source = list(reversed(req.prompt_text.split())) or ["ok"]
        shift = (req.seed or 0) % len(source)
        source = source[shift:] + source[:shift]
        count = self.words if self.words is not None else len(source)
        out = [source[i % len(source)] for i in range(count)]
        finish: FinishReason = "stop"
        if req.max_tokens is not None and req.max_tokens < len(out):
            out = out[: req.max_tokens]
            finish = "length"
        text = " ".join(out)
        cut = min((i for i in (text.find(s) for s in req.stop if s) if i >= 0), default=-1)
        if cut >= 0:
            text, finish = text[:cut], "stop"
        return text, finish

    # ---- controls ---------------------------------------------------------------------------

    def set_down(self, down: bool) -> None:
        """Make the backend dead (health False, calls and running streams fail) or alive again."""
        self._down = down

    @property
    def running(self) -> int:
        """Requests generating now."""
        return self._running

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot."""
        return self._waiting

    # ---- Backend ----------------------------------------------------------------------------

    async def generate(self, req: GenerationRequest) -> GenerationResult:
        """The whole answer, after the same pacing a stream would have."""
        pieces: list[str] = []
        final: StreamDelta | None = None
        try:
            async for delta in self._run(req):
                pieces.append(delta.text)
                if delta.is_final:
                    final = delta
        except _AbortedError:
            raise GenerationAbortedError(req.request_id) from None
        assert final is not None and final.finish_reason is not None
        return GenerationResult(
            text="".join(pieces),
            finish_reason=final.finish_reason,
            prompt_tokens=final.prompt_tokens or 0,
            completion_tokens=final.completion_tokens or 0,
        )

    async def stream(self, req: GenerationRequest) -> AsyncGenerator[StreamDelta, None]:
        """Word by word; an aborted stream just ends, without a final delta."""
        # close the inner generator explicitly, so an abandoned stream frees its slot at once, not at GC
        async with contextlib.aclosing(self._run(req)) as inner:
            try:
                async for delta in inner:
                    yield delta
            except _AbortedError:
                return

    async def abort(self, request_id: str) -> None:
        """Stop an in-flight request at its next word (or while it waits for a slot)."""
        event = self._active.get(request_id)
        if event is not None:
            event.set()

    async def health(self) -> bool:
        """False while `set_down(True)` or after `aclose()`."""
        return not self._down and not self._closed

    async def load(self) -> BackendLoad:
        """`kv_usage = running / capacity`, plus the waiting count and the context limit."""
        return BackendLoad(
            kv_usage=min(1.0, self._running / self.capacity),
            running=self._running,
            waiting=self._waiting,
            max_context_tokens=self.max_context_tokens,
            max_running=self.capacity,
        )

    async def aclose(self) -> None:
        """Mark closed; later calls fail as if the backend were down."""
        self._closed = True

    # ---- the engine -------------------------------------------------------------------------

    def _check_available(self) -> None:
        if self._down or self._closed:
            raise BackendUnavailableError()

    async def _pause(self, seconds: float, aborted: asyncio.Event) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(aborted.wait(), timeout=seconds)
        if aborted.is_set():
            raise _AbortedError

    async def _run(self, req: GenerationRequest) -> AsyncGenerator[StreamDelta, None]:
        self._check_available()
        if req.model not in self.models:
            raise ModelNotFoundError(req.model)
        prompt_tokens = estimate_tokens(req.prompt_text)
        if self.max_context_tokens is not None and prompt_tokens + (req.max_tokens or 0) > self.max_context_tokens:
            raise ContextLengthExceededError(
                prompt_tokens=prompt_tokens + (req.max_tokens or 0), max_context_tokens=self.max_context_tokens
            )
        if self.fail:
            raise BackendUnavailableError("The fake backend is set to fail.")
        if req.request_id in self._active:
            raise RequestInFlightError(req.request_id)
        self.requests_seen += 1
        self.last_request = req
        aborted = asyncio.Event()
        self._active[req.request_id] = aborted
        try:
            self._waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self._waiting -= 1
            try:
                self._running += 1
                async for delta in self._produce(req, prompt_tokens, aborted):
                    yield delta
            finally:
                self._running -= 1
                self._slots.release()
        finally:
            del self._active[req.request_id]

    async def _produce(
        self, req: GenerationRequest, prompt_tokens: int, aborted: asyncio.Event
    ) -> AsyncGenerator[StreamDelta, None]:
        text, finish = self.answer(req)
        await self._pause(self.latency_s, aborted)
        gap_s = 0.0 if self.tokens_per_s is None else 1.0 / self.tokens_per_s
        pieces = [p if i == 0 else " " + p for i, p in enumerate(text.split(" "))]
        for index, piece in enumerate(p for p in pieces if p):
            if index > 0:
                await self._pause(gap_s, aborted)
            if aborted.is_set():
                raise _AbortedError
            self._check_available()  # set_down mid-stream kills the stream like a crashed engine
            if self.fail_after_words is not None and index >= self.fail_after_words:
                raise BackendUnavailableError("The fake backend failed mid-stream.")
            yield StreamDelta(text=piece)
        yield StreamDelta(finish_reason=finish, prompt_tokens=prompt_tokens, completion_tokens=estimate_tokens(text))
