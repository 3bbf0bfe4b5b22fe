"""The incentives benchmark's report: the printed table, report.md, summary.json and the share plot."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from quality_classes.analysis import DuelRow, judge_agreement, pair_table, shares_over_time, win_rates
from quality_classes.common import CLASS_NAMES, CLASSES


def plot(series: Sequence[Mapping[str, float]], path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    t = [p["t_s"] for p in series]
    for ax, kind, label in ((axes[0], "stake", "stake share"), (axes[1], "total", "stake + credit share")):
        for cls in CLASSES:
            ax.plot(t, [p[f"{kind}_{cls}"] for p in series], label=f"({cls}) {CLASS_NAMES[cls]}")
        ax.set_xlabel("time (s)")
        ax.set_ylabel(label)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def report(result: Mapping[str, Any], accuracy: Mapping[str, Any] | None, args: argparse.Namespace,
           out: Path) -> dict[str, Any]:
    duels: list[DuelRow] = result["duels"]
    classes = {row["node"]: row["class"] for row in result["shares"]}
    rates = win_rates(duels)
    pairs = pair_table(duels)
    agreement = judge_agreement(duels)
    series = shares_over_time(result["shares"], classes)
    plotted = plot(series, out / "shares.png", f"stake per class, {len(duels)} duels, judge: {result['judge']}")
    ok = [r for r in result["requests"] if r.get("status") == 200]
    served = Counter(r["class"] for r in ok)
    lines = [f"# Incentives: {len(duels)} duels, judge = {result['judge']}", ""]
    lines.append(f"{len(result['requests'])} requests ({len(ok)} answered) in {result['seconds']:.0f} s; "
                 f"p_inspect {args.p_inspect}; answers max_tokens {args.max_tokens}, degraded class cut at "
                 f"{args.degraded_tokens}; first answers served by class: {dict(sorted(served.items()))}")
    outcomes = Counter(d.outcome for d in duels)
    lines.append(f"duel outcomes: {dict(outcomes)}; the origin's duel events: {result.get('origin_events')}")
    lines += ["", "| class | duels | won | lost | tied | win rate (decided) |", "|---|---|---|---|---|---|"]
    for cls in CLASSES:
        r = rates[cls]
        wr = "-" if r["win_rate"] is None else f"{r['win_rate']:.2f}"
        lines.append(f"| ({cls}) {CLASS_NAMES[cls]} | {r['duels']} | {r['won']} | {r['lost']} | {r['tied']} | {wr} |")
    lines += ["", "pairs (better-worse by intent): " + "; ".join(
        f"{k}: {dict(v)}" for k, v in sorted(pairs.items()))]
    lines += ["", "| judge class | agree | disagree | abstain | no evidence | silent | agreement of votes cast |",
              "|---|---|---|---|---|---|---|"]
    for cls, c in agreement.items():
        cast = c["agree"] + c["disagree"]
        rate = "-" if not cast else f"{c['agree'] / cast:.2f}"
        lines.append(f"| ({cls}) | {c['agree']} | {c['disagree']} | {c['abstain']} | {c['no_evidence']} | "
                     f"{c['silent']} | {rate} |")
    if series:
        first, last = series[0], series[-1]
        lines += ["", "| class | stake share start → end | stake+credit share start → end |", "|---|---|---|"]
        for cls in CLASSES:
            lines.append(f"| ({cls}) | {first[f'stake_{cls}']:.3f} → {last[f'stake_{cls}']:.3f} | "
                         f"{first[f'total_{cls}']:.3f} → {last[f'total_{cls}']:.3f} |")
    if accuracy is not None:
        lines += ["", "SmolLM2-135M as a judge (both orders must agree; in process): "
                  + "; ".join(f"{k}: {v}" for k, v in accuracy["counts"].items()),
                  f"its most common replies: {accuracy['top_replies']}"]
    lines += ["", f"files: {out}/requests.csv, duels.csv, shares.csv" + (", shares.png" if plotted else
                                                                         " (no matplotlib: no plot)")]
    text = "\n".join(lines)
    print(text)
    (out / "report.md").write_text(text + "\n")
    summary = {"win_rates": rates, "pairs": {k: dict(v) for k, v in pairs.items()},
               "judge_agreement": {k: dict(v) for k, v in agreement.items()}, "outcomes": dict(outcomes),
               "shares_start": series[0] if series else None, "shares_end": series[-1] if series else None,
               "judge": result["judge"], "accuracy_135m": accuracy, "args": {k: str(v) for k, v in vars(args).items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
