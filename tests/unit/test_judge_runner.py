"""The judge's work loop (judge/runner.py) against an in-memory chain that enforces the contract's
commit/reveal windows per round and refuses anything sent twice. The same flow on a real anvil with real
node processes is the duel integration tests' job; this one checks the runner's decisions exactly: the
vote each case of missing evidence forces, the model in both orders with the request's own truncation,
a second round decided on its own, and its restart behaviour (no double commit or reveal)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from eth_utils.address import to_checksum_address

from wwwserve.judge.chain import duel_view
from wwwserve.judge.evidence import EvidencePieces, checked_pieces
from wwwserve.judge.journal import DuelView, JudgeStep, VoteJournal
from wwwserve.judge.runner import JudgeRunner, prompt_text, question_of
from wwwserve.ledger.client import vote_commitment
from wwwserve.ledger.errors import revert_error
from wwwserve.ledger.records import DuelRound, DuelState, DuelStatus, Vote
from wwwserve.ledger.work import answer_hash, request_bytes, request_hash

CHAIN = 31337
CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
ME = to_checksum_address("0x" + "0c" * 20)
OTHER = to_checksum_address("0x" + "0d" * 20)
A = to_checksum_address("0x" + "aa" * 20)
B = to_checksum_address("0x" + "bb" * 20)
ORIGIN = to_checksum_address("0x" + "01" * 20)
REQUEST = {"model": "m", "messages": [{"role": "user", "content": "What is the capital of France?"}],
           "max_tokens": 32}
REQUEST_BYTES = request_bytes("chat", REQUEST)


def make_duel(duel_id: int, answer_a: str, answer_b: str, request: dict[str, Any] = REQUEST) -> DuelState:
    """A duel in round 1 with ME on a 3-seat panel, commits until block 20, reveals until 30."""
    return DuelState(
        duel_id=duel_id, origin=ORIGIN, a=A, b=B, status=DuelStatus.JUDGING, seed_block=5, deadline=20,
        request_hash=request_hash("chat", request), answer_a_hash=answer_hash(answer_a),
        answer_b_hash=answer_hash(answer_b),
        rounds=(DuelRound(1, (ME, OTHER, OTHER), (0, 0, 0), 20, 30),), appeal_window_blocks=5,
    )


def served(duel_id: int, answer_a: str | None, answer_b: str | None, request: bytes | None = REQUEST_BYTES,
           ) -> dict[str, EvidencePieces]:
    """What each party serves: the origin and A the request and A's answer, B the request and its own."""
    return {
        ORIGIN: EvidencePieces(duel_id, request, answer_a, None),
        A: EvidencePieces(duel_id, request, answer_a, None),
        B: EvidencePieces(duel_id, request, None, answer_b),
    }


@dataclass
class FakeChain:
    """Duels with windows per round, one judge (ME); every tx is checked like the contract checks it."""

    chain_id: int = CHAIN
    block: int = 10
    duels: dict[int, DuelState] = field(default_factory=dict)
    commitments: dict[tuple[int, int], bytes] = field(default_factory=dict)
    settled: set[int] = field(default_factory=set)
    sent: list[str] = field(default_factory=list)
    fail_next: str | None = None
    lagging: bool = False  # my_seats (the index) does not show commitments yet; the contract refuses a second

    def block_number(self) -> int:
        return self.block

    def my_seats(self) -> Sequence[tuple[DuelState, DuelView]]:
        out = []
        for duel in self.duels.values():
            rounds = tuple(replace(r, committed=frozenset({ME.lower()})
                                   if (duel.duel_id, r.round) in self.commitments and not self.lagging
                                   else frozenset()) for r in duel.rounds)
            status = DuelStatus.SETTLED if duel.duel_id in self.settled else duel.status
            state = replace(duel, rounds=rounds, status=status)
            out += [(state, duel_view(state, r.round, ME)) for r in rounds if r.seats_of(ME)]
        return out

    def commitment_of(self, duel_id: int, round_: int, vote: int, salt: bytes) -> bytes:
        return vote_commitment(CHAIN, CONTRACT, duel_id, round_, ME, vote, salt)

    def _tx(self, what: str) -> str:
        if self.fail_next == what:
            self.fail_next = None
            raise ConnectionError("RPC unreachable")
        self.sent.append(what)
        return f"0x{len(self.sent):064x}"

    def _round(self, duel_id: int) -> DuelRound:
        return self.duels[duel_id].rounds[-1]

    async def commit(self, duel_id: int, commitment: bytes) -> str:
        rnd = self._round(duel_id)
        assert self.block <= rnd.commit_end, "Duel: commit window over"
        if (duel_id, rnd.round) in self.commitments and self.lagging:
            raise revert_error("Duel: already committed", "WWWServe.commitVote")
        assert (duel_id, rnd.round) not in self.commitments and not rnd.vote_of(ME), "Duel: already committed"
        tx = self._tx(f"commit {duel_id}/{rnd.round}")
        self.commitments[(duel_id, rnd.round)] = commitment
        return tx

    async def reveal(self, duel_id: int, vote: int, salt: bytes) -> str:
        rnd = self._round(duel_id)
        assert rnd.commit_end < self.block <= rnd.reveal_end, "Duel: reveal window"
        assert not rnd.vote_of(ME), "Duel: already revealed"
        assert self.commitments[(duel_id, rnd.round)] == self.commitment_of(duel_id, rnd.round, vote, salt)
        tx = self._tx(f"reveal {duel_id}/{rnd.round}")
        votes = tuple(vote if seat == ME else v for seat, v in zip(rnd.seats, rnd.votes, strict=True))
        duel = self.duels[duel_id]
        self.duels[duel_id] = replace(duel, rounds=(*duel.rounds[:-1], replace(rnd, votes=votes)))
        return tx

    def vote(self, duel_id: int, round_: int = 1) -> int | None:
        return self.duels[duel_id].rounds[round_ - 1].vote_of(ME)

    async def settle(self, duel_id: int) -> str:
        after = self.duels[duel_id].settle_after()
        assert after is not None and self.block > after, "Duel: not over"
        assert duel_id not in self.settled, "Duel: not open"
        tx = self._tx(f"settle {duel_id}")
        self.settled.add(duel_id)
        return tx


