"""What a run's records say: SLO attainment, latency per source node, latency over time; CSV output."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from wwwserve.sim.records import RequestRecord

__all__ = ["mean_latency", "mean_latency_by_source", "slo_attainment", "windowed_latency", "write_records"]

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
