"""`stake show`'s route share is per model, as routing draws (issue 15): a node registered with a model no other
node serves gets no share of the others' models, whatever it stakes."""

from __future__ import annotations

from fractions import Fraction

from wwwserve.cli.stake import model_pools
from wwwserve.ledger.params import WEI_PER_ETH
from wwwserve.ledger.records import Balances, NodeInfo

MIN_STAKE = WEI_PER_ETH // 10


def row(address: str, models: tuple[str, ...], stake_wei: int, *, active: bool = True) -> dict[str, object]:
    info = NodeInfo(address=address, pubkey=b"k" * 32, endpoint=f"http://{address}:9000", models=models,
                    metadata="", active=active, leaf=0)
    balances = Balances(credit_wei=0, pending_withdrawal_wei=0, withdrawable_at_s=0, active_stake_wei=stake_wei,
                        unbonding_stake_wei=0, unbonding_end_s=0, unbonding_block=0, bonded_wei=0)
    return {"address": address, "node": info, "balances": balances}


def test_route_share_is_per_model_and_a_lone_model_takes_nothing_from_the_others() -> None:
    rows = [row("demo1", ("smol",), WEI_PER_ETH), row("demo2", ("smol",), WEI_PER_ETH),
            row("demo3", ("smol",), 2 * WEI_PER_ETH), row("placeholder", ("qwen3-8b",), WEI_PER_ETH),
            row("both", ("smol", "qwen3-8b"), MIN_STAKE - 1),  # below MIN_STAKE: routing weighs it 0
            row("left", ("smol",), 5 * WEI_PER_ETH, active=False)]
    pools = model_pools(rows, MIN_STAKE)
    assert set(pools) == {"smol", "qwen3-8b"}
    smol = pools["smol"]
    # The old network-wide share gave the placeholder node 1/5 = 20 % of all routes; per model it has none.
    assert smol.share("placeholder") == 0 and "placeholder" not in smol.nodes
    assert [smol.share(a) for a in ("demo1", "demo2", "demo3", "both")] == [Fraction(1, 4), Fraction(1, 4),
                                                                           Fraction(1, 2), 0]
    assert "left" not in smol.nodes and smol.total_wei == 4 * WEI_PER_ETH
    assert pools["qwen3-8b"].share("placeholder") == 1 and pools["qwen3-8b"].nodes == ("placeholder", "both")


def test_a_model_no_routable_node_serves_has_no_share() -> None:
    pools = model_pools([row("poor", ("m",), MIN_STAKE - 1)], MIN_STAKE)
    assert pools["m"].share("poor") is None and pools["m"].total_wei == 0
