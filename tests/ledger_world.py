"""A deployed WWWServe pair driven through the ledger client, as nodes would drive it.

Shared by the client, error and indexer unit tests and the CLI integration test: `make_world()`
deploys WWWServeExt and WWWServe on an in-process py-evm chain with short windows, registers and
stakes a few nodes serving one model, and mines into the next epoch so their stake and models count
for draws; `World` also wraps any other chain (anvil) given a way to mine and to move time. `World`
plays a duel's steps the way nodes would: the origin opens it over A's signed work, the drawn
challenger answers, the drawn seats commit and reveal. Nothing here picks the challenger or the
judges (the contract draws them from block hashes): helpers find out who was drawn and act as them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3 import EthereumTesterProvider, Web3

from wwwserve.ledger.client import NO_REQUEST, TxResult, Vote, WWWServeClient
from wwwserve.ledger.params import WEI_PER_CREDIT, WEI_PER_ETH, DeploymentParams
from wwwserve.ledger.tx import TxSender
from wwwserve.ledger.work import (
    WorkAttestation,
    answer_hash,
    inspect_commitment,
    model_hash,
    request_bytes,
    request_id_hash,
)

C = WEI_PER_CREDIT
MODEL = "smollm2"
PARAMS = DeploymentParams(
    min_stake_wei=10 * C,
    unbonding_period_s=100,
    withdrawal_notice_s=50,
    k_judges=3,
    epoch_blocks=8,
    answer_window_blocks=4,
    # py-evm mines one transaction per block, and seats exclude nobody: an appeal's 2K+1 = 7 seats may
    # fall on all six nodes, so its draw and six commits (7 blocks, the most below EPOCH_BLOCKS) and
    # six reveals must fit
    commit_window_blocks=7,
    reveal_window_blocks=6,
    appeal_window_blocks=3,
    publish_window_blocks=3,
    attestation_ttl_s=100,
    duel_bond_wei=5 * C,
    duelist_fee_wei=C,
    judge_fee_wei=4 * C,
    judge_penalty_wei=8 * C,
    silent_penalty_wei=4 * C,
    reserve_payout_bps=100,
    tree_depth=4,
)
STAKE_WEI = 20 * C
DEPOSIT_WEI = WEI_PER_ETH
# an origin, its executor A, and four more nodes: the challenger and the judges are drawn from them
ROLES = ("origin", "a", "c1", "c2", "c3", "c4")


def pubkey_of(role: str) -> bytes:
    return keccak(text=f"ed25519 key of {role}")


@dataclass
class Duel:
    """An opened duel and what opened it (what `publish_request` needs again)."""

    duel_id: int
    work: WorkAttestation
    salt: bytes
    request: bytes
    opened: TxResult


@dataclass
class World:
    w3: Web3
    address: str
    extension: str
    deploy_block: int
    accounts: dict[str, LocalAccount]
    model: str = MODEL
    # how to mine n empty blocks and move the clock by s seconds (default: eth-tester's)
    mine_blocks: Callable[[int], None] | None = field(default=None, repr=False)
    advance_time: Callable[[int], None] | None = field(default=None, repr=False)

    # -- accounts -------------------------------------------------------------------------------
    def client(self, who: str | None = None) -> WWWServeClient:
        """A client acting as a role or an address (None: read-only)."""
        if who is None:
            return WWWServeClient(self.w3, self.address)
        return WWWServeClient(self.w3, self.address, TxSender(self.w3, self.account(who)))

    def account(self, who: str) -> LocalAccount:
        if who in self.accounts:
            return self.accounts[who]
        return next(a for a in self.accounts.values() if a.address == who)

    def addr(self, role: str) -> str:
        return str(self.accounts[role].address)

    def role_of(self, address: str) -> str:
        return next(role for role, a in self.accounts.items() if a.address == address)

    # -- time -----------------------------------------------------------------------------------
    def mine(self, blocks: int) -> None:
        if blocks <= 0:
            return
        if self.mine_blocks is not None:
            self.mine_blocks(blocks)
        else:
            self.w3.provider.ethereum_tester.mine_blocks(blocks)  # type: ignore[attr-defined]

    def mine_to(self, block: int) -> None:
        """Mine until the head is `block`: the next transaction lands in `block + 1`."""
        self.mine(block - self.w3.eth.block_number)

    def time_travel(self, seconds: int) -> None:
        if self.advance_time is not None:
            self.advance_time(seconds)
            return
        now = self.w3.eth.get_block("latest")["timestamp"]
        self.w3.provider.ethereum_tester.time_travel(now + seconds)  # type: ignore[attr-defined]

    # -- duels ----------------------------------------------------------------------------------
    def work(self, origin: str, a: str, tag: str, answer: str = "answer of A") -> tuple[WorkAttestation, bytes, bytes]:
        """A's signed work for the origin's request `tag`, with the origin's commitment to duel it:
        (work, inspect salt, request bytes)."""
        request = request_bytes("chat", {"model": self.model, "messages": [{"role": "user", "content": tag}],
                                         "max_tokens": 16})
        rid = request_id_hash(tag)
        salt = keccak(text=f"inspect salt {tag}")
        unsigned = WorkAttestation(
            origin=self.addr(origin), executor=self.addr(a), request_id=rid, request_hash=keccak(request),
            model_hash=model_hash(self.model), answer_hash=answer_hash(answer),
            inspect=inspect_commitment(rid, True, salt), issued_at=int(self.w3.eth.get_block("latest")["timestamp"]),
        )
        return self.client(a).sign_work(self.accounts[a], unsigned), salt, request

    def open_duel(self, tag: str, origin: str = "origin", a: str = "a") -> Duel:
        work, salt, request = self.work(origin, a, tag)
        opened = self.client(origin).open_duel(work, salt)
        assert opened.duel_id is not None
        return Duel(opened.duel_id, work, salt, request, opened)

    def challenger(self, duel_id: int) -> str:
        """Mine past the seed block and return who the contract draws as challenger."""
        info = self.client().duel(duel_id)
        self.mine_to(max(self.w3.eth.block_number, info.seed_block + 1))
        b = self.client().challenger_of(duel_id)
        assert b is not None, "no challenger could be drawn"
        return b

    def answer(self, duel_id: int, answer: bytes | None = None) -> TxResult:
        """The drawn challenger answers (`NO_REQUEST` says it could not get the request)."""
        b = self.challenger(duel_id)
        return self.client(b).answer_duel(duel_id, answer_hash("answer of B") if answer is None else answer)

    def no_request(self, duel_id: int) -> TxResult:
        return self.answer(duel_id, NO_REQUEST)

    def vote(self, duel_id: int, round: int, choose: Callable[[str], Vote | None],
             salt_tag: str = "") -> dict[str, Vote | None]:
        """Each distinct judge of the round commits `choose(judge)` and reveals it after the commit
        window (None: commits, never reveals). Returns the judges' choices."""
        c = self.client()
        info = c.duel(duel_id)
        judges = list(dict.fromkeys(info.judges_of(round)))
        choices = {j: choose(j) for j in judges}
        for j, v in choices.items():
            jc = self.client(j)
            jc.commit_vote(duel_id, jc.vote_commitment(duel_id, round, j, v or Vote.A, self.salt(duel_id, j, salt_tag)))
        assert info.commit_end_block is not None
        self.mine_to(info.commit_end_block)
        for j, v in choices.items():
            if v is not None:
                self.client(j).reveal_vote(duel_id, v, self.salt(duel_id, j, salt_tag))
        return choices

    @staticmethod
    def salt(duel_id: int, judge: str, tag: str = "") -> bytes:
        return keccak(text=f"vote salt {duel_id} {judge} {tag}")

    def settle_after_appeal_window(self, duel_id: int, settler: str = "c4") -> TxResult:
        info = self.client().duel(duel_id)
        assert info.appeal_end_block is not None
        self.mine_to(info.appeal_end_block)
        return self.client(settler).settle_duel(duel_id)


def make_world(roles: Iterable[str] = ROLES, stake_wei: int = STAKE_WEI, params: DeploymentParams = PARAMS) -> World:
    """Deploy, register and stake every role (and an unregistered `outsider`), then mine into the
    next epoch so the stake and the models count for draws."""
    w3 = Web3(EthereumTesterProvider())
    keys = w3.provider.ethereum_tester.backend.account_keys  # type: ignore[attr-defined]
    roles = tuple(roles)
    names = ("deployer", *roles, "outsider")
    accounts = {role: Account.from_key(keys[i].to_bytes()) for i, role in enumerate(names)}
    deployed = WWWServeClient.deploy_contracts(w3, TxSender(w3, accounts["deployer"]), params)
    world = World(w3=w3, address=deployed.address, extension=deployed.extension,
                  deploy_block=deployed.block_number, accounts=accounts)
    for role in roles:
        c = world.client(role)
        c.deposit(DEPOSIT_WEI)
        c.register(pubkey_of(role), f"http://{role}.example:8000", [MODEL, f"model-{role}"], f"meta {role}")
        c.stake(stake_wei)
    world.mine(params.epoch_blocks)
    return world
