"""The Duel manager's decisions (judge/manager.py) against an in-memory chain and peers: the
challenger fetches, checks, runs and answers (or says it could not get the request, then answers the
published one); the origin opens with its evidence stored first, draws a challenger that did not show
up, publishes a withheld request, draws an appeal panel and settles; a duelist appeals by policy; evidence
goes to seat holders only (the request alone to the challenger); a judge gathers each piece from whoever
holds it. The same roles on a real chain with real node processes: tests/integration/test_duel_net.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_utils.address import to_checksum_address

from wwwserve.judge.evidence import EvidencePieces
from wwwserve.judge.journal import DuelView, VoteJournal
from wwwserve.judge.manager import PATH_EVIDENCE, DuelManager, EvidenceRefusedError
from wwwserve.judge.store import EvidenceStore, StoredEvidence
from wwwserve.ledger.records import DuelOutcome, DuelRound, DuelState, DuelStatus
from wwwserve.ledger.work import (
    WorkAttestation,
    answer_hash,
    duel_id_of,
    request_bytes,
    request_hash,
    request_id_hash,
    sign_work,
)
from wwwserve.node.extensions import Inspection
from wwwserve.node.http import HttpResponse

CHAIN = 31337
CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
ME = to_checksum_address("0x" + "0c" * 20)
ORIGIN = to_checksum_address("0x" + "01" * 20)
A = to_checksum_address("0x" + "aa" * 20)
B = to_checksum_address("0x" + "bb" * 20)
JUDGE = to_checksum_address("0x" + "dd" * 20)
STRANGER = to_checksum_address("0x" + "ee" * 20)
REQUEST = {"model": "m", "messages": [{"role": "user", "content": "2+2?"}], "max_tokens": 8, "temperature": 0.7}
DATA = request_bytes("chat", REQUEST)
WRONG = request_bytes("chat", {**REQUEST, "max_tokens": 1})


def awaiting(duel_id: int = 11, **changes: Any) -> DuelState:
    base = DuelState(duel_id=duel_id, origin=ORIGIN, a=A, b=None, status=DuelStatus.AWAITING_ANSWER, seed_block=64,
                     deadline=94, request_hash=request_hash("chat", REQUEST), answer_a_hash=answer_hash("4"),
                     appeal_window_blocks=10)
    return replace(base, **changes)


def judging(duel_id: int = 11, votes: tuple[int, ...] = (2, 2, 1), **changes: Any) -> DuelState:
    changes.setdefault("rounds", (DuelRound(1, (JUDGE, JUDGE, STRANGER), votes, 100, 110),))
    return awaiting(duel_id, b=B, status=DuelStatus.JUDGING, answer_b_hash=answer_hash("5"), **changes)


@dataclass
class FakeChain:
    """A `DuelChain` over states the test sets; every transaction is recorded (or fails once)."""

    me: str = ME
    chain_id: int = CHAIN
    block: int = 70
    duels: dict[int, DuelState] = field(default_factory=dict)
    onchain: dict[int, DuelState] = field(default_factory=dict)  # what the contract says, when it differs
    challengers: dict[int, str] = field(default_factory=dict)
    sent: list[tuple[Any, ...]] = field(default_factory=list)
    fail_next: str | None = None
    attestation_ttl_s: int = 300

    def block_number(self) -> int:
        return self.block

    def duel(self, duel_id: int) -> DuelState | None:
        return self.duels.get(duel_id)

    def duel_onchain(self, duel_id: int) -> DuelState | None:
        return self.onchain.get(duel_id, self.duels.get(duel_id))

    def my_seats(self) -> Sequence[tuple[DuelState, DuelView]]:
        return []

    def opened_by_me(self) -> Sequence[DuelState]:
        return [d for d in self.duels.values() if d.origin == self.me and d.is_open]

    def awaiting_answer(self) -> Sequence[DuelState]:
        return [d for d in self.duels.values() if d.status is DuelStatus.AWAITING_ANSWER]

    def as_duelist(self) -> Sequence[DuelState]:
        return [d for d in self.duels.values() if self.me in (d.a, d.b) and d.is_open]

    def open_duel_ids(self) -> set[int]:
        return {d.duel_id for d in [*self.opened_by_me(), *self.as_duelist()]}

    def challenger_of(self, duel_id: int) -> str | None:
        self.sent.append(("challengerOf", duel_id))
        return self.challengers.get(duel_id)

    def commitment_of(self, duel_id: int, round_: int, vote: int, salt: bytes) -> bytes:
        raise AssertionError("no judging here")

    async def _tx(self, *what: Any) -> str:
        if self.fail_next == what[0]:
            self.fail_next = None
            raise RuntimeError(f"{what[0]} reverted")
        self.sent.append(what)
        return f"0x{len(self.sent):064x}"

    async def open_duel(self, work: WorkAttestation, salt: bytes) -> tuple[int, str]:
        return duel_id_of(work.origin, work.request_id), await self._tx("open", work, salt)

    async def draw_challenger(self, duel_id: int) -> str:
        return await self._tx("drawChallenger", duel_id)

    async def answer_duel(self, duel_id: int, answer: bytes) -> str:
        return await self._tx("answer", duel_id, answer)

    async def publish_request(self, duel_id: int, work: WorkAttestation, salt: bytes, request: bytes) -> str:
        return await self._tx("publish", duel_id, work, salt, request)

    async def draw_judges(self, duel_id: int) -> str:
        return await self._tx("drawJudges", duel_id)

    async def appeal(self, duel_id: int) -> str:
        return await self._tx("appeal", duel_id)

    async def commit(self, duel_id: int, commitment: bytes) -> str:
        return await self._tx("commit", duel_id)

    async def reveal(self, duel_id: int, vote: int, salt: bytes) -> str:
        return await self._tx("reveal", duel_id)

    async def settle(self, duel_id: int) -> str:
        return await self._tx("settle", duel_id)

    def txs(self) -> list[tuple[Any, ...]]:
        return [t for t in self.sent if t[0] != "challengerOf"]


@dataclass(frozen=True)
class Contact:
    address: str
    endpoint: str = "http://peer"


@dataclass
class FakePeers:
    """Each party's `/peer/evidence`: what it serves per duel (None: down or refusing)."""

    served: dict[str, dict[int, EvidencePieces]] = field(default_factory=dict)
    asked: list[tuple[str, int]] = field(default_factory=list)

    def contact(self, address: str) -> Contact:  # the ledger's
        return Contact(address)

    probe_timeout_s = 1.0

    async def post_sealed(self, peer: Contact, path: str, payload: dict[str, Any],
                          timeout_s: float | None = None) -> HttpResponse:
        """The communication manager's sealed POST, answered by what `peer` serves (404 when nothing)."""
        assert path == PATH_EVIDENCE
        duel_id = payload["duel_id"]
        self.asked.append((peer.address, duel_id))
        pieces = self.served.get(peer.address, {}).get(duel_id)
        if pieces is None:
            return HttpResponse(404, {}, b'{"error": {"message": "no evidence"}}')
        return HttpResponse(200, {}, json.dumps(pieces.to_json()).encode())


