# pragma version ~=0.4.3
# pragma evm-version cancun
"""
@title WWW.Serve ledger: node registry, credits, stake, fee vouchers and duels
@notice One owner-less contract with all parameters fixed at deployment (deposit-contract style). It
        holds every wei of the network, so the conservation invariant is exact:
            self.balance == sum(credit) + sum(pending withdrawals) + sum(active + unbonding stake)
                            + sum(escrow and appeal deposits of open duels) + reserve
                            + REGISTRATION_BOND x (registry slots held)
        The logic is the module `core.vy` (read it for every rule). This contract holds the state and
        runs a duel's steady path itself (and `getDuel`, the view every duel party reads); every other function is in `WWWServeExt`, the same module
        compiled apart (EIP-170 caps a contract's code at 24,576 bytes), deployed first with the same
        parameters and reached by delegatecall through `__default__`: the
        extension runs on this contract's storage, with this contract's address and events, and
        refuses to run on its own. Clients see one address and one ABI (artifacts/WWWServe.json
        merges both).
"""

import core

initializes: core

exports: (
    core.openDuel,
    core.drawChallenger,
    core.drawJudges,
    core.answerDuel,
    core.commitVote,
    core.revealVote,
    core.settleDuel,
    core.getDuel,
)

interface Extension:
    def paramsDigest() -> bytes32: view


EXTENSION: public(immutable(address))


@deploy
def __init__(
    min_stake: uint256, unbonding_period: uint256, withdrawal_notice: uint256, k_judges: uint256, epoch_blocks: uint256, answer_window: uint256, commit_window: uint256, reveal_window: uint256, appeal_window: uint256, publish_window: uint256, attestation_ttl: uint256, duel_bond: uint256, duelist_fee: uint256, judge_fee: uint256, judge_penalty: uint256, silent_penalty: uint256, reserve_payout_bps: uint256, tree_depth: uint256, registration_bond: uint256,
    extension: address,
):
    core.__init__(min_stake, unbonding_period, withdrawal_notice, k_judges, epoch_blocks, answer_window, commit_window, reveal_window, appeal_window, publish_window, attestation_ttl, duel_bond, duelist_fee, judge_fee, judge_penalty, silent_penalty, reserve_payout_bps, tree_depth, registration_bond, empty(address))
    assert extension.is_contract, "Params: extension is not a contract"
    assert staticcall Extension(extension).paramsDigest() == core._params_digest(), "Params: extension built with other parameters"
    EXTENSION = extension


# the longest answer of any extension function (`nodes`: 3,616 bytes ABI-encoded; a test checks the bound).
# The call's return buffer is this big in memory, and memory costs gas: 64 KiB would cost 14,000 per call.
EXTENSION_RETURN_BYTES: constant(uint256) = 4096


@external
@payable
@raw_return
def __default__() -> Bytes[EXTENSION_RETURN_BYTES]:
    """@notice Every other function runs in the extension, on this contract's storage."""
    return raw_call(EXTENSION, msg.data, max_outsize=EXTENSION_RETURN_BYTES, is_delegate_call=True)
