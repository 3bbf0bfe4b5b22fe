"""Peers pay or are not served (issue 13, finding 2: any registered node, with no stake and no credit, got
answers through `/peer/delegate` and never paid: 20 of 20 delegations executed and signed, 0 fees).

An executor bills its fee (`peers.fee_wei`) for every delegation it takes, and takes it back when no
signed answer came of it (the delegation failed, or the sender hung up before the answer's signed end:
it will not pay for that), and takes one only from a sender that:

1. is registered, active, and holds at least the contract's minimum stake;
2. owes it, beyond what its vouchers already cover, less than the credit limit
   (`peers.credit_limit_fees` fees): an origin's vouchers follow its delegations within its fee
   book's flush interval (`node.managers.fees`, 0.5 s), so an honest origin stays far below; a
   freeloader is refused once it reaches the limit, until it pays;
3. holds on the ledger (credit + pending withdrawal) enough to cover its vouchers not claimed yet, what
   it owes beyond them, and this request's fee: a voucher it cannot fund is worth nothing.

A refusal is a 402 `payment_required` on the peer API; the origin treats it as a decline (no ban) and
tries another peer or runs the request itself. What is billed is kept in memory: a restarted executor
forgets unvouchered fees (at most the limit per origin), never vouchers (those are in its store). Bills
belong to one deployment, like the vouchers they are set against: when the ledger moves to a new one (a
chain reset, re-indexed in place: `PeerStanding.epoch`), every origin starts from zero again, as its
vouchers do; otherwise an origin that had delegated more than the limit before the reset was refused for
good (its new vouchers start from zero, it pays only for what it is served, and it was served nothing).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class PeerStanding:
    """What the executor's ledger says of one origin."""

    active: bool  # registered, active, at least the minimum stake
    funds_wei: int  # credit + pending withdrawal on the ledger
    vouchered_wei: int  # the best voucher held from it (cumulative)
    claimed_wei: int  # what the chain already paid this node from it (cumulative)
    epoch: int = 0  # which deployment the ledger reads: a chain reset starts the next (vouchers start from 0)


class PeerBilling:
    """Fees billed per origin and the admission rule above (thread-safe: counters only)."""

    def __init__(self, fee_wei: int, credit_limit_wei: int) -> None:
        if fee_wei < 0 or credit_limit_wei < 0:
            raise ValueError("fee_wei and credit_limit_wei must be >= 0")
        self.fee_wei = fee_wei
        self.credit_limit_wei = credit_limit_wei
        self._billed: dict[str, int] = {}
        self._epoch = 0  # the deployment the bills belong to (PeerStanding.epoch)
        self._lock = threading.Lock()

    def billed_wei(self, origin: str) -> int:
        return self._billed.get(origin.lower(), 0)

    def _follow(self, standing: PeerStanding) -> None:
        """Drop every bill when the ledger has moved to another deployment (see the module docstring)."""
        if standing.epoch != self._epoch:
            with self._lock:
                if standing.epoch != self._epoch:
                    self._billed.clear()
                    self._epoch = standing.epoch

    def unpaid_wei(self, origin: str, standing: PeerStanding) -> int:
        """Fees billed to `origin` that no voucher of it covers yet."""
        self._follow(standing)
        return max(0, self.billed_wei(origin) - max(standing.vouchered_wei, standing.claimed_wei))

    def refusal(self, origin: str, standing: PeerStanding | None) -> str | None:
        """Why this node will not take a delegation from `origin` now, or None when it will."""
        if self.fee_wei == 0:
            return None  # a free executor asks nothing
        if standing is not None:
            self._follow(standing)
        if standing is None or not standing.active:
            return "the sender is not a registered node holding the minimum stake"
        unpaid = self.unpaid_wei(origin, standing)
        if unpaid + self.fee_wei > self.credit_limit_wei:
            return (f"the sender owes {unpaid} wei that no voucher covers yet (credit limit {self.credit_limit_wei} "
                    "wei): send a voucher first")
        owed = max(0, standing.vouchered_wei - standing.claimed_wei) + unpaid + self.fee_wei
        if standing.funds_wei < owed:
            return (f"the sender's credit on the ledger ({standing.funds_wei} wei) does not cover the {owed} wei it "
                    "would owe")
        return None

    def bill(self, origin: str) -> None:
        with self._lock:
            key = origin.lower()
            self._billed[key] = self._billed.get(key, 0) + self.fee_wei

    def refund(self, origin: str) -> None:
        """Take back the fee of a delegation that produced no answer (the origin will not pay for it)."""
        with self._lock:
            key = origin.lower()
            self._billed[key] = max(0, self._billed.get(key, 0) - self.fee_wei)