@dataclass
class Setup:
    chain: FakeChain
    peers: FakePeers
    manager: DuelManager
    store: EvidenceStore
    ran: list[bytes]
    events: list[str]

    def run(self, lane: str = "chain") -> None:
        asyncio.run(self.manager.run_once(lane))  # type: ignore[arg-type]


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return make(tmp_path)


def make(tmp_path: Path, me: str = ME, appeal: str = "split") -> Setup:
    chain, peers = FakeChain(me=me), FakePeers()
    ran: list[bytes] = []
    events: list[str] = []

    async def run_request(data: bytes) -> str:
        ran.append(data)
        return f"answer #{len(ran)}"

    store = EvidenceStore(tmp_path / f"{me}-evidence.db", contract_address=CONTRACT)
    manager = DuelManager(
        my_address=me, ledger=peers, communication=peers, should_inspect=lambda: True,  # type: ignore[arg-type]
        store=store, journal=VoteJournal(tmp_path / f"{me}-votes.db", contract_address=CONTRACT),
        ask_model=None, run_request=run_request, chain=chain, appeal=appeal,  # type: ignore[arg-type]
        count=lambda name, **labels: events.append(labels.get("event", labels.get("step", name))),
    )
    return Setup(chain, peers, manager, store, ran, events)


# ---- the challenger ---------------------------------------------------------------------------------


