"""One duel through the contract's real lifecycle on a `DuelChain`, step by step at the blocks the contract's
windows allow (`DuelRun`), and `run_duel`, which mines the clock from step to step (see sim.duels). A
driver that models how long judges take sets `DuelRun.judge_work` (the simulator: sim.network_duels)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from eth_utils.crypto import keccak

from wwwserve.ledger.model import (
    ZERO_ADDRESS,
    ZERO_HASH,
    CancelReason,
    DuelStatus,
    ModelEvent,
    ModelRevert,
    Outcome,
    SlashReason,
    Vote,
)
from wwwserve.ledger.work import (
    WorkAttestation,
    answer_hash,
    inspect_commitment,
    model_hash,
    request_bytes,
    request_id_hash,
    sign_work,
)
from wwwserve.sim.config import JudgeBehaviour
from wwwserve.sim.duels.chain import CHAIN_ID, CONTRACT_ADDRESS, DuelChain
from wwwserve.sim.duels.judging import (
    HONEST_EVIDENCE,
    AppealView,
    Evidence,
    SeatView,
    answer_score,
    honest,
    honest_vote,
)

__all__ = ["DuelResult", "DuelRun", "EvidencePolicy", "JudgeWork", "RoundRecord", "run_duel"]

MAX_SEATS = 8  # the contract's MAX_SEATS: 2K+1 <= 7 appeal seats

EvidencePolicy = Callable[["DuelRun"], Evidence]

JudgeWork = Callable[["DuelRun", str, bool], Callable[[], bool]]
"""(Simulator) `judge_work(run, judge, asks_model)`: a seat holder starts deciding its vote for the round
whose seats were just drawn (`asks_model`: with every piece of evidence in hand it asks its model in both
A/B orders; else the evidence alone decides). The check it returns says, when the last block of the
commit window is mined, whether the decision is ready: a judge that is not ready stays silent."""


@dataclass
class RoundRecord:
    """One round's seats (draw order), each seat's vote (None: not revealed) and its honest vote; `late`: the
    seat holders whose decision was not ready when the commit window closed (silent; `DuelRun.judge_work`)."""

    seats: list[str]
    votes: list[Vote | None] = field(default_factory=list)
    honest_votes: list[Vote] = field(default_factory=list)
    late: list[str] = field(default_factory=list)

    def verdict(self, honest_only: bool = False) -> Outcome:
        """The seat majority (the contract's tally) of the votes cast, or of the honest votes."""
        votes = self.honest_votes if honest_only else self.votes
        n_a = sum(v == Vote.A for v in votes)
        n_b = sum(v == Vote.B for v in votes)
        if sum(v == Vote.NO_EVIDENCE for v in votes) * 2 > len(votes):
            return Outcome.VOIDED
        return Outcome.A_WON if n_a > n_b else Outcome.B_WON if n_b > n_a else Outcome.TIE


@dataclass
class DuelResult:
    """What happened in one duel, and who gained or lost what (wei) through it."""

    key: str
    origin: str
    a: str
    duel_id: int = 0
    b: str = ""
    better: str = ""  # "a" or "b": whose answer is better (once B is drawn)
    outcome: str = "open"  # a_won, b_won, tie, voided, cancelled, refused
    cancel_reason: str = ""
    refused: str = ""  # the contract's revert reason when open_duel refused
    final_round: int = 0
    appealed_by: str = ""
    rounds: list[RoundRecord] = field(default_factory=list)
    stake_moved_wei: int = 0
    bond_wei: int = 0  # what each duelist had at risk (DUEL_BOND, or less when B's free stake was short)
    opened_block: int = 0
    settled_block: int = 0
    # address -> [stake change, credit change], wei, from this duel's events
    delta: dict[str, list[int]] = field(default_factory=dict)
    slashes: list[tuple[str, SlashReason, int]] = field(default_factory=list)  # (node, why, wei), event order

    def change_wei(self, address: str) -> int:
        """Stake + credit change of `address` through this duel."""
        d = self.delta.get(address)
        return 0 if d is None else d[0] + d[1]

    def group_change_wei(self, addresses: Iterable[str]) -> int:
        return sum(self.change_wei(a) for a in set(addresses))

    @property
    def reserve_change_wei(self) -> int:
        """What the reserve gained from this duel (money is conserved: minus every node's change)."""
        return -sum(s + c for s, c in self.delta.values())

    def seats_of(self, addresses: Iterable[str], round_: int = 1) -> int:
        if len(self.rounds) < round_:
            return 0
        who = set(addresses)
        return sum(s in who for s in self.rounds[round_ - 1].seats)


# step names
_OPEN, _CHALLENGER, _ANSWER, _COMMIT, _DECIDED, _REVEAL, _APPEAL, _SETTLE, _DONE = (
    "open", "challenger", "answer", "commit", "decided", "reveal", "appeal", "settle", "done")


class DuelRun:
    """One duel through the contract's lifecycle; `advance()` runs the step due at `due_block`.

    `auto_answer`: B answers as soon as it is drawn (the bench). The simulator passes False, runs the
    request on B's engine and calls `b_answered()` when the answer is ready (if the answer window is
    over by then, the step due at its end settles the duel: B pays its bond for not answering).

    `judge_work` (the simulator sets it once the duel is open): judges take time to decide. Without it
    (the bench) every seat holder commits the moment its round's seats are drawn. With it each one starts
    its work then, and commits at the last block of the commit window only if its decision is ready by
    then (the live judge commits as soon as it has decided; one still waiting for its model when the
    window closes never commits, and the seat is silent).
    """

    def __init__(self, chain: DuelChain, origin: str, a: str, key: str, *, evidence: EvidencePolicy | None = None,
                 auto_answer: bool = True, model: str | None = None) -> None:
        self.chain = chain
        self.model = chain.model_name if model is None else model  # the request's model (the chain's by default)
        self.origin = origin
        self.a = a
        self.b = ""
        self.key = key
        self.evidence_policy = evidence
        self.evidence = HONEST_EVIDENCE
        self.auto_answer = auto_answer
        self.result = DuelResult(key, origin, a)
        rng = random.Random(f"{chain.seed}/duel/{key}")
        # Drawn up front, in a fixed order: A's and B's answers, the origin's estimates, per round and
        # seat an honest judge's coin and a fair coin.
        self._u_a, self._u_b, self._u_ref, self._u_est = rng.random(), rng.random(), rng.random(), rng.random()
        self._u_honest = [[rng.random() for _ in range(MAX_SEATS)] for _ in range(2)]
        self._u_coin = [[rng.random() for _ in range(MAX_SEATS)] for _ in range(2)]
        # What a `JudgeBehaviour` adds, from a stream of its own (the draws above stay as they were): per round
        # and seat the swapped order's reply, each order's kind (no letter / first shown / read), no evidence,
        # a missed reveal. Drawn when a round's seats are, only for behaviours that use them.
        self._u_judge: dict[int, list[tuple[float, float, float, float, float]]] = {}
        self.score_a = answer_score(chain.members[a].quality, self._u_a) if a in chain.members else 0.0
        self.score_b = 0.0
        self.duel_id = 0
        self.step = _OPEN
        self.due_block = chain.block
        self.round = 0
        self._votes: dict[str, Vote | None] = {}
        self._salts: dict[str, bytes] = {}
        self._work: WorkAttestation | None = None
        self._salt = bytes(keccak(text=f"{chain.seed}/inspect/{key}"))
        self.request = request_bytes("chat", {"model": self.model, "max_tokens": 256,
                                              "messages": [{"role": "user", "content": key}]})
        self._awaiting_b = False
        self.judge_work: JudgeWork | None = None
        self._ready: dict[str, Callable[[], bool]] = {}  # seat holder -> is its decision in (judge_work)

    # ---- what strategies may ask
    @property
    def done(self) -> bool:
        return self.step == _DONE

    @property
    def better(self) -> str:
        return self.result.better

    def estimate_a_bad(self, accuracy: float) -> bool:
        """The origin's noisy look at A's answer before opening: it compares it with a typical answer of
        the field (quality 0.5) and is right with probability `accuracy`. True: A's looks the worse."""
        truly_bad = self.score_a < answer_score(0.5, self._u_ref)
        return truly_bad if self._u_est < accuracy else not truly_bad

    # ---- the steps
    @property
    def inspect_salt(self) -> bytes:
        return self._salt

    def attest(self, wants_duel: bool = True) -> WorkAttestation:
        """The Work attestation A signs with its wallet key when it answers, at the current block: over
        the origin's request (canonical bytes, sampling parameters included), its answer and the
        origin's blind commitment to duel (`wants_duel`)."""
        chain = self.chain
        rid = request_id_hash(self.key)
        work = WorkAttestation(self.origin, self.a, rid, bytes(keccak(self.request)), model_hash(self.model),
                               answer_hash(f"{self.a}/{self.key}"), inspect_commitment(rid, wants_duel, self._salt),
                               chain.now_s)
        return sign_work(chain.members[self.a].account, CHAIN_ID, CONTRACT_ADDRESS, work)

    def open(self, wants_duel: bool = True, work: WorkAttestation | None = None) -> bool:
        """The origin opens the duel at the current block over A's signed work (`attest`, or `work`);
        False when the contract refuses (`result.refused` holds its reason)."""
        chain, model = self.chain, self.chain.model
        work = self.attest(wants_duel) if work is None else work
        self._work = work
        self.result.opened_block = chain.block
        try:
            self.duel_id = model.open_duel(self.origin, work, self._salt, now_s=chain.now_s, block_number=chain.block)
        except ModelRevert as exc:
            self.result.outcome, self.result.refused = "refused", exc.reason or "(no reason)"
            self.step = _DONE
            return False
        self.result.duel_id = self.duel_id
        self._book(model.events)
        self.step, self.due_block = _CHALLENGER, model.duels[self.duel_id].seed_block + 1
        return True

    def advance(self) -> None:
        """Run the step due now (`chain.block >= due_block`)."""
        if self.chain.block < self.due_block:
            raise ValueError(f"step {self.step} is due at block {self.due_block}, now {self.chain.block}")
        step = self.step
        if step == _CHALLENGER:
            self._challenger()
        elif step == _ANSWER:
            self._answer()
        elif step == _COMMIT:
            self._commit(self._appeal_seats())
        elif step == _DECIDED:
            self._commit_ready()
        elif step == _REVEAL:
            self._reveal()
        elif step == _APPEAL:
            self._appeal()
        elif step == _SETTLE:
            self._settle()
        else:
            raise ValueError(f"no step to run ({step})")

    def b_answered(self) -> bool:
        """(Simulator) B's answer is ready now; False when the answer window is already over."""
        if not self._awaiting_b or self.chain.block > self.chain.model.duels[self.duel_id].deadline:
            return False
        self._answer()
        return True

    def _challenger(self) -> None:
        chain, model = self.chain, self.chain.model
        b = model.draw_challenger(self.origin, self.duel_id, block_number=chain.block, blockhash=chain.blockhash)
        self._book(model.events)
        if b == ZERO_ADDRESS:
            self._finish_cancelled()
            return
        self.b = self.result.b = b
        member = chain.members.get(b)
        self.score_b = answer_score(member.quality if member else 0.5, self._u_b)
        self.result.better = "a" if self.score_a > self.score_b else "b"
        self.evidence = self.evidence_policy(self) if self.evidence_policy is not None else HONEST_EVIDENCE
        self.step = _ANSWER
        if self.auto_answer:
            self._answer()
        else:  # the simulator calls b_answered() when B's engine is done; if it never is, B did not answer
            self.due_block, self.step = model.duels[self.duel_id].deadline + 1, _SETTLE
            self._awaiting_b = True

    def _answer(self) -> None:
        chain, model = self.chain, self.chain.model
        self._awaiting_b = False
        duel = model.duels[self.duel_id]
        if not self.evidence.request_to_b and duel.status == DuelStatus.AWAITING_ANSWER:
            model.answer_duel(self.b, self.duel_id, ZERO_HASH, block_number=chain.block, blockhash=chain.blockhash)
            self._book(model.events)
            if self.evidence.origin_publishes and self._work is not None:
                model.publish_request(self.origin, self.duel_id, self._work, self._salt, self.request,
                                      block_number=chain.block)
                self._book(model.events)
                self.evidence = Evidence(b_serves=self.evidence.b_serves)  # B now reads it from the chain
                self.step, self.due_block = _ANSWER, duel.seed_block + 1
            else:
                self.step, self.due_block = _SETTLE, duel.deadline + 1
            return
        seats = model.answer_duel(self.b, self.duel_id, answer_hash(f"{self.b}/{self.key}"),
                                  block_number=chain.block, blockhash=chain.blockhash)
        self._book(model.events)
        if not seats:  # no judge stake: cancelled
            self._finish_cancelled()
            return
        self._commit(seats)

    def _evidence_rule(self) -> Vote | None:
        """The vote the evidence alone decides (docs/duels.md: no request from anyone, no evidence; A's
        answer from nobody, B; B's from nobody, A); None when every piece is there for the model."""
        ev = self.evidence
        request = ev.origin_serves_request or ev.a_serves_request or ev.b_serves
        answer_a = ev.origin_serves_answer_a or ev.a_serves_answer_a
        if not request or (not answer_a and not ev.b_serves):
            return Vote.NO_EVIDENCE
        if not answer_a:
            return Vote.B
        if not ev.b_serves:
            return Vote.A
        return None

    def _asks_model(self, judge: str, round_: int, seat: int) -> bool:
        """Whether an honest judge of this seat asks its model (every piece in hand, and it got the request)."""
        if self._evidence_rule() is not None:
            return False
        drawn = self._u_judge.get(round_)
        return drawn is None or drawn[seat][3] >= self._behaviour(judge).no_evidence

    def _honest_vote(self, judge: str, round_: int, seat: int) -> Vote:
        ruled = self._evidence_rule()
        if ruled is not None:
            return ruled
        member = self.chain.members.get(judge)
        accuracy = self.chain.accuracy if member is None or member.accuracy is None else member.accuracy
        behaviour = self._behaviour(judge)
        u_right = self._u_honest[round_ - 1][seat]
        drawn = self._u_judge.get(round_)
        if drawn is None:
            return honest_vote(Vote.A if self.result.better == "a" else Vote.B, accuracy, behaviour,
                               (1.0, u_right, 1.0, u_right))
        kind_1, kind_2, right_2, no_evidence, _ = drawn[seat]
        if no_evidence < behaviour.no_evidence:  # it could not get the request in time
            return Vote.NO_EVIDENCE
        return honest_vote(Vote.A if self.result.better == "a" else Vote.B, accuracy, behaviour,
                           (kind_1, u_right, kind_2, right_2))

    def _behaviour(self, judge: str) -> JudgeBehaviour:
        member = self.chain.members.get(judge)
        return self.chain.judges if member is None or member.behaviour is None else member.behaviour

    def _draw_judges(self, round_: int, seats: list[str]) -> None:
        """The behaviour's draws for a round, when any seat holder's behaviour uses them."""
        if round_ in self._u_judge:
            return
        if all(_plain(self._behaviour(j)) for j in set(seats)):
            return
        rng = random.Random(f"{self.chain.seed}/judges/{self.key}/{round_}")
        self._u_judge[round_] = [(rng.random(), rng.random(), rng.random(), rng.random(), rng.random())
                                 for _ in range(MAX_SEATS)]

    def _appeal_seats(self) -> list[str]:
        """Round 2's seats, once its seed block is mined. With `judge_work` the origin draws them now
        (`drawJudges`, as the live origin does: a judge learns it holds a seat only once they are drawn, and
        a round nobody commits in keeps its panel); the bench leaves the draw to the first commit."""
        chain, model = self.chain, self.chain.model
        if self.judge_work is None:
            return model.preview_judges(self.duel_id, block_number=chain.block, blockhash=chain.blockhash)
        try:
            return model.draw_judges(self.origin, self.duel_id, block_number=chain.block, blockhash=chain.blockhash)
        except ModelRevert:  # no judge stake: settlement lets round 1 stand
            return []

    def _commit(self, seats: list[str]) -> None:
        """A round's seats are drawn: each seat holder decides its vote (once for all its seats) and commits
        it, at once (the bench) or when its decision is ready (`judge_work`, see `_commit_ready`)."""
        model = self.chain.model
        self.round = model.duels[self.duel_id].round
        record = RoundRecord(list(seats))
        self._draw_judges(self.round, seats)
        for i, judge in enumerate(seats):
            record.honest_votes.append(self._honest_vote(judge, self.round, i))
        self.result.rounds.append(record)
        self._votes, self._salts, self._ready = {}, {}, {}
        first_seat: dict[str, int] = {}
        for i, judge in enumerate(seats):
            first_seat.setdefault(judge, i)
        for judge, i in first_seat.items():
            member = self.chain.members.get(judge)
            coin = Vote.A if self._u_coin[self.round - 1][i] < 0.5 else Vote.B
            view = SeatView(self, judge, self.round, record.honest_votes[i], coin)
            vote = (member.judge if member is not None else honest)(view)
            drawn = self._u_judge.get(self.round)
            if drawn is not None and drawn[i][4] < self._behaviour(judge).silent:
                vote = None  # it commits, then misses the reveal window (busy, offline): SILENT_PENALTY
            self._votes[judge] = vote
            self._salts[judge] = bytes(keccak(text=f"{self.chain.seed}/{self.key}/{self.round}/{judge}"))
        deadline = model.duels[self.duel_id].deadline
        if self.judge_work is None:
            for judge in first_seat:
                self._commit_vote(judge)
            self.step, self.due_block = _REVEAL, deadline + 1
            return
        for judge, i in first_seat.items():
            self._ready[judge] = self.judge_work(self, judge, self._asks_model(judge, self.round, i))
        self.step, self.due_block = _DECIDED, deadline

    def _commit_ready(self) -> None:
        """(`judge_work`) The last block of the commit window: every seat holder whose decision is ready has
        committed it; the others never commit (their seats are silent, `RoundRecord.late`)."""
        record = self.result.rounds[-1]
        for judge in self._votes:
            if self._ready[judge]():
                self._commit_vote(judge)
            else:
                self._votes[judge] = None
                record.late.append(judge)
        self.step, self.due_block = _REVEAL, self.chain.model.duels[self.duel_id].deadline + 1

    def _commit_vote(self, judge: str) -> None:
        chain, model = self.chain, self.chain.model
        vote, salt = self._votes[judge], self._salts[judge]
        commitment = model.vote_commitment(self.duel_id, self.round, judge, int(vote or Vote.A), salt)
        model.commit_vote(judge, self.duel_id, commitment, block_number=chain.block, blockhash=chain.blockhash)

    def _reveal(self) -> None:
        chain, model = self.chain, self.chain.model
        for judge, vote in self._votes.items():
            if vote is not None:
                model.reveal_vote(judge, self.duel_id, int(vote), self._salts[judge], block_number=chain.block)
        record = self.result.rounds[-1]
        record.votes = [self._votes[j] for j in record.seats]
        reveal_end = model.reveal_end(self.duel_id)
        if self.round == 1:
            self.step, self.due_block = _APPEAL, reveal_end + 1
        else:
            self.step, self.due_block = _SETTLE, reveal_end + 1

    def _appeal(self) -> None:
        chain, model = self.chain, self.chain.model
        outcome, n_a, n_b, _ = model.duels[self.duel_id].panels[1].tally()
        reveal_end = model.reveal_end(self.duel_id)
        if outcome in (Outcome.A_WON, Outcome.B_WON):
            loser = self.a if outcome == Outcome.B_WON else self.b
            view = AppealView(self, loser, max(n_a, n_b), min(n_a, n_b))
            member = chain.members.get(loser)
            if (member is not None and member.appeal(view)
                    and model.credit.get(loser, 0) >= model.appeal_fee_wei):
                model.appeal(loser, self.duel_id, block_number=chain.block)
                self._book(model.events)
                self.result.appealed_by = loser
                self.step, self.due_block = _COMMIT, model.duels[self.duel_id].seed_block + 1
                return
        self.step, self.due_block = _SETTLE, reveal_end + self.chain.params.appeal_window_blocks + 1

    def _settle(self) -> None:
        chain, model = self.chain, self.chain.model
        result = model.settle_duel(self.origin, self.duel_id, block_number=chain.block)
        self._book(model.events)
        r = self.result
        r.settled_block = chain.block
        r.bond_wei = model.duels[self.duel_id].bond_wei
        r.stake_moved_wei = result.stake_moved_wei
        r.final_round = result.round
        if result.cancelled is not None:
            r.outcome, r.cancel_reason = "cancelled", result.cancelled.name.lower()
        else:
            r.outcome = result.outcome.name.lower()
        self.step = _DONE

    def _finish_cancelled(self) -> None:
        self.result.outcome = "cancelled"
        for event in self.chain.model.events:
            if event.name == "DuelCancelled":
                self.result.cancel_reason = CancelReason(_int(event.args["reason"])).name.lower()
        self.result.settled_block = self.chain.block
        self.step = _DONE

    def _book(self, events: Sequence[ModelEvent]) -> None:
        """Every balance change this duel's call made, from its events."""
        delta = self.result.delta

        def add(who: object, stake: int, credit: int) -> None:
            d = delta.setdefault(str(who), [0, 0])
            d[0] += stake
            d[1] += credit

        for e in events:
            args = e.args
            if e.name == "DuelOpened":
                add(args["origin"], 0, -_int(args["escrow"]))
            elif e.name == "DuelAppealed":
                add(args["appellant"], 0, -_int(args["deposit"]))
            elif e.name == "StakeSlashed":
                add(args["node"], -_int(args["amount"]), 0)
                self.result.slashes.append((str(args["node"]), SlashReason(_int(args["reason"])), _int(args["amount"])))
            elif e.name == "DuelRewardPaid":
                add(args["account"], 0, _int(args["amount"]))


def _plain(behaviour: JudgeBehaviour) -> bool:
    """One order, nothing but accuracy: the behaviour needs no draws of its own."""
    return not (behaviour.two_orders or behaviour.position_bias or behaviour.no_letter or behaviour.no_evidence
                or behaviour.silent)


def _int(value: object) -> int:
    assert isinstance(value, int)
    return value


def run_duel(chain: DuelChain, origin: str, a: str, key: str, *, evidence: EvidencePolicy | None = None,
             wants_duel: bool = True, work: WorkAttestation | None = None,
             before_open: Callable[[DuelRun], None] | None = None) -> DuelResult:
    """Open a duel at the current block and mine through its whole lifecycle; the result."""
    run = DuelRun(chain, origin, a, key, evidence=evidence)
    if before_open is not None:
        before_open(run)
    if run.open(wants_duel, work):
        while not run.done:
            chain.mine_to(max(chain.block, run.due_block))
            run.advance()
    return run.result
