# pragma version ~=0.4.3
# pragma evm-version cancun
# pragma optimize codesize
"""
@title WWW.Serve ledger extension: the functions off a duel's steady path
@notice The module `core.vy` compiled apart so that each contract fits EIP-170 (optimised for code size:
        its functions are off a duel's steady path, and with gas optimisation it would not fit). Deploy it first with
        the parameters WWWServe gets; WWWServe delegatecalls it; called directly, every state-changing function
        reverts ("WWWServe: call the WWWServe contract"), so it never holds value or state of its own.
"""

import core
import sortition

initializes: core
uses: sortition

exports: (
    core.servesModel,
    core.register,
    core.updateNode,
    core.leave,
    core.releaseSlot,
    core.getModels,
    core.voucherDigest,
    core.claimVoucher,
    core.deposit,
    core.requestWithdrawal,
    core.cancelWithdrawal,
    core.withdraw,
    core.stake,
    core.requestUnstake,
    core.withdrawStake,
    core.workDigest,
    core.inspectCommitment,
    core.duelIdOf,
    core.challengerOf,
    core.publishRequest,
    core.voteCommitment,
    core.getVotes,
    core.getJudges,
    core.appeal,
    core.activeStake,
    core.unbondingStake,
    core.unbondingEnd,
    core.unbondingBlock,
    core.reserved,
    core.syncWeight,
    core.commitmentOf,
    core.DUEL_SPAN_BLOCKS,
    core.nodes,
    core.registeredOnce,
    core.pubkeyOwner,
    core.activeNodeCount,
    core.modelId,
    core.modelCount,
    core.credit,
    core.pendingWithdrawal,
    core.withdrawableAt,
    core.reserve,
    core.verdicts,
    core.claimed,
    core.MIN_STAKE,
    core.UNBONDING_PERIOD,
    core.WITHDRAWAL_NOTICE,
    core.K_JUDGES,
    core.EPOCH_BLOCKS,
    core.ANSWER_WINDOW,
    core.COMMIT_WINDOW,
    core.REVEAL_WINDOW,
    core.APPEAL_WINDOW,
    core.PUBLISH_WINDOW,
    core.ATTESTATION_TTL,
    core.DUEL_BOND,
    core.DUELIST_FEE,
    core.JUDGE_FEE,
    core.JUDGE_PENALTY,
    core.SILENT_PENALTY,
    core.RESERVE_PAYOUT_BPS,
    core.DUEL_ESCROW,
    core.APPEAL_FEE,
    core.REGISTRATION_BOND,
    core.SLOT_COOLDOWN_BLOCKS,
    core.DOMAIN_SEPARATOR,
    core.paramsDigest,
    sortition.totalWeight,
    sortition.leafWeight,
    sortition.leafOwner,
    sortition.leafCount,
    sortition.leafSince,
    sortition.freeLeafCount,
    sortition.DEPTH,
)


@deploy
def __init__(
    min_stake: uint256, unbonding_period: uint256, withdrawal_notice: uint256, k_judges: uint256, epoch_blocks: uint256, answer_window: uint256, commit_window: uint256, reveal_window: uint256, appeal_window: uint256, publish_window: uint256, attestation_ttl: uint256, duel_bond: uint256, duelist_fee: uint256, judge_fee: uint256, judge_penalty: uint256, silent_penalty: uint256, reserve_payout_bps: uint256, tree_depth: uint256, registration_bond: uint256,
):
    core.__init__(min_stake, unbonding_period, withdrawal_notice, k_judges, epoch_blocks, answer_window, commit_window, reveal_window, appeal_window, publish_window, attestation_ttl, duel_bond, duelist_fee, judge_fee, judge_penalty, silent_penalty, reserve_payout_bps, tree_depth, registration_bond, self)