def test_the_challenger_fetches_checks_runs_and_answers(setup: Setup) -> None:
    setup.chain.duels[11] = awaiting()
    setup.chain.challengers[11] = ME
    # The origin serves a request that is not the duel's (another max_tokens): refused; A serves the right one.
    setup.peers.served = {ORIGIN: {11: EvidencePieces(11, WRONG)}, A: {11: EvidencePieces(11, DATA, "4")}}
    setup.run("answer")
    assert setup.ran == [DATA]  # never the wrong request
    assert setup.peers.asked == [(ORIGIN, 11), (A, 11)]
    assert setup.chain.txs() == [("answer", 11, answer_hash("answer #1"))]
    kept = setup.store.get(11)
    assert kept is not None and (kept.role, kept.request, kept.answer) == ("b", DATA, "answer #1")
    assert setup.events == ["answered"]


def test_a_challenger_acts_only_on_its_own_duels_once_the_seed_block_is_mined(setup: Setup) -> None:
    setup.chain.duels = {11: awaiting(11), 12: awaiting(12), 13: awaiting(13, b=B)}
    setup.chain.challengers = {11: ME, 12: STRANGER}
    setup.peers.served = {ORIGIN: {i: EvidencePieces(i, DATA) for i in (11, 12, 13)}}
    setup.chain.block = 64  # the seed block itself: nobody can know the challenger yet
    setup.run("answer")
    assert setup.ran == [] and setup.chain.sent == []
    setup.chain.block = 95  # past the answer deadline
    setup.run("answer")
    assert setup.ran == [] and setup.chain.sent == []
    setup.chain.block = 70
    setup.run("answer")
    assert setup.chain.txs() == [("answer", 11, answer_hash("answer #1"))]  # 12 is a stranger's, 13 is B's
    assert ("challengerOf", 13) not in setup.chain.sent  # a recorded B needs no RPC call


def test_a_request_nobody_serves_is_declared_late_then_the_published_one_is_answered(setup: Setup) -> None:
    setup.chain.duels[11] = awaiting()
    setup.chain.challengers[11] = ME
    setup.run("answer")
    assert setup.chain.txs() == []  # still time: ask again on later passes
    setup.chain.block = 92  # answer_margin_blocks (2) before the deadline
    setup.run("answer")
    assert setup.chain.txs() == [("answer", 11, b"\x00" * 32)] and setup.events == ["request_missing"]
    assert setup.ran == []
    # The origin published it: a new answer window from the next epoch's seed block.
    setup.chain.duels[11] = awaiting(b=ME, seed_block=128, deadline=158, published_request=DATA)
    setup.chain.block = 130
    setup.run("answer")
    assert setup.ran == [DATA]
    assert setup.chain.txs()[-1] == ("answer", 11, answer_hash("answer #1"))
    assert setup.peers.asked == [(ORIGIN, 11), (A, 11)] * 2  # the published bytes needed no peer


def test_a_challenger_whose_answer_did_not_make_it_resends_the_same_answer(setup: Setup) -> None:
    setup.chain.duels[11] = awaiting()
    setup.chain.challengers[11] = ME
    setup.peers.served = {ORIGIN: {11: EvidencePieces(11, DATA, "4")}}
    setup.chain.fail_next = "answer"
    setup.run("answer")
    assert setup.chain.txs() == []
    setup.run("answer")
    assert setup.ran == [DATA]  # run once: a second run could sample another answer
    assert setup.chain.txs() == [("answer", 11, answer_hash("answer #1"))]


