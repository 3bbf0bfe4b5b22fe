"""Rank nodes by their duel results: Bradley–Terry strengths with 95 % confidence intervals.

Each settled duel is one game between its two executors: a win, a loss, or a tie (counted as half a win
each). Bradley–Terry gives every node a strength p_i with P(i beats j) = p_i / (p_i + p_j); the score is
θ_i = ln p_i, reported relative to the mean over the ranked nodes (only differences of strength are
identified by duels). Fitted by Hunter's MM iterations (2004), with a weak prior that keeps an undefeated or
winless node finite: each node is credited one virtual tie (half a win, half a loss) against a
reference player of strength 1, so the information matrix is invertible. Confidence intervals come
from the observed Fisher information: score ± 1.96 · sd(θ_i − θ̄).

Voided duels (no judge majority reached either way) are not games and are left out; so are cancelled
ones. numpy, with the games as a sparse list of pairs: the explorer fits 1,000 nodes and 10,000 duels on
every new block (bench/explorer.py times it); the information matrix is dense (n x n) only for its inverse.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

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


def bradley_terry(results: Sequence[DuelResult], *, max_iterations: int = 10_000, tol: float = 1e-9) -> list[Standing]:
    """Standings of every node in `results`, best score first (ties in score broken by name)."""
    nodes = sorted({r.a for r in results} | {r.b for r in results})
    index = {node: i for i, node in enumerate(nodes)}
    n = len(nodes)
    if n == 0:
        return []
    pair_games: dict[tuple[int, int], float] = {}  # (i, j), i < j: duels between i and j
    won = np.full(n, PRIOR_GAMES / 2)  # wins, ties as halves, plus the prior's half win
    record = {node: [0, 0, 0] for node in nodes}  # wins, losses, ties
    for r in results:
        i, j = index[r.a], index[r.b]
        key = (i, j) if i < j else (j, i)
        pair_games[key] = pair_games.get(key, 0.0) + 1.0
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
    # The games as a sparse edge list: a 1,000-node network with 10,000 duels has a few thousand pairs,
    # where a dense n x n loop per iteration would visit a million.
    first = np.fromiter((i for i, _ in pair_games), dtype=np.intp, count=len(pair_games))
    second = np.fromiter((j for _, j in pair_games), dtype=np.intp, count=len(pair_games))
    games = np.fromiter(pair_games.values(), dtype=float, count=len(pair_games))
    strength = np.ones(n)
    log_strength = np.zeros(n)
    for _ in range(max_iterations):
        # MM step (all nodes from the previous strengths): p_i = W_i / (1/(p_i+1) + sum_j n_ij/(p_i+p_j))
        per_pair = games / (strength[first] + strength[second])
        denominator = PRIOR_GAMES / (strength + 1.0)  # the reference player, strength 1
        denominator += np.bincount(first, per_pair, n) + np.bincount(second, per_pair, n)
        new = won / denominator
        log_new = np.log(new)
        change = float(np.max(np.abs(log_new - log_strength)))
        strength, log_strength = new, log_new
        if change < tol:
            break
    theta = log_strength
    # Observed information of θ: for each pair, games · p_i p_j / (p_i + p_j)²; the reference adds to the diagonal.
    p_first, p_second = strength[first], strength[second]
    weight = games * p_first * p_second / (p_first + p_second) ** 2
    info = np.zeros((n, n))
    info[first, second] = -weight
    info[second, first] = -weight
    diagonal = PRIOR_GAMES * strength / (strength + 1.0) ** 2
    diagonal += np.bincount(first, weight, n) + np.bincount(second, weight, n)
    info[np.arange(n), np.arange(n)] = diagonal
    # Scores are reported relative to the network's mean: only differences of strength are identified by
    # duels (the prior pins the absolute level only weakly), so a CI of θ_i itself would mostly measure
    # that level. Var(θ_i − θ̄) = C_ii − 2/n Σ_j C_ij + 1/n² Σ_jk C_jk with C = I⁻¹.
    cov = np.linalg.inv(info)
    row_mean = cov.mean(axis=1)
    variance = np.diag(cov) - 2 * row_mean + row_mean.mean()
    half = Z95 * np.sqrt(np.maximum(variance, 0.0))
    score = theta - theta.mean()
    standings = []
    for i, node in enumerate(nodes):
        wins, losses, ties = record[node]
        s, h = float(score[i]), float(half[i])
        standings.append(Standing(node, wins + losses + ties, wins, losses, ties, s, s - h, s + h))
    standings.sort(key=lambda s: (-s.score, s.node))
    return standings
