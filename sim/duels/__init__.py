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
3. each seat holder commits (once for all its seats), then reveals after the commit window. On the bench
   it commits the moment the seats are drawn; in the simulator (`DuelRun.judge_work`) it decides on its
   own engine (sim.network_duels) and commits only if its decision is ready when the last block of the
   commit window is mined, else its seats are silent, as a live judge still waiting for its model is.
4. after the reveals the round-1 loser may `appeal` (its `AppealPolicy`): 2K+1 seats drawn at the next
   epoch's first block, commit and reveal again; that verdict is final.
5. `settle_duel`. The result says who gained and lost what, in wei, from the events the model emitted
   for this duel (each one is a balance change: escrow, appeal fee, slashes, payments).

Both drivers use these steps: the attack bench (`run_duel`) mines the clock from step to step; the
simulator (sim.network) calls them from its event loop at the simulated block height, has B's engine
run the request between the draw and the answer, and each judge's engine its two model calls between
the draw of its seats and the end of the commit window.

What the model cannot know is which answer is better. Each node has a `quality` q in (0, 1), its win
rate against the field (the paper measured 0.57 / 0.53 / 0.39 for Qwen3-8B / 4B / 0.6B). An answer gets
a latent score `logit(q) + G` with G a standard Gumbel draw; the better of two answers is the one with
the higher score. Two Gumbels differ by a logistic variable, so A's answer beats B's with exactly the
"log5" head-to-head probability `q_a (1 - q_b) / (q_a (1 - q_b) + q_b (1 - q_a))` (`head_to_head`), and
an origin can estimate one answer's score before the other exists (the selection attacks need that).

Judges vote through a `JudgeStrategy`. The honest one follows docs/duels.md's evidence rules (no
request from anyone: no evidence; A's answer from nobody: B; B's from nobody: A) and otherwise decides
as the chain's `JudgeBehaviour` (sim.config) says: the attack bench's judges (`ONE_ORDER_JUDGE`, the
default of `DuelChain`) vote for the better answer with probability `accuracy` (else for the other);
the simulator's (`SimConfig.judges`, measured on the live network) ask both A/B orders, each reply
right with probability `accuracy`, and abstain unless both name the same duelist, like the live judge;
they may also vote no evidence or miss the reveal at set rates (`honest_vote`). Every random number of
a duel is drawn from (chain seed, duel key), so two runs of one duel under different strategies see the
same answers, the same honest votes and, on the same stakes, the same draws (paired comparisons).

The package: `judging` (answer quality, judge strategies, appeal policies, who serves which evidence),
`chain` (the model with a block clock and its members), `run` (one duel's lifecycle, `run_duel`), and
`ledger` (the simulator's chain, `ContractLedger`).
"""

from __future__ import annotations

from wwwserve.sim.duels.chain import CHAIN_ID, CONTRACT_ADDRESS, DuelChain, Member, member_account
from wwwserve.sim.duels.judging import (
    APPEAL_POLICIES,
    HONEST_EVIDENCE,
    JUDGE_STRATEGIES,
    AppealPolicy,
    AppealView,
    DuelSides,
    Evidence,
    JudgeStrategy,
    SeatView,
    abstain,
    always_a,
    answer_score,
    appeal_always,
    appeal_split,
    coin_flip,
    colluding,
    head_to_head,
    honest,
    honest_vote,
    never_appeal,
    no_evidence,
    silent,
)
from wwwserve.sim.duels.ledger import ContractLedger, DuelRecord, Simulation
from wwwserve.sim.duels.run import DuelResult, DuelRun, EvidencePolicy, JudgeWork, RoundRecord, run_duel

__all__ = [
    "APPEAL_POLICIES",
    "CHAIN_ID",
    "CONTRACT_ADDRESS",
    "HONEST_EVIDENCE",
    "JUDGE_STRATEGIES",
    "AppealPolicy",
    "AppealView",
    "ContractLedger",
    "DuelChain",
    "DuelRecord",
    "DuelResult",
    "DuelRun",
    "DuelSides",
    "Evidence",
    "EvidencePolicy",
    "JudgeStrategy",
    "JudgeWork",
    "Member",
    "RoundRecord",
    "SeatView",
    "Simulation",
    "abstain",
    "always_a",
    "answer_score",
    "appeal_always",
    "appeal_split",
    "coin_flip",
    "colluding",
    "head_to_head",
    "honest",
    "honest_vote",
    "member_account",
    "never_appeal",
    "no_evidence",
    "run_duel",
    "silent",
]
