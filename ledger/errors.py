"""Typed errors of the ledger layer: one root, stdlib twins, and one class per contract revert reason.

Callers catch by meaning (`InsufficientCreditError`, `NotAJudgeError`) instead of matching strings.
The errors of chain access, contract calls and wallets derive from `LedgerError`, itself under the
project's one root `wwwserve.errors.WWWServeError`; where a stdlib exception fits, the class also
derives from it (web3 style: `LedgerValueError(LedgerError, ValueError)`), so generic callers still
work.

The contract reverts with `"<Domain>: <problem>"` strings. `REVERT_REASONS` maps every such string
in contracts/*.vy to a class (a unit test checks the table against the sources); an unknown reason
of a known domain becomes that domain's base class and anything else a plain `ContractRevertedError`.
"""

from __future__ import annotations

from wwwserve.errors import WWWServeError


class LedgerError(WWWServeError):
    """Root of every error raised by the ledger layer."""


class LedgerValueError(LedgerError, ValueError):
    """An argument is invalid; raised before anything is sent to the chain."""


class LedgerTypeError(LedgerError, TypeError):
    """An argument has the wrong type; raised before anything is sent to the chain."""


class InvalidAmountError(LedgerValueError):
    """An amount of money could not be parsed or is out of range."""


# ---------------------------------------------------------------------------------------------
# chain access


class ChainUnreachableError(LedgerError, ConnectionError):
    """The chain's JSON-RPC endpoint did not answer (refused, timed out, or kept failing)."""

    def __init__(self, url: str, detail: str) -> None:
        self.url = url
        self.detail = detail
        super().__init__(f"chain RPC at {url} is unreachable: {detail}")


class ChainRequestError(LedgerError):
    """The node answered a request with an error that is neither a revert nor a connection problem."""

    def __init__(self, function: str, detail: str) -> None:
        self.function = function
        self.detail = detail
        super().__init__(f"{function}: the node returned an error: {detail}")


class TransactionRejectedError(LedgerError):
    """The node refused a signed transaction (not a revert: e.g. too little ETH for gas, bad nonce)."""

    def __init__(self, function: str, detail: str) -> None:
        self.function = function
        self.detail = detail
        super().__init__(f"{function}: the node rejected the transaction: {detail}")


class TransactionTimeoutError(LedgerError, TimeoutError):
    """A sent transaction was not mined within the timeout. It may still be mined later."""

    def __init__(self, function: str, tx_hash: str, timeout_s: float) -> None:
        self.function = function
        self.tx_hash = tx_hash
        self.timeout_s = timeout_s
        super().__init__(f"{function}: transaction {tx_hash} was not mined within {timeout_s:g} s")


class DeploymentNotFoundError(LedgerError, LookupError):
    """No WWWServe contract where one was expected (no code, other code, or no deployment record)."""


# ---------------------------------------------------------------------------------------------
# contract reverts


class ContractRevertedError(LedgerError):
    """A contract call reverted. `reason` is the contract's revert string ("" when it gave none)."""

    def __init__(self, reason: str, function: str, tx_hash: str | None = None) -> None:
        self.reason = reason
        self.function = function
        self.tx_hash = tx_hash
        shown = reason or "reverted without a reason"
        where = f" (tx {tx_hash})" if tx_hash else ""
        super().__init__(f"{function}: {shown}{where}")


class ParamsError(ContractRevertedError):
    """The constructor rejected the deployment parameters ("Params: ...")."""


class SortitionError(ContractRevertedError):
    """The sortition tree refused ("Sortition: ...")."""


class SortitionFullError(SortitionError):
    """Every leaf of the sortition tree has an owner; no new node can register."""


class RegistryError(ContractRevertedError):
    """The node registry refused ("Registry: ...")."""


class AlreadyRegisteredError(RegistryError):
    """The sender is already a registered, active node."""


class NotRegisteredError(RegistryError):
    """The sender (or the origin of a duel) is not a registered, active node."""


class RegistrationBondError(RegistryError):
    """register() was sent the wrong value: the registration bond without a slot, nothing with one."""


class SlotReleaseError(RegistryError):
    """releaseSlot() refused: no slot held, the node is still active, or it still has stake."""


class EmptyPublicKeyError(RegistryError):
    """The node's ed25519 public key is all zeros."""


class PublicKeyTakenError(RegistryError):
    """Another active node already registered this public key."""


class NoModelsError(RegistryError):
    """A node must serve at least one model."""


class BankError(ContractRevertedError):
    """Credits or stake accounting refused ("Bank: ...")."""


class ZeroAmountError(BankError):
    """The amount must be greater than zero."""


class InsufficientCreditError(BankError):
    """Not enough free credit for the deposit-backed operation (withdrawal, stake, duel escrow)."""


class InsufficientStakeError(BankError):
    """Not enough active stake to unstake that amount."""


class NoPendingWithdrawalError(BankError):
    """There is no pending withdrawal to cancel or pay out."""


class WithdrawalNoticeError(BankError):
    """The withdrawal notice period has not passed yet."""


class NothingUnbondingError(BankError):
    """There is no unbonding stake to withdraw."""


