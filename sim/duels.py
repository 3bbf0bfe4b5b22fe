"""Duels in the simulator: the contract's own rules (its Python reference model) as the ledger.

With `SimConfig.contract` on, stake and credit live in `ledger.model.WWWServeModel`, the executable
specification of `contracts/WWWServe.vy` (the contract's property tests hold the two equal after every
step). The simulated nodes register, deposit and stake on it; routing weighs their active stake; and an
offloaded user request becomes a duel when the origin's policy says so (`Policy.should_inspect`, the
live node's draw). The duel then runs through the contract's lifecycle at the simulated block height:
`open_duel` (fees escrowed, duelists locked), `draw_judges` from the seed block's hash (sortition by
stake, never the origin or a duelist), `commit_vote`, `reveal_vote`, `settle_duel` (the loser's stake to
the winner, 20 % of a minority judge's stake and 5 % of a silent one's to the majority, fees paid).

What the simulator cannot know is which answer is better. Each node has a `quality` in (0, 1), the win
rate its class reaches against the field (the paper measured 0.57 / 0.53 / 0.39 for Qwen3-8B / 4B /
0.6B). A duel's better answer is drawn with the "log5" head-to-head probability
`p = q_a (1 - q_b) / (q_a (1 - q_b) + q_b (1 - q_a))`, and each judge votes for it with probability
`judge_accuracy` (else for the other).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eth_utils.address import to_checksum_address

from ledger.model import Vote, WWWServeModel
from ledger.params import DeploymentParams

if TYPE_CHECKING:
    from sim.network import Simulation, _Node

__all__ = ["ContractLedger", "DuelRecord", "head_to_head"]

CHAIN_ID = 31337
CONTRACT_ADDRESS = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def head_to_head(q_a: float, q_b: float) -> float:
    """P(a beats b) from their win rates against the field (log5)."""
    num = q_a * (1 - q_b)
    den = num + q_b * (1 - q_a)
    return 0.5 if den == 0 else num / den


def sim_address(name: str) -> str:
    """A stable EVM address for a simulated node."""
    return to_checksum_address(hashlib.sha256(b"wwwserve-sim/" + name.encode()).digest()[:20])


@dataclass
class DuelRecord:
    """One duel as it went (a CSV row)."""

    duel_id: int
    opened_s: float
    origin: str
    a: str
    b: str
    better: str  # the answer drawn as better ("a" or "b")
    judges: tuple[str, ...] = ()
    votes: tuple[str, ...] = ()
    outcome: str = "open"
    stake_moved_wei: int = 0
    settled_s: float | None = None


class ContractLedger:
    """The simulation's chain: a `WWWServeModel`, advanced by the simulated block height."""

    def __init__(self, sim: Simulation, params: DeploymentParams, judge_accuracy: float, seed: int) -> None:
        self.sim = sim
        self.model = WWWServeModel(params, chain_id=CHAIN_ID, address=CONTRACT_ADDRESS)
        self.judge_accuracy = judge_accuracy
        self.rng = random.Random(f"{seed}/duels")
        self.address = {node.address: sim_address(node.address) for node in sim.nodes}
        self.name = {address: name for name, address in self.address.items()}
        self.duels: list[DuelRecord] = []
        self.samples: list[tuple[float, dict[str, tuple[int, int]]]] = []
        for node in sim.nodes:
            address = self.address[node.address]
            pubkey = hashlib.sha256(b"pubkey/" + node.address.encode()).digest()
            self.model.register(address, pubkey, f"sim://{node.address}", sorted(node.models), "")
            self.model.deposit(address, node.spec.initial_credit_wei)

    # ---- balances -----------------------------------------------------------------------------

    def credit_wei(self, node: _Node) -> int:
        return self.model.credit.get(self.address[node.address], 0)

    def stake_wei(self, node: _Node) -> int:
        return self.model.active_stake.get(self.address[node.address], 0)

    def add_stake(self, node: _Node, amount_wei: int) -> int:
        """Stake `amount_wei` more from credit (as far as credit goes); returns what was staked."""
        amount = min(amount_wei, self.credit_wei(node))
        if amount > 0:
            self.model.stake(self.address[node.address], amount)
        return amount

    def sample(self, now_s: float) -> None:
        """Record every node's (stake, credit) at `now_s`."""
        self.samples.append((now_s, {n.address: (self.stake_wei(n), self.credit_wei(n)) for n in self.sim.nodes}))

    # ---- the duel lifecycle --------------------------------------------------------------------

    def block(self, now_s: float) -> int:
        return int(now_s // self.sim.config.block_time_s)

    def block_time(self, block: int) -> float:
        """When `block` is mined (the start of its slot)."""
        return block * self.sim.config.block_time_s

    def open(self, now_s: float, origin: _Node, a: _Node, b: _Node, request_id: str) -> DuelRecord | None:
        """Open a duel between the served answer (a) and the other (b); None when the contract refuses."""
        model = self.model
        question = hashlib.sha256(b"q/" + request_id.encode()).digest()
        try:
            duel_id = model.open_duel(self.address[origin.address], self.address[a.address], self.address[b.address],
                                      question, hashlib.sha256(b"a/" + question).digest(),
                                      hashlib.sha256(b"b/" + question).digest(), block_number=self.block(now_s))
        except Exception:  # ModelRevert: e.g. the origin cannot escrow the fees any more
            return None
        p_a = head_to_head(a.spec.quality, b.spec.quality)
        record = DuelRecord(duel_id, now_s, origin.address, a.address, b.address,
                            "a" if self.rng.random() < p_a else "b")
        self.duels.append(record)
        return record

    def draw(self, record: DuelRecord, now_s: float) -> list[str]:
        """Draw the judges (at a block after the seed block); [] when the duel was cancelled."""
        seed_block = self.model.duels[record.duel_id].info.seed_block
        blockhash = self.sim.block_hash(self.block_time(seed_block))
        judges = self.model.draw_judges(self.address[record.origin], record.duel_id,
                                        block_number=self.block(now_s), blockhash=blockhash)
        record.judges = tuple(self.name[j] for j in judges)
        if not judges:
            record.outcome = "cancelled"
        return judges

    def vote(self, record: DuelRecord, now_s: float) -> None:
        """Every judge commits its vote (the better answer with probability judge_accuracy)."""
        votes = []
        for judge in record.judges:
            right = self.rng.random() < self.judge_accuracy
            better = Vote.A if record.better == "a" else Vote.B
            vote = better if right else (Vote.B if better == Vote.A else Vote.A)
            votes.append(vote)
            salt = hashlib.sha256(f"{record.duel_id}/{judge}".encode()).digest()
            address = self.address[judge]
            self.model.commit_vote(address, record.duel_id, self.model.vote_commitment(record.duel_id, address,
                                                                                         int(vote), salt),
                                   block_number=self.block(now_s))
        record.votes = tuple(v.name for v in votes)

    def reveal_and_settle(self, record: DuelRecord, now_s: float) -> None:
        """Every judge reveals; the duel is settled at once (all revealed)."""
        block = self.block(now_s)
        for judge, vote in zip(record.judges, record.votes, strict=True):
            salt = hashlib.sha256(f"{record.duel_id}/{judge}".encode()).digest()
            self.model.reveal_vote(self.address[judge], record.duel_id, int(Vote[vote]), salt, block_number=block)
        result = self.model.settle_duel(self.address[record.origin], record.duel_id, block_number=block)
        record.outcome = result.outcome.name.lower()
        record.stake_moved_wei = result.stake_moved_wei
        record.settled_s = now_s
