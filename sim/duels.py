"""Duels on the contract's reference model: one engine for the simulator and the attack bench.

`DuelChain` is a network of staked nodes on a `ledger.model.WWWServeModel` (the executable
specification of contracts/core.vy) with a block clock; `DuelRun` takes one duel through the
contract's real lifecycle on it, step by step, at the blocks the contract's windows allow:

1. `open`: the origin holds executor A's `Work` attestation, signed with A's wallet key (a real
   secp256k1 key; `openDuel` recovers it), and the salt of its blind commitment to duel;
   `open_duel` escrows the fees and bonds A. The seed block is the next epoch's first block.
2. after the seed block: B is **the model's draw** (`draw_challenger`, stake and models frozen at the
   epoch's start, never the origin or A; both bonds are the smaller of DUEL_BOND and B's free stake);
   B answers (`answer_duel`), which draws the first panel: K seats with replacement by frozen stake,
   nobody excluded (the origin, A and B may hold seats in their own duel, and judge it like anyone).
   A zero answer hash ("I could not get the request") opens the publish window; the origin publishes
   the request or the duel is cancelled.
3. each seat holder commits (once for all its seats), then reveals after the commit window.
4. after the reveals the round-1 loser may `appeal` (its `AppealPolicy`): 2K+1 seats drawn at the next
   epoch's first block, commit and reveal again; that verdict is final.
5. `settle_duel`. The result says who gained and lost what, in wei, from the events the model emitted
   for this duel (each one is a balance change: escrow, appeal fee, slashes, payments).

Both drivers use these steps: the attack bench (`run_duel`) mines the clock from step to step; the
simulator (sim.network) calls them from its event loop at the simulated block height, and has B's
engine run the request between the draw and the answer.

What the model cannot know is which answer is better. Each node has a `quality` q in (0, 1), its win
rate against the field (the paper measured 0.57 / 0.53 / 0.39 for Qwen3-8B / 4B / 0.6B). An answer gets
a latent score `logit(q) + G` with G a standard Gumbel draw; the better of two answers is the one with
the higher score. Two Gumbels differ by a logistic variable, so A's answer beats B's with exactly the
"log5" head-to-head probability `q_a (1 - q_b) / (q_a (1 - q_b) + q_b (1 - q_a))` (`head_to_head`), and
an origin can estimate one answer's score before the other exists (the selection attacks need that).

Judges vote through a `JudgeStrategy`. The honest one follows docs/duels.md's evidence rules (no
request from anyone: no evidence; A's answer from nobody: B; B's from nobody: A) and otherwise votes for
the better answer with probability `accuracy` (else for the other). Every random number of a duel is
drawn up front from (chain seed, duel key), so two runs of one duel under different strategies see the
same answers, the same honest votes and, on the same stakes, the same draws (paired comparisons).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from wwwserve.ledger.model import (
    ZERO_ADDRESS,
    ZERO_HASH,
    CancelReason,
    DuelStatus,
    ModelEvent,
    ModelRevert,
    Outcome,
    Vote,
    WWWServeModel,
)
from wwwserve.ledger.params import DeploymentParams
from wwwserve.ledger.work import (
    WorkAttestation,
    answer_hash,
    inspect_commitment,
    model_hash,
    request_bytes,
    request_id_hash,
    sign_work,
)
from wwwserve.node import routing


class _Spec(Protocol):
    @property
    def quality(self) -> float: ...
    @property
    def initial_credit_wei(self) -> int: ...


class _Node(Protocol):
    """What the ledger reads of a simulated node (sim.network's node; this module does not import it)."""

    @property
    def address(self) -> str: ...
    @property
    def models(self) -> frozenset[str]: ...
    @property
    def spec(self) -> _Spec: ...


class _Clock(Protocol):
    @property
    def block_time_s(self) -> float: ...


class Simulation(Protocol):
    """What the ledger reads of the simulation that owns it."""

    @property
    def config(self) -> _Clock: ...
    @property
    def nodes(self) -> Sequence[_Node]: ...
    def block_hash(self, now_s: float) -> bytes: ...

__all__ = [
    "APPEAL_POLICIES",
    "CHAIN_ID",
    "CONTRACT_ADDRESS",
    "JUDGE_STRATEGIES",
    "AppealView",
    "ContractLedger",
    "DuelChain",
    "DuelRecord",
    "DuelResult",
    "DuelRun",
    "Evidence",
    "Member",
    "RoundRecord",
    "SeatView",
    "answer_score",
    "head_to_head",
    "run_duel",
]

CHAIN_ID = 31337
CONTRACT_ADDRESS = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
MAX_SEATS = 8  # the contract's MAX_SEATS: 2K+1 <= 7 appeal seats


def head_to_head(q_a: float, q_b: float) -> float:
    """P(a beats b) from their win rates against the field (log5)."""
    num = q_a * (1 - q_b)
    den = num + q_b * (1 - q_a)
    return 0.5 if den == 0 else num / den


def answer_score(quality: float, u: float) -> float:
    """An answer's latent score: logit(quality) + a standard Gumbel draw made from `u` in (0, 1)."""
    q = min(max(quality, 1e-9), 1 - 1e-9)
    u = min(max(u, 1e-300), 1 - 1e-16)
    return math.log(q / (1 - q)) - math.log(-math.log(u))


# ---- judge strategies and appeal policies ------------------------------------------------------------


@dataclass(frozen=True)
class SeatView:
    """What a judge sees when it votes: the duel, its round, and the vote honest judging gives it."""

    run: DuelRun
    judge: str
    round: int
    honest: Vote  # the evidence rules, then the better answer with probability `accuracy`
    coin: Vote  # a fair coin between A and B


JudgeStrategy = Callable[[SeatView], Vote | None]
"""A judge's vote for all its seats in a round; None: it commits but never reveals (silent)."""


def honest(view: SeatView) -> Vote | None:
    return view.honest


def abstain(view: SeatView) -> Vote | None:
    return Vote.ABSTAIN


def silent(view: SeatView) -> Vote | None:
    return None


def always_a(view: SeatView) -> Vote | None:
    return Vote.A


def coin_flip(view: SeatView) -> Vote | None:
    return view.coin


def no_evidence(view: SeatView) -> Vote | None:
    return Vote.NO_EVIDENCE


def colluding(coalition: Iterable[str], against: Iterable[str] = ()) -> JudgeStrategy:
    """Vote for a coalition member when one duels (A or B), against a target when one duels; else honestly."""
    members = frozenset(coalition)
    targets = frozenset(against)

    def vote(view: SeatView) -> Vote | None:
        run = view.run
        if run.a in members and run.b not in members:
            return Vote.A
        if run.b in members and run.a not in members:
            return Vote.B
        if run.a in targets and run.b not in targets:
            return Vote.B
        if run.b in targets and run.a not in targets:
            return Vote.A
        return view.honest

    return vote


JUDGE_STRATEGIES: dict[str, JudgeStrategy] = {
    "honest": honest, "abstain": abstain, "never_reveal": silent, "always_a": always_a, "coin_flip": coin_flip,
    "no_evidence": no_evidence,
}


@dataclass(frozen=True)
class AppealView:
    """What the round-1 loser sees when it may appeal."""

    run: DuelRun
    loser: str
    votes_for_winner: int  # seats
    votes_for_loser: int  # seats


AppealPolicy = Callable[[AppealView], bool]


def never_appeal(view: AppealView) -> bool:
    return False


def appeal_split(view: AppealView) -> bool:
    """Appeal a round-1 loss when at least one seat voted for us."""
    return view.votes_for_loser > 0


def appeal_always(view: AppealView) -> bool:
    return True


APPEAL_POLICIES: dict[str, AppealPolicy] = {"never": never_appeal, "split": appeal_split, "always": appeal_always}


@dataclass(frozen=True)
class Evidence:
    """Who serves what in one duel (docs/duels.md, Evidence). Honest parties serve everything."""

    origin_serves_request: bool = True  # to B and to the judges
    a_serves_request: bool = True
    origin_serves_answer_a: bool = True  # to the judges
    a_serves_answer_a: bool = True
    b_serves: bool = True  # B's answer (and the request it holds) to the judges
    origin_publishes: bool = True  # when B reports that nobody gave it the request

    @property
    def request_to_b(self) -> bool:
        return self.origin_serves_request or self.a_serves_request


HONEST_EVIDENCE = Evidence()
EvidencePolicy = Callable[["DuelRun"], Evidence]


# ---- the network -------------------------------------------------------------------------------------


@dataclass
class Member:
    """A node of the duel network: its wallet, what it serves, how it judges and appeals."""

    name: str
    account: LocalAccount
    address: str
    quality: float
    stake_wei: int  # the stake it keeps: topped up from credit after a duel took some (`restore_stakes`)
    serves: bool  # serves the duel model (can be A or B); a judge-only node serves another model
    judge: JudgeStrategy = honest
    appeal: AppealPolicy = never_appeal
    accuracy: float | None = None  # None: the chain's


@lru_cache(maxsize=4096)
def member_account(name: str) -> LocalAccount:
    """A stable wallet for a node name (its key is keccak of the name: a simulation key, never a real one)."""
    account: LocalAccount = Account.from_key(keccak(text=f"wwwserve-sim/{name}"))
    return account


class DuelChain:
    """A `WWWServeModel` with a block clock and a network of members on it."""

    def __init__(self, params: DeploymentParams, seed: str | int, *, model_name: str = "qwen3-8b",
                 accuracy: float = 0.9, block_time_s: float = 1.0,
                 blockhash: Callable[[int], bytes] | None = None, atomic: bool = False) -> None:
        self.params = params
        self.seed = str(seed)
        self.model = WWWServeModel(params, chain_id=CHAIN_ID, address=CONTRACT_ADDRESS)
        self.model.atomic = atomic  # the simulator never expects a revert: no per-call state copy
        self.model_name = model_name
        self.model_hash = model_hash(model_name)
        self.accuracy = accuracy
        self.block_time_s = block_time_s
        self.block = 0
        self._blockhash = blockhash
        self._hashes: dict[int, bytes] = {}
        self.members: dict[str, Member] = {}  # by address
        self.by_name: dict[str, Member] = {}

    # ---- clock
    def blockhash(self, number: int) -> bytes:
        """BLOCKHASH: a fixed function of (seed, number) unless the driver gave its own."""
        h = self._hashes.get(number)
        if h is None:
            h = (self._blockhash(number) if self._blockhash is not None
                 else bytes(keccak(f"wwwserve-sim-block/{self.seed}/{number}".encode())))
            self._hashes[number] = h
        return h

    @property
    def now_s(self) -> int:
        return int(self.block * self.block_time_s)

    def mine_to(self, block: int) -> None:
        if block < self.block:
            raise ValueError(f"the clock does not go back ({self.block} -> {block})")
        self.block = block

    # ---- members
    def add(self, name: str, *, stake_wei: int, quality: float = 0.5, credit_wei: int = 0, serves: bool = True,
            judge: JudgeStrategy = honest, appeal: AppealPolicy = never_appeal, accuracy: float | None = None,
            models: Sequence[str] | None = None) -> Member:
        """Register `name`, deposit `credit_wei + stake_wei` and stake `stake_wei` at the current block."""
        account = member_account(name)
        address = str(account.address)
        if models is None:
            models = [self.model_name] if serves else [f"{self.model_name}/judge-only"]
        member = Member(name, account, address, quality, stake_wei, serves, judge, appeal, accuracy)
        model = self.model
        model.register(address, bytes(keccak(text=f"pubkey/{name}")), f"sim://{name}", list(models), "",
                       block_number=self.block, value_wei=model.registration_value_wei(address))
        if credit_wei + stake_wei > 0:
            model.deposit(address, credit_wei + stake_wei)
        if stake_wei > 0:
            model.stake(address, stake_wei, block_number=self.block)
        self.members[address] = member
        self.by_name[name] = member
        return member

    def stake_of(self, address: str) -> int:
        """Slashable stake: active + unbonding."""
        return self.model.active_stake.get(address, 0) + self.model.unbonding_stake.get(address, 0)

    def credit_of(self, address: str) -> int:
        return self.model.credit.get(address, 0)

    def balances(self) -> dict[str, tuple[int, int]]:
        """Every member's (stake, credit), wei."""
        return {a: (self.stake_of(a), self.credit_of(a)) for a in self.members}

    def restore_stakes(self) -> None:
        """Each registered member stakes from credit back up to its `stake_wei` (after a slash)."""
        model = self.model
        for address, member in self.members.items():
            missing = member.stake_wei - model.active_stake.get(address, 0)
            if missing > 0 and model.nodes[address].active and model.credit.get(address, 0) >= missing:
                model.stake(address, missing, block_number=self.block)

    def peers(self) -> list[routing.Peer]:
        """What a live node's registry holds: every active member serving the model, by routable stake."""
        model, min_stake = self.model, self.params.min_stake_wei
        return [routing.Peer(a, routing.routable_stake_wei(model.active_stake.get(a, 0), min_stake),
                             frozenset((self.model_name,)), a)
                for a, m in self.members.items() if m.serves and model.nodes[a].active]

    def route(self, origin: str, request_id: str, peers: list[routing.Peer] | None = None) -> str | None:
        """The executor the origin's PoS routing asks first (`node.routing.candidates_for_delegation`)."""
        seed = routing.selection_seed(request_id, self.blockhash(self.block), 0)
        drawn = routing.candidates_for_delegation(self.peers() if peers is None else peers, origin, [], seed, 1,
                                                  self.model_name)
        return drawn[0].address if drawn else None


# ---- one duel ----------------------------------------------------------------------------------------


@dataclass
class RoundRecord:
    """One round's seats (draw order), each seat's vote (None: not revealed) and its honest vote."""

    seats: list[str]
    votes: list[Vote | None] = field(default_factory=list)
    honest_votes: list[Vote] = field(default_factory=list)

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
_OPEN, _CHALLENGER, _ANSWER, _COMMIT, _REVEAL, _APPEAL, _SETTLE, _DONE = (
    "open", "challenger", "answer", "commit", "reveal", "appeal", "settle", "done")


class DuelRun:
    """One duel through the contract's lifecycle; `advance()` runs the step due at `due_block`.

    `auto_answer`: B answers as soon as it is drawn (the bench). The simulator passes False, runs the
    request on B's engine and calls `b_answered()` when the answer is ready (if the answer window is
    over by then, the step due at its end settles the duel: B pays its bond for not answering).
    """

    def __init__(self, chain: DuelChain, origin: str, a: str, key: str, *, evidence: EvidencePolicy | None = None,
                 auto_answer: bool = True) -> None:
        self.chain = chain
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
        self.request = request_bytes("chat", {"model": chain.model_name, "max_tokens": 256,
                                              "messages": [{"role": "user", "content": key}]})
        self._awaiting_b = False

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
        work = WorkAttestation(self.origin, self.a, rid, bytes(keccak(self.request)), chain.model_hash,
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
            self._commit(self.chain.model.preview_judges(self.duel_id, block_number=self.chain.block,
                                                         blockhash=self.chain.blockhash))
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

    def _honest_vote(self, judge: str, round_: int, seat: int) -> Vote:
        ev = self.evidence
        request = ev.origin_serves_request or ev.a_serves_request or ev.b_serves
        answer_a = ev.origin_serves_answer_a or ev.a_serves_answer_a
        if not request or (not answer_a and not ev.b_serves):
            return Vote.NO_EVIDENCE
        if not answer_a:
            return Vote.B
        if not ev.b_serves:
            return Vote.A
        member = self.chain.members.get(judge)
        accuracy = self.chain.accuracy if member is None or member.accuracy is None else member.accuracy
        right = self._u_honest[round_ - 1][seat] < accuracy
        better = Vote.A if self.result.better == "a" else Vote.B
        return better if right else (Vote.B if better == Vote.A else Vote.A)

    def _commit(self, seats: list[str]) -> None:
        chain, model = self.chain, self.chain.model
        self.round = model.duels[self.duel_id].round
        record = RoundRecord(list(seats))
        for i, judge in enumerate(seats):
            record.honest_votes.append(self._honest_vote(judge, self.round, i))
        self.result.rounds.append(record)
        self._votes, self._salts = {}, {}
        first_seat: dict[str, int] = {}
        for i, judge in enumerate(seats):
            first_seat.setdefault(judge, i)
        for judge, i in first_seat.items():
            member = chain.members.get(judge)
            coin = Vote.A if self._u_coin[self.round - 1][i] < 0.5 else Vote.B
            view = SeatView(self, judge, self.round, record.honest_votes[i], coin)
            vote = (member.judge if member is not None else honest)(view)
            salt = bytes(keccak(text=f"{chain.seed}/{self.key}/{self.round}/{judge}"))
            self._votes[judge], self._salts[judge] = vote, salt
            commitment = model.vote_commitment(self.duel_id, self.round, judge, int(vote or Vote.A), salt)
            model.commit_vote(judge, self.duel_id, commitment, block_number=chain.block, blockhash=chain.blockhash)
        self.step, self.due_block = _REVEAL, model.duels[self.duel_id].deadline + 1

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
            elif e.name == "DuelRewardPaid":
                add(args["account"], 0, _int(args["amount"]))


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


# ---- the simulator's ledger ------------------------------------------------------------------------------


@dataclass
class DuelRecord:
    """One duel in the simulator (a CSV row), by node names."""

    duel_id: int
    opened_s: float
    origin: str
    a: str
    b: str = ""
    better: str = ""  # the answer drawn as better ("a" or "b")
    judges: tuple[str, ...] = ()  # the final round's seats
    votes: tuple[str, ...] = ()
    outcome: str = "open"
    stake_moved_wei: int = 0
    bond_wei: int = 0
    settled_s: float | None = None
    round: int = 0
    cancel_reason: str = ""


class ContractLedger:
    """The simulation's chain: a `DuelChain` whose clock is the simulated block height.

    The simulator's nodes are its members (quality from `NodeSpec.quality`, honest judges at
    `judge_accuracy`, appeals per `appeal`); their stake and credit live on the model.
    """

    def __init__(self, sim: Simulation, params: DeploymentParams, judge_accuracy: float, seed: int,
                 appeal: str = "never") -> None:
        self.sim = sim
        block_s = sim.config.block_time_s
        self.chain = DuelChain(params, f"sim/{seed}", accuracy=judge_accuracy, block_time_s=block_s,
                               blockhash=lambda n: sim.block_hash(n * block_s))
        self.model = self.chain.model
        self.address: dict[str, str] = {}
        self.name: dict[str, str] = {}
        self.duels: list[DuelRecord] = []
        self.by_id: dict[int, DuelRecord] = {}
        self.refused: dict[str, int] = {}  # openDuel's revert reasons, counted
        self.samples: list[tuple[float, dict[str, tuple[int, int]]]] = []
        policy = APPEAL_POLICIES[appeal]
        for node in sim.nodes:
            member = self.chain.add(node.address, stake_wei=0, quality=node.spec.quality,
                                    credit_wei=node.spec.initial_credit_wei, appeal=policy,
                                    models=sorted(node.models))
            self.address[node.address] = member.address
            self.name[member.address] = node.address

    # ---- balances
    def credit_wei(self, node: _Node) -> int:
        return self.model.credit.get(self.address[node.address], 0)

    def stake_wei(self, node: _Node) -> int:
        return self.model.active_stake.get(self.address[node.address], 0)

    def add_stake(self, node: _Node, amount_wei: int, now_s: float) -> int:
        """Stake `amount_wei` more from credit (as far as credit goes); returns what was staked."""
        amount = min(amount_wei, self.credit_wei(node))
        if amount > 0:
            self.tick(now_s)
            self.model.stake(self.address[node.address], amount, block_number=self.chain.block)
        return amount

    def sample(self, now_s: float) -> None:
        """Record every node's (stake, credit) at `now_s`."""
        self.samples.append((now_s, {n.address: (self.stake_wei(n), self.credit_wei(n)) for n in self.sim.nodes}))

    # ---- clock
    def block(self, now_s: float) -> int:
        return int(now_s // self.sim.config.block_time_s)

    def block_time(self, block: int) -> float:
        """When `block` is mined (the start of its slot)."""
        return block * self.sim.config.block_time_s

    def tick(self, now_s: float) -> None:
        self.chain.mine_to(max(self.chain.block, self.block(now_s)))

    # ---- duels
    def open(self, now_s: float, origin: _Node, a: _Node, request_id: str) -> DuelRun | None:
        """The origin opens a duel over A's answer (it committed to it before dispatching); None when the
        contract refuses (e.g. the origin cannot escrow the fees, A's free stake is below the bond)."""
        self.tick(now_s)
        run = DuelRun(self.chain, self.address[origin.address], self.address[a.address], request_id,
                      auto_answer=False)
        if not run.open():
            self.refused[run.result.refused] = self.refused.get(run.result.refused, 0) + 1
            return None
        record = DuelRecord(run.duel_id, now_s, origin.address, a.address)
        self.duels.append(record)
        self.by_id[run.duel_id] = record
        return run

    def advance(self, run: DuelRun, now_s: float) -> None:
        self.tick(now_s)
        run.advance()
        self._update(run, now_s)

    def b_answered(self, run: DuelRun, now_s: float) -> bool:
        self.tick(now_s)
        ok = run.b_answered()
        self._update(run, now_s)
        return ok

    def _update(self, run: DuelRun, now_s: float) -> None:
        record = self.by_id[run.duel_id]
        r = run.result
        name = self.name.get
        record.b = name(r.b, r.b) if r.b else ""
        record.better = r.better
        if r.rounds:
            last = r.rounds[-1]
            record.judges = tuple(name(s, s) for s in last.seats)
            record.votes = tuple("none" if v is None else v.name for v in last.votes)
        if run.done:
            record.outcome = r.outcome
            record.cancel_reason = r.cancel_reason
            record.stake_moved_wei = r.stake_moved_wei
            record.bond_wei = r.bond_wei
            record.round = r.final_round
            record.settled_s = now_s
