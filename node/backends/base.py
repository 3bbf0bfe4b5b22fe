"""The one small interface the Model manager drives every LLM backend through.

A backend turns a `GenerationRequest` (the sampling fields of an OpenAI chat or completion request,
already validated by `node.protocol`) into text, whole (`generate`) or as a stream of `StreamDelta`s,
and reports its health and its load (`BackendLoad`: KV-cache usage, running and waiting requests),
which the policy reads to decide between running locally and offloading.

Contract every implementation keeps:
- errors a user may see are `node.errors.NodeError` subclasses (`BackendUnavailableError`,
  `UpstreamTimeoutError`, `ContextLengthExceededError`, `InvalidRequestError`, ...);
- a stream yields text deltas, then exactly one final delta whose `finish_reason` is set and which
  carries the token counts; nothing follows it;
- `abort(request_id)` stops that request's work: a stream then ends early *without* a final delta,
  and a pending `generate` raises `GenerationAbortedError` (nobody is waiting for either any more:
  abort is what the Request manager calls when the client went away).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Protocol, get_args, runtime_checkable

from wwwserve.errors import WWWServeError
from wwwserve.node.protocol import ChatCompletionRequest, CompletionRequest, FinishReason

__all__ = [
    "Backend",
    "BackendLoad",
    "GenerationAbortedError",
    "GenerationRequest",
    "GenerationResult",
    "StreamDelta",
    "estimate_tokens",
    "normalize_finish_reason",
]

_FINISH_REASONS: frozenset[str] = frozenset(get_args(FinishReason))


class GenerationAbortedError(WWWServeError):
    """`generate` was aborted through `Backend.abort`; internal (the client that asked is gone)."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        super().__init__(f"generation {request_id} was aborted")


def estimate_tokens(text: str) -> int:
    """A backend-independent token count: whitespace-separated words.

    Used by the fake backend, and as a fallback when an upstream server does not report usage.
    """
    return len(text.split())


def normalize_finish_reason(value: object) -> FinishReason:
    """Map an upstream finish reason onto OpenAI's set (vLLM may say "abort", llama.cpp null)."""
    if isinstance(value, str) and value in _FINISH_REASONS:
        return value  # type: ignore[return-value]  # checked against the Literal's values
    return "stop"


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One generation, backend-neutral: a chat (`messages`) or a plain completion (`prompt`)."""

    request_id: str
    model: str
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a GenerationRequest needs exactly one of messages or prompt")

    @property
    def is_chat(self) -> bool:
        """Whether this is a chat request (messages) rather than a completion (prompt)."""
        return self.messages is not None

    @property
    def prompt_text(self) -> str:
        """The prompt as one text: the completion prompt, or the messages' contents joined by newlines."""
        if self.prompt is not None:
            return self.prompt
        assert self.messages is not None
        return "\n".join(str(m.get("content") or "") for m in self.messages)

    @classmethod
    def from_chat(cls, req: ChatCompletionRequest, request_id: str) -> GenerationRequest:
        """Build from a validated chat request; content parts are flattened to text (text-only models)."""
        messages: list[dict[str, Any]] = []
        for message in req.messages:
            item: dict[str, Any] = {
                "role": message.role,
                "content": None if message.content is None else message.text(),
            }
            if message.name is not None:
                item["name"] = message.name
            if message.tool_calls is not None:
                item["tool_calls"] = message.tool_calls
            if message.tool_call_id is not None:
                item["tool_call_id"] = message.tool_call_id
            messages.append(item)
        return cls(
            request_id=request_id,
            model=req.model,
            messages=messages,
            max_tokens=req.max_output_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            stop=req.stop_sequences,
            seed=req.seed,
        )

    @classmethod
    def from_completion(cls, req: CompletionRequest, request_id: str) -> GenerationRequest:
        """Build from a validated legacy completion request."""
        return cls(
            request_id=request_id,
            model=req.model,
            prompt=req.prompt_text,
            max_tokens=req.max_output_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            stop=req.stop_sequences,
            seed=req.seed,
        )


@dataclass(frozen=True, slots=True)
class GenerationResult:
    """The whole answer of a non-streamed generation."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class StreamDelta:
    """One piece of a stream: text, and on the final piece the finish reason and token counts.

    `prompt_tokens` may stay None on the final delta when the upstream server does not report it.
    """

    text: str = ""
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    @property
    def is_final(self) -> bool:
        """Whether this is the stream's last delta."""
        return self.finish_reason is not None


@dataclass(frozen=True, slots=True)
class BackendLoad:
    """A backend's load at one instant, as the policy reads it."""

    kv_usage: float  # KV-cache usage, 0..1
    running: int = 0  # requests being generated
    waiting: int = 0  # requests queued inside the backend
    max_context_tokens: int | None = None  # the model's context window, when known
    # Requests the engine runs at once when that is fixed (a one-at-a-time CPU model: 1); None for engines
    # that batch as far as their KV cache allows (vLLM, SGLang), whose kv_usage already says when they are full.
    max_running: int | None = None

    def __post_init__(self) -> None:
        # NaN fails the range test, so a broken metric cannot pass for an idle backend.
        if not 0.0 <= self.kv_usage <= 1.0:
            raise ValueError(f"kv_usage must be in [0, 1], got {self.kv_usage!r}")
        if self.running < 0 or self.waiting < 0:
            raise ValueError(f"running and waiting must be >= 0, got {self.running}, {self.waiting}")


@runtime_checkable
class Backend(Protocol):
    """What the Model manager needs from an LLM engine (vLLM, an OpenAI-compatible URL, a fake)."""

    name: str
    models: list[str]

    async def generate(self, req: GenerationRequest) -> GenerationResult:
        """Generate the whole answer; raises a `NodeError` on failure, `GenerationAbortedError` if aborted."""
        ...

    def stream(self, req: GenerationRequest) -> AsyncGenerator[StreamDelta, None]:
        """Text deltas, then one final delta with `finish_reason` and usage; ends early if aborted.

        An async generator, so a consumer that stops early can `aclose()` it and have the work
        released at once (the upstream request closed, the slot freed) instead of at garbage collection.
        """
        ...

    async def abort(self, request_id: str) -> None:
        """Stop the work of an in-flight request; a no-op for an unknown or finished one."""
        ...

    async def health(self) -> bool:
        """Whether the backend can serve now; never raises."""
        ...

    async def load(self) -> BackendLoad:
        """The current load (cheap enough to call per dispatch; implementations cache what is costly)."""
        ...

    async def aclose(self) -> None:
        """Release connections and other resources."""
        ...
