"""The judge's work loop (judge/runner.py) against an in-memory chain that enforces the contract's
commit/reveal windows and refuses anything sent twice. The same flow on a real anvil with real node
processes is the duel integration test's job; this one checks the runner's decisions and its restart
behaviour exactly: right vote, NO_EVIDENCE for withheld or forged evidence, no double commit or reveal."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nacl.signing
from eth_utils.address import to_checksum_address

from judge.evidence import DuelRecord, Evidence, duel_hashes
from judge.journal import VOTE_A, VOTE_ABSTAIN, VOTE_B, VOTE_NO_EVIDENCE, DuelView, JudgeStep, VoteJournal
from judge.runner import JudgeRunner, prompt_text
from ledger.client import vote_commitment
from node.signing import ResultClaim, prompt_hash, sha256_text, sign_result

CHAIN = 31337
CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
ME = to_checksum_address("0x" + "0c" * 20)
A = to_checksum_address("0x" + "aa" * 20)
B = to_checksum_address("0x" + "bb" * 20)
ORIGIN = to_checksum_address("0x" + "01" * 20)
KEYS = {A: nacl.signing.SigningKey(b"\x0a" * 32), B: nacl.signing.SigningKey(b"\x0b" * 32)}
PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


def make_duel(duel_id: int, answer_a: str, answer_b: str) -> tuple[DuelRecord, Evidence]:
    results = []
    for executor, text in ((A, answer_a), (B, answer_b)):
        claim = ResultClaim(chain_id=CHAIN, request_id=f"req-{duel_id}", prompt_sha256=prompt_hash(PROMPT, "m"),
                            output_sha256=sha256_text(text), model="m", executor=executor, timestamp_ms=1)
        results.append(sign_result(KEYS[executor], claim))
    q, ha, hb = duel_hashes(results[0], results[1])
    return DuelRecord(duel_id, ORIGIN, A, B, q, ha, hb), Evidence(duel_id, PROMPT, 32, answer_a, answer_b, *results)


@dataclass
class FakeChain:
    """Duels with windows, one judge (ME); every tx is checked like the contract checks it."""

    chain_id: int = CHAIN
    block: int = 10
    records: dict[int, DuelRecord] = field(default_factory=dict)
    commit_end: int = 20
    reveal_end: int = 30
    windows: dict[int, tuple[int, int]] = field(default_factory=dict)  # per duel, else the two above
    commitments: dict[int, bytes] = field(default_factory=dict)
    votes: dict[int, int] = field(default_factory=dict)
    settled: set[int] = field(default_factory=set)
    sent: list[str] = field(default_factory=list)
    fail_next: str | None = None

    def block_number(self) -> int:
        return self.block

    def my_duels(self) -> Sequence[tuple[DuelRecord, DuelView]]:
        return [(r, DuelView(r.duel_id, "settled" if r.duel_id in self.settled else "voting",
                             *self.window(r.duel_id), r.duel_id in self.commitments or r.duel_id in self.votes,
                             self.votes.get(r.duel_id), all_revealed=r.duel_id in self.votes))
                for r in self.records.values()]

    def window(self, duel_id: int) -> tuple[int, int]:
        return self.windows.get(duel_id, (self.commit_end, self.reveal_end))

    def key_of(self, address: str) -> bytes | None:
        key = KEYS.get(to_checksum_address(address))
        return None if key is None else bytes(key.verify_key)

    def commitment_of(self, duel_id: int, vote: int, salt: bytes) -> bytes:
        return vote_commitment(CHAIN, CONTRACT, duel_id, ME, vote, salt)

    def _tx(self, what: str) -> str:
        if self.fail_next == what:
            self.fail_next = None
            raise ConnectionError("RPC unreachable")
        self.sent.append(what)
        return f"0x{len(self.sent):064x}"

    async def commit(self, duel_id: int, commitment: bytes) -> str:
        assert self.block <= self.window(duel_id)[0], "Duel: commit window over"
        assert duel_id not in self.commitments and duel_id not in self.votes, "Duel: already committed"
        tx = self._tx(f"commit {duel_id}")
        self.commitments[duel_id] = commitment
        return tx

    async def reveal(self, duel_id: int, vote: int, salt: bytes) -> str:
        commit_end, reveal_end = self.window(duel_id)
        assert commit_end < self.block <= reveal_end, "Duel: reveal window"
        assert duel_id not in self.votes, "Duel: already revealed"
        assert self.commitments.pop(duel_id) == self.commitment_of(duel_id, vote, salt), "reveal does not match"
        tx = self._tx(f"reveal {duel_id}")
        self.votes[duel_id] = vote
        return tx

    async def settle(self, duel_id: int) -> str:
        assert duel_id not in self.settled, "Duel: not in voting"
        tx = self._tx(f"settle {duel_id}")
        self.settled.add(duel_id)
        return tx


def model_preferring(good: str):  # type: ignore[no-untyped-def]
    """A judge model that picks the slot holding `good` (whatever the order)."""
    calls: list[str] = []

    async def ask(prompt: str, max_tokens: int | None) -> str:
        calls.append(prompt)
        a_text = prompt.split("Answer A: ")[1].split("\n\nAnswer B: ")[0]
        return "A" if a_text == good else "B"

    ask.calls = calls  # type: ignore[attr-defined]
    return ask


def runner(tmp_path: Path, chain: FakeChain, evidence: dict[int, Evidence | None], model) -> JudgeRunner:  # type: ignore[no-untyped-def]
    async def fetch(record: DuelRecord) -> Evidence | None:
        return evidence.get(record.duel_id)

    journal = VoteJournal(tmp_path / "judge.sqlite", contract_address=CONTRACT)
    return JudgeRunner(chain, journal, fetch, model, settle_grace_blocks=0)


def test_a_duel_from_decision_to_settlement(tmp_path: Path) -> None:
    chain = FakeChain()
    record, evidence = make_duel(1, "Lyon.", "Paris.")
    chain.records[1] = record
    model = model_preferring("Paris.")
    judge = runner(tmp_path, chain, {1: evidence}, model)
    actions = asyncio.run(judge.run_once())
    assert [a.step for a in actions] == [JudgeStep.DECIDE]
    assert len(model.calls) == 2  # both A/B orders asked
    assert "Answer A: Lyon." in model.calls[0] and "Answer A: Paris." in model.calls[1]
    assert asyncio.run(judge.run_once()) == []  # committed; the reveal window is not open yet
    chain.block = 25
    assert [a.step for a in asyncio.run(judge.run_once())] == [JudgeStep.REVEAL]
    assert chain.votes[1] == VOTE_B  # "Paris." was answer B
    assert [a.step for a in asyncio.run(judge.run_once())] == [JudgeStep.SETTLE]  # every judge revealed
    assert chain.sent == ["commit 1", "reveal 1", "settle 1"]
    assert asyncio.run(judge.run_once()) == []


def test_withheld_or_forged_evidence_is_voted_no_evidence(tmp_path: Path) -> None:
    chain = FakeChain()
    r1, _ = make_duel(1, "Lyon.", "Paris.")
    r2, forged = make_duel(2, "Lyon.", "Paris.")
    chain.records = {1: r1, 2: r2}
    model = model_preferring("Paris.")
    judge = runner(tmp_path, chain, {1: None, 2: Evidence(2, forged.prompt, 32, "Lyon.", "Rome.", forged.result_a,
                                                           forged.result_b)}, model)
    actions = asyncio.run(judge.run_once())
    # Forged evidence is refused at once; evidence not served yet is asked for again on later passes.
    assert [(x.duel_id, x.step) for x in actions] == [(2, JudgeStep.DECIDE)] and "refused" in actions[0].detail
    chain.block = 17
    assert asyncio.run(judge.run_once()) == []
    chain.block = 18  # two blocks before the commit window closes: the last chance to commit
    actions = asyncio.run(judge.run_once())
    assert [(x.duel_id, x.step) for x in actions] == [(1, JudgeStep.DECIDE)]
    assert "did not serve" in actions[0].detail
    assert model.calls == []  # nothing unverified reaches the model
    chain.block = 25
    asyncio.run(judge.run_once())
    assert chain.votes == {1: VOTE_NO_EVIDENCE, 2: VOTE_NO_EVIDENCE}


def test_position_bias_abstains(tmp_path: Path) -> None:
    chain = FakeChain()
    record, evidence = make_duel(1, "Lyon.", "Paris.")
    chain.records[1] = record

    async def always_a(prompt: str, max_tokens: int | None) -> str:
        return "A"

    judge = runner(tmp_path, chain, {1: evidence}, always_a)
    asyncio.run(judge.run_once())
    chain.block = 25
    asyncio.run(judge.run_once())
    assert chain.votes[1] == VOTE_ABSTAIN


def test_a_restart_between_commit_and_reveal_reveals_the_committed_vote(tmp_path: Path) -> None:
    chain = FakeChain()
    record, evidence = make_duel(1, "Paris.", "Lyon.")
    chain.records[1] = record
    asyncio.run(runner(tmp_path, chain, {1: evidence}, model_preferring("Paris.")).run_once())
    assert chain.sent == ["commit 1"]
    # The node restarts; its new model would now vote the other way, and the origin is gone.
    restarted = runner(tmp_path, chain, {}, model_preferring("Lyon."))
    assert asyncio.run(restarted.run_once()) == []
    chain.block = 25
    asyncio.run(restarted.run_once())
    assert chain.votes[1] == VOTE_A  # the committed decision, not a new one
    asyncio.run(restarted.run_once())
    assert chain.sent == ["commit 1", "reveal 1", "settle 1"]


def test_a_failed_commit_is_retried_with_the_same_decision(tmp_path: Path) -> None:
    chain = FakeChain(fail_next="commit 1")
    record, evidence = make_duel(1, "Paris.", "Lyon.")
    chain.records[1] = record
    model = model_preferring("Paris.")
    judge = runner(tmp_path, chain, {1: evidence}, model)
    first = asyncio.run(judge.run_once())
    assert first[0].step is JudgeStep.DECIDE and "failed" in first[0].detail
    assert chain.sent == []
    second = asyncio.run(judge.run_once())
    assert [a.step for a in second] == [JudgeStep.COMMIT]  # the journal's decision, no new model call
    assert len(model.calls) == 2 and chain.sent == ["commit 1"]


def test_a_missed_commit_window_is_left_alone(tmp_path: Path) -> None:
    chain = FakeChain(block=21)
    record, evidence = make_duel(1, "Paris.", "Lyon.")
    chain.records[1] = record
    assert asyncio.run(runner(tmp_path, chain, {1: evidence}, model_preferring("Paris.")).run_once()) == []
    assert chain.sent == []


def test_prompt_text_renders_chats_and_plain_prompts() -> None:
    assert prompt_text("2+2?") == "2+2?"
    assert prompt_text([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]) == \
        "system: Be brief.\nuser: 2+2?"


def test_a_slow_decision_never_holds_up_another_duels_reveal(tmp_path: Path) -> None:
    chain = FakeChain()
    first, first_evidence = make_duel(1, "Lyon.", "Paris.")
    second, second_evidence = make_duel(2, "Madrid.", "Rome.")
    chain.records[1] = first
    gate = asyncio.Event()

    async def model(prompt: str, max_tokens: int | None) -> str:
        if "Madrid." in prompt:
            await gate.wait()  # this judge's model is busy (e.g. behind user requests)
        return "A" if prompt.split("Answer A: ")[1].startswith("Paris.") else "B"

    judge = runner(tmp_path, chain, {1: first_evidence, 2: second_evidence}, model)
    chain_steps = [step for step in JudgeStep if step is not JudgeStep.DECIDE]

    async def scenario() -> None:
        assert [a.step for a in await judge.run_once([JudgeStep.DECIDE])] == [JudgeStep.DECIDE]  # duel 1 committed
        chain.records[2] = second
        chain.windows[2] = (40, 50)
        chain.block = 21  # duel 1's reveal window is open; duel 2 still takes commitments
        deciding = asyncio.ensure_future(judge.run_once([JudgeStep.DECIDE]))
        await asyncio.sleep(0.05)
        assert not deciding.done()  # waiting for the model on duel 2
        assert [a.step for a in await judge.run_once(chain_steps)] == [JudgeStep.REVEAL]
        assert chain.votes == {1: VOTE_B}  # revealed while the other decision waits
        gate.set()
        assert [(a.duel_id, a.step) for a in await deciding] == [(2, JudgeStep.DECIDE)]
        assert chain.sent == ["commit 1", "reveal 1", "commit 2"]

    asyncio.run(scenario())
