"""What every attack cell shares: the network's constants, `Cell` (one printed row), and driving duels."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from eth_typing import Hash32

from duel_attacks.stats import Stat
from wwwserve.ledger.params import WEI_PER_CREDIT, DeploymentParams
from wwwserve.ledger.work import WorkAttestation, work_digest
from wwwserve.sim.duels import (
    CHAIN_ID,
    CONTRACT_ADDRESS,
    DuelChain,
    DuelResult,
    DuelRun,
)

T = TypeVar("T")

PARAMS = DeploymentParams()
CR = WEI_PER_CREDIT
STAKE = 1000 * CR  # an ordinary node's stake: 10 x MIN_STAKE, 50 bonds
CREDIT = 1_000_000 * CR  # enough free credit that no origin runs out of escrow
EPOCH = PARAMS.epoch_blocks
START_BLOCK = 2 * EPOCH  # registrations (block 0) serve the model from epoch 1
STRIDE = 6 * EPOCH  # the longest duel (publish window and appeal included) ends within 6 epochs
GRIND_TRIES = 23  # A3: the re-rolls the coalition needed at fcc8a9e (median)
JUDGE_CALLS = 2  # A9: an honest judge asks its model in both A/B orders
ATTACKS = ("H", "A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8", "A9", "A10")


# ---- cells ----------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One attack variant at one judge accuracy: what the bench prints and writes."""

    attack: str
    variant: str
    accuracy: float
    duels: int
    attacker: Stat | None  # attacker's profit per duel (wei)
    victim: Stat | None  # victim's change per duel (wei; negative: a loss)
    measured: str  # the quantity the criterion names, short
    verdict: str  # PASS, FAIL or INFO
    criterion: str
    details: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("attacker", "victim"):
            stat = getattr(self, key)
            out[key] = None if stat is None else {**asdict(stat), "mean_credits": stat.mean / CR,
                                                  "half_credits": stat.half / CR}
        return out


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# ---- driving duels ------------------------------------------------------------------------------------------


def new_chain(tag: str, seed: int, accuracy: float) -> DuelChain:
    """A fresh model; `tag` and `seed` fix its block hashes and every duel's random numbers, so two variants
    with the same tag see the same duels."""
    return DuelChain(PARAMS, f"{tag}/{seed}", accuracy=accuracy)


def field_nodes(chain: DuelChain, count: int, *, quality: float = 0.5, prefix: str = "h",
                stake_wei: int = STAKE) -> list[str]:
    """`count` honest nodes serving the model."""
    return [chain.add(f"{prefix}{i}", stake_wei=stake_wei, quality=quality, credit_wei=CREDIT).address
            for i in range(count)]


def origin_of(chain: DuelChain, i: int, origins: Sequence[str]) -> str:
    """The node a duel's user request entered (uniform over `origins`, the same in every variant)."""
    return random.Random(f"{chain.seed}/origin/{i}").choice(list(origins))


def drive(chain: DuelChain, run: DuelRun) -> DuelResult:
    """Mine from step to step until the duel is over."""
    while not run.done:
        chain.mine_to(max(chain.block, run.due_block))
        run.advance()
    return run.result


def play(chain: DuelChain, one: Callable[[int], T | None], n: int, warmup: int, *, stride: int = STRIDE) -> list[T]:
    """Duel i starts at START_BLOCK + i * stride; the first `warmup` are not kept, nor those `one` skips
    (None); stakes are restored from credit after each. Runs until `n` are kept."""
    out: list[T] = []
    i = 0
    while len(out) < n:
        if i > 50 * (n + warmup):
            raise RuntimeError("a cell keeps skipping its duels")
        chain.mine_to(START_BLOCK + i * stride)
        obs = one(i)
        chain.restore_stakes()
        if i >= warmup and obs is not None:
            out.append(obs)
        i += 1
    return out


def per_seed(seeds: Sequence[int], run: Callable[[int], list[T]]) -> tuple[list[T], list[int]]:
    """`run(seed)` for every seed: the observations pooled, and how many each seed gave (for the batches)."""
    pooled: list[T] = []
    groups: list[int] = []
    for seed in seeds:
        obs = run(seed)
        pooled += obs
        groups.append(len(obs))
    return pooled, groups


def refuse(chain: DuelChain, call: Callable[[], object]) -> str:
    """The contract's revert reason for `call` (on an atomic model), or 'accepted'."""
    from wwwserve.ledger.model import ModelRevert

    try:
        call()
    except ModelRevert as exc:
        return exc.reason or "(reverted without a reason)"
    return "accepted"


def forged(chain: DuelChain, run: DuelRun, signer_name: str) -> WorkAttestation:
    """A's attestation as `run` would have it, but signed with someone else's key."""
    work = run.attest()
    signer = chain.by_name[signer_name].account
    digest = work_digest(CHAIN_ID, CONTRACT_ADDRESS, work)
    signature = bytes(signer.unsafe_sign_hash(Hash32(digest)).signature)
    return WorkAttestation(**{**work.__dict__, "signature": signature})