class StillUnbondingError(BankError):
    """The unbonding period has not ended yet."""


class StakeBondedError(BankError):
    """The unbonded stake is all bonded by open duels in which the node is a duelist (it stays
    slashable until those duels end)."""


class VoucherError(ContractRevertedError):
    """A fee voucher was refused ("Voucher: ...")."""


class StaleVoucherError(VoucherError):
    """The voucher's cumulative amount is not above what was already claimed."""


class VoucherSignatureError(VoucherError):
    """The voucher signature is malformed or was not made by the origin."""


class VoucherUnfundedError(VoucherError):
    """The origin has neither credit nor pending withdrawal left to pay the voucher."""


class ExtensionCalledDirectlyError(ContractRevertedError):
    """A state-changing function was called on WWWServeExt itself ("WWWServe: ..."): it only runs by
    delegatecall from WWWServe; talk to the WWWServe address."""


class ExtensionMismatchError(ParamsError):
    """WWWServe's constructor refused its extension: not a contract, or built with other parameters."""


class DuelError(ContractRevertedError):
    """A duel operation was refused ("Duel: ...")."""


class UnknownDuelError(DuelError):
    """No duel has this id."""


class DuelPartiesError(DuelError):
    """The origin cannot duel its own work, and the executor must have registered once."""


class WorkAttestationError(DuelError):
    """The executor's Work attestation is malformed, not signed by it (with the origin's commitment
    to duel), or not the work of this duel."""


class AttestationExpiredError(WorkAttestationError):
    """The attestation is older than ATTESTATION_TTL: that work can no longer be dueled."""


class UnknownModelError(DuelError):
    """The attested model hash names no model any node ever registered."""


class WorkAlreadyDueledError(DuelError):
    """This origin already opened a duel over this request (one duel per piece of work)."""


class DuelistStakeError(DuelError):
    """The executor's free stake cannot cover the duel bond."""


class RequestMismatchError(DuelError):
    """The published request bytes do not hash to the attested requestHash."""


class DuelStateError(DuelError):
    """The duel is not in the state this operation needs (awaiting an answer, awaiting the request,
    judging, appealable, open), or its challenger or panel was drawn already, or B says "no request"
    a second time after the request was published."""


class DuelWindowError(DuelError):
    """The operation is outside its block window (seed, answer, publish, commit, reveal, appeal)."""


class NotTheChallengerError(DuelError):
    """Only the drawn challenger B answers a duel."""


class NoChallengerError(DuelError):
    """No node serving the model could be drawn as challenger (the duel was not answered)."""


class NoJudgesError(DuelError):
    """There is no eligible judge stake to draw a panel from."""


class NotAppellantError(DuelError):
    """Only the duelist that lost the first round may appeal, and only a decided round."""


class NotAJudgeError(DuelError):
    """The sender holds no seat on the current round's panel."""


class AlreadyVotedError(DuelError):
    """The judge already committed (or revealed) a vote in this round."""


class VoteCommitmentError(DuelError):
    """The commitment is empty, missing, or does not match the revealed vote and salt."""


class InvalidVoteError(DuelError):
    """The vote is not one of A, B, abstain or no-evidence."""