def model_preferring(good: str):  # type: ignore[no-untyped-def]
    """A judge model that picks the slot holding `good` (whatever the order)."""
    calls: list[str] = []

    async def ask(prompt: str, max_tokens: int | None) -> str:
        calls.append(prompt)
        a_text = prompt.split("Answer A: ")[1].split("\n\nAnswer B: ")[0]
        return "A" if a_text == good[: len(a_text)] and a_text else "B"

    ask.calls = calls  # type: ignore[attr-defined]
    return ask


def runner(tmp_path: Path, chain: FakeChain, sources: dict[int, dict[str, EvidencePieces]], model) -> JudgeRunner:  # type: ignore[no-untyped-def]
    """A runner whose evidence comes from `sources` (per duel, what each party serves), each piece checked
    against the chain's hashes as the node's gatherer does."""

    async def gather(duel: DuelState) -> EvidencePieces:
        have = EvidencePieces(duel.duel_id)
        for party, pieces in sources.get(duel.duel_id, {}).items():
            have = have.merged(checked_pieces(duel, pieces, party)[0])
        return have

    journal = VoteJournal(tmp_path / "judge.sqlite", contract_address=CONTRACT)
    return JudgeRunner(chain, journal, gather, model, settle_grace_blocks=0)


def test_a_duel_from_decision_to_settlement(tmp_path: Path) -> None:
    chain = FakeChain(duels={1: make_duel(1, "Lyon.", "Paris.")})
    model = model_preferring("Paris.")
    judge = runner(tmp_path, chain, {1: served(1, "Lyon.", "Paris.")}, model)
    actions = asyncio.run(judge.run_once())
    assert [(a.step, a.round) for a in actions] == [(JudgeStep.DECIDE, 1)]
    assert len(model.calls) == 2  # both A/B orders asked
    assert "Answer A: Lyon." in model.calls[0] and "Answer A: Paris." in model.calls[1]
    assert "user: What is the capital of France?" in model.calls[0]
    assert asyncio.run(judge.run_once()) == []  # committed; the reveal window is not open yet
    chain.block = 25
    assert [a.step for a in asyncio.run(judge.run_once())] == [JudgeStep.REVEAL]
    assert chain.vote(1) == Vote.B  # "Paris." was answer B
    assert asyncio.run(judge.run_once()) == []  # the appeal window runs until block 35
    chain.block = 36
    assert [a.step for a in asyncio.run(judge.run_once())] == [JudgeStep.SETTLE]
    assert chain.sent == ["commit 1/1", "reveal 1/1", "settle 1"]
    assert asyncio.run(judge.run_once()) == []