def test_a_challenger_drawn_for_several_duels_answers_them_at_once(tmp_path: Path) -> None:
    """Answered one after another behind a busy model, a node drawn for five duels of one burst answered three
    in the window and lost two bonds: the answers now wait for the model together (each run here waits until
    both are running, so answering one after another never finishes)."""
    s = make(tmp_path)
    s.chain.duels = {11: awaiting(11, deadline=99), 12: awaiting(12, deadline=95)}
    s.chain.challengers.update({11: ME, 12: ME})
    data_12 = request_bytes("chat", {**REQUEST, "max_tokens": 7})
    s.chain.duels[12] = replace(s.chain.duels[12], request_hash=request_hash("chat", {**REQUEST, "max_tokens": 7}))
    s.peers.served = {ORIGIN: {11: EvidencePieces(11, DATA, "4"), 12: EvidencePieces(12, data_12, "4")}}
    started: list[bytes] = []
    both = asyncio.Event()

    async def run_request(data: bytes) -> str:
        started.append(data)
        if len(started) == 2:
            both.set()
        await both.wait()
        return f"answer to {len(data)}"

    s.manager.run_request = run_request
    asyncio.run(asyncio.wait_for(s.manager.run_once("answer"), timeout=10))
    assert sorted(started) == sorted([data_12, DATA])
    assert sorted(s.chain.txs()) == sorted([("answer", 11, answer_hash(f"answer to {len(DATA)}")),
                                            ("answer", 12, answer_hash(f"answer to {len(data_12)}"))])


# ---- the origin -------------------------------------------------------------------------------------


def attested(executor: Any = None) -> tuple[WorkAttestation, Inspection]:
    executor = executor or Account.from_key(b"\x0a" * 32)
    inspection = Inspection.draw("chatcmpl-1", True)
    work = sign_work(executor, CHAIN, CONTRACT, WorkAttestation(
        origin=ORIGIN, executor=executor.address, request_id=request_id_hash("chatcmpl-1"),
        request_hash=request_hash("chat", REQUEST), model_hash=b"\x02" * 32, answer_hash=answer_hash("4"),
        inspect=inspection.commitment, issued_at=int(time.time())))
    return work, inspection


def test_opening_stores_the_evidence_first_and_counts_failures(tmp_path: Path) -> None:
    s = make(tmp_path, me=ORIGIN)
    work, inspection = attested()

    async def scenario() -> None:
        s.manager.open_soon(inspection, work, "chat", {**REQUEST, "stream": True}, "4")
        await asyncio.wait(set(s.manager._tasks))
        s.chain.fail_next = "open"
        s.manager.open_soon(inspection, work, "chat", REQUEST, "4")
        await asyncio.wait(set(s.manager._tasks))

    asyncio.run(scenario())
    duel_id = duel_id_of(ORIGIN, request_id_hash("chatcmpl-1"))
    kept = s.store.get(duel_id)
    assert kept is not None and kept.role == "origin"
    assert (kept.request, kept.answer, kept.work, kept.salt) == (DATA, "4", work, inspection.salt)  # no "stream"
    assert s.chain.txs() == [("open", work, inspection.salt)]
    assert s.events == ["opened", "open_failed"]


