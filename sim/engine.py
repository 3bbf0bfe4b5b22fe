"""A continuous-batching LLM engine (vLLM-like) as an event model: when does each request finish.

What it models, and how:

- **KV cache** of `kv_capacity_tokens`. A running request holds `prompt + generated` tokens of it.
- **Admission** (FIFO): the head of the waiting queue is admitted while fewer than `max_num_seqs` run and
  its prompt (plus what it generated before a preemption) fits in the free KV cache. Admitting costs a
  **prefill** of `prefill_overhead_s + tokens / prefill_tokens_per_s`, during which decoding pauses (vLLM
  without chunked prefill; with it the pause is spread out, the total is the same).
- **Decode**: every step gives each running request one token. A step takes
  `step_base_s + step_per_seq_s * running + step_per_kv_token_s * kv_tokens`: the weights are read once
  per step (memory bound), each sequence adds sampling work, and attention reads the whole KV cache.
- **Preemption**: when the running requests' KV reaches capacity, the newest is preempted (vLLM's
  recompute mode): its KV is freed, it goes back to the head of the queue, and on re-admission its prefill
  covers the prompt and what it had generated.

Cheap at any scale: nothing is simulated per token. All running requests advance together on a virtual
"tokens generated per request" clock `v`; because the KV in use grows linearly in `v`, the step time is
linear in `v` and the wall time to go from `v1` to `v2` has a closed form (a quadratic). Each event
(admission, completion, preemption) costs O(log n). `load()` reports what the live policy reads from a
real engine's metrics: KV-cache usage, running, waiting.

A profile of `kind="slots"` is another engine: the live node's fake backend (node/backends/fake.py), which
`EngineModel(profile)` then builds as a `SlotEngine`. It runs at most `max_num_seqs` requests at once
(FIFO, the others wait), each on its own: the first token `prefill_overhead_s` after it starts, then one
token every `step_base_s` (the fake's `latency_s` and `1 / tokens_per_s`), whatever else runs; it reports
`kv_usage = running / max_num_seqs`. `fake_backend_profile` builds one from the fake's settings.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["PROFILES", "EngineModel", "EngineProfile", "EngineRequest", "SlotEngine", "fake_backend_profile"]

_EPS = 1e-9


@dataclass(frozen=True)
class EngineProfile:
    """Timing and capacity of one engine (a model on a GPU). See `PROFILES` for the derivations."""

    name: str
    kv_capacity_tokens: int
    max_num_seqs: int = 256
    prefill_tokens_per_s: float = 10_000.0
    prefill_overhead_s: float = 0.01
    step_base_s: float = 0.02
    step_per_seq_s: float = 0.0001
    step_per_kv_token_s: float = 0.0
    note: str = ""
    # "vllm": the continuous-batching model above; "slots": the fake backend's (see the module docstring;
    # then only max_num_seqs, prefill_overhead_s and step_base_s are read).
    kind: Literal["vllm", "slots"] = "vllm"

    def __post_init__(self) -> None:
        if self.kv_capacity_tokens < 1 or self.max_num_seqs < 1:
            raise ValueError("kv_capacity_tokens and max_num_seqs must be >= 1")
        if self.prefill_tokens_per_s <= 0 or self.step_base_s <= 0:
            raise ValueError("prefill_tokens_per_s and step_base_s must be > 0")
        if min(self.prefill_overhead_s, self.step_per_seq_s, self.step_per_kv_token_s) < 0:
            raise ValueError("engine timings must be >= 0")

    def decode_tokens_per_s(self, batch: int = 1, kv_tokens: int = 0) -> float:
        """Tokens per second per request at a given batch size and KV-cache fill."""
        return 1.0 / (self.step_base_s + self.step_per_seq_s * batch + self.step_per_kv_token_s * kv_tokens)


def _gpu_profile(name: str, *, hbm_gb: float, bandwidth_gb_s: float, fp16_tflops: float, note: str) -> EngineProfile:
    """Qwen3-8B (bf16) under vLLM on one GPU, from the model's shape and the GPU's datasheet figures.

    Qwen3-8B (config.json on Hugging Face, Qwen/Qwen3-8B): 8.19 B parameters, 36 layers, 8 KV heads of
    dimension 128, so 16.4 GB of weights and 36 * 8 * 128 * 2 (K, V) * 2 bytes = 147,456 bytes of KV per
    token. vLLM's default `gpu_memory_utilization` 0.9, minus the weights and ~1.5 GB of activations and
    CUDA graphs, is the KV cache. A decode step reads the weights and the KV cache once at ~75 % of peak
    memory bandwidth; prefill runs at ~45 % of peak dense fp16 tensor throughput (2 FLOPs per parameter
    per token).

    Against published measurements of 8B models under vLLM:
    - A100 40GB, Llama-3.1-8B bf16, vLLM 0.23, one request: ~75 tokens/s, "roughly 77 % of the GPU's
      memory-bandwidth ceiling" (J. Musgrave, "vLLM throughput-latency sweep on NVIDIA A100"); this
      formula gives 71 for a 40GB card, 93 for the 80GB SXM profile below.
    - RTX 3090, Llama-3-8B: "approximately 30 tokens/s" single-user (dev.to, "Achieving maximum
      throughput on vLLM with a single RTX 3090"); this formula gives 43, so the 3090 profile is
      optimistic by up to a third.
    - 2 x RTX 3090, Qwen3-8B fp16, 4,096 tokens in / 1,024 out, data parallel: 387 output tokens/s, ~194
      per card (r/LocalLLaMA, "Qwen3 throughput benchmarks on 2x 3090"); this model gives ~130 per card
      at that shape, because its prefill pauses decoding where vLLM's chunked prefill overlaps them.
    """
    weights_bytes = 8.19e9 * 2
    kv_bytes_per_token = 36 * 8 * 128 * 2 * 2
    bandwidth = bandwidth_gb_s * 1e9 * 0.75
    kv_budget = hbm_gb * 1e9 * 0.9 - weights_bytes - 1.5e9
    return EngineProfile(
        name=name,
        kv_capacity_tokens=int(kv_budget // kv_bytes_per_token),
        max_num_seqs=256,
        prefill_tokens_per_s=fp16_tflops * 1e12 * 0.45 / (2 * 8.19e9),
        prefill_overhead_s=0.02,
        step_base_s=weights_bytes / bandwidth,
        step_per_seq_s=0.00015,
        step_per_kv_token_s=kv_bytes_per_token / bandwidth,
        note=note,
    )


PROFILES: dict[str, EngineProfile] = {
    # Datasheets: GeForce RTX 3090 (24 GB GDDR6X, 936 GB/s, 71 TFLOPS fp16 tensor with fp16 accumulate),
    # GeForce RTX 4090 (24 GB, 1,008 GB/s, 165 TFLOPS), A100 80GB SXM (2,039 GB/s, 312 TFLOPS dense).
    "qwen3-8b-rtx3090": _gpu_profile("qwen3-8b-rtx3090", hbm_gb=24, bandwidth_gb_s=936, fp16_tflops=71,
                                     note="Qwen3-8B bf16, vLLM, RTX 3090"),
    "qwen3-8b-rtx4090": _gpu_profile("qwen3-8b-rtx4090", hbm_gb=24, bandwidth_gb_s=1008, fp16_tflops=165,
                                     note="Qwen3-8B bf16, vLLM, RTX 4090"),
    "qwen3-8b-a100": _gpu_profile("qwen3-8b-a100", hbm_gb=80, bandwidth_gb_s=2039, fp16_tflops=312,
                                  note="Qwen3-8B bf16, vLLM, A100 80GB SXM"),
    # Fitted, not derived: `python bench/sim_calibration.py` on the project's 2-core machine (2026-11-30),
    # SmolLM2-135M-Instruct in the `local` backend (one request at a time, 2 torch threads). On 12 fresh
    # requests at Poisson times it predicted the measured latencies to within 12.6 % each on average (mean
    # latency 14 % low: the real backend slows down while requests queue behind each other).
    "smollm2-135m-cpu": EngineProfile(
        name="smollm2-135m-cpu", kv_capacity_tokens=2048, max_num_seqs=1, prefill_tokens_per_s=259.8,
        prefill_overhead_s=0.0, step_base_s=0.0978, step_per_seq_s=0.0, step_per_kv_token_s=2.71e-05,
        note="SmolLM2-135M-Instruct, local backend on 2 CPU cores (fitted)"),
}


def fake_backend_profile(name: str, *, capacity: int, latency_s: float, tokens_per_s: float) -> EngineProfile:
    """The engine of a live node with `backend.kind=fake` and `backend.fake.{capacity, latency_s,
    tokens_per_s}` (node/backends/fake.py: at most `capacity` at once, the first word after `latency_s`,
    then one word per `1 / tokens_per_s`; its words are the simulator's tokens)."""
    if tokens_per_s <= 0:
        raise ValueError("tokens_per_s must be > 0")
    return EngineProfile(name=name, kv_capacity_tokens=1 << 40, max_num_seqs=capacity,
                         prefill_overhead_s=latency_s, step_base_s=1.0 / tokens_per_s, step_per_seq_s=0.0,
                         kind="slots", note=f"fake backend: {capacity} slots, {latency_s} s to the first word, "
                         f"{tokens_per_s} words/s")


@dataclass(eq=False)
class EngineRequest:
    """One request inside an engine. `payload` is the caller's (the simulator's request)."""

    prompt_tokens: int
    output_tokens: int
    payload: Any = None
    generated: int = 0  # tokens generated before its latest admission (after a preemption)
    v0: float = 0.0  # the engine's clock `v` when it was (last) admitted
    admitted_at_s: float | None = None  # first admission (the first token follows its prefill)
    first_token_s: float | None = None
    preemptions: int = 0
    _running: bool = field(default=False, repr=False)

    @property
    def target_v(self) -> float:
        """The engine clock at which it finishes (while running)."""
        return self.v0 + (self.output_tokens - self.generated)


class EngineModel:
    """One engine's queue and batch; drive it with `submit`, `next_event_s` and `run_until`.

    A profile of kind "slots" builds a `SlotEngine` (the same interface), so the simulator needs no other
    change to run fake-backend nodes."""

    def __new__(cls, profile: EngineProfile) -> EngineModel:
        if cls is EngineModel and profile.kind == "slots":
            return super().__new__(SlotEngine)
        return super().__new__(cls)

    def __init__(self, profile: EngineProfile) -> None:
        self.profile = profile
        self.waiting: deque[EngineRequest] = deque()
        self._running: list[EngineRequest] = []  # admission order (the newest is preempted first)
        self._finish_heap: list[tuple[float, int, EngineRequest]] = []
        self._seq = 0
        self._v = 0.0  # tokens generated per running request since the engine started
        self._t = 0.0  # time `_v` refers to
        self._pause_until = 0.0  # prefill in progress: decoding resumes then
        self._kv_base = 0.0  # sum(prompt + generated - v0) over running; KV in use = _kv_base + n * v
        self.finished_count = 0
        self.preempted_count = 0

    # ---- what the policy sees ---------------------------------------------------------------

    @property
    def running(self) -> int:
        return len(self._running)

    def kv_tokens(self, now_s: float | None = None) -> float:
        """KV-cache tokens in use (at `now_s`, default: the last event)."""
        v = self._v if now_s is None else self._v_at(now_s)
        return self._kv_base + len(self._running) * v

    def load(self, now_s: float | None = None) -> tuple[float, int, int]:
        """(KV-cache usage 0..1, running, waiting), as vLLM's metrics report them."""
        usage = self.kv_tokens(now_s) / self.profile.kv_capacity_tokens
        return min(1.0, max(0.0, usage)), len(self._running), len(self.waiting)

    # ---- the clock ------------------------------------------------------------------------------

    def _rates(self) -> tuple[float, float]:
        """(step time at v = 0, its slope in v): step(v) = a + b * v."""
        p, n = self.profile, len(self._running)
        a = p.step_base_s + p.step_per_seq_s * n + p.step_per_kv_token_s * self._kv_base
        return a, p.step_per_kv_token_s * n

    def _time_between(self, v1: float, v2: float) -> float:
        """Decode time to take every running request from clock v1 to v2."""
        a, b = self._rates()
        return a * (v2 - v1) + 0.5 * b * (v2 * v2 - v1 * v1)

    def _v_after(self, v1: float, dt: float) -> float:
        """The clock after `dt` seconds of decoding from v1 (inverse of `_time_between`)."""
        if dt <= 0 or not self._running:
            return v1
        a, b = self._rates()
        step = a + b * v1  # > 0
        return v1 + 2 * dt / (step + math.sqrt(step * step + 2 * b * dt))

    def _v_at(self, now_s: float) -> float:
        start = max(self._t, self._pause_until)
        return self._v_after(self._v, now_s - start) if now_s > start else self._v

    def _advance(self, now_s: float) -> None:
        self._v = self._v_at(now_s)
        self._t = max(self._t, now_s)

    # ---- events ---------------------------------------------------------------------------------

    def submit(self, now_s: float, req: EngineRequest) -> list[EngineRequest]:
        """Queue `req`; returns the requests finished up to now (call `next_event_s` afterwards)."""
        if req.prompt_tokens < 0 or req.output_tokens < 1:
            raise ValueError("a request needs prompt_tokens >= 0 and output_tokens >= 1")
        if req.prompt_tokens + req.output_tokens > self.profile.kv_capacity_tokens:
            # vLLM caps a request at its max model length; here the cache bounds it.
            req.output_tokens = max(1, self.profile.kv_capacity_tokens - req.prompt_tokens)
            if req.prompt_tokens + req.output_tokens > self.profile.kv_capacity_tokens:
                raise ValueError(f"a {req.prompt_tokens}-token prompt does not fit in {self.profile.name}'s KV cache")
        done = self.run_until(now_s)
        self.waiting.append(req)
        self._admit(now_s)
        return done

    def abort(self, now_s: float, req: EngineRequest) -> list[EngineRequest]:
        """Drop `req` (timed out, or its user went away) if it is still here; returns the requests
        finished up to now."""
        done = self.run_until(now_s)
        if req._running:
            self._remove(req)
            self._admit(now_s)
        elif req in self.waiting:
            self.waiting.remove(req)
        return done

    def _next(self) -> tuple[float, bool] | None:
        """(when, is_completion) of the next event: a completion, or the KV cache filling up."""
        heap = self._finish_heap
        while heap and not heap[0][2]._running:
            heapq.heappop(heap)  # a preempted request's stale entry
        if not self._running:
            return None
        target = heap[0][0]
        n = len(self._running)
        full_v = (self.profile.kv_capacity_tokens - self._kv_base) / n
        completion = n == 1 or target <= full_v
        v_next = max(self._v, target if completion else full_v)
        start = max(self._t, self._pause_until)
        return start + max(0.0, self._time_between(self._v, v_next)), completion

    def next_event_s(self) -> float | None:
        """When the next completion or preemption happens (None: idle)."""
        event = self._next()
        return None if event is None else event[0]

    def run_until(self, now_s: float) -> list[EngineRequest]:
        """Process every completion and preemption up to `now_s`; returns the finished requests."""
        done: list[EngineRequest] = []
        while True:
            event = self._next()
            if event is None or event[0] > now_s + _EPS:
                break
            t, completion = event
            self._advance(t)
            if completion:
                self._complete(done)
            else:
                self._preempt()
            self._admit(t)
        self._advance(now_s)
        return done

    def _complete(self, done: list[EngineRequest]) -> None:
        """Finish the request at the top of the heap, and any other due at the same clock."""
        heap = self._finish_heap
        self._v = max(self._v, heap[0][0])  # no float drift below the target just reached
        while heap and heap[0][0] <= self._v + 1e-6:
            _, _, req = heapq.heappop(heap)
            if not req._running:
                continue
            self._remove(req)
            req.generated = req.output_tokens
            done.append(req)
            self.finished_count += 1

    def _preempt(self) -> None:
        """The KV cache is full: the newest request goes back to the head of the queue (recompute)."""
        victim = self._running[-1]
        self._remove(victim)
        victim.generated += int(self._v - victim.v0)
        victim.preemptions += 1
        self.preempted_count += 1
        self.waiting.appendleft(victim)

    def _remove(self, req: EngineRequest) -> None:
        self._running.remove(req)
        req._running = False
        self._kv_base -= req.prompt_tokens + req.generated - req.v0

    def _admit(self, now_s: float) -> None:
        p = self.profile
        self._advance(now_s)
        while self.waiting and len(self._running) < p.max_num_seqs:
            req = self.waiting[0]
            context = req.prompt_tokens + req.generated
            if self._running and self.kv_tokens() + context + 1 > p.kv_capacity_tokens:
                break
            self.waiting.popleft()
            # Prefill pauses decoding; several admitted at once prefill back to back.
            self._pause_until = max(self._pause_until, now_s) + p.prefill_overhead_s + context / p.prefill_tokens_per_s
            req.v0 = self._v
            req._running = True
            if req.admitted_at_s is None:
                req.admitted_at_s = now_s
                req.first_token_s = self._pause_until
            self._running.append(req)
            self._kv_base += context - req.v0
            self._seq += 1
            heapq.heappush(self._finish_heap, (req.target_v, self._seq, req))


class SlotEngine(EngineModel):
    """The fake backend as an event model: `max_num_seqs` slots, FIFO admission, every running request on
    its own clock (first token `prefill_overhead_s` after admission, then one per `step_base_s`)."""

    def __init__(self, profile: EngineProfile) -> None:
        self.profile = profile
        self.waiting: deque[EngineRequest] = deque()
        self._running: list[EngineRequest] = []
        self._finish_heap: list[tuple[float, int, EngineRequest]] = []  # (finish time, seq, request)
        self._seq = 0
        self.finished_count = 0
        self.preempted_count = 0  # never: a slot is held to the end

    def duration_s(self, output_tokens: int) -> float:
        """Admission to the last token: the first after the latency, each other one a step later."""
        return self.profile.prefill_overhead_s + (output_tokens - 1) * self.profile.step_base_s

    def kv_tokens(self, now_s: float | None = None) -> float:
        """Slots in use (the fake has no KV cache; its `kv_usage` is running / capacity)."""
        return float(len(self._running))

    def load(self, now_s: float | None = None) -> tuple[float, int, int]:
        """(running / capacity, running, waiting), as the fake backend's `load()` reports them."""
        return min(1.0, len(self._running) / self.profile.max_num_seqs), len(self._running), len(self.waiting)

    def submit(self, now_s: float, req: EngineRequest) -> list[EngineRequest]:
        """Queue `req`; returns the requests finished up to now."""
        if req.prompt_tokens < 0 or req.output_tokens < 1:
            raise ValueError("a request needs prompt_tokens >= 0 and output_tokens >= 1")
        done = self.run_until(now_s)
        self.waiting.append(req)
        self._admit(now_s)
        return done

    def abort(self, now_s: float, req: EngineRequest) -> list[EngineRequest]:
        """Drop `req` if it is still here (its slot frees at once); returns the requests finished up to now."""
        done = self.run_until(now_s)
        if req._running:
            self._running.remove(req)
            req._running = False
            self._admit(now_s)
        elif req in self.waiting:
            self.waiting.remove(req)
        return done

    def next_event_s(self) -> float | None:
        """When the next running request finishes (None: idle)."""
        heap = self._finish_heap
        while heap and not heap[0][2]._running:
            heapq.heappop(heap)  # an aborted request's entry
        return heap[0][0] if heap else None

    def run_until(self, now_s: float) -> list[EngineRequest]:
        """Finish every request due by `now_s`, each freed slot taking the next waiting one at that time."""
        done: list[EngineRequest] = []
        while True:
            t = self.next_event_s()
            if t is None or t > now_s + _EPS:
                return done
            _, _, req = heapq.heappop(self._finish_heap)
            self._running.remove(req)
            req._running = False
            req.generated = req.output_tokens
            self.finished_count += 1
            done.append(req)
            self._admit(t)

    def _admit(self, now_s: float) -> None:
        while self.waiting and len(self._running) < self.profile.max_num_seqs:
            req = self.waiting.popleft()
            req._running = True
            req.admitted_at_s = now_s
            req.first_token_s = now_s + self.profile.prefill_overhead_s
            self._running.append(req)
            self._seq += 1
            heapq.heappush(self._finish_heap, (now_s + self.duration_s(req.output_tokens), self._seq, req))
