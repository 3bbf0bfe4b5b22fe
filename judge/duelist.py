"""A duelist's duties (A or B, see judge.manager): appeal a lost first round (by `judge.appeal`), draw the
appeal round's panel, and settle a duel its origin left unsettled (a duelist's bond stays reserved until
then)."""

from __future__ import annotations

import functools

from wwwserve.judge.duties import DuelDuties
from wwwserve.ledger.records import DuelState, DuelStatus

__all__ = ["DuelistDuties"]


class DuelistDuties(DuelDuties):
    """Appeals and settlements of the duels this node duels in."""

    def _should_appeal(self, state: DuelState, block: int) -> bool:
        first = state.round_state(1)
        if (state.status is not DuelStatus.JUDGING or state.round != 1 or first is None
                or state.duel_id in self._appealed):
            return False
        if not first.reveal_end < block <= first.reveal_end + state.appeal_window_blocks:
            return False
        votes_a, votes_b = first.tally()
        no_evidence = sum(1 for v in first.votes if v == 4)
        if no_evidence * 2 > len(first.seats) or votes_a == votes_b:
            return False  # void or tie: nothing to appeal
        loser = state.a if votes_b > votes_a else state.b
        if loser is None or loser.lower() != self._me or self.appeal_policy == "never":
            return False
        return self.appeal_policy == "always" or (votes_a > 0 and votes_b > 0)

    async def _duelist_duties(self, block: int) -> None:
        """For each open duel this node is a duelist of: appeal a lost first round (by `appeal`), draw the
        appeal panel, and settle if the origin has not (a duelist's bond stays reserved until then)."""
        for state in self.chain.as_duelist():
            is_a = state.a is not None and state.a.lower() == self._me
            self._party(state, "executor" if is_a else "challenger")
            if self._should_appeal(state, block):
                self._appealed.add(state.duel_id)
                await self._act(state, "appeal", block, functools.partial(self.chain.appeal, state.duel_id),
                                "appealed")
            elif not await self._draw_appeal_panel(state, block):
                await self._settle_if_due(state, block, self.settle_grace_blocks)

