"""Fit an engine profile to measurements of a real backend, and check the engine model against it.

The GPU profiles in `sim.engine.PROFILES` come from datasheets; this is how the model meets something
we can run here. `measure` times requests through any `node.backends.Backend` (the time to the first
token, the whole answer, its token counts); `fit_profile` fits

    first token   = overhead + prompt_tokens / prefill_rate
    decode (rest) = n * step + kv_step * (sum of the context length at each of the n steps)

by least squares; `predict_latencies` replays arrivals through `EngineModel` with that profile, to be
compared with the latencies the real backend gave the same arrivals (`bench/sim_calibration.py` does
both with SmolLM2-135M on CPU and prints the error).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from wwwserve.sim.engine import EngineModel, EngineProfile, EngineRequest

__all__ = ["Sample", "fit_profile", "measure", "predict_latencies"]


@dataclass(frozen=True)
class Sample:
    """One measured request: its token counts and when its first token and its end came (seconds)."""

    prompt_tokens: int
    output_tokens: int
    first_token_s: float
    total_s: float


def _least_squares_2(rows: Sequence[tuple[float, float, float]]) -> tuple[float, float]:
    """(a, b) minimising sum (y - a*x1 - b*x2)^2 over rows (x1, x2, y)."""
    s11 = sum(x1 * x1 for x1, _, _ in rows)
    s12 = sum(x1 * x2 for x1, x2, _ in rows)
    s22 = sum(x2 * x2 for _, x2, _ in rows)
    t1 = sum(x1 * y for x1, _, y in rows)
    t2 = sum(x2 * y for _, x2, y in rows)
    det = s11 * s22 - s12 * s12
    if abs(det) < 1e-12 * max(1.0, s11 * s22):
        raise ValueError("the samples do not vary enough to fit (vary prompt and answer lengths)")
    return (t1 * s22 - t2 * s12) / det, (s11 * t2 - s12 * t1) / det


def fit_profile(samples: Sequence[Sample], *, name: str, kv_capacity_tokens: int, max_num_seqs: int = 1,
                note: str = "") -> EngineProfile:
    """The `EngineProfile` that best explains `samples` (at least 3, with varied lengths)."""
    if len(samples) < 3:
        raise ValueError("need at least 3 samples")
    overhead, per_prompt_token = _least_squares_2([(1.0, s.prompt_tokens, s.first_token_s) for s in samples])
    decode = [(float(s.output_tokens - 1),
               sum(s.prompt_tokens + k for k in range(1, s.output_tokens)),
               s.total_s - s.first_token_s) for s in samples if s.output_tokens > 1]
    step, kv_step = _least_squares_2(decode)
    return EngineProfile(
        name=name, kv_capacity_tokens=kv_capacity_tokens, max_num_seqs=max_num_seqs,
        prefill_tokens_per_s=1.0 / max(per_prompt_token, 1e-9), prefill_overhead_s=max(0.0, overhead),
        step_base_s=max(step, 1e-6), step_per_seq_s=0.0, step_per_kv_token_s=max(0.0, kv_step), note=note,
    )


async def measure(backend: Any, requests: Sequence[Any]) -> list[Sample]:
    """Run `requests` (`GenerationRequest`s) one after the other through `backend.stream`, timing each."""
    out = []
    for req in requests:
        started = time.perf_counter()
        first: float | None = None
        prompt_tokens = completion_tokens = 0
        pieces = 0
        async for delta in backend.stream(req):
            if delta.text and first is None:
                first = time.perf_counter() - started
            pieces += bool(delta.text)
            if delta.is_final:
                prompt_tokens = delta.prompt_tokens or 0
                completion_tokens = delta.completion_tokens or pieces
        total = time.perf_counter() - started
        out.append(Sample(prompt_tokens, max(1, completion_tokens), first if first is not None else total, total))
    return out


def predict_latencies(profile: EngineProfile, arrivals: Sequence[tuple[float, int, int]]) -> list[float]:
    """Latency of each (arrival time, prompt tokens, output tokens) on one engine with `profile`."""
    engine = EngineModel(profile)
    reqs = [EngineRequest(p, n, payload=i) for i, (_, p, n) in enumerate(arrivals)]
    done: dict[int, float] = {}
    pending = sorted(range(len(arrivals)), key=lambda i: arrivals[i][0])
    for i in pending:
        t = arrivals[i][0]
        while (nxt := engine.next_event_s()) is not None and nxt <= t:
            for r in engine.run_until(nxt):
                done[r.payload] = nxt
        for r in engine.submit(t, reqs[i]):
            done[r.payload] = t
    while (nxt := engine.next_event_s()) is not None:
        for r in engine.run_until(nxt):
            done[r.payload] = nxt
    return [done[i] - arrivals[i][0] for i in range(len(arrivals))]


async def replay(backend: Any, requests: Sequence[Any], offsets_s: Sequence[float]) -> list[tuple[float, Sample]]:
    """Send `requests` at `offsets_s` after now (concurrently: the backend queues them as it would);
    (latency, sample) of each."""

    async def one(req: Any, offset: float) -> tuple[float, Sample]:
        await asyncio.sleep(offset)
        [sample] = await measure(backend, [req])
        return sample.total_s, sample

    return list(await asyncio.gather(*(one(r, o) for r, o in zip(requests, offsets_s, strict=True))))
