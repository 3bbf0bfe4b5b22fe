"""`wwwserve sim reproduce`: every paper scenario in every mode, written to a results folder.

Per scenario and mode a per-request CSV; `summary.json` with every figure; `summary.md` with the tables,
our numbers beside the paper's claims; PNG plots (with matplotlib, the `sim` extra) shaped like the
paper's figures: global SLO attainment against the latency threshold, mean latency per source node, and
windowed latency around the join and the leave. Seeds are fixed: a rerun writes the same numbers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from wwwserve.ledger.params import WEI_PER_CREDIT
from wwwserve.sim.metrics import mean_latency, mean_latency_by_source, slo_attainment, windowed_latency, write_records
from wwwserve.sim.records import RequestRecord
from wwwserve.sim.scenarios import MODES, SCENARIOS, Scenario, build, run_modes
from wwwserve.sim.workloads import MathLengths

__all__ = ["PAPER_CLAIMS", "reproduce", "scenario_summary"]

PAPER_CLAIMS = {
    "slo_vs_single": "up to 1.5x higher global SLO attainment than single-node serving",
    "latency_vs_single": "-27.6 % latency",
    "vs_centralized": "close to a centralized scheduler, sometimes above it",
}


def _change(new: float, old: float) -> float:
    return new / old - 1 if old else 0.0


def scenario_summary(scenario: Scenario, results: dict[str, list[RequestRecord]]) -> dict[str, Any]:
    """Every figure of one scenario: per mode the SLO curve, mean latency, per-source latency, outcomes."""
    modes: dict[str, Any] = {}
    for mode, records in results.items():
        modes[mode] = {
            "slo": {str(t): slo_attainment(records, t) for t in scenario.thresholds_s},
            "mean_latency_s": mean_latency(records),
            "mean_latency_by_source_s": mean_latency_by_source(records),
            "outcomes": {status: sum(r.status == status for r in records) for status in ("done", "timeout", "failed")},
            "delegated": sum(r.hops > 0 for r in records),
            "redispatched": sum(r.redispatches > 0 for r in records),
        }
    out: dict[str, Any] = {"name": scenario.name, "title": scenario.title, "requests": len(scenario.requests),
                           "nodes": [n.name + ":" + n.profile.name for n in scenario.nodes],
                           "notes": scenario.notes, "modes": modes}
    if "single" in modes and "decentralized" in modes:
        single, dec = modes["single"], modes["decentralized"]
        ratios = [(dec["slo"][t] / single["slo"][t], float(t)) for t in single["slo"] if single["slo"][t] > 0]
        best = max(ratios) if ratios else (0.0, 0.0)
        out["decentralized_vs_single"] = {
            "max_slo_ratio": best[0], "at_threshold_s": best[1],
            "latency_change": _change(dec["mean_latency_s"], single["mean_latency_s"]),
        }
    if "centralized" in modes and "decentralized" in modes:
        cen, dec = modes["centralized"], modes["decentralized"]
        gaps = [dec["slo"][t] - cen["slo"][t] for t in cen["slo"]]
        out["decentralized_vs_centralized"] = {
            "mean_slo_gap": sum(gaps) / len(gaps), "thresholds_above": sum(g > 0 for g in gaps),
            "thresholds": len(gaps),
            "latency_change": _change(dec["mean_latency_s"], cen["mean_latency_s"]),
        }
    return out


def _markdown(summaries: list[dict[str, Any]], seed: int, lengths: MathLengths) -> str:
    lines = ["# Simulated reproduction of the paper's scheduling results", "",
             f"Seed {seed}; engine profiles and workload assumptions in `sim/engine.py` and `sim/workloads.py` "
             f"(math answers: log-normal, median {lengths.median_output:.0f} tokens, cut at {lengths.max_tokens}).",
             "", "## Our numbers beside the paper's claims", "",
             "| scenario | SLO decentralized / single (best threshold) | latency vs single "
             "| vs centralized: mean SLO gap, thresholds above, latency |",
             "|---|---|---|---|"]
    for s in summaries:
        ds, dc = s.get("decentralized_vs_single"), s.get("decentralized_vs_centralized")
        if ds is None or dc is None:
            continue
        lines.append(f"| {s['name']} | {ds['max_slo_ratio']:.2f}x at {ds['at_threshold_s']:.0f} s | "
                     f"{100 * ds['latency_change']:+.1f} % | {100 * dc['mean_slo_gap']:+.1f} pts, "
                     f"{dc['thresholds_above']}/{dc['thresholds']}, {100 * dc['latency_change']:+.1f} % |")
    lines += ["", f"Paper: {PAPER_CLAIMS['slo_vs_single']}; {PAPER_CLAIMS['latency_vs_single']}; "
              f"{PAPER_CLAIMS['vs_centralized']}.", ""]
    for s in summaries:
        lines += [f"## {s['name']}: {s['title']}", "", f"{s['requests']} requests; nodes {', '.join(s['nodes'])}."]
        lines += [f"- {note}" for note in s["notes"]]
        thresholds = list(next(iter(s["modes"].values()))["slo"])
        picks = [thresholds[0], thresholds[len(thresholds) // 2], thresholds[-1]]
        lines += ["", "| mode | mean latency (s) | " + " | ".join(f"SLO@{float(t):.0f}s" for t in picks)
                  + " | done / timeout / failed | delegated |", "|---|---|" + "---|" * len(picks) + "---|---|"]
        for mode, m in s["modes"].items():
            o = m["outcomes"]
            lines.append(f"| {mode} | {m['mean_latency_s']:.1f} | " + " | ".join(f"{m['slo'][t]:.2f}" for t in picks)
                         + f" | {o['done']} / {o['timeout']} / {o['failed']} | {m['delegated']} |")
        lines.append("")
    return "\n".join(lines)


def _quality_markdown(quality: dict[str, Any] | None) -> str:
    if quality is None:
        return ""
    lines = ["## quality: duels settled by the contract's rules", "",
             f"{quality['duels']} duels ({', '.join(f'{k} {v}' for k, v in quality['outcomes'].items())}) over "
             f"{quality['simulated_s']:.0f} s. Paper: stronger models gain credit faster; win rates 0.57/0.53/0.39 "
             "(the inputs here). "
             + (f"Cancelled: {', '.join(f'{k} {v}' for k, v in quality['cancelled'].items())}. "
                if quality.get("cancelled") else "")
             + f"{quality.get('reduced_bond', 0)} decided duels ran with a bond below DUEL_BOND (the challenger's "
             "stake was bonded by other duels)"
             + "".join(f"; {v} committed duels refused ({k})" for k, v in quality.get("refused", {}).items())
             + ".", "",
             "| class | input win rate | measured (won-lost) | requests served "
             "| stake + credit (credits) start → end |",
             "|---|---|---|---|---|"]
    for c, v in quality["classes"].items():
        rate = "-" if v["win_rate"] is None else f"{v['win_rate']:.2f}"
        start, end = (x / WEI_PER_CREDIT for x in v["stake_plus_credit_wei"])
        lines.append(f"| {c} | {v['input_win_rate']} | {rate} ({v['won']}-{v['lost']}) | {v['served']} | "
                     f"{start:,.0f} → {end:,.0f} |")
    return "\n".join(lines) + "\n"


def _plots(out: Path, scenario: Scenario, summary: dict[str, Any], results: dict[str, list[RequestRecord]]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    colors = {"single": "tab:gray", "centralized": "tab:blue", "decentralized": "tab:red"}
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for mode, m in summary["modes"].items():
        xs = [float(t) for t in m["slo"]]
        ax.plot(xs, [100 * v for v in m["slo"].values()], marker="o", ms=3, label=mode, color=colors.get(mode))
    ax.set_xlabel("end-to-end latency SLO (s)")
    ax.set_ylabel("global SLO attainment (%)")
    ax.set_title(scenario.title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"slo_{scenario.name}.png", dpi=120)
    plt.close(fig)

    sources = sorted({r.source for r in scenario.requests})
    fig, ax = plt.subplots(figsize=(5, 3.6))
    width = 0.8 / max(1, len(summary["modes"]))
    for i, (mode, m) in enumerate(summary["modes"].items()):
        values = [m["mean_latency_by_source_s"].get(s, 0.0) for s in sources]
        ax.bar([j + i * width for j in range(len(sources))], values, width, label=mode, color=colors.get(mode))
    ax.set_xticks([j + width * (len(summary["modes"]) - 1) / 2 for j in range(len(sources))], sources)
    ax.set_ylabel("mean latency (s)")
    ax.set_title(f"{scenario.title}: latency per source node", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"latency_by_source_{scenario.name}.png", dpi=120)
    plt.close(fig)

    events = [(n.leave_s, f"{n.name} leaves") for n in scenario.nodes if n.leave_s is not None]
    events += [(n.join_s, f"{n.name} joins") for n in scenario.nodes if n.join_s > 0]
    if events and "decentralized" in results:
        records = results["decentralized"]
        fig, ax = plt.subplots(figsize=(6, 3.6))
        points = [(r.finish_s, r.latency_s) for r in records if r.finish_s is not None and r.latency_s is not None]
        ax.scatter([p[0] for p in points], [p[1] for p in points], s=4, alpha=0.4, color="tab:gray", label="requests")
        windows = windowed_latency(records, scenario.window_s)
        ax.plot([w + scenario.window_s / 2 for w, _, _ in windows], [m for _, m, _ in windows], color="black",
                label=f"{scenario.window_s:.0f} s windowed mean")
        for t, label in events:
            ax.axvline(t, color="tab:blue")
            ax.text(t, ax.get_ylim()[0], " " + label, color="tab:blue", fontsize=8, va="bottom")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("request latency (s)")
        ax.set_title(f"{scenario.title} (decentralized)", fontsize=9)
        ax.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"windowed_latency_{scenario.name}.png", dpi=120)
        plt.close(fig)
    return True


def run_quality(seed: int, out: Path | None = None) -> dict[str, Any]:
    """The quality-incentive scenario: duels settled by the contract's rules; per class the measured win
    rate beside its input, requests served, and stake + credit over time (CSV and PNG under `out`)."""
    from dataclasses import replace

    from wwwserve.sim.network import Simulation
    from wwwserve.sim.scenarios import QUALITY_CLASSES

    scenario = build("quality", seed)
    assert scenario.config is not None
    sim = Simulation(scenario.nodes, scenario.requests, replace(scenario.config, seed=seed))
    records = sim.run()
    ledger = sim.ledger
    assert ledger is not None
    quality = {n.name: n.quality for n in scenario.nodes[1:]}
    cls = {name: next(c for c, q in QUALITY_CLASSES.items() if q == value) for name, value in quality.items()}
    won: dict[str, int] = dict.fromkeys(QUALITY_CLASSES, 0)
    lost: dict[str, int] = dict.fromkeys(QUALITY_CLASSES, 0)
    for d in ledger.duels:
        if d.outcome in ("a_won", "b_won"):
            winner, loser = (d.a, d.b) if d.outcome == "a_won" else (d.b, d.a)
            won[cls[winner]] += 1
            lost[cls[loser]] += 1
    start_t, start = ledger.samples[0]
    end_t, end = ledger.samples[-1]

    def total(snapshot: dict[str, tuple[int, int]], c: str) -> int:
        return sum(sum(snapshot[n]) for n in cls if cls[n] == c)

    def staked(snapshot: dict[str, tuple[int, int]], c: str) -> int:
        return sum(snapshot[n][0] for n in cls if cls[n] == c)

    bond = ledger.model.params.duel_bond_wei
    origin = scenario.nodes[0].name

    summary: dict[str, Any] = {
        "duels": len(ledger.duels),
        "outcomes": {o: sum(d.outcome == o for d in ledger.duels) for o in sorted({d.outcome for d in ledger.duels})},
        "classes": {c: {"input_win_rate": q, "won": won[c], "lost": lost[c],
                        "win_rate": won[c] / (won[c] + lost[c]) if won[c] + lost[c] else None,
                        "served": sum(r.executor in cls and cls[r.executor] == c for r in records),
                        "stake_plus_credit_wei": [total(start, c), total(end, c)],
                        "stake_change_wei": staked(end, c) - staked(start, c)}
                    for c, q in QUALITY_CLASSES.items()},
        "simulated_s": end_t - start_t,
        "cancelled": {r: sum(d.cancel_reason == r for d in ledger.duels)
                      for r in sorted({d.cancel_reason for d in ledger.duels} - {""})},
        # a challenger drawn while its stake was bonded by other duels duels for less (equal bonds)
        "reduced_bond": sum(d.outcome in ("a_won", "b_won") and d.bond_wei < bond for d in ledger.duels),
        "appealed": sum(d.round == 2 for d in ledger.duels),
        # committed duels the contract refused to open (e.g. A's stake all bonded by its open duels)
        "refused": dict(ledger.refused),
        "origin_change_wei": sum(end[origin]) - sum(start[origin]),
    }
    if out is not None:
        import csv

        folder = out / "quality"
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "duels.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["duel_id", "opened_s", "settled_s", "a", "b", "better", "judges", "votes", "outcome",
                        "cancel_reason", "round", "bond_wei", "stake_moved_wei"])
            for d in ledger.duels:
                w.writerow([d.duel_id, f"{d.opened_s:.1f}", "" if d.settled_s is None else f"{d.settled_s:.1f}",
                            d.a, d.b, d.better, " ".join(d.judges), " ".join(d.votes), d.outcome, d.cancel_reason,
                            d.round, d.bond_wei, d.stake_moved_wei])
        with (folder / "balances.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["t_s", "node", "class", "stake_wei", "credit_wei"])
            for t, snapshot in ledger.samples:
                for name, (stake, credit) in snapshot.items():
                    w.writerow([f"{t:.0f}", name, cls.get(name, "dispatcher"), stake, credit])
        write_records(records, folder / "requests.csv")
        summary["plot"] = _quality_plot(out, ledger.samples, cls)
    return summary


def _quality_plot(out: Path, samples: list[tuple[float, dict[str, tuple[int, int]]]], cls: dict[str, str]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from wwwserve.sim.scenarios import QUALITY_CLASSES

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for c, q in QUALITY_CLASSES.items():
        nodes = [n for n in cls if cls[n] == c]
        start = sum(sum(samples[0][1][n]) for n in nodes)
        gained = [(sum(sum(snap[n]) for n in nodes) - start) / WEI_PER_CREDIT for _, snap in samples]
        ax.plot([t for t, _ in samples], gained, label=f"class {c} (win rate {q})")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("stake + credit gained (credits)")
    ax.set_title("Quality incentives (simulated, contract settlement)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "credit_quality.png", dpi=120)
    plt.close(fig)
    return True


def reproduce(out: Path, *, seed: int = 0, schedule_path: Path | None = None, trace_path: Path | None = None,
              scenarios: Sequence[str] = SCENARIOS, lengths: MathLengths | None = None,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run `scenarios` in every mode and write `out/` (see the module docstring); returns the summary."""
    lengths = lengths or MathLengths()
    say = progress or (lambda _m: None)
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    plotted = True
    quality: dict[str, Any] | None = None
    for name in scenarios:
        if name == "quality":
            say("quality: 2,000 requests, 7 nodes, duels on the contract's reference model")
            quality = run_quality(seed, out)
            plotted = bool(quality.pop("plot", False)) and plotted
            continue
        scenario = build(name, seed, schedule_path=schedule_path, trace_path=trace_path, lengths=lengths)
        say(f"{name}: {len(scenario.requests)} requests on {len(scenario.nodes)} nodes")

        def step(mode: str, now: float, done: int, total: int, name: str = name) -> None:
            if done == total:
                say(f"  {name} / {mode}: {done}/{total} requests, {now:.0f} s simulated")

        results = run_modes(scenario, seed, MODES, progress=step)
        for mode, records in results.items():
            write_records(records, out / name / f"{mode}.csv")
        summary = scenario_summary(scenario, results)
        windows = windowed_latency(results["decentralized"], scenario.window_s)
        summary["windowed_latency_decentralized"] = [[w, m, n] for w, m, n in windows]
        summaries.append(summary)
        plotted = _plots(out, scenario, summary, results) and plotted
    payload = {"seed": seed, "lengths": {"median_output": lengths.median_output, "sigma": lengths.sigma,
                                         "max_tokens": lengths.max_tokens},
               "paper": PAPER_CLAIMS, "scenarios": summaries, "quality": quality, "plots": plotted}
    (out / "summary.json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    (out / "summary.md").write_text(_markdown(summaries, seed, lengths) + _quality_markdown(quality)
                                    + ("" if plotted else "\n(PNG plots skipped: install matplotlib, "
                                       "`pip install 'wwwserve[sim]'`.)\n"))
    return payload
