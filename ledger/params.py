"""Deployment parameters of the WWWServe contract (fixed at deployment; there is no owner)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

WEI_PER_ETH = 10**18
# Chain ids of local development chains: anvil and hardhat (31337), geth --dev and ganache (1337). Public
# keys are used on these alone (devnet.deploy), and nodes connect to private addresses on them only
# (node.endpoints).
DEVNET_CHAIN_IDS = frozenset({31337, 1337})
# Display unit for fees: the reference code's "1 credit". Amounts on-chain are always wei.
WEI_PER_CREDIT = 10**15


@dataclass(frozen=True)
class DeploymentParams:
    """Constructor arguments of WWWServe.vy (and WWWServeExt.vy), in constructor order. Money in wei,
    windows in blocks, periods in seconds. docs/threat-model.md says why each default is what it is."""

    min_stake_wei: int = 100 * WEI_PER_CREDIT
    unbonding_period_s: int = 600
    withdrawal_notice_s: int = 300
    k_judges: int = 3
    # Draws in an epoch read the stake tree as it stood when the epoch began.
    epoch_blocks: int = 40
    # The challenger fetches the request, runs it and commits its answer's hash in this many blocks
    # (SmolLM2 on 2 CPU cores needs ~20 s for a 256-token answer at 1 s blocks). It ends inside the
    # epoch with blocks to spare: settling a no-show then can still work out who the challenger was.
    answer_window_blocks: int = 28
    commit_window_blocks: int = 30
    reveal_window_blocks: int = 10
    appeal_window_blocks: int = 10
    publish_window_blocks: int = 20
    # Work can be dueled this long after its executor signed it (<= the unbonding period, so no
    # executor can unstake and leave before its last answer stops being dueled).
    attestation_ttl_s: int = 300
    # What each duelist puts at risk. Large enough that a random responder loses money at
    # p_inspect 0.1 (bond x 0.1 > the 1-credit fee it earns per request), small enough against the
    # duel's escrow that an origin cannot profit from duels it opens (docs/threat-model.md, A1/A2).
    duel_bond_wei: int = 20 * WEI_PER_CREDIT
    duelist_fee_wei: int = WEI_PER_CREDIT
    # A seat that votes with the verdict recounted without its own seats earns 4 credits: its two model
    # calls priced at the 1-credit delegation fee each, and a margin (A9).
    judge_fee_wei: int = 4 * WEI_PER_CREDIT
    judge_penalty_wei: int = 8 * WEI_PER_CREDIT
    silent_penalty_wei: int = 4 * WEI_PER_CREDIT
    reserve_payout_bps: int = 100
    tree_depth: int = 14
    # What a node pays with its first registration and gets back when it gives its registry slot up
    # (`releaseSlot`): 2**tree_depth slots cost 2**tree_depth bonds to hold, not one transaction each.
    registration_bond_wei: int = 10 * WEI_PER_CREDIT

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{f.name} must be a non-negative integer, got {value!r}")
        if self.min_stake_wei == 0:
            raise ValueError("min_stake_wei must be > 0")
        if not 1 <= self.k_judges <= 3:
            raise ValueError("k_judges must be between 1 and 3 (an appeal round has 2k+1 <= 8 seats)")
        if not 2 <= self.epoch_blocks <= 250:
            raise ValueError("epoch_blocks must be between 2 and 250 (blockhash reaches 256 back)")
        if not 1 <= self.answer_window_blocks < self.epoch_blocks - 1:
            raise ValueError("answer_window_blocks must be between 1 and epoch_blocks - 2")
        if not 1 <= self.commit_window_blocks < self.epoch_blocks:
            raise ValueError("commit_window_blocks must be between 1 and epoch_blocks - 1")
        for name in ("reveal_window_blocks", "appeal_window_blocks", "publish_window_blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 1 <= self.attestation_ttl_s <= self.unbonding_period_s:
            raise ValueError("attestation_ttl_s must be between 1 and unbonding_period_s")
        if self.duel_bond_wei == 0 or self.duel_bond_wei % 10**9 or self.duel_bond_wei // 10**9 >= 1 << 40:
            raise ValueError("duel_bond_wei must be a positive whole number of gwei below 2**40 gwei")
        if self.duel_bond_wei > self.min_stake_wei:
            raise ValueError("duel_bond_wei must be <= min_stake_wei")
        if self.reserve_payout_bps > 10_000:
            raise ValueError("reserve_payout_bps must be <= 10000")
        if not 1 <= self.tree_depth <= 20:
            raise ValueError("tree_depth must be between 1 and 20")

    @property
    def duel_escrow_wei(self) -> int:
        """What the origin escrows when it opens a duel: the challenger's fee and the first panel's."""
        return self.duelist_fee_wei + self.k_judges * self.judge_fee_wei

    @property
    def appeal_fee_wei(self) -> int:
        """What an appeal costs the losing duelist: the fees of a 2k+1-seat panel."""
        return (2 * self.k_judges + 1) * self.judge_fee_wei

    @property
    def duel_span_blocks(self) -> int:
        """The most blocks a duel can stay open (appeal included); unbonding lasts at least this long."""
        return (3 * self.epoch_blocks + 2 * self.answer_window_blocks + self.publish_window_blocks
                + 2 * self.commit_window_blocks + 2 * self.reveal_window_blocks + self.appeal_window_blocks)

    @property
    def slot_cooldown_blocks(self) -> int:
        """Blocks a released registry slot waits before another node gets it (no duel names it by then)."""
        return self.epoch_blocks + 2 * self.duel_span_blocks

    def constructor_args(self) -> list[int]:
        """Arguments for the contract constructor, in order."""
        return [getattr(self, f.name) for f in fields(self)]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeploymentParams:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown deployment parameters: {sorted(unknown)}")
        return cls(**data)


# Each DeploymentParams field <- the contract's public immutable getter that reads it back.
PARAM_GETTERS: dict[str, str] = {
    "min_stake_wei": "MIN_STAKE",
    "unbonding_period_s": "UNBONDING_PERIOD",
    "withdrawal_notice_s": "WITHDRAWAL_NOTICE",
    "k_judges": "K_JUDGES",
    "epoch_blocks": "EPOCH_BLOCKS",
    "answer_window_blocks": "ANSWER_WINDOW",
    "commit_window_blocks": "COMMIT_WINDOW",
    "reveal_window_blocks": "REVEAL_WINDOW",
    "appeal_window_blocks": "APPEAL_WINDOW",
    "publish_window_blocks": "PUBLISH_WINDOW",
    "attestation_ttl_s": "ATTESTATION_TTL",
    "duel_bond_wei": "DUEL_BOND",
    "duelist_fee_wei": "DUELIST_FEE",
    "judge_fee_wei": "JUDGE_FEE",
    "judge_penalty_wei": "JUDGE_PENALTY",
    "silent_penalty_wei": "SILENT_PENALTY",
    "reserve_payout_bps": "RESERVE_PAYOUT_BPS",
    "tree_depth": "DEPTH",
    "registration_bond_wei": "REGISTRATION_BOND",
}


MAX_VERDICT_WEIGHT = 4  # a coherent seat's pay scale stays within [1/4, 4] (the contract's MAX_WEIGHT)


def verdict_weight(same_won: int, other_won: int) -> tuple[int, int]:
    """(numerator, denominator) by which a settlement scales a coherent seat's JUDGE_FEE and reserve
    share, given how many past verdicts went the same way as this one and how many the other way:
    1 / (2p), p the smoothed share (+1 each side) of verdicts like it, within [1/4, 4] (the contract's
    `_weight`)."""
    num = same_won + other_won + 2
    den = 2 * (same_won + 1)
    if num > MAX_VERDICT_WEIGHT * den:
        return MAX_VERDICT_WEIGHT, 1
    if num * MAX_VERDICT_WEIGHT < den:
        return 1, MAX_VERDICT_WEIGHT
    return num, den
