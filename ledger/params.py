"""Deployment parameters of the WWWServe contract (fixed at deployment; there is no owner)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

WEI_PER_ETH = 10**18
# Display unit for fees: the reference code's "1 credit". Amounts on-chain are always wei.
WEI_PER_CREDIT = 10**15


@dataclass(frozen=True)
class DeploymentParams:
    """Constructor arguments of WWWServe.vy, in constructor order. Money in wei, windows in blocks."""

    min_stake_wei: int = 100 * WEI_PER_CREDIT
    unbonding_period_s: int = 600
    withdrawal_notice_s: int = 300
    k_judges: int = 3
    seed_delay_blocks: int = 1
    draw_window_blocks: int = 200
    commit_window_blocks: int = 10
    reveal_window_blocks: int = 10
    settle_window_blocks: int = 100
    gamma_bps: int = 10_000
    minority_slash_bps: int = 2_000
    abstain_slash_bps: int = 500
    duelist_fee_wei: int = WEI_PER_CREDIT
    judge_fee_wei: int = WEI_PER_CREDIT
    tree_depth: int = 14

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{f.name} must be a non-negative integer, got {value!r}")
        if self.min_stake_wei == 0:
            raise ValueError("min_stake_wei must be > 0")
        if not 1 <= self.k_judges <= 8:
            raise ValueError("k_judges must be between 1 and 8")
        if self.seed_delay_blocks < 1:
            raise ValueError("seed_delay_blocks must be >= 1")
        if not 1 <= self.draw_window_blocks <= 250:
            raise ValueError("draw_window_blocks must be between 1 and 250 (blockhash reaches 256 back)")
        for name in ("commit_window_blocks", "reveal_window_blocks", "settle_window_blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("gamma_bps", "minority_slash_bps", "abstain_slash_bps"):
            if getattr(self, name) > 10_000:
                raise ValueError(f"{name} must be <= 10000")
        if not 1 <= self.tree_depth <= 20:
            raise ValueError("tree_depth must be between 1 and 20")

    @property
    def duel_escrow_wei(self) -> int:
        """What the origin escrows when it opens a duel."""
        return 2 * self.duelist_fee_wei + self.k_judges * self.judge_fee_wei

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
