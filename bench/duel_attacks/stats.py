"""Means with 95 % intervals for the attack cells: Student t over batch means (duels on one chain share a
reserve, so they are not independent), Wilson intervals for shares."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from wwwserve.ledger.params import WEI_PER_CREDIT

CR = WEI_PER_CREDIT

Z95 = 1.959963984540054


def t975(df: int) -> float:
    """Student's t 97.5 % quantile (Cornish–Fisher expansion; 2.093 at 19 degrees of freedom)."""
    z = Z95
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


@dataclass(frozen=True)
class Stat:
    """A mean and its 95 % interval."""

    mean: float
    lo: float
    hi: float
    n: int

    @property
    def half(self) -> float:
        return (self.hi - self.lo) / 2

    def overlaps(self, other: Stat) -> bool:
        return self.lo <= other.hi and other.lo <= self.hi

    def cr(self, digits: int = 2) -> str:
        """In credits: mean ± half-width."""
        return f"{self.mean / CR:+.{digits}f} ± {self.half / CR:.{digits}f}"

    def pct(self) -> str:
        return f"{100 * self.mean:.1f} % [{100 * self.lo:.1f}, {100 * self.hi:.1f}]"

    def num(self, digits: int = 3) -> str:
        return f"{self.mean:.{digits}f} ± {self.half:.{digits}f}"


def _batches(values: Sequence[float], groups: Sequence[int], per_group: int = 20) -> list[list[float]]:
    """Contiguous batches, `per_group` per seed (groups: how many values each seed contributed)."""
    out: list[list[float]] = []
    start = 0
    for size in groups:
        chunk = values[start:start + size]
        start += size
        k = max(1, min(per_group, len(chunk) // 2))
        bounds = [round(j * len(chunk) / k) for j in range(k + 1)]
        out += [list(chunk[bounds[j]:bounds[j + 1]]) for j in range(k)]
    return [b for b in out if b]


def batch_stat(values: Sequence[float], groups: Sequence[int] | None = None) -> Stat:
    """Mean and 95 % interval from batch means (duels on one chain are correlated through the reserve)."""
    n = len(values)
    if n == 0:
        return Stat(math.nan, math.nan, math.nan, 0)
    mean = math.fsum(values) / n
    batches = _batches(values, groups or [n])
    if len(batches) < 2:
        return Stat(mean, mean, mean, n)
    means = [math.fsum(b) / len(b) for b in batches]
    half = t975(len(means) - 1) * statistics.stdev(means) / math.sqrt(len(means))
    return Stat(mean, mean - half, mean + half, n)


def ratio_stat(num: Sequence[float], den: Sequence[float], groups: Sequence[int] | None = None) -> Stat:
    """Σnum / Σden with a 95 % interval from batch ratios (e.g. earnings per seat)."""
    total = math.fsum(den)
    if total == 0:
        return Stat(math.nan, math.nan, math.nan, 0)
    ratio = math.fsum(num) / total
    nb = _batches(num, groups or [len(num)])
    db = _batches(den, groups or [len(den)])
    ratios = [math.fsum(a) / math.fsum(b) for a, b in zip(nb, db, strict=True) if math.fsum(b) > 0]
    if len(ratios) < 2:
        return Stat(ratio, ratio, ratio, len(num))
    half = t975(len(ratios) - 1) * statistics.stdev(ratios) / math.sqrt(len(ratios))
    return Stat(ratio, ratio - half, ratio + half, len(num))


def wilson(k: int, n: int) -> Stat:
    """A share k/n with its 95 % Wilson interval."""
    if n == 0:
        return Stat(math.nan, math.nan, math.nan, 0)
    p, z2 = k / n, Z95 * Z95
    den = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / den
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / den
    return Stat(p, 0.0 if k == 0 else centre - half, 1.0 if k == n else centre + half, n)