def test_the_origin_draws_publishes_draws_appeal_judges_and_settles(tmp_path: Path) -> None:
    s = make(tmp_path, me=ORIGIN)
    work, inspection = attested()
    s.store.put(StoredEvidence(12, "origin", DATA, "4", work, inspection.salt))
    s.chain.duels = {
        11: awaiting(11),  # B has not shown up
        12: awaiting(12, b=B, status=DuelStatus.AWAITING_REQUEST, deadline=100),  # B could not get the request
        13: judging(13),  # round 1 over at block 110, appeal window until 120
        14: judging(14, seed_block=128, rounds=(*judging().rounds, DuelRound(2, (), (), 150, 160))),
    }
    s.run()
    assert s.chain.txs() == [("publish", 12, work, inspection.salt, DATA)]  # too early for the rest
    s.chain.block = 91  # 3 blocks before the answer deadline: draw B so its no-show is punishable
    s.run()
    assert s.chain.txs()[1:] == [("drawChallenger", 11)]
    s.chain.block = 121
    s.run()
    assert ("settle", 13) in s.chain.txs() and ("settle", 12) in s.chain.txs()
    s.chain.block = 129  # round 2's seed block is mined: its panel can be drawn
    s.run()
    assert s.chain.txs()[-1] == ("drawJudges", 14)
    assert {"request_published", "challenger_drawn", "settled", "judges_drawn"} <= set(s.events)


def test_a_failing_transaction_is_tried_once_per_block(tmp_path: Path) -> None:
    s = make(tmp_path, me=ORIGIN)
    s.chain.duels = {13: judging(13)}
    s.chain.block = 121
    s.chain.fail_next = "settle"
    s.run()
    s.run()  # same block: not again
    assert s.chain.txs() == []
    s.chain.block = 122
    s.run()
    assert s.chain.txs() == [("settle", 13)]


# ---- appeals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("me", "votes", "policy", "appeals"),
    [
        (A, (2, 2, 1), "split", True),  # A lost a split round
        (A, (2, 2, 1), "never", False),
        (A, (2, 2, 2), "split", False),  # unanimous: not worth the fee
        (A, (2, 2, 2), "always", True),
        (B, (1, 1, 2), "split", True),  # B lost a split round
        (B, (2, 2, 1), "always", False),  # the winner never appeals
        (A, (4, 4, 1), "always", False),  # voided: nothing to appeal
        (A, (1, 2, 3), "always", False),  # tie: nothing to appeal
    ],
)
def test_the_loser_of_round_one_appeals_by_policy(tmp_path: Path, me: str, votes: tuple[int, ...], policy: str,
                                                  appeals: bool) -> None:
    s = make(tmp_path, me=me, appeal=policy)
    s.chain.duels[13] = judging(13, votes=votes)
    s.chain.block = 110  # the reveal window is not over
    s.run()
    assert ("appeal", 13) not in s.chain.txs()
    s.chain.block = 115
    s.run()
    s.run()
    assert s.chain.txs().count(("appeal", 13)) == (1 if appeals else 0)
    s.chain.block = 121  # the appeal window is over
    s2 = make(tmp_path / "late", me=me, appeal=policy)
    s2.chain.duels[13], s2.chain.block = judging(13, votes=votes), 121
    s2.run()
    assert ("appeal", 13) not in s2.chain.txs()


# ---- serving evidence ---------------------------------------------------------------------------


