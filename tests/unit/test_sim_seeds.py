"""`wwwserve sim reproduce` over several seeds (issue 16): t-intervals, verdicts by their stated rules,
parallel runs equal to serial ones, bursts spread over a stated interval, parameters in every output."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from wwwserve.cli import app
from wwwserve.sim.claims import aggregate, figure
from wwwserve.sim.metrics import mean_interval, t_975
from wwwserve.sim.report import reproduce
from wwwserve.sim.scenarios import build, parameters

# ---- the interval --------------------------------------------------------------------------------------------------


def test_t_interval_matches_the_textbook_values() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    f = mean_interval(values)
    half = 2.262 * statistics.stdev(values) / 10**0.5  # t(0.975, 9 df) = 2.262
    assert f["mean"] == 5.5 and f["n"] == 10
    assert f["lo"] == pytest.approx(5.5 - half) and f["hi"] == pytest.approx(5.5 + half)
    # Past the table the expansion stays within 0.001 of the exact quantiles (t(40) 2.0211, t(120) 1.9799).
    assert t_975(40) == pytest.approx(2.0211, abs=1e-3) and t_975(120) == pytest.approx(1.9799, abs=1e-3)


def test_one_seed_has_no_interval_and_no_values_is_an_error() -> None:
    assert mean_interval([3.0]) == {"mean": 3.0, "sd": None, "lo": None, "hi": None, "n": 1}
    with pytest.raises(ValueError):
        mean_interval([])


# ---- verdicts ------------------------------------------------------------------------------------------------------


def _seed_summary(single: float, dec: float, cen: float, latency_single: float, latency_dec: float) -> dict[str, Any]:
    def mode(slo: float, latency: float) -> dict[str, Any]:
        return {"slo": {"200": slo, "300": slo}, "mean_latency_s": latency, "mean_latency_by_source_s": {},
                "outcomes": {"done": 10, "timeout": 0, "failed": 0}, "delegated": 0, "redispatched": 0}

    return {"name": "x", "title": "x", "requests": 10, "nodes": [], "notes": [],
            "parameters": {"workload": {"requests": 10}},
            "modes": {"single": mode(single, latency_single), "centralized": mode(cen, latency_dec),
                      "decentralized": mode(dec, latency_dec)}}


def test_a_ratio_whose_interval_holds_the_papers_value_is_reproduced() -> None:
    seeds = [_seed_summary(0.4, 0.4 * r, 0.4 * r, 100.0, 100.0 * (1 - c))
             for r, c in [(1.4, 0.25), (1.6, 0.30), (1.5, 0.28), (1.45, 0.26), (1.55, 0.29)]]
    claims = aggregate(seeds, range(5))["claims"]
    assert claims["slo_vs_single"]["verdict"] == "reproduced"
    assert claims["latency_vs_single"]["verdict"] == "reproduced"


def test_a_real_gain_short_of_the_paper_is_partly_and_no_gain_is_not() -> None:
    small = aggregate([_seed_summary(0.5, 0.5 * r, 0.5, 100.0, 90.0 + r) for r in (1.1, 1.12, 1.08, 1.1)],
                      range(4))["claims"]
    assert small["slo_vs_single"]["verdict"] == "partly"
    assert "falls short of 1.5" in small["slo_vs_single"]["why"]
    assert small["latency_vs_single"]["verdict"] == "partly"
    none = aggregate([_seed_summary(0.5, 0.5 * r, 0.5, 100.0, 100.0 * r) for r in (0.9, 1.1, 1.0, 1.05)],
                     range(4))["claims"]
    assert none["slo_vs_single"]["verdict"] == "not" and none["latency_vs_single"]["verdict"] == "not"


def test_close_to_centralized_needs_both_a_tight_gap_and_a_seed_above() -> None:
    above_once = aggregate([_seed_summary(0.5, d, 0.5, 100.0, 100.0) for d in (0.49, 0.51, 0.5, 0.495)], range(4))
    assert above_once["claims"]["vs_centralized"]["verdict"] == "reproduced"
    never_above = aggregate([_seed_summary(0.5, d, 0.5, 100.0, 100.0) for d in (0.49, 0.48, 0.5, 0.495)], range(4))
    assert never_above["claims"]["vs_centralized"]["verdict"] == "partly"
    far_below = aggregate([_seed_summary(0.5, d, 0.8, 100.0, 100.0) for d in (0.49, 0.48, 0.5, 0.495)], range(4))
    assert far_below["claims"]["vs_centralized"]["verdict"] == "not"


def test_one_seed_gives_no_verdict() -> None:
    claims = aggregate([_seed_summary(0.4, 0.6, 0.6, 100.0, 70.0)], [0])["claims"]
    assert claims["slo_vs_single"]["verdict"] == "no verdict"
    assert figure([1.0])["values"] == [1.0]


# ---- scenarios -----------------------------------------------------------------------------------------------------


def test_join_leave_bursts_arrive_over_the_stated_interval() -> None:
    spread = build("join-leave", 0)
    arrivals = sorted(r.arrival_s for r in spread.requests if r.source == "node1")
    assert len(arrivals) == 150 and arrivals[0] == 0.0 and 0.99 < arrivals[-1] < 1.0
    assert len(set(arrivals)) == 150  # no two at one instant
    instant = build("join-leave", 0, burst_s=0.0)
    assert {r.arrival_s for r in instant.requests} == {0.0, 150.0, 300.0}
    wide = build("join-leave", 0, burst_s=30.0)
    assert max(r.arrival_s for r in wide.requests if r.source == "node3") == pytest.approx(300.0 + 30.0 * 199 / 200)
    with pytest.raises(ValueError):
        build("join-leave", 0, burst_s=-1.0)


@pytest.mark.parametrize("name", ["schedule", "load-swing", "hetero", "azure", "join-leave", "quality"])
def test_every_scenario_states_its_parameters(name: str) -> None:
    scenario = build(name, 0)
    p = parameters(scenario)
    assert len(p["nodes"]) == len(scenario.nodes)
    assert p["workload"]["requests"] == len(scenario.requests) and "arrivals" in p["workload"]
    assert sum(len(names.split()) for names in p["policies"]) == len(scenario.nodes)
    assert p["network"]["request_timeout_s"] == 600.0
    if name == "join-leave":
        assert p["workload"]["burst spread (s)"] == 1.0
    # Duel settings only where duels run: the quality scenario's classes and judges are stated.
    assert ("judge_accuracy" in p["network"]) == (name == "quality")
    if name == "quality":
        assert "quality 0.57" in p["nodes"][1] and "quality 0.39" in p["nodes"][6]
    json.dumps(p)  # plain values: the JSON summary carries them


# ---- reproduce -----------------------------------------------------------------------------------------------------


def test_reproduce_gives_intervals_over_seeds_and_parallel_equals_serial(tmp_path: Path) -> None:
    serial = reproduce(tmp_path / "serial", seeds=3, jobs=1, scenarios=["schedule", "join-leave"])
    reproduce(tmp_path / "parallel", seeds=3, jobs=2, scenarios=["schedule", "join-leave"])
    assert (tmp_path / "serial" / "summary.json").read_text() == (tmp_path / "parallel" / "summary.json").read_text()
    assert serial["seeds"] == [0, 1, 2]
    schedule = serial["scenarios"][0]
    ratio = schedule["claims"]["slo_vs_single"]
    assert len(ratio["ours"]["values"]) == 3 and ratio["ours"]["lo"] < ratio["ours"]["mean"] < ratio["ours"]["hi"]
    assert ratio["verdict"] in ("reproduced", "partly", "not")
    # Each value is that seed's own run: seed 1 alone gives the second value, and no interval.
    one = reproduce(tmp_path / "one", seed=1, seeds=1, scenarios=["schedule"])
    alone = one["scenarios"][0]["claims"]
    assert alone["slo_vs_single"]["verdict"] == "no verdict"
    second = schedule["claims"]["latency_vs_single"]["ours"]["values"][1]
    assert alone["latency_vs_single"]["ours"]["values"] == [second]
    markdown = (tmp_path / "serial" / "summary.md").read_text()
    assert "Seeds 0-2" in markdown and "Verdict rules" in markdown and "burst spread (s) 1" in markdown
    assert "| schedule | SLO attainment / single, best threshold | 1.5x |" in markdown


def test_cli_reproduce_takes_seeds_and_prints_verdicts_and_parameters(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["sim", "reproduce", "--out", str(tmp_path), "--seeds", "2", "--jobs", "1",
                                      "--burst-s", "0.5"])
    assert result.exit_code == 0, result.output
    assert "Seeds 0-1" in result.output and ("**partly**" in result.output or "**not**" in result.output)
    payload = json.loads((tmp_path / "summary.json").read_text())
    assert payload["seeds"] == [0, 1] and payload["burst_s"] == 0.5 and payload["quality"]["claim"]["verdict"]
    join = next(s for s in payload["scenarios"] if s["name"] == "join-leave")
    assert join["parameters"]["workload"]["burst spread (s)"] == 0.5
    run = CliRunner().invoke(app, ["sim", "run", "join-leave", "-m", "decentralized", "--burst-s", "2"])
    assert run.exit_code == 0, run.output
    assert "parameters" in run.output and "burst spread" in run.output and "request_timeout_s" in run.output