@pytest.mark.parametrize(
    ("sources", "vote", "why"),
    [
        # No request from anyone: no evidence, whatever else is served.
        (served(1, "Lyon.", "Paris.", request=None), Vote.NO_EVIDENCE, "request"),
        # A's answer from nobody (origin and A withhold it): B wins.
        (served(1, None, "Paris."), Vote.B, "A's answer"),
        # B's answer from nobody: A wins.
        (served(1, "Lyon.", None), Vote.A, "B did not"),
        # Neither answer: no evidence.
        (served(1, None, None), Vote.NO_EVIDENCE, "either answer"),
        # Pieces that fail the chain's hashes count as not served: a forged A answer, a swapped request.
        (served(1, "Rome.", "Paris."), Vote.B, "A's answer"),
        (served(1, "Lyon.", "Paris.", request=request_bytes("chat", {**REQUEST, "max_tokens": 1})),
         Vote.NO_EVIDENCE, "request"),
    ],
)
def test_missing_evidence_decides_the_vote_at_the_last_chance(
    tmp_path: Path, sources: dict[str, EvidencePieces], vote: int, why: str
) -> None:
    chain = FakeChain(duels={1: make_duel(1, "Lyon.", "Paris.")})
    model = model_preferring("Paris.")
    judge = runner(tmp_path, chain, {1: sources}, model)
    assert asyncio.run(judge.run_once()) == []  # something is missing: asked again on later passes
    chain.block = 17
    assert asyncio.run(judge.run_once()) == []
    chain.block = 18  # two blocks before the commit window closes: the last chance to commit
    actions = asyncio.run(judge.run_once())
    assert [(x.duel_id, x.step) for x in actions] == [(1, JudgeStep.DECIDE)]
    assert why in actions[0].detail
    assert model.calls == []  # the rules decide; the model is not asked
    chain.block = 25
    asyncio.run(judge.run_once())
    assert chain.vote(1) == vote


def test_a_stalling_party_does_not_keep_a_judge_past_its_last_chance(tmp_path: Path) -> None:
    """The origin and A stall (they accept the evidence request and never answer); B served the request
    and its answer on an earlier pass. At the last chance the judge stops waiting and decides with what
    it holds: A's answer from nobody, so B (never silent, never fined, for what it could not get)."""
    chain = FakeChain(duels={1: make_duel(1, "Lyon.", "Paris.")})
    held: dict[int, EvidencePieces] = {}
    stalled = asyncio.Event()  # never set

    async def gather(duel: DuelState) -> EvidencePieces:
        held[duel.duel_id] = checked_pieces(duel, served(1, None, "Paris.")[B], B)[0]
        await stalled.wait()  # the origin and A stall
        raise AssertionError("unreachable")

    journal = VoteJournal(tmp_path / "judge.sqlite", contract_address=CONTRACT)
    judge = JudgeRunner(chain, journal, gather, model_preferring("Paris."), settle_grace_blocks=0,
                        held=lambda duel: held[duel.duel_id], last_chance_wait_s=0.05)
    chain.block = 18  # two blocks before the commit window closes: the last chance
    actions = asyncio.run(asyncio.wait_for(judge.run_once(), 30))
    assert [(x.step, "A's answer" in x.detail) for x in actions] == [(JudgeStep.DECIDE, True)]
    assert chain.sent == ["commit 1/1"]
    chain.block = 25
    asyncio.run(judge.run_once())
    assert chain.vote(1) == Vote.B


def test_pieces_from_different_parties_make_up_the_evidence(tmp_path: Path) -> None:
    chain = FakeChain(duels={1: make_duel(1, "Lyon.", "Paris.")})
    # The origin went offline; A serves the request and its answer, B its own answer only.
    sources = {1: {A: EvidencePieces(1, REQUEST_BYTES, "Lyon.", None), B: EvidencePieces(1, None, None, "Paris.")}}
    model = model_preferring("Paris.")
    actions = asyncio.run(runner(tmp_path, chain, sources, model).run_once())
    assert [x.step for x in actions] == [JudgeStep.DECIDE] and len(model.calls) == 2


def test_answers_are_truncated_by_the_requests_own_max_tokens(tmp_path: Path) -> None:
    long_a, long_b = "Lyon is the answer", "Paris is the answer"
    short = {**REQUEST, "max_tokens": 4}
    chain = FakeChain(duels={1: make_duel(1, long_a, long_b, request=short)})
    model = model_preferring("Paris")
    sources = {1: served(1, long_a, long_b, request=request_bytes("chat", short))}
    asyncio.run(runner(tmp_path, chain, sources, model).run_once())
    # max_tokens 4 in the request: int(4 * 1.2) = 4 characters of each answer
    assert "Answer A: Lyon\n\nAnswer B: Pari\n" in model.calls[0]
    assert question_of(REQUEST_BYTES) == ("user: What is the capital of France?", 32)
    assert question_of(request_bytes("completion", {"model": "m", "prompt": "2+2?"})) == ("2+2?", None)
    with pytest.raises(ValueError):
        question_of(b'{"kind":"chat","request":{"model":"m"}}')


