"""Bradley–Terry standings from duel results (judge/leaderboard.py)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pytest

from wwwserve.judge.leaderboard import DuelResult, bradley_terry, results_from_duels


def simulate(strengths: dict[str, float], duels: int, seed: int) -> list[DuelResult]:
    rng = random.Random(seed)
    out = []
    for _ in range(duels):
        a, b = rng.sample(sorted(strengths), 2)
        p_a = 1.0 / (1.0 + math.exp(strengths[b] - strengths[a]))
        out.append(DuelResult(a, b, a if rng.random() < p_a else b))
    return out


def test_recovers_the_true_order_and_the_intervals_cover_the_truth() -> None:
    truth = {"strong": 1.5, "good": 0.5, "weak": -0.5, "random": -1.5}  # already centred (mean 0)
    covered = total = 0
    for seed in range(20):
        standings = bradley_terry(simulate(truth, 400, seed))
        # Neighbours 1.0 apart may swap in an unlucky sample; the ends never do with 400 duels.
        assert standings[0].node == "strong" and standings[-1].node == "random"
        for s in standings:
            total += 1
            covered += s.ci_low <= truth[s.node] <= s.ci_high
    # 95 % intervals: about 76 of 80 should cover; far fewer means the intervals are wrong.
    assert covered >= 68, f"{covered}/{total} intervals covered the true strength"


def test_scores_are_centred_and_win_rates_counted() -> None:
    results = [DuelResult("x", "y", "x")] * 3 + [DuelResult("x", "y", "y"), DuelResult("x", "y", None)]
    standings = {s.node: s for s in bradley_terry(results)}
    assert abs(sum(s.score for s in standings.values())) < 1e-9
    x = standings["x"]
    assert (x.duels, x.wins, x.losses, x.ties) == (5, 3, 1, 1)
    assert x.win_rate == pytest.approx(0.75)
    assert standings["x"].score > 0 > standings["y"].score
    assert x.ci_low < x.score < x.ci_high


def test_an_undefeated_node_stays_finite_and_more_evidence_narrows_its_interval() -> None:
    few = {s.node: s for s in bradley_terry([DuelResult("w", "l", "w")] * 3)}
    many = {s.node: s for s in bradley_terry([DuelResult("w", "l", "w")] * 30)}
    assert math.isfinite(few["w"].score) and math.isfinite(many["w"].score)
    assert many["w"].score > few["w"].score > 0
    balanced = [DuelResult("p", "q", "p"), DuelResult("p", "q", "q")]
    narrow = {s.node: s for s in bradley_terry(balanced * 50)}
    wide = {s.node: s for s in bradley_terry(balanced)}
    assert narrow["p"].ci_high - narrow["p"].ci_low < wide["p"].ci_high - wide["p"].ci_low


def test_ties_alone_leave_everyone_equal() -> None:
    standings = bradley_terry([DuelResult("a", "b", None), DuelResult("b", "c", None), DuelResult("a", "c", None)])
    assert all(abs(s.score) < 1e-9 for s in standings)
    assert [s.node for s in standings] == ["a", "b", "c"]  # equal scores: by name
    assert all(s.win_rate is None for s in standings)


def test_no_duels_no_standings_and_bad_results_refused() -> None:
    assert bradley_terry([]) == []
    with pytest.raises(ValueError):
        DuelResult("a", "a", None)
    with pytest.raises(ValueError):
        DuelResult("a", "b", "c")


@dataclass
class _Duel:
    a: str
    b: str
    outcome: str | None


def test_results_from_indexed_duels_keep_settled_games_only() -> None:
    duels = [_Duel("a", "b", "a_won"), _Duel("a", "b", "b_won"), _Duel("a", "c", "tie"),
             _Duel("b", "c", "voided"), _Duel("b", "c", None)]
    assert results_from_duels(duels) == [DuelResult("a", "b", "a"), DuelResult("a", "b", "b"),
                                         DuelResult("a", "c", None)]
