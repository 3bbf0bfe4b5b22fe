"""Why a duel ended as it did, in words: for `wwwserve duel show`/`list` and the explorer's duel view.

A cancelled duel has a reason (its `CancelReason`, as the indexer names it); a settled one whose verdict moved
nothing (a tie, or a void: the final round's majority voted no evidence) is explained too. A duel one side won,
or one still open, needs no words.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CANCEL_WHY", "OUTCOME_WHY", "duel_explanation"]


# Why a duel ended without a verdict, or with one that moved nothing, in words.
CANCEL_WHY = {
    "no_challenger": "nobody serving the model could be drawn as challenger, or none was recorded before the "
                     "answer window closed; the origin got its escrow back",
    "no_answer": "the drawn challenger never answered; its bond went to the reserve and the origin got its "
                 "escrow back",
    "request_withheld": "the challenger said it could not get the request and nobody published it on-chain "
                        "in time; the challenger got its fee and the rest of the escrow went to the reserve",
    "no_judges": "there was no eligible judge stake to draw a panel from; the challenger got its fee and the "
                 "origin the rest of the escrow",
}


OUTCOME_WHY = {
    "voided": "a majority of the final round's seats voted no evidence (they could not get the request or "
              "the answers): no stake moved and no seat was paid",
    "tie": "the final round gave A and B as many votes (0-0 when every seat abstained, as judges that cannot "
           "tell the answers apart do): no stake moved",
}


def duel_explanation(d: Any) -> str | None:
    """Why a duel was cancelled, voided or tied, in words (None when a side simply won or it is open)."""
    if d.status == "cancelled":
        return CANCEL_WHY.get(d.cancel_reason or "", f"cancelled ({d.cancel_reason})")
    if d.status == "settled":
        return OUTCOME_WHY.get(d.outcome or "")
    return None
