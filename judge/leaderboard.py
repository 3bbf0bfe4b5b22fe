"""Rank nodes by their duel results: Bradley–Terry strengths with 95 % confidence intervals.

Each settled duel is one game between its two executors: a win, a loss, or a tie (counted as half a win
each). Bradley–Terry gives every node a strength p_i with P(i beats j) = p_i / (p_i + p_j); the score is
θ_i = ln p_i, reported relative to the mean over the ranked nodes (only differences of strength are
identified by duels). Fitted by Hunter's MM iterations (2004), with a weak prior that keeps an undefeated or
winless node finite: each node is credited one virtual tie (half a win, half a loss) against a
reference player of strength 1, so the information matrix is invertible. Confidence intervals come
from the observed Fisher information: score ± 1.96 · sd(θ_i − θ̄).

Voided duels (no judge majority reached either way) are not games and are left out; so are cancelled
ones. Pure Python: a network has tens to hundreds of nodes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["DuelResult", "Standing", "bradley_terry", "results_from_duels"]

Z95 = 1.959963984540054
PRIOR_GAMES = 1.0  # virtual games against the reference player per node (half won, half lost)


@dataclass(frozen=True)
class DuelResult:
    """One settled duel between executors `a` and `b`; `winner` is a, b, or None for a tie."""

    a: str
    b: str
    winner: str | None

    def __post_init__(self) -> None:
        if self.a == self.b:
            raise ValueError("a duel needs two different nodes")
        if self.winner is not None and self.winner not in (self.a, self.b):
            raise ValueError(f"the winner {self.winner} is not a duelist")


@dataclass(frozen=True)
class Standing:
    """A node's record and Bradley–Terry score (natural-log strength relative to the network's mean)."""

    node: str
    duels: int
    wins: int
    losses: int
    ties: int
    score: float
    ci_low: float
    ci_high: float

    @property
    def win_rate(self) -> float | None:
        """Wins / (wins + losses), ties left out (None without a decided duel), as the paper reports it."""
        decided = self.wins + self.losses
        return None if decided == 0 else self.wins / decided


def results_from_duels(duels: Iterable[object]) -> list[DuelResult]:
    """`DuelResult`s from duels, settled a_won / b_won / tie only: indexed ones (`ledger.indexer.IndexedDuel`,
    outcome a string) or states (`ledger.records.DuelState`, outcome a `DuelOutcome`)."""
    out = []
    for duel in duels:
        outcome = getattr(duel, "outcome", None)
        name = getattr(outcome, "name", None)
        if isinstance(name, str):  # an enum: DuelOutcome.A_WON -> "a_won"
            outcome = name.lower()
        a, b = str(getattr(duel, "a")), str(getattr(duel, "b"))  # noqa: B009 - any object with these fields
        if outcome == "a_won":
            out.append(DuelResult(a, b, a))
        elif outcome == "b_won":
            out.append(DuelResult(a, b, b))
        elif outcome == "tie":
            out.append(DuelResult(a, b, None))
    return out


def _inverse(matrix: list[list[float]]) -> list[list[float]]:
    """matrix⁻¹ (Gauss–Jordan with partial pivoting; the matrix is small and positive definite)."""
    n = len(matrix)
    m = [row[:] + [1.0 if c == r else 0.0 for c in range(n)] for r, row in enumerate(matrix)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        lead = m[col][col]
        m[col] = [v / lead for v in m[col]]
        for r in range(n):
            factor = m[r][col]
            if r != col and factor:
                top = m[col]
                m[r] = [v - factor * t for v, t in zip(m[r], top, strict=True)]
    return [row[n:] for row in m]


def bradley_terry(results: Sequence[DuelResult], *, max_iterations: int = 10_000, tol: float = 1e-9) -> list[Standing]:
    """Standings of every node in `results`, best score first (ties in score broken by name)."""
    nodes = sorted({r.a for r in results} | {r.b for r in results})
    index = {node: i for i, node in enumerate(nodes)}
    n = len(nodes)
    games = [[0.0] * n for _ in range(n)]  # games[i][j]: duels between i and j
    won = [PRIOR_GAMES / 2] * n  # wins, ties as halves, plus the prior's half win
    record = {node: [0, 0, 0] for node in nodes}  # wins, losses, ties
    for r in results:
        i, j = index[r.a], index[r.b]
        games[i][j] += 1
        games[j][i] += 1
        if r.winner is None:
            won[i] += 0.5
            won[j] += 0.5
            record[r.a][2] += 1
            record[r.b][2] += 1
        else:
            w, lose = (r.a, r.b) if r.winner == r.a else (r.b, r.a)
            won[index[w]] += 1
            record[w][0] += 1
            record[lose][1] += 1
    strength = [1.0] * n
    for _ in range(max_iterations):
        new = []
        for i in range(n):
            denominator = PRIOR_GAMES / (strength[i] + 1.0)  # the reference player, strength 1
            denominator += sum(games[i][j] / (strength[i] + strength[j]) for j in range(n) if games[i][j])
            new.append(won[i] / denominator)
        change = max((abs(math.log(a) - math.log(b)) for a, b in zip(new, strength, strict=True)), default=0.0)
        strength = new
        if change < tol:
            break
    theta = [math.log(p) for p in strength]
    # Observed information of θ: for each pair, games · p_i p_j / (p_i + p_j)²; the reference adds to the diagonal.
    info = [[0.0] * n for _ in range(n)]
    for i in range(n):
        info[i][i] += PRIOR_GAMES * strength[i] / (strength[i] + 1.0) ** 2
        for j in range(n):
            if i != j and games[i][j]:
                weight = games[i][j] * strength[i] * strength[j] / (strength[i] + strength[j]) ** 2
                info[i][i] += weight
                info[i][j] -= weight
    # Scores are reported relative to the network's mean: only differences of strength are identified by
    # duels (the prior pins the absolute level only weakly), so a CI of θ_i itself would mostly measure
    # that level. Var(θ_i − θ̄) = C_ii − 2/n Σ_j C_ij + 1/n² Σ_jk C_jk with C = I⁻¹.
    cov = _inverse(info) if n else []
    row_mean = [sum(row) / n for row in cov]
    grand = sum(row_mean) / n if n else 0.0
    mean_theta = sum(theta) / n if n else 0.0
    standings = []
    for i, node in enumerate(nodes):
        variance = cov[i][i] - 2 * row_mean[i] + grand
        half = Z95 * math.sqrt(max(variance, 0.0))
        score = theta[i] - mean_theta
        wins, losses, ties = record[node]
        standings.append(Standing(node, wins + losses + ties, wins, losses, ties, score, score - half, score + half))
    standings.sort(key=lambda s: (-s.score, s.node))
    return standings
