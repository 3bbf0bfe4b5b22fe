"""`wwwserve sim incentives` (issue 16): stake and credit shares per quality class at scale, a random responder's
bankruptcy, judge settings; small runs (a few hundred to a few thousand requests, 1-2 seeds)."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wwwserve.cli import app
from wwwserve.ledger.params import WEI_PER_CREDIT
from wwwserve.sim.config import SMOLLM2_JUDGE
from wwwserve.sim.incentives import (
    DEFAULT_SETTINGS,
    IncentiveSetup,
    IncentiveSetupError,
    JudgeSetting,
    bankruptcy_times,
    build_network,
    run_incentives,
    run_one,
    settings_for,
)

MIN = 100 * WEI_PER_CREDIT
SMALL = IncentiveSetup(per_class=2, random_nodes=1, dispatchers=2, requests=400)
STRONG = JudgeSetting("strong", 1.0)


def test_bankruptcy_is_the_first_sample_below_min_stake_and_a_later_rise_counts_as_recovered() -> None:
    samples = [(0.0, {"r0": (MIN, 50), "r1": (MIN, 500), "r2": (MIN, 0)}),
               (10.0, {"r0": (MIN - 20, 0), "r1": (MIN, 480), "r2": (MIN - 20, 0)}),
               (20.0, {"r0": (MIN - 40, 0), "r1": (MIN, 460), "r2": (MIN - 20, 30)}),
               (30.0, {"r0": (MIN - 40, 0), "r1": (MIN, 400), "r2": (MIN, 0)})]
    times = bankruptcy_times(samples, ["r0", "r1", "r2"], MIN)
    # stake + free credit, not stake alone: r0 at 10 s has MIN - 20 + 0 < MIN; r1 never falls below.
    assert times == {"r0": (10.0, False), "r1": (None, False), "r2": (10.0, True)}


def test_the_network_has_its_classes_and_judges() -> None:
    setup = IncentiveSetup(per_class=3, random_nodes=2, dispatchers=3, requests=30)
    weak_abstaining = settings_for(0.6)[2]
    nodes, requests, config = build_network(setup, weak_abstaining, seed=4)
    names = [n.name for n in nodes]
    assert names == ["d0", "d1", "d2", "a0", "a1", "a2", "b0", "b1", "b2", "c0", "c1", "c2", "r0", "r1"]
    quality = {n.name: n.quality for n in nodes}
    assert (quality["a0"], quality["b1"], quality["c2"], quality["r0"]) == (0.57, 0.53, 0.39, 0.02)
    # every third executor of each class abstains as SmolLM2 did; the random responders judge as a coin
    assert [n.name for n in nodes if n.judges == SMOLLM2_JUDGE] == ["a2", "b2", "c2"]
    assert {n.name for n in nodes if n.judge_accuracy == 0.5} == {"r0", "r1"}
    assert config.contract and config.judge_accuracy == 0.6 and config.seed == 4
    assert {r.source for r in requests} == {"d0", "d1", "d2"} and len(requests) == 30
    assert all(a.arrival_s < b.arrival_s for a, b in itertools.pairwise(requests))


def test_strong_judges_order_the_classes_and_bankrupt_the_random_responder() -> None:
    setup = IncentiveSetup(per_class=3, random_nodes=2, dispatchers=2, requests=3000, credit_wei=100 * WEI_PER_CREDIT)
    run = run_one(setup, STRONG, seed=0)
    final = run["final"]
    assert final["A"]["total"] > final["C"]["total"] > final["R"]["total"]
    assert run["won"]["R"] < run["lost"]["R"]
    for name, r in run["responders"].items():
        assert r["bankrupt_s"] is not None, name
        # once bankrupt it is no longer routed to: every request it executed arrived before
        assert r["served"] == r["served_before"] > 0
        assert r["served_share_before"] < 2 / setup.executors
        assert r["final_wei"] < setup.credit_wei  # it lost money; A, B and C gained
    # a bankrupt responder's stake is below MIN_STAKE, so its stake share falls below its start share
    assert final["R"]["stake"] < 2 / setup.executors


def test_a_run_is_fixed_by_its_seed() -> None:
    first = run_one(SMALL, DEFAULT_SETTINGS[0], seed=3)
    assert run_one(SMALL, DEFAULT_SETTINGS[0], seed=3) == first
    assert run_one(SMALL, DEFAULT_SETTINGS[0], seed=4) != first


def test_parallel_runs_write_what_serial_runs_write(tmp_path: Path) -> None:
    settings = DEFAULT_SETTINGS[1:2]  # weak judges
    serial = run_incentives(tmp_path / "serial", SMALL, settings, seeds=2, jobs=1)
    lines: list[str] = []
    parallel = run_incentives(tmp_path / "parallel", SMALL, settings, seeds=2, jobs=2, progress=lines.append)
    assert json.dumps(serial.summary, sort_keys=True) == json.dumps(parallel.summary, sort_keys=True)
    for name in ("summary.md", "shares.csv", "responders.csv"):
        assert (tmp_path / "serial" / name).read_text() == (tmp_path / "parallel" / name).read_text()
    assert len([line for line in lines if line.lstrip().startswith("[")]) == 2  # one progress line per run
    agg = serial.summary["settings"]["weak"]
    assert agg["seeds"] == [0, 1] and agg["final"]["A"]["total"]["n"] == 2
    series = agg["series"]["R"]["total"]
    assert len(series) == SMALL.bins + 1 and all(p["lo"] is not None for p in series)
    assert set(agg["verdicts"]) == {"better_gain", "better_stake", "random_bankrupt"}
    assert agg["random_responder"]["start_credits"] == 1000 and agg["random_responder"]["final_credits"]["n"] == 2
    header = (tmp_path / "serial" / "shares.csv").read_text().splitlines()[0]
    assert header == "setting,class,kind,t_s,mean,lo,hi,seeds"
    assert "## weak" in (tmp_path / "serial" / "summary.md").read_text()


@pytest.mark.parametrize(("args", "message"), [
    (["--nodes", "0"], "--nodes must be >= 1"),
    (["--requests", "0"], "--requests must be >= 1"),
    (["--judge-accuracy", "1.5"], "--judge-accuracy must be between 0 and 1"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--jobs", "0"], "--jobs must be >= 1"),
    (["--credit", "-1"], "--credit must be >= 0"),
    (["--settings", "weak,strong"], "--settings takes distinct names from measured, weak, weak+abstaining"),
    (["--settings", "weak,weak"], "--settings takes distinct names"),
])
def test_bad_flags_fail_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["sim", "incentives", "--out", str(tmp_path), *args])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing ran, nothing written


def test_the_command_prints_the_tables_and_writes_the_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["sim", "incentives", "--out", str(tmp_path), "--seeds", "1", "--jobs", "1",
                                      "--nodes", "2", "--random-nodes", "1", "--dispatchers", "2",
                                      "--requests", "300"])
    assert result.exit_code == 0, result.output
    assert "measured judges" in result.output and "random responders" in result.output
    assert "better_gain: no verdict" in result.output  # one seed: no interval, no verdict
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary["settings"]) == ["measured", "weak", "weak+abstaining"]
    assert summary["setup"]["requests"] == 300
    only = CliRunner().invoke(app, ["sim", "incentives", "--out", str(tmp_path / "weak"), "--seeds", "1",
                                    "--nodes", "1", "--random-nodes", "1", "--dispatchers", "1", "--requests", "50",
                                    "--settings", "weak+abstaining,weak", "--judge-accuracy", "0.6", "--json"])
    assert only.exit_code == 0, only.output
    picked = json.loads((tmp_path / "weak" / "summary.json").read_text())["settings"]
    assert set(picked) == {"weak+abstaining", "weak"} and picked["weak"]["setting"]["accuracy"] == 0.6


def test_setups_the_run_cannot_take_are_refused() -> None:
    with pytest.raises(IncentiveSetupError):
        IncentiveSetup(random_nodes=-1)
    with pytest.raises(IncentiveSetupError):
        run_incentives(None, SMALL, (), seeds=1)


def test_routable_stake_follows_quality_only_when_executors_restake() -> None:
    setup = IncentiveSetup(per_class=3, random_nodes=1, dispatchers=2, requests=2000)
    held = run_one(setup, STRONG, seed=1)
    # holding MIN_STAKE, every solvent executor weighs the same: A, B and C keep equal routing shares
    assert held["final"]["A"]["routable"] == held["final"]["B"]["routable"] == held["final"]["C"]["routable"]
    assert held["final"]["A"]["total"] > held["final"]["C"]["total"]
    restaked = run_one(replace(setup, restake=True), STRONG, seed=1)
    start, final = restaked["series"][0], restaked["final"]
    assert start["A"]["routable"] == start["C"]["routable"]
    assert final["A"]["routable"] > final["C"]["routable"]
    assert final["A"]["credit"] == 0.0  # everything it won is staked
