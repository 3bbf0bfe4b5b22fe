"""What the duel engine cannot read off the contract: how good an answer is, how judges vote and when a
round-1 loser appeals, and who serves which evidence (see sim.duels).

An answer's latent score is `logit(q) + G` (G a standard Gumbel draw), so A beats B with the log5
head-to-head probability. A `JudgeStrategy` votes from a `SeatView`; an `AppealPolicy` decides from an
`AppealView`; both see the duel as `DuelSides` (`sim.duels.run.DuelRun` fits).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from wwwserve.ledger.model import Vote
from wwwserve.sim.config import JudgeBehaviour

__all__ = [
    "APPEAL_POLICIES",
    "HONEST_EVIDENCE",
    "JUDGE_STRATEGIES",
    "AppealPolicy",
    "AppealView",
    "DuelSides",
    "Evidence",
    "JudgeStrategy",
    "SeatView",
    "abstain",
    "always_a",
    "answer_score",
    "appeal_always",
    "appeal_split",
    "coin_flip",
    "colluding",
    "head_to_head",
    "honest",
    "honest_vote",
    "never_appeal",
    "no_evidence",
    "silent",
]


def head_to_head(q_a: float, q_b: float) -> float:
    """P(a beats b) from their win rates against the field (log5)."""
    num = q_a * (1 - q_b)
    den = num + q_b * (1 - q_a)
    return 0.5 if den == 0 else num / den


def answer_score(quality: float, u: float) -> float:
    """An answer's latent score: logit(quality) + a standard Gumbel draw made from `u` in (0, 1)."""
    q = min(max(quality, 1e-9), 1 - 1e-9)
    u = min(max(u, 1e-300), 1 - 1e-16)
    return math.log(q / (1 - q)) - math.log(-math.log(u))


class DuelSides(Protocol):
    """What a judge strategy or an appeal policy reads of the duel it decides on (`DuelRun` fits)."""

    @property
    def origin(self) -> str: ...
    @property
    def a(self) -> str: ...
    @property
    def b(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def better(self) -> str: ...


def _reply(better: Vote, first: Vote, accuracy: float, behaviour: JudgeBehaviour, u_kind: float,
           u_right: float) -> Vote | None:
    """One order's reply: the duelist it names (None: no letter); `first` is the duelist shown as A."""
    if u_kind < behaviour.no_letter:
        return None
    if u_kind < behaviour.no_letter + (1 - behaviour.no_letter) * behaviour.position_bias:
        return first
    return better if u_right < accuracy else (Vote.B if better == Vote.A else Vote.A)


def honest_vote(better: Vote, accuracy: float, behaviour: JudgeBehaviour, u: tuple[float, float, float, float]) -> Vote:
    """An honest judge's vote when every piece of evidence is there, as the live judge decides it.

    `better` is the duelist whose answer is better; `u` four uniforms (kind and accuracy of the (A, B)
    order's reply, then of the swapped order's). Two orders (judge/prompt.py `combine_orders`): the vote
    counts only when both replies name the same duelist, else ABSTAIN. One order: its reply, ABSTAIN when
    it names no letter."""
    in_order = _reply(better, Vote.A, accuracy, behaviour, u[0], u[1])
    if not behaviour.two_orders:
        return Vote.ABSTAIN if in_order is None else in_order
    swapped = _reply(better, Vote.B, accuracy, behaviour, u[2], u[3])
    return in_order if in_order is not None and in_order == swapped else Vote.ABSTAIN


# ---- judge strategies and appeal policies ------------------------------------------------------------


@dataclass(frozen=True)
class SeatView:
    """What a judge sees when it votes: the duel, its round, and the vote honest judging gives it."""

    run: DuelSides
    judge: str
    round: int
    honest: Vote  # the evidence rules, then `honest_vote` (both A/B orders, the chain's `JudgeBehaviour`)
    coin: Vote  # a fair coin between A and B


JudgeStrategy = Callable[[SeatView], Vote | None]
"""A judge's vote for all its seats in a round; None: it commits but never reveals (silent)."""


def honest(view: SeatView) -> Vote | None:
    return view.honest


def abstain(view: SeatView) -> Vote | None:
    return Vote.ABSTAIN


def silent(view: SeatView) -> Vote | None:
    return None


def always_a(view: SeatView) -> Vote | None:
    return Vote.A


def coin_flip(view: SeatView) -> Vote | None:
    return view.coin


def no_evidence(view: SeatView) -> Vote | None:
    return Vote.NO_EVIDENCE


def colluding(coalition: Iterable[str], against: Iterable[str] = ()) -> JudgeStrategy:
    """Vote for a coalition member when one duels (A or B), against a target when one duels; else honestly."""
    members = frozenset(coalition)
    targets = frozenset(against)

    def vote(view: SeatView) -> Vote | None:
        run = view.run
        if run.a in members and run.b not in members:
            return Vote.A
        if run.b in members and run.a not in members:
            return Vote.B
        if run.a in targets and run.b not in targets:
            return Vote.B
        if run.b in targets and run.a not in targets:
            return Vote.A
        return view.honest

    return vote


JUDGE_STRATEGIES: dict[str, JudgeStrategy] = {
    "honest": honest, "abstain": abstain, "never_reveal": silent, "always_a": always_a, "coin_flip": coin_flip,
    "no_evidence": no_evidence,
}


@dataclass(frozen=True)
class AppealView:
    """What the round-1 loser sees when it may appeal."""

    run: DuelSides
    loser: str
    votes_for_winner: int  # seats
    votes_for_loser: int  # seats


AppealPolicy = Callable[[AppealView], bool]


def never_appeal(view: AppealView) -> bool:
    return False


def appeal_split(view: AppealView) -> bool:
    """Appeal a round-1 loss when at least one seat voted for us."""
    return view.votes_for_loser > 0


def appeal_always(view: AppealView) -> bool:
    return True


APPEAL_POLICIES: dict[str, AppealPolicy] = {"never": never_appeal, "split": appeal_split, "always": appeal_always}


@dataclass(frozen=True)
class Evidence:
    """Who serves what in one duel (docs/duels.md, Evidence). Honest parties serve everything."""

    origin_serves_request: bool = True  # to B and to the judges
    a_serves_request: bool = True
    origin_serves_answer_a: bool = True  # to the judges
    a_serves_answer_a: bool = True
    b_serves: bool = True  # B's answer (and the request it holds) to the judges
    origin_publishes: bool = True  # when B reports that nobody gave it the request

    @property
    def request_to_b(self) -> bool:
        return self.origin_serves_request or self.a_serves_request


HONEST_EVIDENCE = Evidence()