# Every revert string in contracts/*.vy, and the class it becomes (tests/unit/test_client_errors.py
# checks that this table and the sources agree).
REVERT_REASONS: dict[str, type[ContractRevertedError]] = {
    "Params: min_stake must be > 0": ParamsError,
    "Params: k_judges out of range": ParamsError,
    "Params: epoch_blocks out of range": ParamsError,
    "Params: answer_window out of range": ParamsError,
    "Params: commit_window out of range": ParamsError,
    "Params: windows must be >= 1": ParamsError,
    "Params: attestation_ttl out of range": ParamsError,
    "Params: bad duel_bond": ParamsError,
    "Params: duel_bond above min_stake": ParamsError,
    "Params: bps > 10000": ParamsError,
    "Params: extension is not a contract": ExtensionMismatchError,
    "Params: extension built with other parameters": ExtensionMismatchError,
    "Sortition: depth out of range": ParamsError,
    "Sortition: tree full": SortitionFullError,
    # an internal guard: a leaf's or the root's weight outgrew 112 bits
    "Sortition: weight overflow": SortitionError,
    "WWWServe: call the WWWServe contract": ExtensionCalledDirectlyError,
    "Registry: already registered": AlreadyRegisteredError,
    "Registry: not registered": NotRegisteredError,
    "Registry: empty public key": EmptyPublicKeyError,
    "Registry: public key already registered": PublicKeyTakenError,
    "Registry: no models": NoModelsError,
    "Registry: send the registration bond": RegistrationBondError,
    "Registry: slot held, send no bond": RegistrationBondError,
    "Registry: no slot held": SlotReleaseError,
    "Registry: leave first": SlotReleaseError,
    "Registry: withdraw the stake first": SlotReleaseError,
    "Bank: zero amount": ZeroAmountError,
    "Bank: insufficient credit": InsufficientCreditError,
    "Bank: insufficient stake": InsufficientStakeError,
    "Bank: no pending withdrawal": NoPendingWithdrawalError,
    "Bank: withdrawal notice not over": WithdrawalNoticeError,
    "Bank: nothing unbonding": NothingUnbondingError,
    "Bank: still unbonding": StillUnbondingError,
    "Bank: stake bonded by open duels": StakeBondedError,
    # an internal guard: active or unbonding stake outgrew its 96-bit field
    "Bank: stake overflow": BankError,
    "Voucher: bad signature length": VoucherSignatureError,
    "Voucher: malformed signature": VoucherSignatureError,
    "Voucher: bad signature": VoucherSignatureError,
    "Voucher: stale voucher": StaleVoucherError,
    "Voucher: origin has no funds": VoucherUnfundedError,
    "Duel: unknown duel": UnknownDuelError,
    "Duel: origin cannot duel": DuelPartiesError,
    "Duel: duelist not registered": DuelPartiesError,
    "Duel: attestation expired": AttestationExpiredError,
    "Duel: malformed attestation": WorkAttestationError,
    "Duel: bad attestation": WorkAttestationError,
    "Duel: not this duel's work": WorkAttestationError,
    "Duel: unknown model": UnknownModelError,
    "Duel: work already dueled": WorkAlreadyDueledError,
    "Duel: duelist stake too low": DuelistStakeError,
    "Duel: request does not match its hash": RequestMismatchError,
    "Duel: not awaiting an answer": DuelStateError,
    "Duel: request not missing": DuelStateError,
    # B said "no request" once already; after the request was published it must answer
    "Duel: request already published": DuelStateError,
    "Duel: not judging": DuelStateError,
    "Duel: not open": DuelStateError,
    "Duel: not appealable": DuelStateError,
    "Duel: challenger already drawn": DuelStateError,
    "Duel: judges already drawn": DuelStateError,
    "Duel: seed block not mined yet": DuelWindowError,
    "Duel: answer window over": DuelWindowError,
    "Duel: answer window not over": DuelWindowError,
    "Duel: publish window over": DuelWindowError,
    "Duel: publish window not over": DuelWindowError,
    "Duel: commit window over": DuelWindowError,
    "Duel: commit window not over": DuelWindowError,
    "Duel: reveal window not open": DuelWindowError,
    "Duel: reveal window over": DuelWindowError,
    "Duel: reveal window not over": DuelWindowError,
    "Duel: appeal window over": DuelWindowError,
    "Duel: appeal window not over": DuelWindowError,
    "Duel: not the challenger": NotTheChallengerError,
    "Duel: no challenger": NoChallengerError,
    "Duel: no judges": NoJudgesError,
    "Duel: no verdict to appeal": NotAppellantError,
    "Duel: only the losing duelist appeals": NotAppellantError,
    "Duel: not a judge of this duel": NotAJudgeError,
    "Duel: empty commitment": VoteCommitmentError,
    "Duel: already committed": AlreadyVotedError,
    "Duel: already revealed": AlreadyVotedError,
    "Duel: no commitment": VoteCommitmentError,
    "Duel: reveal does not match commitment": VoteCommitmentError,
    "Duel: invalid vote": InvalidVoteError,
    # an internal packing guard: a block number outgrew its 40-bit field, or a model id its 24 bits
    "Duel: field overflow": DuelError,
}

# Fallback by domain prefix, for reasons added to the contract after this table.
REVERT_DOMAINS: dict[str, type[ContractRevertedError]] = {
    "Params": ParamsError,
    "Sortition": SortitionError,
    "WWWServe": ExtensionCalledDirectlyError,
    "Registry": RegistryError,
    "Bank": BankError,
    "Voucher": VoucherError,
    "Duel": DuelError,
}


def revert_error(reason: str, function: str, tx_hash: str | None = None) -> ContractRevertedError:
    """The typed error for a contract revert `reason` raised while calling `function`."""
    reason = reason.strip()
    cls = REVERT_REASONS.get(reason)
    if cls is None:
        domain, sep, _ = reason.partition(":")
        cls = REVERT_DOMAINS.get(domain.strip(), ContractRevertedError) if sep else ContractRevertedError
    return cls(reason, function, tx_hash)


# ---------------------------------------------------------------------------------------------
# wallets


class WalletError(LedgerError):
    """A wallet (encrypted keystore) could not be created, imported or opened."""


class InvalidWalletNameError(WalletError, ValueError):
    """Wallet names are 1-64 characters of letters, digits, '.', '_' and '-' (no path separators)."""


class KeystoreNotFoundError(WalletError, FileNotFoundError):
    """No keystore file with that wallet name."""


class KeystoreCorruptError(WalletError, ValueError):
    """The keystore file is not a valid encrypted key (bad JSON or missing fields)."""


class WalletExistsError(WalletError, FileExistsError):
    """A wallet with that name already exists; wallets are never overwritten."""


class WrongPasswordError(WalletError, ValueError):
    """The password does not decrypt the keystore."""


class MissingPasswordError(WalletError, ValueError):
    """No password was given and WWWSERVE_PASSWORD is not set (or it is empty)."""


class InvalidPrivateKeyError(WalletError, ValueError):
    """The private key is not 32 bytes of hex within the secp256k1 range."""
