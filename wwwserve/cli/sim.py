"""`wwwserve sim ...`: run the discrete-event simulator (package `sim`) from the command line."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from wwwserve.cli.common import console, err_console, fail

__all__ = ["sim_app"]

sim_app = typer.Typer(help="Simulate a network on this machine (the live node's own policy and routing code, "
                           "modelled LLM engines).", no_args_is_help=True)


class _Progress:
    """One status line at most every `every_s` seconds of wall time, and one at the end of each run."""

    def __init__(self, every_s: float = 2.0) -> None:
        self.every_s = every_s
        self._last = 0.0

    def __call__(self, label: str, now: float, done: int, total: int) -> None:
        wall = time.monotonic()
        if done < total and wall - self._last < self.every_s:
            return
        self._last = wall
        err_console.print(f"[dim]{label}: {done:,}/{total:,} requests finished, {now:,.0f} s simulated[/]",
                          highlight=False)


@sim_app.command("run")
def sim_run(
    scenario: Annotated[str, typer.Argument(help="schedule | load-swing | hetero | azure | join-leave | quality")],
    mode: Annotated[list[str] | None, typer.Option("--mode", "-m",
                                                   help="single | centralized | decentralized (repeatable; "
                                                        "default: all three)")] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random draw (same seed, same numbers).")] = 0,
    schedule: Annotated[Path | None, typer.Option(help="The paper's simu_input.json (scenario 'schedule').")] = None,
    trace: Annotated[Path | None, typer.Option(help="An Azure LLM inference trace CSV (scenario 'azure'; "
                                                    "default: the bundled slice).")] = None,
    scale: Annotated[int | None, typer.Option(min=1, help="Keep every N-th trace row (default 30, or 3 on the "
                                                          "bundled 1/10 slice).")] = None,
    median_output: Annotated[float, typer.Option(min=1, help="Median answer length of math requests (tokens).")]
    = 5000.0,
    burst_s: Annotated[float, typer.Option(min=0, help="Seconds each join-leave burst is spread over (0: one "
                                                       "instant).")] = 1.0,
    network: Annotated[str, typer.Option(help="lan (every node 5 ms apart) | intercontinental (nodes spread over "
                                              "three continents, 40-90 ms one way)")] = "lan",
    out: Annotated[Path | None, typer.Option(help="Write one CSV per mode (one row per request) here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run one scenario in one or more modes and print SLO attainment and latency."""
    from wwwserve.sim.metrics import write_records
    from wwwserve.sim.report import scenario_summary
    from wwwserve.sim.scenarios import MODES, SCENARIOS, build, intercontinental, run_modes
    from wwwserve.sim.workloads import MathLengths, WorkloadError

    if scenario not in SCENARIOS:
        fail(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if scenario == "quality":
        _quality(seed, out, as_json)
        return
    modes = tuple(mode or MODES)
    bad = [m for m in modes if m not in MODES]
    if bad:
        fail(f"unknown mode {bad[0]!r}; choose from {', '.join(MODES)}")
    if network not in ("lan", "intercontinental"):
        fail(f"unknown network {network!r}; choose lan or intercontinental")
    try:
        built = build(scenario, seed, schedule_path=schedule, trace_path=trace, trace_scale=scale,
                      lengths=MathLengths(median_output=median_output), burst_s=burst_s)
    except WorkloadError as exc:
        fail(str(exc))
    if network == "intercontinental":
        built = intercontinental(built)
    progress = _Progress()
    results = run_modes(built, seed, modes, progress=lambda m, now, d, t: progress(f"{scenario} / {m}", now, d, t))  # type: ignore[arg-type]
    if out is not None:
        for m, records in results.items():
            write_records(records, out / f"{scenario}_{m}.csv")
    summary = scenario_summary(built, results)
    if as_json:
        console.print_json(json.dumps(summary))
        return
    thresholds = list(built.thresholds_s)
    picks = [thresholds[0], thresholds[len(thresholds) // 2], thresholds[-1]]
    table = Table(title=f"{built.title}: {len(built.requests)} requests, seed {seed}")
    for column in ("mode", "done/timeout/failed", "mean latency (s)", *(f"SLO@{t:.0f}s" for t in picks), "delegated"):
        table.add_column(column)
    for m, s in summary["modes"].items():
        o = s["outcomes"]
        table.add_row(m, f"{o['done']}/{o['timeout']}/{o['failed']}", f"{s['mean_latency_s']:.1f}",
                      *(f"{s['slo'][str(t)]:.2f}" for t in picks), str(s["delegated"]))
    console.print(table)
    for note in built.notes:
        console.print(f"note: {note}", highlight=False)
    _print_parameters(summary["parameters"])


def _print_parameters(params: dict[str, Any]) -> None:
    table = Table(title="parameters", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("nodes", "; ".join(params["nodes"]))
    for names, knobs in params["policies"].items():
        table.add_row(f"policy of {names}", knobs)
    for group in ("workload", "network"):
        for key, value in params[group].items():
            table.add_row(f"{group}: {key}", str(value))
    table.add_row("SLO thresholds (s)", params["slo thresholds (s)"])
    console.print(table)


def _quality(seed: int, out: Path | None, as_json: bool) -> None:
    from wwwserve.ledger.params import WEI_PER_CREDIT
    from wwwserve.sim.report import run_quality

    summary = run_quality(seed, out)
    summary.pop("plot", None)
    if as_json:
        console.print_json(json.dumps(summary))
        return
    title = f"Quality incentives: {summary['duels']} duels over {summary['simulated_s']:.0f} s, seed {seed}"
    table = Table(title=title)
    for column in ("class", "input win rate", "measured (won-lost)", "requests served", "stake + credit start → end"):
        table.add_column(column)
    for c, v in summary["classes"].items():
        rate = "-" if v["win_rate"] is None else f"{v['win_rate']:.2f}"
        start, end = (x // WEI_PER_CREDIT for x in v["stake_plus_credit_wei"])
        table.add_row(c, str(v["input_win_rate"]), f"{rate} ({v['won']}-{v['lost']})", str(v["served"]),
                      f"{start:,} → {end:,} credits")
    console.print(table)
    _print_parameters(summary["parameters"])


@sim_app.command("reproduce")
def sim_reproduce(
    out: Annotated[Path, typer.Option(help="Results folder (CSV, summary.json, summary.md, PNG plots).")]
    = Path("results"),
    seed: Annotated[int, typer.Option(help="The first seed (seeds run SEED, SEED+1, ...; same seeds, same "
                                           "numbers).")] = 0,
    seeds: Annotated[int, typer.Option(min=1, help="How many seeds: every figure is their mean with a 95 % "
                                                   "t-interval (1: a quick single-seed look, no interval).")] = 10,
    jobs: Annotated[int, typer.Option(min=1, help="Runs at a time, each in its own process (same numbers "
                                                  "as 1).")] = 2,
    schedule: Annotated[Path | None, typer.Option(help="The paper's simu_input.json (else a stand-in with the "
                                                       "same per-node counts).")] = None,
    trace: Annotated[Path | None, typer.Option(help="An Azure LLM inference trace CSV (default: the bundled "
                                                    "slice).")] = None,
    median_output: Annotated[float, typer.Option(min=1, help="Median answer length of math requests (tokens).")]
    = 5000.0,
    burst_s: Annotated[float, typer.Option(min=0, help="Seconds each join-leave burst is spread over (0: one "
                                                       "instant).")] = 1.0,
) -> None:
    """Run every paper scenario in all three modes over several seeds; write the figures with intervals,
    our numbers beside the paper's with a verdict per claim, and every scenario's parameters."""
    from wwwserve.sim.report import reproduce
    from wwwserve.sim.workloads import MathLengths, WorkloadError

    started = time.monotonic()
    try:
        summary = reproduce(out, seed=seed, seeds=seeds, jobs=jobs, schedule_path=schedule, trace_path=trace,
                            lengths=MathLengths(median_output=median_output), burst_s=burst_s,
                            progress=lambda line: err_console.print(f"[dim]{line}[/]", highlight=False))
    except WorkloadError as exc:
        fail(str(exc))
    console.print((out / "summary.md").read_text(), markup=False, highlight=False)
    count = len(summary["scenarios"]) + (summary["quality"] is not None)
    console.print(f"wrote {out}/ ({count} scenarios x {seeds} seeds"
                  f"{', with plots' if summary['plots'] else ', no plots: matplotlib is not installed'}) "
                  f"in {time.monotonic() - started:.1f} s", highlight=False)


@sim_app.command("incentives")
def sim_incentives(
    out: Annotated[Path, typer.Option(help="Results folder (summary.md, summary.json, shares.csv, responders.csv, "
                                           "shares.png).")] = Path("results/incentives"),
    seed: Annotated[int, typer.Option(help="The first seed (seeds run SEED, SEED+1, ...; same seeds, same "
                                           "numbers).")] = 0,
    seeds: Annotated[int, typer.Option(help="Seeds per judge setting: every figure is their mean with a 95 % "
                                            "t-interval (1: a quick look, no interval).")] = 10,
    jobs: Annotated[int, typer.Option(help="Runs at a time, each in its own process (same numbers as 1).")] = 2,
    nodes: Annotated[int, typer.Option("--nodes", "--scale", help="Executors in each of classes A, B, C.")] = 10,
    random_nodes: Annotated[int, typer.Option(help="Executors of class R (random responders).")] = 3,
    dispatchers: Annotated[int, typer.Option(help="Dispatchers (the only origins of requests and duels).")] = 4,
    requests: Annotated[int, typer.Option(help="User requests per run.")] = 40_000,
    judge_accuracy: Annotated[float, typer.Option(help="Per-order accuracy of the weaker judge settings (the "
                                                       "measured setting's is 0.9).")] = 0.7,
    credit: Annotated[float, typer.Option(help="Credits each executor starts with (MIN_STAKE of them staked).")]
    = 1_000.0,
    settings: Annotated[str, typer.Option(help="Judge settings to run, comma-separated.")]
    = "measured,weak,weak+abstaining",
    restake: Annotated[bool, typer.Option(help="Executors stake all their free credit, so duels move routing "
                                               "weight (default: each holds MIN_STAKE).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """The paper's incentive claims at scale: stake and credit share per quality class over time, and when a
    random responder goes bankrupt, under the measured judges and weaker ones (module sim.incentives)."""
    from wwwserve.ledger.params import WEI_PER_CREDIT
    from wwwserve.sim.incentives import IncentiveSetup, IncentiveSetupError, run_incentives, settings_for

    started = time.monotonic()
    try:
        if credit < 0:
            raise IncentiveSetupError(f"--credit must be >= 0, not {credit:g}")
        setup = IncentiveSetup(per_class=nodes, random_nodes=random_nodes, dispatchers=dispatchers,
                               requests=requests, credit_wei=round(credit * WEI_PER_CREDIT), restake=restake)
        chosen = settings_for(judge_accuracy, [name.strip() for name in settings.split(",")])
        result = run_incentives(out, setup, chosen, seed=seed, seeds=seeds, jobs=jobs,
                                progress=lambda line: err_console.print(f"[dim]{line}[/]", highlight=False))
    except IncentiveSetupError as exc:
        fail(str(exc))
    if as_json:
        console.print_json(json.dumps(result.summary))
        return
    _print_incentives(result.summary)
    console.print(f"wrote {out}/ ({', '.join(p.name for p in result.files)}"
                  f"{'' if result.plotted else '; no plot: matplotlib is not installed'}) "
                  f"in {time.monotonic() - started:.1f} s", highlight=False)


def _print_incentives(summary: dict[str, Any]) -> None:
    from wwwserve.sim.incentives import CLASSES, KINDS
    from wwwserve.sim.metrics import interval_text

    for name, agg in summary["settings"].items():
        table = Table(title=f"{name} judges: {agg['setting']['note']} ({len(agg['seeds'])} seeds, % with 95 % "
                            "interval)")
        for column in ("class", "quality", "start share", "final routable stake", "final stake", "final credit",
                       "final stake + credit", "duel win rate", "requests served"):
            table.add_column(column)
        for cls, f in agg["final"].items():
            shares = (*(f[k] for k in KINDS), agg["win_rate"][cls], agg["served_share"][cls])
            table.add_row(cls, f"{CLASSES[cls]:g}", f"{agg['start_share'][cls] * 100:.1f}",
                          *(interval_text(x, 100, 1, share=True) for x in shares))
        console.print(table)
        rr = agg.get("random_responder")
        if rr is not None:
            console.print(f"random responders: {interval_text(rr['bankrupt_share'], 100, 0, share=True)} % "
                          f"bankrupt, at {interval_text(rr['bankrupt_s'], 1, 0)} s; each served "
                          f"{interval_text(rr['served_share_before'], 100, 2, share=True)} % of the requests before "
                          f"that (equal split {rr['equal_share'] * 100:.2f} %); stake + credit "
                          f"{rr['start_credits']:,.0f} -> {interval_text(rr['final_credits'], 1, 0)} credits each",
                          highlight=False)
        for claim, v in agg["verdicts"].items():
            console.print(f"{claim}: {v['verdict']} ({v['why']})", highlight=False)
