"""The local backend's generation: the decode loop on the worker thread, sampling, and stop strings.

One job is one request: the worker prefills its prompt in chunks, then samples one token at a time,
checking the job's abort flag between chunks and between tokens, which is how `abort(request_id)` and a
closed stream stop the work promptly. Sampling follows OpenAI's fields: temperature 0 is greedy,
`top_p` is nucleus sampling, `seed` fixes the sampler, stop strings cut the text and end the answer
("stop"), `max_tokens` ends it with "length". Text reaches the event loop through the job's queue as
`StreamDelta`s, then one final delta (or `JOB_ENDED` when the job was aborted).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wwwserve.node.backends.base import GenerationRequest, StreamDelta
from wwwserve.node.protocol import FinishReason

if TYPE_CHECKING:
    import torch

# Prompt tokens per forward pass during prefill: the abort flag is checked between chunks.
PREFILL_CHUNK_TOKENS = 256

JOB_ENDED = object()  # job queue sentinel: the job ended without a final delta (aborted)


# ------------------------------------------------------------------------------------------------
# pure helpers: stop strings over an incrementally decoded text


def find_stop(text: str, stops: Sequence[str], start: int = 0) -> int | None:
    """Index of the earliest occurrence of any non-empty stop string in `text[start:]`, or None."""
    hits = [i for i in (text.find(s, start) for s in stops if s) if i >= 0]
    return min(hits) if hits else None


def held_back_chars(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of `text` that is a proper beginning of a stop string.

    Those characters may turn out to be the start of a stop string once more tokens arrive, so a
    stream must not send them yet.
    """
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


@dataclass
class StopScanner:
    """Turns the growing decoded text of one generation into safe-to-send deltas, honouring stops.

    `feed(text)` takes the whole text decoded so far and returns the new part that can be sent now,
    and whether a stop string was found (the text is then cut before it and generation must end).
    Text that could still become a stop string, and a trailing replacement character (an incomplete
    UTF-8 sequence that the next token completes), are held back until they are decided.
    """

    stops: Sequence[str]
    emitted: int = 0  # characters of the text already returned
    stopped: bool = False

    def feed(self, text: str) -> tuple[str, bool]:
        """The new sendable text, and whether a stop string ended it."""
        if self.stopped:
            return "", True
        cut = find_stop(text, self.stops, self.emitted)
        if cut is not None:
            delta = text[self.emitted : cut]
            self.emitted = cut
            self.stopped = True
            return delta, True
        safe = len(text) - held_back_chars(text, self.stops)
        while safe > self.emitted and text[safe - 1] == "\ufffd":
            safe -= 1
        if safe <= self.emitted:
            return "", False
        delta = text[self.emitted : safe]
        self.emitted = safe
        return delta, False

    def flush(self, text: str) -> str:
        """At the end of generation (no stop string came): everything not yet returned."""
        if self.stopped:
            return ""
        delta = text[self.emitted :]
        self.emitted = len(text)
        return delta


# ------------------------------------------------------------------------------------------------
# sampling


def sample_next_token(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> int:
    """The next token id from one row of logits: greedy at temperature 0 (or top_p 0), else nucleus sampling."""
    import torch

    if temperature <= 0.0 or top_p <= 0.0:  # top_p 0 keeps only the likeliest token, like greedy
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        # Keep the smallest set whose mass reaches top_p: drop a token when the mass before it already does.
        sorted_probs = torch.where(before >= top_p, torch.zeros_like(sorted_probs), sorted_probs)
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return int(order[choice].item())
    return int(torch.multinomial(probs, 1, generator=generator).item())


# ------------------------------------------------------------------------------------------------
# the decode loop


@dataclass
class DecodeJob:
    """One request's state, shared between the event loop and the worker thread."""

    req: GenerationRequest
    prompt_ids: list[int]
    max_new_tokens: int
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    aborted: threading.Event = field(default_factory=threading.Event)
    state: str = "waiting"  # waiting -> running -> done
    tokens: int = 0  # tokens in the KV cache now (prompt + generated), for kv_usage

    def put(self, item: object) -> None:
        """Hand an item to the consumer on the event loop (from the worker thread)."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


def decode(
    job: DecodeJob,
    model: Any,
    tokenizer: Any,
    tokenizer_lock: threading.Lock,
    eos_ids: frozenset[int],
    temperature: float,
    top_p: float,
) -> None:
    """Generate `job` on the calling (worker) thread: prefill its prompt, then sample until an end token in
    `eos_ids`, a stop string or `job.max_new_tokens`; each sendable piece of text, then the final delta,
    goes to the job's queue (`JOB_ENDED` instead when the job is aborted). `tokenizer_lock` guards the
    tokenizer, which the event loop's threads use too."""
    import torch

    req = job.req
    generator = torch.Generator().manual_seed(req.seed if req.seed is not None else secrets.randbits(63))
    scanner = StopScanner(req.stop)
    prompt = job.prompt_ids
    generated: list[int] = []
    text = ""
    finish: FinishReason = "length"
    with torch.inference_mode():
        past: Any = None
        logits: torch.Tensor | None = None
        for begin in range(0, len(prompt), PREFILL_CHUNK_TOKENS):
            if job.aborted.is_set():
                job.put(JOB_ENDED)
                return
            chunk = torch.tensor([prompt[begin : begin + PREFILL_CHUNK_TOKENS]], dtype=torch.long)
            out = model(input_ids=chunk, past_key_values=past, use_cache=True)
            past, logits = out.past_key_values, out.logits[0, -1, :]
            job.tokens = begin + chunk.shape[1]
        assert logits is not None
        while len(generated) < job.max_new_tokens:
            if job.aborted.is_set():
                job.put(JOB_ENDED)
                return
            token = sample_next_token(logits, temperature, top_p, generator)
            generated.append(token)
            job.tokens = len(prompt) + len(generated)
            if token in eos_ids:
                finish = "stop"
                break
            with tokenizer_lock:
                text = tokenizer.decode(generated, skip_special_tokens=True)
            delta, stopped = scanner.feed(text)
            if delta:
                job.put(StreamDelta(text=delta))
            if stopped:
                finish = "stop"
                break
            if len(generated) >= job.max_new_tokens:
                break
            out = model(input_ids=torch.tensor([[token]], dtype=torch.long), past_key_values=past, use_cache=True)
            past, logits = out.past_key_values, out.logits[0, -1, :]
    rest = scanner.flush(text)
    if rest:
        job.put(StreamDelta(text=rest))
    job.put(StreamDelta(finish_reason=finish, prompt_tokens=len(prompt), completion_tokens=len(generated)))
