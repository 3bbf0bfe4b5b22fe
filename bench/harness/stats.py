"""Statistics of the serving benchmarks: percentiles, latency and throughput figures."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class LatencyStats:
    """Latency of sequential requests, in milliseconds."""

    n: int
    p50_ms: float
    p99_ms: float
    mean_ms: float

    @classmethod
    def from_seconds(cls, samples_s: Sequence[float]) -> LatencyStats:
        """Summarize per-request latencies given in seconds."""
        ms = [s * 1000.0 for s in samples_s]
        return cls(n=len(ms), p50_ms=percentile(ms, 50), p99_ms=percentile(ms, 99), mean_ms=sum(ms) / len(ms))


@dataclass
class Throughput:
    """Requests/s at one concurrency, with the CPU each side spent (1.0 = one core busy)."""

    concurrency: int
    requests: int
    errors: int
    wall_s: float
    rps: float
    client_cpu_cores: float
    server_cpu_cores: float
    # Busy cores machine-wide minus client and server: other processes competing for the CPU.
    other_cpu_cores: float = 0.0
