"""The simulator's engine model (sim/engine.py): hand-computed timings, batching, KV-full queueing,
preemption, abort, and the closed-form clock against a step-by-step count."""

from __future__ import annotations

import pytest

from wwwserve.sim.engine import PROFILES, EngineModel, EngineProfile, EngineRequest

# 10 ms per step, nothing else: every number below can be worked out by hand.
PLAIN = EngineProfile("plain", kv_capacity_tokens=1000, max_num_seqs=8, prefill_tokens_per_s=1000.0,
                      prefill_overhead_s=0.0, step_base_s=0.01, step_per_seq_s=0.0, step_per_kv_token_s=0.0)


def drain(engine: EngineModel) -> list[tuple[float, EngineRequest]]:
    """Run the engine until idle; (finish time, request) in finishing order."""
    out = []
    while (t := engine.next_event_s()) is not None:
        out += [(t, r) for r in engine.run_until(t)]
    return out


def test_one_request_takes_its_prefill_then_one_step_per_token() -> None:
    engine = EngineModel(PLAIN)
    req = EngineRequest(prompt_tokens=200, output_tokens=100)
    engine.submit(0.0, req)
    assert engine.load(0.0) == (pytest.approx(0.2), 1, 0)  # the prompt's KV
    [(t, done)] = drain(engine)
    assert done is req and t == pytest.approx(0.2 + 100 * 0.01)  # 200 tokens at 1000/s, then 100 steps
    assert req.first_token_s == pytest.approx(0.2) and engine.load(t) == (0.0, 0, 0)


def test_latency_grows_with_the_batch() -> None:
    profile = EngineProfile("batchy", kv_capacity_tokens=100_000, prefill_tokens_per_s=1e9, prefill_overhead_s=0.0,
                            step_base_s=0.01, step_per_seq_s=0.002)
    alone = EngineModel(profile)
    alone.submit(0.0, EngineRequest(10, 100))
    [(t_alone, _)] = drain(alone)
    crowded = EngineModel(profile)
    for _ in range(8):
        crowded.submit(0.0, EngineRequest(10, 100))
    finished = drain(crowded)
    assert t_alone == pytest.approx(100 * 0.012)
    assert [t for t, _ in finished][-1] == pytest.approx(100 * (0.01 + 8 * 0.002))  # every step serves 8
    assert profile.decode_tokens_per_s(8) < profile.decode_tokens_per_s(1)


def test_a_full_kv_cache_queues_requests_until_one_finishes() -> None:
    engine = EngineModel(PLAIN)
    first, second, third = (EngineRequest(400, 50) for _ in range(3))
    for req in (first, second, third):
        engine.submit(0.0, req)
    kv, running, waiting = engine.load(0.0)
    assert (running, waiting) == (2, 1) and kv == pytest.approx(0.8)  # 400 + 400 in; 400 more does not fit
    finished = drain(engine)
    assert [r for _, r in finished] == [first, second, third]
    # The third starts only when the first two are done: 0.8 s of prefill + 50 steps, then its own.
    assert third.admitted_at_s == pytest.approx(finished[0][0])
    assert finished[2][0] == pytest.approx(finished[0][0] + 0.4 + 50 * 0.01)


def test_a_kv_cache_that_fills_while_decoding_preempts_the_newest_request() -> None:
    engine = EngineModel(PLAIN)
    old, new = EngineRequest(100, 600), EngineRequest(100, 600)
    engine.submit(0.0, old)
    engine.submit(0.0, new)
    finished = drain(engine)
    # Both grow one token per step: 2 * (100 + v) reaches 1000 at v = 400, so `new` goes back to the queue
    # with its 400 tokens kept (recompute) and finishes after `old`.
    assert [r for _, r in finished] == [old, new]
    assert (old.preemptions, new.preemptions, engine.preempted_count) == (0, 1, 1)
    assert new.generated == 600


def test_abort_frees_the_request_and_lets_the_queue_in() -> None:
    engine = EngineModel(PLAIN)
    running, queued = EngineRequest(600, 100), EngineRequest(600, 100)
    engine.submit(0.0, running)
    engine.submit(0.0, queued)
    assert engine.load(0.0)[1:] == (1, 1)
    engine.abort(0.5, running)
    assert engine.load(0.5)[1:] == (1, 0) and queued.admitted_at_s == 0.5
    [(_, done)] = drain(engine)
    assert done is queued
    engine.abort(9.0, running)  # no longer there: nothing happens


def test_the_closed_form_clock_matches_counting_steps() -> None:
    # Step time grows with the KV cache read: the closed form integrates it, a loop adds it step by step.
    profile = EngineProfile("kv", kv_capacity_tokens=1_000_000, prefill_tokens_per_s=1e12, prefill_overhead_s=0.0,
                            step_base_s=0.01, step_per_seq_s=0.0, step_per_kv_token_s=1e-5)
    engine = EngineModel(profile)
    engine.submit(0.0, EngineRequest(1000, 2000))
    engine.submit(0.0, EngineRequest(3000, 2000))
    finished = drain(engine)
    counted = sum(0.01 + 1e-5 * (4000 + 2 * step) for step in range(2000))
    assert finished[-1][0] == pytest.approx(counted, rel=1e-3)


def test_oversized_requests_are_cut_or_refused() -> None:
    engine = EngineModel(PLAIN)
    long = EngineRequest(900, 500)
    engine.submit(0.0, long)
    assert long.output_tokens == 100  # capped at the cache, as a max model length would
    with pytest.raises(ValueError, match="does not fit"):
        engine.submit(0.0, EngineRequest(1000, 10))
    with pytest.raises(ValueError):
        engine.submit(0.0, EngineRequest(10, 0))


def test_gpu_profiles_are_ordered_as_the_hardware() -> None:
    r3090, r4090, a100 = (PROFILES[k] for k in ("qwen3-8b-rtx3090", "qwen3-8b-rtx4090", "qwen3-8b-a100"))
    # Single-stream decode from memory bandwidth, in the cards' order (sim/engine.py cites measurements).
    assert 38 < r3090.decode_tokens_per_s() < r4090.decode_tokens_per_s() < 52
    assert r4090.decode_tokens_per_s() > 44
    assert 85 < a100.decode_tokens_per_s() < 100
    assert r3090.kv_capacity_tokens == r4090.kv_capacity_tokens < a100.kv_capacity_tokens
    assert r3090.prefill_tokens_per_s < r4090.prefill_tokens_per_s < a100.prefill_tokens_per_s
