"""Request streams for the simulator: synthetic ones it generates itself, and trace files it reads.

Nothing here needs files that ship outside the package: the paper's request schedule and the Azure
trace are read from paths the user gives (`schedule`, `azure_trace`); `synthetic_schedule` stands in
for the schedule when it is not at hand, and a slice of the Azure 2023 trace is vendored (CC BY 4.0,
`sim/data/README.md`).

Lengths. A trace carries its own token counts. Math-reasoning requests (Qwen3-8B with thinking on,
`max_tokens` 8,192, as in the paper's SLO runs) have no published length distribution; `MathLengths`
is our assumption, stated where it is used: prompts of 60-400 tokens, answers log-normal with a median
of 5,000 tokens (sigma 0.6), cut at 8,192, so about 1 in 5 answers hits the cap. Why so long: the
paper sweeps its SLO from 200 to 450 s, and one Qwen3-8B stream on an RTX 3090 makes ~40 tokens/s, so
its answers must mostly run to thousands of tokens (a thinking model on competition math does). Pass
`median_output=` (or a fixed `output_tokens=`) to change it; `bench/sim_scale.py` and the README show
how the headline ratios move with it.
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path

from wwwserve.errors import WWWServeError
from wwwserve.sim.config import RequestSpec

__all__ = [
    "AZURE_SLICE",
    "MATH500_LENGTHS",
    "MathLengths",
    "TraceRow",
    "WorkloadError",
    "azure_time_zones",
    "load_swing",
    "poisson",
    "read_azure_trace",
    "schedule",
    "synthetic_schedule",
]

MODEL = "qwen3-8b"
AZURE_SLICE = "azure_conv_2023_slice.csv"


class WorkloadError(WWWServeError, ValueError):
    """A workload file or parameter cannot be used (the message says which and why)."""


@dataclass(frozen=True)
class MathLengths:
    """Token lengths of math-reasoning requests (an assumption: see the module docstring)."""

    max_tokens: int = 8192
    median_output: float = 5000.0
    sigma: float = 0.6
    output_tokens: int | None = None  # fixed answer length instead of the distribution

    def prompt(self, rng: random.Random) -> int:
        return rng.randint(60, 400)

    def output(self, rng: random.Random) -> int:
        if self.output_tokens is not None:
            return self.output_tokens
        return max(1, min(self.max_tokens, int(rng.lognormvariate(math.log(self.median_output), self.sigma))))


# MATH500 (the reference's dynamic-participation runs): easier problems than OpenR1-Math, so shorter
# thinking answers; our assumption, like MathLengths' default.
MATH500_LENGTHS = MathLengths(median_output=1500.0, sigma=0.6)


def _poisson_times(rng: random.Random, rate_per_s: float, start_s: float, end_s: float) -> Iterator[float]:
    if rate_per_s <= 0:
        return
    t = start_s
    while True:
        t += rng.expovariate(rate_per_s)
        if t >= end_s:
            return
        yield t


def poisson(source: str, rate_per_s: float, start_s: float, end_s: float, rng: random.Random,
            lengths: MathLengths | None = None) -> list[RequestSpec]:
    """Poisson arrivals at `source` between `start_s` and `end_s`."""
    if rate_per_s < 0 or end_s < start_s:
        raise WorkloadError("poisson needs rate >= 0 and end >= start")
    lengths = lengths or MathLengths()
    return [RequestSpec(t, source, lengths.prompt(rng), lengths.output(rng), MODEL)
            for t in _poisson_times(rng, rate_per_s, start_s, end_s)]


def load_swing(sources: Sequence[str], seed: int, lengths: MathLengths | None = None,
               high_per_s: float = 1 / 15, low_per_s: float = 1 / 30, half_s: float = 300.0) -> list[RequestSpec]:
    """The paper's load swing: the first half of the nodes at `high` for [0, half) then `low` for
    [half, 2*half); the other half the reverse (4 nodes, 1/15 and 1/30 req/s, 300 s in the paper)."""
    rng = random.Random(seed)
    out: list[RequestSpec] = []
    for i, source in enumerate(sources):
        first, second = (high_per_s, low_per_s) if i < len(sources) / 2 else (low_per_s, high_per_s)
        out += poisson(source, first, 0.0, half_s, rng, lengths)
        out += poisson(source, second, half_s, 2 * half_s, rng, lengths)
    return sorted(out, key=lambda r: r.arrival_s)


def _prompt_tokens(text: str) -> int:
    # ~3.6 characters per token for English math text with LaTeX, plus the chat template.
    return max(1, round(len(text) / 3.6) + 20)


def schedule(path: Path, seed: int, lengths: MathLengths | None = None) -> list[RequestSpec]:
    """The paper's request schedule (`simu_input.json`: objects with `problem`, `target`, `delay`), replayed
    exactly: each request at `delay` seconds at node `target`; its prompt length from the problem text, its
    answer length drawn from `lengths` (seeded by `seed` and the request's `idx`)."""
    try:
        items = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise WorkloadError(f"cannot read the schedule {path}: {exc}") from None
    if not isinstance(items, list) or not items:
        raise WorkloadError(f"{path}: expected a JSON array of requests")
    lengths = lengths or MathLengths()
    out = []
    for n, item in enumerate(items):
        try:
            problem, target, delay = str(item["problem"]), str(item["target"]), float(item["delay"])
            idx = int(item.get("idx", n))
        except (KeyError, TypeError, ValueError):
            raise WorkloadError(f"{path}: entry {n} needs 'problem', 'target' and a numeric 'delay'") from None
        if delay < 0 or not math.isfinite(delay):
            raise WorkloadError(f"{path}: entry {n} has a bad delay {delay!r}")
        rng = random.Random(f"{seed}/{idx}")
        out.append(RequestSpec(delay, target, min(_prompt_tokens(problem), lengths.max_tokens // 2),
                               lengths.output(rng), MODEL))
    return sorted(out, key=lambda r: r.arrival_s)


# The paper's schedule as counted per node (shared/data README: 43/9/47/13 requests over ~6-235 s).
REFERENCE_SCHEDULE_COUNTS = {"node1": 43, "node2": 9, "node3": 47, "node4": 13}
REFERENCE_SCHEDULE_SPAN_S = 235.0


def synthetic_schedule(seed: int, lengths: MathLengths | None = None) -> list[RequestSpec]:
    """A stand-in for the paper's schedule when its file is not given: the same per-node counts, uniform
    (Poisson-conditioned) arrival times over the same span."""
    rng = random.Random(seed)
    lengths = lengths or MathLengths()
    out = []
    for source, count in REFERENCE_SCHEDULE_COUNTS.items():
        for t in sorted(rng.uniform(0.0, REFERENCE_SCHEDULE_SPAN_S) for _ in range(count)):
            out.append(RequestSpec(t, source, lengths.prompt(rng), lengths.output(rng), MODEL))
    return sorted(out, key=lambda r: r.arrival_s)


@dataclass(frozen=True)
class TraceRow:
    """One row of an Azure LLM inference trace: seconds from the trace's start, token counts."""

    t_s: float
    context_tokens: int
    generated_tokens: int


def _parse_time(text: str) -> datetime:
    text = text.strip()
    if text.endswith("+00:00"):  # the 2024 trace: 6 fractional digits and a zone
        text = text[:-6]
    head, _, frac = text.partition(".")
    # The 2023 trace has 7 fractional digits; datetime takes at most 6.
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}" if frac else head)


def read_azure_trace(path: Path | None = None) -> list[TraceRow]:
    """Rows of an Azure LLM inference trace CSV (`TIMESTAMP,ContextTokens,GeneratedTokens`; the 2023 and
    2024 timestamp formats both parse). Without `path`: the vendored slice of the 2023 conversation trace."""
    try:
        source = resources.files("wwwserve.sim.data").joinpath(AZURE_SLICE) if path is None else Path(path)
        text = source.read_text()
    except OSError as exc:
        raise WorkloadError(f"cannot read the trace {path}: {exc}") from None
    rows = []
    start: datetime | None = None
    for n, row in enumerate(csv.DictReader(text.splitlines())):
        try:
            when = _parse_time(row["TIMESTAMP"])
            context, generated = int(row["ContextTokens"]), int(row["GeneratedTokens"])
        except (KeyError, TypeError, ValueError):
            raise WorkloadError(f"{path or AZURE_SLICE}: row {n + 2} is not TIMESTAMP,ContextTokens,GeneratedTokens") \
                from None
        start = start or when
        rows.append(TraceRow((when - start).total_seconds(), max(1, context), max(1, generated)))
    if not rows:
        raise WorkloadError(f"{path or AZURE_SLICE}: no rows")
    return rows


def azure_time_zones(rows: Sequence[TraceRow], sources: Sequence[str], scale: int = 30, cap: int = 1000,
                     max_tokens: int = 8192) -> list[RequestSpec]:
    """Per-node streams from one trace, with demand shifted as if the nodes sat in different time zones.

    The paper (after the reference's `generate_workload_for_nodes.py`) gave node i the 1-hour window
    starting 3*i hours into the week-long 2024 trace. The 2023 trace is one 58-minute window, so node i
    gets the whole window **rotated** by i/len(sources) of its length (wrapping around) and rebased to 0:
    each node sees the same hour of demand with its peak at a different time, as time zones would shift
    a daily peak. Every `scale`-th row is kept (node i starting at row i, so the nodes' requests differ),
    and the earliest `cap` requests over all nodes are returned.
    """
    if scale < 1 or cap < 1 or not sources:
        raise WorkloadError("azure_time_zones needs scale >= 1, cap >= 1 and at least one node")
    span = rows[-1].t_s + 1e-6
    out = []
    for i, source in enumerate(sources):
        shift = span * i / len(sources)
        for row in rows[i % scale::scale]:
            t = (row.t_s - shift) % span
            prompt = min(row.context_tokens, max_tokens // 2)
            out.append(RequestSpec(t, source, prompt, min(row.generated_tokens, max_tokens - prompt), MODEL))
    out.sort(key=lambda r: r.arrival_s)
    return out[:cap]