def test_position_bias_abstains(tmp_path: Path) -> None:
    chain = FakeChain(duels={1: make_duel(1, "Lyon.", "Paris.")})

    async def always_a(prompt: str, max_tokens: int | None) -> str:
        return "A"

    asyncio.run(runner(tmp_path, chain, {1: served(1, "Lyon.", "Paris.")}, always_a).run_once())
    chain.block = 25
    asyncio.run(runner(tmp_path, chain, {}, always_a).run_once())
    assert chain.vote(1) == Vote.ABSTAIN


def test_an_appeal_round_is_judged_on_its_own(tmp_path: Path) -> None:
    chain = FakeChain(duels={1: make_duel(1, "Lyon.", "Paris.")})
    model = model_preferring("Paris.")
    judge = runner(tmp_path, chain, {1: served(1, "Lyon.", "Paris.")}, model)
    asyncio.run(judge.run_once())
    chain.block = 25
    asyncio.run(judge.run_once())
    assert chain.vote(1) == Vote.B
    # A appealed; ME holds two seats of the five-seat second panel (one commitment, one reveal).
    duel = chain.duels[1]
    chain.duels[1] = replace(duel, seed_block=64, rounds=(*duel.rounds,
                                                          DuelRound(2, (OTHER, ME, OTHER, ME, OTHER), (0,) * 5, 80,
                                                                     90)))
    chain.block = 70
    actions = asyncio.run(judge.run_once())
    assert [(x.round, x.step) for x in actions] == [(2, JudgeStep.DECIDE)]
    assert asyncio.run(judge.run_once()) == []
    chain.block = 85
    assert [(x.round, x.step) for x in asyncio.run(judge.run_once())] == [(2, JudgeStep.REVEAL)]
    assert chain.duels[1].rounds[1].votes == (0, Vote.B, 0, Vote.B, 0)  # both seats counted
    chain.block = 91  # the appeal round's reveal window is over: one settlement, not one per round
    assert [(x.round, x.step) for x in asyncio.run(judge.run_once())] == [(1, JudgeStep.SETTLE)]
    assert chain.sent == ["commit 1/1", "reveal 1/1", "commit 1/2", "reveal 1/2", "settle 1"]
    assert {(e.round, e.state) for e in [judge.journal.get(1, 1), judge.journal.get(1, 2)] if e} == {
        (1, "revealed"), (2, "revealed")}


def test_a_restart_between_commit_and_reveal_reveals_the_committed_vote(tmp_path: Path) -> None:
    chain = FakeChain(duels={1: make_duel(1, "Paris.", "Lyon.")})
    asyncio.run(runner(tmp_path, chain, {1: served(1, "Paris.", "Lyon.")}, model_preferring("Paris.")).run_once())
    assert chain.sent == ["commit 1/1"]
    # The node restarts; its new model would now vote the other way, and every party is gone.
    restarted = runner(tmp_path, chain, {}, model_preferring("Lyon."))
    assert asyncio.run(restarted.run_once()) == []
    chain.block = 25
    asyncio.run(restarted.run_once())
    assert chain.vote(1) == Vote.A  # the committed decision, not a new one
    chain.block = 36
    asyncio.run(restarted.run_once())
    assert chain.sent == ["commit 1/1", "reveal 1/1", "settle 1"]


def test_a_failed_commit_is_retried_with_the_same_decision(tmp_path: Path) -> None:
    chain = FakeChain(fail_next="commit 1/1", duels={1: make_duel(1, "Paris.", "Lyon.")})
    model = model_preferring("Paris.")
    judge = runner(tmp_path, chain, {1: served(1, "Paris.", "Lyon.")}, model)
    first = asyncio.run(judge.run_once())
    assert first[0].step is JudgeStep.DECIDE and "failed" in first[0].detail
    assert chain.sent == []
    second = asyncio.run(judge.run_once())
    assert [a.step for a in second] == [JudgeStep.COMMIT]  # the journal's decision, no new model call
    assert len(model.calls) == 2 and chain.sent == ["commit 1/1"]


