"""node.billing: what an executor bills each origin, and when it refuses one (issue 13, finding 2)."""

from __future__ import annotations

from wwwserve.node.billing import PeerBilling, PeerStanding

ORIGIN = "0x00000000000000000000000000000000000000a1"
FEE = 1
LIMIT = 64 * FEE
FUNDED = 10**18


def standing(vouchered_wei: int, epoch: int = 0) -> PeerStanding:
    return PeerStanding(active=True, funds_wei=FUNDED, vouchered_wei=vouchered_wei, claimed_wei=0, epoch=epoch)


def serve(billing: PeerBilling, now: PeerStanding, times: int) -> int:
    """Take up to `times` delegations from ORIGIN as the peer API does (refusal, then bill); how many were taken."""
    taken = 0
    for _ in range(times):
        if billing.refusal(ORIGIN, now) is not None:
            break
        billing.bill(ORIGIN)
        taken += 1
    return taken


def test_an_origin_is_refused_past_the_credit_limit_until_its_vouchers_cover_it() -> None:
    billing = PeerBilling(FEE, LIMIT)
    assert serve(billing, standing(0), 100) == 64
    assert billing.refusal(ORIGIN, standing(0)) is not None
    assert serve(billing, standing(64 * FEE), 100) == 64  # paid: another 64 on credit


def test_bills_start_afresh_on_a_new_deployment_after_a_chain_reset() -> None:
    """The chaos tier's fresh anvil: the executor re-indexes into a new voucher store, where the origin's
    vouchers start from zero. Bills from before the reset used to stay, so an origin that had delegated more
    than the credit limit (here 1,000 fees, all paid) was refused for good: it pays only for what it is served."""
    billing = PeerBilling(FEE, LIMIT)
    paid_before_reset = standing(1_000 * FEE)
    assert serve(billing, paid_before_reset, 1_000) == 1_000
    assert billing.unpaid_wei(ORIGIN, paid_before_reset) == 0
    after_reset = standing(0, epoch=1)
    assert billing.refusal(ORIGIN, after_reset) is None
    assert billing.unpaid_wei(ORIGIN, after_reset) == 0
    # The limit holds again, from zero, on the new deployment.
    assert serve(billing, after_reset, 100) == 64
