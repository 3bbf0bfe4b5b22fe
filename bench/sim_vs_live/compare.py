"""One summary for either side of bench/sim_vs_live.py, and the comparison of two.

Both sides are reduced to the same rows first, so one function computes every figure for both:
`RequestRow` (source node, executor node, end-to-end latency, status) and `DuelRow` (outcome as the
indexer names it: a_won, b_won, tie, voided, cancelled, or open; the cancel reason; the votes revealed).
`summarize` gives the executor shares, the delegation rate (executed by a node other than the user's),
latency mean, p50 and p90, and duel counts. `ks_distance` is the two-sample Kolmogorov-Smirnov statistic
(sup |F1 - F2| of the empirical distribution functions), computed here (the venv has no scipy).
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.stats import percentile

__all__ = ["DECISIONS", "DUEL_OUTCOMES", "DuelRow", "RequestRow", "ks_critical", "ks_distance", "summarize"]

DUEL_OUTCOMES = ("a_won", "b_won", "tie", "voided", "cancelled", "open")


@dataclass(frozen=True)
class RequestRow:
    """One user request as either side saw it; `latency_s` None unless `status` is "done"."""

    source: str
    executor: str
    latency_s: float | None
    status: str


@dataclass(frozen=True)
class DuelRow:
    """One duel as either side saw it."""

    outcome: str
    cancel_reason: str = ""
    votes: tuple[str, ...] = ()  # revealed votes of the final round ("none": a seat that never revealed)


def ks_distance(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Two-sample Kolmogorov-Smirnov distance: the largest gap between the two empirical CDFs."""
    if not xs or not ys:
        raise ValueError("both samples need at least one value")
    a, b = sorted(xs), sorted(ys)
    gap = 0.0
    for v in (*a, *b):  # the CDFs only jump at sample values; compare them right after each jump
        fa = bisect.bisect_right(a, v) / len(a)
        fb = bisect.bisect_right(b, v) / len(b)
        gap = max(gap, abs(fa - fb))
    return gap


def ks_critical(n: int, m: int, alpha: float = 0.05) -> float:
    """The distance above which two samples of sizes n and m differ at level `alpha` (asymptotic:
    c(alpha) * sqrt((n + m) / (n m)), c = sqrt(-ln(alpha / 2) / 2), 1.358 at 5 %)."""
    c = math.sqrt(-math.log(alpha / 2) / 2)
    return c * math.sqrt((n + m) / (n * m))


DECISIONS = ("local", "offload", "queue", "retry")


def summarize(requests: Sequence[RequestRow], duels: Sequence[DuelRow], nodes: Sequence[str],
              decisions: dict[str, float] | None = None) -> dict[str, Any]:
    """Every figure of one run (one side, one seed); `decisions`: the dispatch decisions of all nodes by
    action, where the run counted them."""
    done = [r for r in requests if r.status == "done"]
    latencies = [r.latency_s for r in done if r.latency_s is not None]
    by_executor = Counter(r.executor for r in done)
    outcomes = Counter(d.outcome for d in duels)
    votes = Counter(v for d in duels if d.outcome not in ("open", "cancelled") for v in d.votes)
    return {
        "requests": len(requests),
        "done": len(done),
        "failed": len(requests) - len(done),
        "shares": {n: by_executor.get(n, 0) / len(done) if done else 0.0 for n in nodes},
        "delegation_rate": sum(r.executor != r.source for r in done) / len(done) if done else 0.0,
        "latency_mean_s": sum(latencies) / len(latencies) if latencies else None,
        "latency_p50_s": percentile(latencies, 50) if latencies else None,
        "latency_p90_s": percentile(latencies, 90) if latencies else None,
        "latencies_s": latencies,
        "duels_opened": len(duels),
        "duels_settled": sum(d.outcome in ("a_won", "b_won", "tie", "voided") for d in duels),
        "duel_outcomes": {o: outcomes.get(o, 0) for o in DUEL_OUTCOMES},
        "cancel_reasons": dict(Counter(d.cancel_reason for d in duels if d.outcome == "cancelled")),
        "votes": dict(votes),
        "decisions": None if decisions is None else {a: float(decisions.get(a, 0)) for a in DECISIONS},
    }