def test_evidence_goes_to_seat_holders_and_the_request_alone_to_the_challenger(tmp_path: Path) -> None:
    s = make(tmp_path, me=A)
    s.store.put(StoredEvidence(13, "a", DATA, "4"))
    s.chain.duels[13] = judging(13)
    assert s.manager.evidence_for(13, JUDGE.lower()) == EvidencePieces(13, DATA, "4", None)
    assert s.manager.evidence_for(13, B) == EvidencePieces(13, DATA)  # the challenger: never A's answer
    with pytest.raises(EvidenceRefusedError) as refused:
        s.manager.evidence_for(13, ORIGIN)  # no seat: not even the origin
    assert refused.value.http_status == 403
    # A seat in the appeal round only counts too; so does a draw the indexer has not seen (the contract has).
    s.chain.duels[14] = judging(14, rounds=(*judging().rounds, DuelRound(2, (STRANGER,) * 5, (0,) * 5, 150, 160)))
    s.store.put(StoredEvidence(14, "a", DATA, "4"))
    assert s.manager.evidence_for(14, STRANGER).answer_a == "4"
    s.chain.duels[15] = awaiting(15, b=B, status=DuelStatus.JUDGING, answer_b_hash=answer_hash("5"))
    s.chain.onchain[15] = judging(15)
    s.store.put(StoredEvidence(15, "a", DATA, "4"))
    assert s.manager.evidence_for(15, JUDGE).answer_a == "4"
    # The challenger holding a seat of its own duel, which the indexer has not seen drawn yet: the contract
    # shows the seat, so B gets A's answer too (found live: given the request alone, B waited for A's answer
    # from a stalling origin past its commit window).
    s.chain.duels[18] = awaiting(18, b=B, status=DuelStatus.JUDGING, answer_b_hash=answer_hash("5"))
    s.chain.onchain[18] = judging(18, rounds=(DuelRound(1, (B, JUDGE, JUDGE), (0, 0, 0), 120, 130),))
    s.store.put(StoredEvidence(18, "a", DATA, "4"))
    assert s.manager.evidence_for(18, B) == EvidencePieces(18, DATA, "4", None)
    # Before B is recorded, the contract's answer to challengerOf decides who the challenger is.
    s.chain.duels[16] = awaiting(16)
    s.chain.challengers[16] = B
    s.store.put(StoredEvidence(16, "a", DATA, "4"))
    assert s.manager.evidence_for(16, B) == EvidencePieces(16, DATA)
    with pytest.raises(EvidenceRefusedError):
        s.manager.evidence_for(16, JUDGE)
    for duel_id, status in ((99, 404), (17, 404)):  # no such evidence; evidence of a duel never opened
        if duel_id == 17:
            s.store.put(StoredEvidence(17, "a", DATA, "4"))
        with pytest.raises(EvidenceRefusedError) as missing:
            s.manager.evidence_for(duel_id, JUDGE)
        assert missing.value.http_status == status


def test_a_judge_gathers_each_piece_from_whoever_holds_it(tmp_path: Path) -> None:
    s = make(tmp_path, me=JUDGE)
    state = judging(13)
    # The origin serves a forged A answer, A serves the right one, B its own.
    s.peers.served = {ORIGIN: {13: EvidencePieces(13, DATA, "3", None)}, A: {13: EvidencePieces(13, None, "4", None)},
                      B: {13: EvidencePieces(13, DATA, None, "5")}}
    pieces = asyncio.run(s.manager.gather(state))
    assert pieces == EvidencePieces(13, DATA, "4", "5") and pieces.complete
    assert sorted(s.peers.asked) == sorted([(ORIGIN, 13), (A, 13), (B, 13)])
    asyncio.run(s.manager.gather(state))
    assert len(s.peers.asked) == 3  # complete: nobody is asked again
    # Nobody serves anything but the chain has the request: only B's and A's answers are asked for.
    s2 = make(tmp_path / "2", me=JUDGE)
    s2.peers.served = {B: {13: EvidencePieces(13, None, None, "5")}}
    pieces = asyncio.run(s2.manager.gather(replace(state, published_request=DATA)))
    assert pieces == EvidencePieces(13, DATA, None, "5") and pieces.sources["request"] == "chain"


def test_the_challenger_runs_the_request_as_its_user_sent_it() -> None:
    from wwwserve.judge.manager import request_runner
    from wwwserve.node.backends.base import GenerationRequest, GenerationResult
    from wwwserve.node.errors import InvalidRequestError

    seen: list[GenerationRequest] = []

    async def generate(req: GenerationRequest) -> GenerationResult:
        seen.append(req)
        return GenerationResult("5", "stop", 3, 1)

    run = request_runner(generate)
    chat = {**REQUEST, "stop": ["\n"], "seed": 7, "top_p": 0.9}
    assert asyncio.run(run(request_bytes("chat", chat))) == "5"
    assert asyncio.run(run(request_bytes("completion", {"model": "m", "prompt": "2+2=", "max_tokens": 3}))) == "5"
    chat_req, completion_req = seen
    assert (chat_req.model, chat_req.messages, chat_req.max_tokens, chat_req.temperature, chat_req.top_p,
            chat_req.stop, chat_req.seed) == ("m", REQUEST["messages"], 8, 0.7, 0.9, ["\n"], 7)
    assert (completion_req.prompt, completion_req.max_tokens) == ("2+2=", 3)
    assert chat_req.request_id != completion_req.request_id  # fresh ids: never one a user request holds
    with pytest.raises(InvalidRequestError):
        asyncio.run(run(request_bytes("chat", {"model": "m", "messages": []})))


