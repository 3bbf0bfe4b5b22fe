"""The duel network: a `WWWServeModel` (the contract's executable specification) with a block clock, and the
staked members on it (see sim.duels)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from wwwserve.ledger.model import WWWServeModel
from wwwserve.ledger.params import DeploymentParams
from wwwserve.ledger.work import model_hash
from wwwserve.node import routing
from wwwserve.sim.config import ONE_ORDER_JUDGE, JudgeBehaviour
from wwwserve.sim.duels.judging import AppealPolicy, JudgeStrategy, honest, never_appeal

__all__ = ["CHAIN_ID", "CONTRACT_ADDRESS", "DuelChain", "Member", "member_account"]

CHAIN_ID = 31337
CONTRACT_ADDRESS = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


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
    behaviour: JudgeBehaviour | None = None  # None: the chain's


@lru_cache(maxsize=4096)
def member_account(name: str) -> LocalAccount:
    """A stable wallet for a node name (its key is keccak of the name: a simulation key, never a real one)."""
    account: LocalAccount = Account.from_key(keccak(text=f"wwwserve-sim/{name}"))
    return account


class DuelChain:
    """A `WWWServeModel` with a block clock and a network of members on it."""

    def __init__(self, params: DeploymentParams, seed: str | int, *, model_name: str = "qwen3-8b",
                 accuracy: float = 0.9, judges: JudgeBehaviour = ONE_ORDER_JUDGE, block_time_s: float = 1.0,
                 blockhash: Callable[[int], bytes] | None = None, atomic: bool = False) -> None:
        self.params = params
        self.seed = str(seed)
        self.model = WWWServeModel(params, chain_id=CHAIN_ID, address=CONTRACT_ADDRESS)
        self.model.atomic = atomic  # the simulator never expects a revert: no per-call state copy
        self.model_name = model_name
        self.model_hash = model_hash(model_name)
        self.accuracy = accuracy  # per A/B order (one order: per vote)
        self.judges = judges  # how honest judges turn seats into votes (sim.config.JudgeBehaviour)
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
            models: Sequence[str] | None = None, behaviour: JudgeBehaviour | None = None) -> Member:
        """Register `name`, deposit `credit_wei + stake_wei` and stake `stake_wei` at the current block."""
        account = member_account(name)
        address = str(account.address)
        if models is None:
            models = [self.model_name] if serves else [f"{self.model_name}/judge-only"]
        member = Member(name, account, address, quality, stake_wei, serves, judge, appeal, accuracy, behaviour)
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
