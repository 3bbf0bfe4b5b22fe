"""Typed client of the WWWServe contract: one method per contract function, frozen dataclasses out.

`WWWServeClient(w3, address, sender)` wraps the deployed contract. Its reads (views, logs, and the
off-chain mirrors of the contract's hashes) come from `ledger.reads.ContractReader`; this module adds
deployment and every state-changing call, which needs a `TxSender` (the account that acts) and returns a
`TxResult` with the receipt's decoded events. Inputs are validated before anything is sent
(`ledger.arguments`: checksummed addresses, 32-byte keys and hashes, the contract's string and list bounds,
a work attestation's signature and commitment), so malformed calls fail with a clear `LedgerValueError`
instead of an ABI or bare-revert error; rules that depend on chain state stay with the contract and come
back as the typed errors of `ledger.errors`.

The client is split by job, and every public name stays importable from here:
`ledger.records` (enums and result dataclasses), `ledger.arguments` (validation and encoding),
`ledger.digests` (`voucher_typed_data`/`sign_voucher_offline`, EIP-712 domain "WWWServe" version "1",
and `vote_commitment`), `ledger.reads` (`ContractReader`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eth_typing import ChecksumAddress
from eth_utils.crypto import keccak
from web3 import Web3
from web3.types import TxReceipt

from wwwserve.contracts import EXTENSION_CONTRACT, load_artifact
from wwwserve.ledger import arguments as arg
from wwwserve.ledger.arguments import (
    DUEL_ID_BITS,
    MAX_ENDPOINT_BYTES,
    MAX_METADATA_BYTES,
    MAX_MODEL_BYTES,
    MAX_MODELS,
    MAX_REQUEST_BYTES,
    MAX_UINT256,
    NO_REQUEST,
    ROUNDS,
    ZERO_ADDRESS,
    bytes32,
    checksum_address,
)
from wwwserve.ledger.digests import (
    EIP712_NAME,
    EIP712_VERSION,
    recover_voucher_signer,
    sign_voucher_offline,
    vote_commitment,
    voucher_digest,
    voucher_typed_data,
)
from wwwserve.ledger.errors import DeploymentNotFoundError, LedgerValueError
from wwwserve.ledger.params import DeploymentParams
from wwwserve.ledger.reads import CONTRACT_NAME, ContractReader
from wwwserve.ledger.records import (
    Balances,
    CancelReason,
    DecodedEvent,
    DeployedContracts,
    DuelHashes,
    DuelOutcome,
    DuelRound,
    DuelSettlement,
    DuelState,
    DuelStatus,
    NodeInfo,
    RewardReason,
    SlashReason,
    TxResult,
    VerdictCounts,
    Vote,
)
from wwwserve.ledger.tx import TxSender
from wwwserve.ledger.work import WorkAttestation, WorkError, check_work, inspect_commitment

__all__ = [
    "CONTRACT_NAME",
    "DUEL_ID_BITS",
    "EIP712_NAME",
    "EIP712_VERSION",
    "MAX_ENDPOINT_BYTES",
    "MAX_METADATA_BYTES",
    "MAX_MODELS",
    "MAX_MODEL_BYTES",
    "MAX_REQUEST_BYTES",
    "MAX_UINT256",
    "NO_REQUEST",
    "ROUNDS",
    "ZERO_ADDRESS",
    "Balances",
    "CancelReason",
    "ContractReader",
    "DecodedEvent",
    "DeployedContracts",
    "DuelHashes",
    "DuelOutcome",
    "DuelRound",
    "DuelSettlement",
    "DuelState",
    "DuelStatus",
    "NodeInfo",
    "RewardReason",
    "SlashReason",
    "TxResult",
    "VerdictCounts",
    "Vote",
    "WWWServeClient",
    "bytes32",
    "checksum_address",
    "recover_voucher_signer",
    "sign_voucher_offline",
    "vote_commitment",
    "voucher_digest",
    "voucher_typed_data",
]


class WWWServeClient(ContractReader):
    """The WWWServe contract at `address`, with `sender` acting for state-changing calls."""

    # -- deployment -----------------------------------------------------------------------------
    @classmethod
    def deploy_contracts(
        cls, w3: Web3, sender: TxSender, params: DeploymentParams | None = None
    ) -> DeployedContracts:
        """Deploy WWWServeExt, then WWWServe over it, both with `params`, from `sender`.

        Two transactions: WWWServe's constructor checks that the extension was built with the same
        parameters (`paramsDigest`), so a mismatched pair cannot be deployed."""
        args = (params or DeploymentParams()).constructor_args()
        ext_address, ext_block = cls._create(w3, sender, EXTENSION_CONTRACT, args)
        address, block = cls._create(w3, sender, CONTRACT_NAME, [*args, ext_address])
        return DeployedContracts(address, ext_address, block, ext_block)

    @staticmethod
    def _create(w3: Web3, sender: TxSender, name: str, args: Sequence[Any]) -> tuple[ChecksumAddress, int]:
        artifact = load_artifact(name)
        factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        data = factory.constructor(*args).data_in_transaction
        receipt = sender.send(to=None, data=data, function=f"{name}.constructor")
        address = receipt["contractAddress"]
        if address is None:  # pragma: no cover - a successful creation always has one
            raise DeploymentNotFoundError(f"the {name} deployment receipt has no contract address")
        return Web3.to_checksum_address(address), int(receipt["blockNumber"])

    @classmethod
    def deploy(
        cls, w3: Web3, sender: TxSender, params: DeploymentParams | None = None
    ) -> tuple[ChecksumAddress, int]:
        """Deploy both contracts (see `deploy_contracts`); returns (WWWServe's address, its block)."""
        deployed = cls.deploy_contracts(w3, sender, params)
        return deployed.address, deployed.block_number

    @classmethod
    def deploy_and_connect(
        cls, w3: Web3, sender: TxSender, params: DeploymentParams | None = None
    ) -> tuple[WWWServeClient, int]:
        """Deploy, then return a client bound to the new contract and WWWServe's deployment block."""
        address, block = cls.deploy(w3, sender, params)
        return cls(w3, address, sender), block

    # -- acting ---------------------------------------------------------------------------------
    def with_sender(self, sender: TxSender) -> WWWServeClient:
        """The same contract, acting as another account."""
        return WWWServeClient(self._w3, self._address, sender, retry=self._retry)

    def _transact(self, name: str, *args: Any, value_wei: int = 0, duel_id: int | None = None) -> TxResult:
        if self._sender is None:
            raise LedgerValueError(f"{CONTRACT_NAME}.{name} changes state: create the client with a TxSender")
        data = self._contract.encode_abi(name, args=list(args))
        receipt = self._sender.send(
            to=self._address, data=data, value_wei=value_wei, function=f"{CONTRACT_NAME}.{name}"
        )
        return self._result(receipt, duel_id)

    def _result(self, receipt: TxReceipt, duel_id: int | None = None) -> TxResult:
        return TxResult(
            tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            events=self.decode_events(receipt),
            duel_id=duel_id,
        )

    # -- registry -------------------------------------------------------------------------------
    def register(
        self, pubkey: bytes | str, endpoint: str, models: Sequence[str], metadata: str = ""
    ) -> TxResult:
        """Register the sender as a node serving `models` at `endpoint`, results signed by `pubkey`. A sender
        without a registry slot sends the registration bond with the call (`release_slot` returns it)."""
        fields = self._node_fields(pubkey, endpoint, models, metadata)
        return self._transact("register", *fields, value_wei=self.registration_value_wei(self._me()))

    def update_node(
        self, pubkey: bytes | str, endpoint: str, models: Sequence[str], metadata: str = ""
    ) -> TxResult:
        """Replace the sender's key, endpoint, models and metadata (model changes count from the
        next epoch, for challenger draws)."""
        return self._transact("updateNode", *self._node_fields(pubkey, endpoint, models, metadata))

    @staticmethod
    def _node_fields(
        pubkey: bytes | str, endpoint: str, models: Sequence[str], metadata: str
    ) -> tuple[bytes, str, list[str], str]:
        return (
            arg.bytes32(pubkey, "pubkey (ed25519 public key)"),
            arg.text(endpoint, "endpoint", MAX_ENDPOINT_BYTES),
            arg.models(models),
            arg.text(metadata, "metadata", MAX_METADATA_BYTES),
        )

    def leave(self) -> TxResult:
        """Stop being routable and drawable (stake stays until unstaked; attested work stays duelable)."""
        return self._transact("leave")

    def release_slot(self) -> TxResult:
        """Give the registry slot back after leaving and withdrawing all stake; the registration bond
        becomes free credit. Registering again takes a new slot and a new bond."""
        return self._transact("releaseSlot")

    # -- credits and stake ----------------------------------------------------------------------
    def deposit(self, amount_wei: int) -> TxResult:
        """Deposit `amount_wei` of the sender's ETH as credit."""
        return self._transact("deposit", value_wei=arg.wei(amount_wei, "amount_wei"))

    def request_withdrawal(self, amount_wei: int) -> TxResult:
        """Move free credit into a pending withdrawal (payable after the notice period)."""
        return self._transact("requestWithdrawal", arg.wei(amount_wei, "amount_wei"))

    def cancel_withdrawal(self) -> TxResult:
        return self._transact("cancelWithdrawal")

    def withdraw(self) -> TxResult:
        """Pay the pending withdrawal out to the sender once the notice has passed."""
        return self._transact("withdraw")

    def stake(self, amount_wei: int) -> TxResult:
        """Move free credit into active stake (registered nodes only)."""
        return self._transact("stake", arg.wei(amount_wei, "amount_wei"))

    def request_unstake(self, amount_wei: int) -> TxResult:
        """Start unbonding `amount_wei` of active stake."""
        return self._transact("requestUnstake", arg.wei(amount_wei, "amount_wei"))

    def withdraw_stake(self) -> TxResult:
        """Move unbonded stake back to credit (all of it but what open duels bond)."""
        return self._transact("withdrawStake")

    def sync_weight(self, node: str) -> TxResult:
        """Bring `node`'s draw weight in line with its stake after duel slashes (anyone may; slashes
        leave the sortition tree alone to keep settlements cheap)."""
        return self._transact("syncWeight", arg.checksum_address(node, "node"))

    # -- fee vouchers ---------------------------------------------------------------------------
    def claim_voucher(self, origin: str, executor: str, cumulative_wei: int, signature: bytes | str) -> TxResult:
        """Pay `executor` what `origin` owes under the signed voucher (anyone may submit it)."""
        return self._transact(
            "claimVoucher",
            arg.checksum_address(origin, "origin"),
            arg.checksum_address(executor, "executor"),
            arg.wei(cumulative_wei, "cumulative_wei"),
            arg.signature(signature),
        )

    # -- duels: transactions --------------------------------------------------------------------
    def open_duel(self, work: WorkAttestation, inspect_salt: bytes | str) -> TxResult:
        """Duel the answer `work.executor` (A) gave the sender (the origin): escrows DUEL_ESCROW of
        the sender's credit and bonds DUEL_BOND of A's stake. The result carries the new `duel_id`.

        Checked here first: the sender is `work.origin`, the signature recovers to the executor, and
        `inspect_salt` opens `work.inspect` as a commitment to duel (the contract checks them too)."""
        w = arg.work(work)
        salt = arg.bytes32(inspect_salt, "inspect_salt")
        origin = arg.checksum_address(w.origin, "work.origin")
        if self._sender is not None and origin != self._sender.address:
            raise LedgerValueError(f"only the work's origin {origin} can open its duel, not {self._sender.address}")
        self._check_attestation(w, salt)
        result = self._transact("openDuel", arg.checksum_address(w.executor, "work.executor"), *arg.work_args(w, salt))
        duel_id = int(result.event("DuelOpened").args["duelId"])
        return TxResult(result.tx_hash, result.block_number, result.gas_used, result.events, duel_id)

    def _check_attestation(self, work: WorkAttestation, salt: bytes) -> None:
        if inspect_commitment(work.request_id, True, salt) != work.inspect:
            raise LedgerValueError("inspect_salt does not open work.inspect as a commitment to duel "
                                   "(wrong salt, or the origin committed not to duel this request)")
        try:
            check_work(self.chain_id, self._address, work)
        except WorkError as exc:
            raise LedgerValueError(f"work attestation: {exc}") from None

    def draw_challenger(self, duel_id: int) -> TxResult:
        """Record the duel's challenger B in its answer window (anyone may; B's answer does it too).
        Cancels the duel (escrow refunded) when nobody serving the model can be drawn."""
        did = arg.duel_id(duel_id)
        return self._transact("drawChallenger", did, duel_id=did)

    def answer_duel(self, duel_id: int, answer_hash: bytes | str) -> TxResult:
        """The challenger commits to its answer (keccak256 of its UTF-8 text) and the first panel is
        drawn. `NO_REQUEST` (32 zero bytes) says it could not get the request: then anyone may
        `publish_request` within PUBLISH_WINDOW blocks."""
        did = arg.duel_id(duel_id)
        return self._transact("answerDuel", did, arg.bytes32(answer_hash, "answer_hash"), duel_id=did)

    def publish_request(
        self, duel_id: int, work: WorkAttestation, inspect_salt: bytes | str, request: bytes
    ) -> TxResult:
        """Put the request of a duel whose challenger could not get it on-chain (anyone may, with A's
        attestation and the origin's salt); B then answers in the next epoch's answer window.
        `request` is `ledger.work.request_bytes(...)`, which must hash to `work.request_hash`."""
        did = arg.duel_id(duel_id)
        w = arg.work(work)
        salt = arg.bytes32(inspect_salt, "inspect_salt")
        body = arg.request_body(request)
        if self.duel_id_of(w.origin, w.request_id) != did:
            raise LedgerValueError(f"that work is not the work of duel {did}")
        if keccak(body) != w.request_hash:
            raise LedgerValueError("request does not hash to work.request_hash")
        self._check_attestation(w, salt)
        return self._transact("publishRequest", did, *arg.work_args(w, salt), body, duel_id=did)

    def draw_judges(self, duel_id: int) -> TxResult:
        """Draw the appeal round's seats in its commit window (anyone may; a judge's first commit
        does it too; the first round's are drawn with B's answer)."""
        did = arg.duel_id(duel_id)
        return self._transact("drawJudges", did, duel_id=did)

    def commit_vote(self, duel_id: int, commitment: bytes | str) -> TxResult:
        """Commit to a hidden vote for the current round; compute `commitment` with `vote_commitment`."""
        did = arg.duel_id(duel_id)
        return self._transact("commitVote", did, arg.bytes32(commitment, "commitment"), duel_id=did)

    def reveal_vote(self, duel_id: int, vote: Vote | int, salt: bytes | str) -> TxResult:
        """Reveal the committed vote; it counts once per seat the judge holds."""
        did = arg.duel_id(duel_id)
        return self._transact("revealVote", did, int(arg.cast_vote(vote)), arg.bytes32(salt, "salt"), duel_id=did)

    def appeal(self, duel_id: int) -> TxResult:
        """The duelist that lost round 1 pays APPEAL_FEE from its credit for a 2K+1-seat round 2."""
        did = arg.duel_id(duel_id)
        return self._transact("appeal", did, duel_id=did)

    def settle_duel(self, duel_id: int) -> TxResult:
        """End a duel once nothing can change it (anyone may; succeeds once): a verdict, or a
        cancellation when nobody answered, published or could be drawn."""
        did = arg.duel_id(duel_id)
        return self._transact("settleDuel", did, duel_id=did)
