"""Duels from a user's request to moved stake, on anvil with six real `wwwserve node run` processes.

Node 1 (the origin) always delegates and duels every delegated answer (`policy.p_inspect=1`). Nodes 2
and 3 serve the model with answers of 4 and 12 words; node 3 declines every delegation, so node 2 is
always the executor A and node 3, the only other node serving the model, is the challenger B the
contract draws (it stakes 10 ETH against the others' 1 ETH each: the contract tries 8 stake draws for a
challenger that serves the model, and with equal stakes all 8 would land on a judge one duel in ten).
Nodes 4–6 serve only a judge model. Judge seats are drawn from all stake, the duel's own parties
included (docs/duels.md), so B, with two thirds of the stake, holds most seats, the origin and A some:
every node judges with a fake backend scripted to prefer the longer answer
(`backend.fake.judge_rule=longer`; without it a fake backend answers the judge prompt with words no
judge can read, and its seats abstain), so every seat votes B whoever holds it. Node 2 appeals every
duel it loses (`judge.appeal=always`). Small windows (`DeploymentParams`) and a block every 0.25 s keep
it fast.

1. A user's request: the user is served by A at once; the origin opens the duel over A's signed work;
   B fetches the request from the origin, checks it against the chain, answers; the judges fetch the
   evidence from the origin, A and B over the signed peer API (a party judging its own duel starts
   from the pieces it holds), vote in both orders, commit, reveal; A appeals; a second, larger panel
   judges again; the duel settles, and every balance moved exactly as the contract's rules say (a
   party's seats paid like any judge's).
2. A second request, and the origin dies right after opening its duel: B gets the request from A, the
   judges get it and A's answer from A and B's answer from B, and the duel still ends with B's win;
   seats the dead origin holds stay silent.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from duel_network import Network, NodeSpec, cli, start_network
from prometheus_client.parser import text_string_to_metric_families

from wwwserve.ledger.client import DuelOutcome, DuelStatus, Vote
from wwwserve.ledger.params import DeploymentParams

pytestmark = pytest.mark.integration

MODEL = "fake-model"
JUDGE_MODEL = "judge-model"
# Windows of several seconds each at a block every BLOCK_S: wide enough for a loaded CI machine (a node
# polls every 0.3 s and sends its transactions one at a time).
PARAMS = DeploymentParams(epoch_blocks=24, answer_window_blocks=20, commit_window_blocks=20,
                          reveal_window_blocks=12, appeal_window_blocks=20, publish_window_blocks=12)
BLOCK_S = 0.25
COMMON = ("backend.kind=fake", "policy.auto_stake=false", "chain.poll_interval_s=0.3", "judge.poll_interval_s=0.3",
          "policy.accept_frequency=1.0", "backend.fake.judge_rule=longer",
          "peers.fee_wei=0")  # no fee vouchers: every credit change below is the duels'
SPECS = (
    NodeSpec((MODEL,), settings=(f"backend.models=['{MODEL}']", "policy.target_token_usage=-1", "policy.p_inspect=1.0",
                                 "policy.offload_frequency=1.0", "policy.accept_frequency=0.0")),
    NodeSpec((MODEL,), settings=(f"backend.models=['{MODEL}']", "backend.fake.words=4", "judge.appeal=always")),
    NodeSpec((MODEL,), stake="10eth", deposit="11eth",
             settings=(f"backend.models=['{MODEL}']", "backend.fake.words=12", "policy.accept_frequency=0.0")),
    *[NodeSpec((JUDGE_MODEL,), settings=(f"backend.models=['{JUDGE_MODEL}']",)) for _ in range(3)],
)


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    with start_network(tmp_path_factory.mktemp("duel-net"), PARAMS, SPECS, COMMON, BLOCK_S) as net:
        yield net


def compared(net: Network, duel_id: int, judge: str, round_: int) -> bool:
    """Whether `judge` voted B in `round_` after asking its model in both orders: it held the request and both
    answers (a vote that missing evidence decided says why instead)."""
    log = net.logs[net.addresses.index(judge)].read_text()
    return f"judging duel {duel_id} round {round_}: decide voted {int(Vote.B)} (in order B, swapped A)" in log


def test_a_users_request_becomes_a_duel_that_is_answered_judged_appealed_and_settled(network: Network) -> None:
    net = network
    origin, a, b = net.addresses[:3]
    before = net.balances()
    body = net.ask("one two three four five", MODEL)
    text = body["choices"][0]["message"]["content"]
    assert body["wwwserve"]["executor"] == a and len(text.split()) == 4  # served by A, at once
    net.wait("the duel to open", lambda: net.duel_over(text) is not None)
    duel_id = net.duel_over(text).id
    net.wait("the duel to settle", lambda: net.chain.duel(duel_id).status is DuelStatus.SETTLED, timeout_s=180,
             duel_id=duel_id)

    duel = net.chain.duel(duel_id)
    indexed = net.duel_over(text)
    story = net.story(duel_id)
    assert (duel.origin, duel.a, duel.b) == (origin, a, b), story  # B drawn by the contract
    assert indexed.answer_b_hash is not None and indexed.appellant == a, story  # A lost round 1, appealed
    first, second = duel.rounds
    assert len(first.seats) == PARAMS.k_judges and len(second.seats) == 2 * PARAMS.k_judges + 1
    # Seats follow stake over every node, the duel's own parties included (B, with 10 of the 15 ETH, holds
    # most); whoever holds one read both answers and voted by the rule, B's own seats too.
    assert set(first.seats) | set(second.seats) <= set(net.addresses), story
    assert list(first.votes) == [Vote.B] * 3 and list(second.votes) == [Vote.B] * 7, story  # the longer answer
    for r in duel.rounds:
        for judge in set(r.seats):
            assert compared(net, duel_id, judge, r.round), (judge, story)
    assert duel.outcome is DuelOutcome.B_WON

    after = net.balances()
    bond, fee, judge_fee = PARAMS.duel_bond_wei, PARAMS.duelist_fee_wei, PARAMS.judge_fee_wei
    assert after[a].stake_wei == before[a].stake_wei - bond  # A's bond went to B
    assert after[b].bonded_wei == 0
    for node in net.addresses:
        if node != a:
            assert after[node].stake_wei == before[node].stake_wei, node  # no seat voted against the verdict
    # Every seat voted with the verdict: a fee per seat, both rounds, whoever holds it (scaled by 1 / (2p) for p
    # the share of past verdicts like this one, which is 1 for the deployment's first verdict: this one; the
    # reserve is empty, so no share of it). On top of that, the duel's own money: A paid for a lost appeal, B
    # took A's bond and its fee, the origin's escrow paid B and the first panel (nothing came back).
    seats = Counter(first.seats) + Counter(second.seats)
    duel_money = {a: -PARAMS.appeal_fee_wei, b: bond + fee, origin: -PARAMS.duel_escrow_wei}
    for node in net.addresses:
        assert after[node].credit_wei == before[node].credit_wei + duel_money.get(node, 0) + seats[node] * judge_fee, \
            (node, story)
    total = sum(b.total_wei for b in after.values()) + net.chain.reserve()
    assert total == sum(b.total_wei for b in before.values())  # nothing created or lost

    standings = json.loads(cli("duel", "leaderboard", "--json"))
    assert [s["node"] for s in standings] == [b, a]

    # Each party's /metrics counts the duel once, by its role, when its next pass finds it over.
    def counted_once(node: int, role: str) -> bool:
        page = httpx.get(f"http://127.0.0.1:{net.ports[node]}/metrics", timeout=10).text
        ended = {(s.labels["role"], s.labels["outcome"]): s.value for f in text_string_to_metric_families(page)
                 for s in f.samples if s.name == "wwwserve_duel_outcomes_total"}
        return ended == {(role, "b_won"): 1.0}

    for node, role in ((0, "origin"), (1, "executor"), (2, "challenger")):
        net.wait(f"node {node + 1} to count the duel as its {role}", functools.partial(counted_once, node, role),
                 timeout_s=30, duel_id=duel_id)


def test_a_duel_survives_its_origin_going_offline_after_opening(network: Network) -> None:
    net = network
    origin, a, b = net.addresses[:3]
    before = net.balances([origin])
    body = net.ask("six seven eight nine ten", MODEL)
    text = body["choices"][0]["message"]["content"]
    assert body["wwwserve"]["executor"] == a
    net.wait("the duel to open", lambda: net.duel_over(text) is not None)
    net.procs[0].kill()  # the origin is gone: nobody can ask it for the request or A's answer any more
    net.procs[0].wait(timeout=10)
    duel_id = net.duel_over(text).id
    net.wait("the duel to settle", lambda: net.chain.duel(duel_id).status is DuelStatus.SETTLED, timeout_s=180,
             duel_id=duel_id)
    duel = net.chain.duel(duel_id)
    story = net.story(duel_id)
    assert duel.b == b, story
    # B got the request from A; the judges got the request and A's answer from A, B's answer from B: every
    # seat voted on the answers (B's, the longer), none for lack of evidence, but the seats the origin holds
    # (seats exclude nobody): it is dead when they should be revealed, so they stay silent and pay for it.
    for r in duel.rounds:
        assert list(r.votes) == [Vote.NONE if j == origin else Vote.B for j in r.seats], story
        for judge in set(r.seats) - {origin}:
            assert compared(net, duel_id, judge, r.round), (judge, story)
    # B won, unless the origin held every seat of the final round (then nobody voted: a tie).
    final = duel.rounds[-1]
    assert duel.outcome is (DuelOutcome.B_WON if set(final.seats) - {origin} else DuelOutcome.TIE), story
    origin_seats = sum(list(r.seats).count(origin) for r in duel.rounds)
    assert net.chain.balances(origin).stake_wei == before[origin].stake_wei - origin_seats * PARAMS.silent_penalty_wei
    assert f"duel {duel_id}: answered as challenger" in net.logs[2].read_text()
    # The origin was asked, and was gone (the nodes ask every holder of a missing piece at once, so who met
    # it first is a race: B, or a judge).
    askers = {b, *(j for r in duel.rounds for j in r.seats)} - {origin}
    assert any(f"evidence of duel {duel_id} from {origin}" in net.logs[net.addresses.index(who)].read_text()
               for who in askers), story
