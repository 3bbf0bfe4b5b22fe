"""What a run's records say: SLO attainment, latency per source node, latency over time; CSV output; and
what several seeds' figures say together (`mean_interval`: a mean with a 95 % t-interval)."""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wwwserve.sim.records import RequestRecord

__all__ = ["interval_text", "mean_interval", "mean_latency", "mean_latency_by_source", "slo_attainment", "t_975",
           "windowed_latency", "write_records"]

CSV_FIELDS = ("rid", "source", "arrival_s", "prompt_tokens", "output_tokens", "status", "executor", "hops",
              "redispatches", "retries", "first_token_s", "finish_s", "latency_s", "preemptions")


def slo_attainment(records: Sequence[RequestRecord], threshold_s: float) -> float:
    """Share of all requests answered within `threshold_s` end to end (timed-out and failed ones miss)."""
    if not records:
        return 0.0
    hits = sum(1 for r in records if r.status == "done" and r.latency_s is not None and r.latency_s <= threshold_s)
    return hits / len(records)


def mean_latency(records: Sequence[RequestRecord]) -> float:
    """Mean end-to-end latency of the answered requests (0 when none was)."""
    done = [r.latency_s for r in records if r.status == "done" and r.latency_s is not None]
    return sum(done) / len(done) if done else 0.0


def mean_latency_by_source(records: Sequence[RequestRecord]) -> dict[str, float]:
    """Mean latency of the answered requests, per node the users sent them to."""
    groups: dict[str, list[RequestRecord]] = defaultdict(list)
    for r in records:
        groups[r.source].append(r)
    return {source: mean_latency(rs) for source, rs in sorted(groups.items())}


def windowed_latency(records: Sequence[RequestRecord], window_s: float) -> list[tuple[float, float, int]]:
    """(window start, mean latency, count) of the requests *finishing* in each `window_s` (the paper's
    windowed latency over time)."""
    groups: dict[int, list[float]] = defaultdict(list)
    for r in records:
        if r.status == "done" and r.finish_s is not None and r.latency_s is not None:
            groups[int(r.finish_s // window_s)].append(r.latency_s)
    return [(k * window_s, sum(v) / len(v), len(v)) for k, v in sorted(groups.items())]


def write_records(records: Sequence[RequestRecord], path: Path) -> None:
    """One CSV row per request (times in seconds from the start of the run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_FIELDS)
        for r in records:
            latency = r.latency_s
            writer.writerow([r.rid, r.source, f"{r.arrival_s:.3f}", r.prompt_tokens, r.output_tokens, r.status,
                             r.executor, r.hops, r.redispatches, r.retries,
                             "" if r.first_token_s is None else f"{r.first_token_s:.3f}",
                             "" if r.finish_s is None else f"{r.finish_s:.3f}",
                             "" if latency is None else f"{latency:.3f}", r.preemptions])


# Student's t, 97.5th percentile, for 1-30 degrees of freedom (two-sided 95 %).
_T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
          2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_975(df: int) -> float:
    """The t quantile a two-sided 95 % interval needs with `df` degrees of freedom (a table to 30, then
    the Cornish-Fisher expansion, within 0.001 of the exact value)."""
    if df < 1:
        raise ValueError("a t-interval needs at least 2 values")
    if df <= len(_T_975):
        return _T_975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_interval(values: Sequence[float]) -> dict[str, float | int | None]:
    """`mean`, `sd` and the 95 % t-interval `lo`-`hi` of independent values (one per seed); with a single
    value `sd`, `lo` and `hi` are None: one seed has no interval."""
    if not values:
        raise ValueError("no values")
    mean = statistics.fmean(values)
    if len(values) == 1:
        return {"mean": mean, "sd": None, "lo": None, "hi": None, "n": 1}
    sd = statistics.stdev(values)
    half = t_975(len(values) - 1) * sd / math.sqrt(len(values))
    return {"mean": mean, "sd": sd, "lo": mean - half, "hi": mean + half, "n": len(values)}


def interval_text(f: dict[str, Any] | None, scale: float = 1.0, digits: int = 1, sign: bool = False,
                  share: bool = False) -> str:
    """`mean [lo, hi]` of a `mean_interval` figure times `scale` (the mean alone for one seed; - for none);
    a `share`'s interval is cut to 0-1 (times `scale`): the t-interval of a few seeds can reach past it."""
    if f is None:
        return "-"
    spec = f"{'+' if sign else ''}.{digits}f"
    text = format(f["mean"] * scale, spec)
    if f.get("lo") is None:
        return text
    lo, hi = (max(0.0, f["lo"]), min(1.0, f["hi"])) if share else (f["lo"], f["hi"])
    return f"{text} [{format(lo * scale, spec)}, {format(hi * scale, spec)}]"