def test_a_commitment_the_index_has_not_seen_yet_is_not_sent_twice(tmp_path: Path) -> None:
    """The view comes from the node's index, which lags the chain: right after its commit, a judge sees
    its seat uncommitted while the journal says committed. It tries once more, the contract says 'already
    committed', and the judge takes that as done (no failure, no warning) and reveals when due."""
    chain = FakeChain(lagging=True, duels={1: make_duel(1, "Paris.", "Lyon.")})
    judge = runner(tmp_path, chain, {1: served(1, "Paris.", "Lyon.")}, model_preferring("Paris."))
    first = asyncio.run(judge.run_once())
    assert [a.step for a in first] == [JudgeStep.DECIDE] and chain.sent == ["commit 1/1"]
    assert asyncio.run(judge.run_once()) == []  # the contract refused a second commit: nothing failed
    chain.lagging = False
    chain.block = 25
    asyncio.run(judge.run_once())
    assert chain.vote(1) == Vote.A and chain.sent == ["commit 1/1", "reveal 1/1"]


def test_a_missed_commit_window_is_left_alone(tmp_path: Path) -> None:
    chain = FakeChain(block=21, duels={1: make_duel(1, "Paris.", "Lyon.")})
    judge = runner(tmp_path, chain, {1: served(1, "Paris.", "Lyon.")}, model_preferring("Paris."))
    assert asyncio.run(judge.run_once()) == []
    assert chain.sent == []


def test_prompt_text_renders_chats_and_plain_prompts() -> None:
    assert prompt_text("2+2?") == "2+2?"
    assert prompt_text([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]) == \
        "system: Be brief.\nuser: 2+2?"


def test_a_slow_decision_never_holds_up_another_duels_reveal(tmp_path: Path) -> None:
    chain = FakeChain(duels={1: make_duel(1, "Lyon.", "Paris.")})
    gate = asyncio.Event()

    async def model(prompt: str, max_tokens: int | None) -> str:
        if "Madrid." in prompt:
            await gate.wait()  # this judge's model is busy (e.g. behind user requests)
        return "A" if prompt.split("Answer A: ")[1].startswith("Paris.") else "B"

    sources = {1: served(1, "Lyon.", "Paris."), 2: served(2, "Madrid.", "Rome.")}
    judge = runner(tmp_path, chain, sources, model)
    chain_steps = [step for step in JudgeStep if step is not JudgeStep.DECIDE]

    async def scenario() -> None:
        assert [a.step for a in await judge.run_once([JudgeStep.DECIDE])] == [JudgeStep.DECIDE]  # duel 1 committed
        second = make_duel(2, "Madrid.", "Rome.")
        chain.duels[2] = replace(second, rounds=(replace(second.rounds[0], commit_end=40, reveal_end=50),))
        chain.block = 21  # duel 1's reveal window is open; duel 2 still takes commitments
        deciding = asyncio.ensure_future(judge.run_once([JudgeStep.DECIDE]))
        await asyncio.sleep(0.05)
        assert not deciding.done()  # waiting for the model on duel 2
        assert [a.step for a in await judge.run_once(chain_steps)] == [JudgeStep.REVEAL]
        assert chain.vote(1) == Vote.B  # revealed while the other decision waits
        gate.set()
        assert [(a.duel_id, a.step) for a in await deciding] == [(2, JudgeStep.DECIDE)]
        assert chain.sent == ["commit 1/1", "reveal 1/1", "commit 2/1"]

    asyncio.run(scenario())


def test_seats_of_several_duels_are_decided_at_once(tmp_path: Path) -> None:
    """Decided one after another behind a busy model, a node judging ten duels of a 40-request burst on SmolLM2
    left a third of its seats silent past their commit windows (each fined SILENT_PENALTY). Here the model
    answers only once all four questions (two duels, both A/B orders) wait at once: one seat after another, or
    one order after the other, never gets there."""
    chain = FakeChain(duels={1: make_duel(1, "Lyon.", "Paris."), 2: make_duel(2, "Madrid.", "Rome.")})
    waiting: list[str] = []
    all_asked = asyncio.Event()

    async def model(prompt: str, max_tokens: int | None) -> str:
        waiting.append(prompt)
        if len(waiting) == 4:
            all_asked.set()
        await all_asked.wait()
        return "A" if prompt.split("Answer A: ")[1].startswith(("Paris.", "Rome.")) else "B"

    judge = runner(tmp_path, chain, {1: served(1, "Lyon.", "Paris."), 2: served(2, "Madrid.", "Rome.")}, model)
    actions = asyncio.run(asyncio.wait_for(judge.run_once([JudgeStep.DECIDE]), timeout=10))
    assert sorted((a.duel_id, a.step) for a in actions) == [(1, JudgeStep.DECIDE), (2, JudgeStep.DECIDE)]
    assert sorted(chain.sent) == ["commit 1/1", "commit 2/1"]