def test_evidence_being_written_stays_visible_and_a_second_flush_waits_for_it(setup: Setup) -> None:
    """A flush hands its batch to a thread; until the write commits, the pieces must still be found (a judge
    asking then was told the node held nothing), and a flush called meanwhile returns only once they are
    in the store."""
    import threading

    s = setup
    entered, release = threading.Event(), threading.Event()
    put_many = s.store.put_many

    def slow_put_many(items: Sequence[StoredEvidence], *, replace: bool = False) -> None:
        entered.set()
        release.wait(10)
        put_many(items, replace=replace)

    s.store.put_many = slow_put_many  # type: ignore[method-assign]

    async def go() -> None:
        s.manager._pending.append(StoredEvidence(21, "a", DATA, "4"))
        first = asyncio.create_task(s.manager.flush_evidence())
        await asyncio.to_thread(entered.wait, 10)  # the first write is under way, not committed
        assert s.manager._stored(21) is not None
        s.manager._pending.append(StoredEvidence(22, "a", DATA, "5"))
        second = asyncio.create_task(s.manager.flush_evidence())
        await asyncio.sleep(0)
        assert not second.done()
        release.set()
        await asyncio.gather(first, second)
        assert s.store.get(21) is not None and s.store.get(22) is not None
        assert s.manager._pending == []

    asyncio.run(go())


def test_the_duels_a_node_took_part_in_are_counted_by_role_and_outcome_when_they_end(tmp_path: Path) -> None:
    """`wwwserve_duel_outcomes_total{role,outcome}`: counted once, when a pass finds a duel it saw open over."""

    def counting(s: Setup) -> list[dict[str, str]]:
        ended: list[dict[str, str]] = []

        def count(name: str, **labels: str) -> None:
            if name == "wwwserve_duel_outcomes_total":
                ended.append(labels)

        s.manager._count = count
        return ended

    s = make(tmp_path, me=A)
    ended = counting(s)
    s.chain.duels = {11: judging(11), 12: judging(12, a=STRANGER), 13: awaiting(13, a=STRANGER, b=A),
                     14: judging(14, a=STRANGER, origin=STRANGER)}  # 12 and 14 are not this node's duels
    s.run()
    assert ended == []  # all open
    s.chain.duels[11] = replace(judging(11), status=DuelStatus.SETTLED, outcome=DuelOutcome.A_WON)
    s.chain.duels[13] = replace(awaiting(13, a=STRANGER, b=A), status=DuelStatus.CANCELLED)
    s.chain.duels[14] = replace(judging(14, a=STRANGER, origin=STRANGER), status=DuelStatus.SETTLED,
                                outcome=DuelOutcome.TIE)
    s.run()
    s.run()  # counted once
    assert sorted(ended, key=lambda labels: labels["role"]) == [
        {"role": "challenger", "outcome": "cancelled"}, {"role": "executor", "outcome": "a_won"}]
    origin = make(tmp_path, me=ORIGIN)
    ended = counting(origin)
    origin.chain.duels = {21: judging(21)}
    origin.run()
    origin.chain.duels[21] = replace(judging(21), status=DuelStatus.SETTLED, outcome=DuelOutcome.VOIDED)
    origin.run()
    assert ended == [{"role": "origin", "outcome": "void"}]
