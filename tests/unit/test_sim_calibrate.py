"""Fitting an engine profile to timings (sim/calibrate.py): known parameters are recovered, and the
prediction replays queueing on a one-at-a-time engine. The fit against the real SmolLM2 backend is
bench/sim_calibration.py's job (timings are not asserted in tests)."""

from __future__ import annotations

import pytest

from wwwserve.sim.calibrate import Sample, fit_profile, predict_latencies


def synthetic(prompt: int, output: int, overhead: float = 0.02, prefill_rate: float = 800.0, step: float = 0.03,
              kv_step: float = 2e-5) -> Sample:
    first = overhead + prompt / prefill_rate
    decode = sum(step + kv_step * (prompt + k) for k in range(1, output))
    return Sample(prompt, output, first, first + decode)


def test_fit_recovers_the_parameters_that_made_the_timings() -> None:
    samples = [synthetic(p, n) for p in (30, 200, 600) for n in (16, 120)]
    profile = fit_profile(samples, name="fitted", kv_capacity_tokens=2048)
    assert profile.prefill_tokens_per_s == pytest.approx(800.0, rel=1e-6)
    assert profile.prefill_overhead_s == pytest.approx(0.02, rel=1e-6)
    assert profile.step_base_s == pytest.approx(0.03, rel=1e-6)
    assert profile.step_per_kv_token_s == pytest.approx(2e-5, rel=1e-6)
    assert (profile.max_num_seqs, profile.kv_capacity_tokens) == (1, 2048)


def test_fit_refuses_samples_that_cannot_separate_the_terms() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        fit_profile([synthetic(10, 10)] * 2, name="x", kv_capacity_tokens=100)
    with pytest.raises(ValueError, match="vary"):
        fit_profile([synthetic(10, 10)] * 4, name="x", kv_capacity_tokens=100)


def test_prediction_matches_the_formula_and_queues_on_a_one_at_a_time_engine() -> None:
    profile = fit_profile([synthetic(p, n) for p in (30, 200, 600) for n in (16, 120)], name="f",
                          kv_capacity_tokens=2048)
    alone = synthetic(100, 50)
    [latency] = predict_latencies(profile, [(0.0, 100, 50)])
    # The engine's continuous clock integrates the step time; the sum above adds it step by step.
    assert latency == pytest.approx(alone.total_s, rel=0.02)
    first, second = predict_latencies(profile, [(0.0, 100, 50), (0.1, 100, 50)])
    assert first == pytest.approx(latency) and second == pytest.approx(2 * latency - 0.1, rel=0.02)
