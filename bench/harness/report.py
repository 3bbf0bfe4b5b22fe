"""The serving benchmark's figures: one result per path, the targets of issue 3, the closing table, JSON."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.stats import LatencyStats, Throughput

# Targets of issue 3.
TARGET_HOP_P50_MS = 2.0
TARGET_NODE_RPS = 1000.0
TARGET_OVERHEAD_VS_LITELLM = 0.5
# The reference implementation dispatches one request per node per 0.5 s scheduler tick.
REFERENCE_TICK_S = 0.5

PATH_LABELS = {
    "direct": "(a) backend direct",
    "node": "(b) node -> openai backend",
    "node-fake": "(c) node, in-process fake",
    "litellm": "(d) LiteLLM proxy",
    "hop": "(e) node A -> node B (hop)",
}


@dataclass
class PathResult:
    """Everything measured on one path; `skipped` says why a path has no figures."""

    name: str
    label: str
    latency: LatencyStats | None = None
    throughput: list[Throughput] = field(default_factory=list)
    ttft: LatencyStats | None = None
    # CPU (ms, user + system) per request of each server process during the sequential measurement.
    sequential_cpu_ms: dict[str, float] = field(default_factory=dict)
    skipped: str | None = None
    note: str | None = None

    def best_rps(self) -> float | None:
        """The highest requests/s over the concurrencies measured."""
        return max((t.rps for t in self.throughput), default=None)


@dataclass
class TargetCheck:
    """One target of the issue against its measured figure; `passed` is None when it was not measured."""

    name: str
    goal: str
    measured: str
    passed: bool | None


def overhead_ms(results: dict[str, PathResult], name: str, base: str = "direct") -> float | None:
    """p50 latency of `name` minus p50 of `base` (ms); None when either was not measured."""
    path, ref = results.get(name), results.get(base)
    if path is None or ref is None or path.latency is None or ref.latency is None:
        return None
    return path.latency.p50_ms - ref.latency.p50_ms


def evaluate_targets(results: dict[str, PathResult]) -> list[TargetCheck]:
    """The three targets of issue 3, from measured figures (a missing figure gives passed=None)."""
    checks = []
    hop = overhead_ms(results, "hop", base="node")
    checks.append(TargetCheck(
        "hop adds <= 2 ms p50", f"<= {TARGET_HOP_P50_MS:.1f} ms",
        "not measured" if hop is None else f"{hop:.2f} ms (p50 of e minus p50 of b)",
        None if hop is None else hop <= TARGET_HOP_P50_MS,
    ))
    node_rps = results["node-fake"].best_rps() if "node-fake" in results else None
    checks.append(TargetCheck(
        "one node >= 1,000 req/s", f">= {TARGET_NODE_RPS:,.0f} req/s",
        "not measured" if node_rps is None else f"{node_rps:,.0f} req/s (path c)",
        None if node_rps is None else node_rps >= TARGET_NODE_RPS,
    ))
    ours, theirs = overhead_ms(results, "node"), overhead_ms(results, "litellm")
    ratio = None if ours is None or theirs is None or theirs <= 0 else ours / theirs
    checks.append(TargetCheck(
        "overhead <= half of LiteLLM's", f"<= {TARGET_OVERHEAD_VS_LITELLM:.2f}",
        "not measured" if ratio is None else f"{ratio:.2f} ({ours:.2f} ms vs {theirs:.2f} ms)",
        None if ratio is None else ratio <= TARGET_OVERHEAD_VS_LITELLM,
    ))
    return checks


def _fmt(value: float | None, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def format_report(results: dict[str, PathResult], checks: Sequence[TargetCheck], machine: str) -> str:
    """The closing table: one row per path, then the targets with PASS/MISS and the reference limit."""
    concurrencies = sorted({t.concurrency for r in results.values() for t in r.throughput})
    head = ["path", *[f"req/s c={c}" for c in concurrencies], "p50 ms", "p99 ms", "overhead ms",
            "vs LiteLLM", "TTFT p50 ms", "CPU client/server/other"]
    litellm_overhead = overhead_ms(results, "litellm")
    rows = []
    for name, r in results.items():
        if r.skipped:
            rows.append([r.label, f"skipped: {r.skipped}"])
            continue
        by_c = {t.concurrency: t for t in r.throughput}
        over = overhead_ms(results, name) if name != "direct" else None
        ratio = (over / litellm_overhead) if over is not None and litellm_overhead and litellm_overhead > 0 else None
        top = max(r.throughput, key=lambda t: t.rps) if r.throughput else None
        rows.append([
            r.label,
            *[_fmt(by_c[c].rps if c in by_c else None, ",.0f") for c in concurrencies],
            _fmt(r.latency.p50_ms if r.latency else None, ".2f"),
            _fmt(r.latency.p99_ms if r.latency else None, ".2f"),
            "0 (base)" if name == "direct" else _fmt(over, "+.2f"),
            _fmt(ratio, ".2f"),
            _fmt(r.ttft.p50_ms if r.ttft else None, ".2f"),
            "-" if top is None else f"{top.client_cpu_cores:.2f}/{top.server_cpu_cores:.2f}/{top.other_cpu_cores:.2f}",
        ])
    full = [row for row in [head, *rows] if len(row) == len(head)]
    widths = [max(len(str(row[i])) for row in full) for i in range(len(head))]
    widths[0] = max(widths[0], *(len(row[0]) for row in rows))
    lines = [f"wwwserve serving benchmark - {machine}", ""]
    for row in [head, *rows]:
        if len(row) != len(head):
            lines.append(f"{row[0]:<{widths[0]}}  {row[1]}")
        else:
            lines.append("  ".join(str(cell).ljust(widths[i]) if i == 0 else str(cell).rjust(widths[i])
                                   for i, cell in enumerate(row)))
        if row is head:
            lines.append("  ".join("-" * w for w in widths))
    notes = [f"  {r.label}: {r.note}" for r in results.values() if r.note]
    notes += [f"  {r.label}: CPU per sequential request " +
              ", ".join(f"{name} {ms:.2f} ms" for name, ms in r.sequential_cpu_ms.items())
              for r in results.values() if r.sequential_cpu_ms]
    if notes:
        lines += ["", "notes:", *notes]
    lines += ["", "targets:"]
    for c in checks:
        verdict = "n/a " if c.passed is None else ("PASS" if c.passed else "MISS")
        lines.append(f"  [{verdict}] {c.name:<32} goal {c.goal:<16} measured {c.measured}")
    lines += ["", f"reference implementation's design limit: one dispatch per {REFERENCE_TICK_S} s tick per node "
              f"= {1 / REFERENCE_TICK_S:.0f} req/s per node"]
    return "\n".join(lines)


def note_upstream(result: PathResult, before: dict[str, int], after: dict[str, int]) -> None:
    """Note how many upstream connections a proxy opened for its requests (1 per request = no keep-alive)."""
    requests = after["requests"] - before["requests"] - 1  # minus the stats call itself
    connections = after["connections"] - before["connections"] - 1
    if result.name not in ("direct", "node-fake") and requests > 0:
        result.note = ((result.note + "; ") if result.note else "") + \
            f"upstream: {requests:,} backend requests (incl. background polls) over {connections:,} new connections"


def to_json(results: dict[str, PathResult], checks: Sequence[TargetCheck], machine: str,
            args: argparse.Namespace) -> dict[str, Any]:
    """Everything measured, as plain JSON."""
    return {"machine": machine, "quick": args.quick, "concurrency": list(args.concurrency),
            "client_procs": args.client_procs, "duration_s": args.duration_s,
            "paths": {k: asdict(v) for k, v in results.items()},
            "overhead_ms": {k: overhead_ms(results, k) for k in results if k != "direct"},
            "hop_overhead_ms": overhead_ms(results, "hop", base="node"),
            "targets": [asdict(c) for c in checks],
            "reference_design_limit_rps_per_node": 1 / REFERENCE_TICK_S,
            "profiles": getattr(args, "profiles", {})}
