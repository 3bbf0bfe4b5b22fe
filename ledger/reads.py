"""Reads of the WWWServe contract: `ContractReader`, the half of the client that sends nothing.

WWWServe is two contracts behind one address (WWWServe delegatecalls WWWServeExt for every function it
does not run itself, see `contracts/`): the reader talks to WWWServe's address with the merged ABI and never
needs to know which half runs a function. Every view goes through `ledger.chain.call_with_retries` (bounded
retries of transient failures, reverts as typed errors) and comes back as the plain values and frozen
dataclasses of `ledger.records`. Arguments are checked first (`ledger.arguments`). The off-chain mirrors of
the contract's hashes bound to this contract and chain (vouchers, work digests, vote commitments) are here
too. `ledger.client.WWWServeClient` adds the transactions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any, TypeVar

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.abi import event_abi_to_log_topic
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.types import TxReceipt

from wwwserve.contracts import EXTENSION_CONTRACT, MAIN_CONTRACT, load_artifact
from wwwserve.ledger import arguments as arg
from wwwserve.ledger.chain import RetryPolicy, call_with_retries
from wwwserve.ledger.digests import recover_voucher_signer, sign_voucher_offline, vote_commitment, voucher_digest
from wwwserve.ledger.errors import ChainRequestError, DeploymentNotFoundError, LedgerValueError, UnknownDuelError
from wwwserve.ledger.params import PARAM_GETTERS, DeploymentParams
from wwwserve.ledger.records import (
    Balances,
    CancelReason,
    DecodedEvent,
    DuelHashes,
    DuelOutcome,
    DuelRound,
    DuelSettlement,
    DuelState,
    DuelStatus,
    NodeInfo,
    VerdictCounts,
    Vote,
)
from wwwserve.ledger.tx import TxSender
from wwwserve.ledger.work import WorkAttestation, WorkError, model_hash, sign_work
from wwwserve.ledger.work import duel_id_of as _duel_id_of
from wwwserve.ledger.work import work_digest as _work_digest

T = TypeVar("T")

CONTRACT_NAME = MAIN_CONTRACT


class ContractReader:
    """The WWWServe contract at `address`, read-only; `sender` is the account a `WWWServeClient` acts as
    (reads use it only to default "my" address and to share its retry policy)."""

    def __init__(
        self, w3: Web3, address: str, sender: TxSender | None = None, *, retry: RetryPolicy | None = None
    ) -> None:
        self._w3 = w3
        self._address = arg.checksum_address(address, "contract address")
        self._sender = sender
        self._retry = retry or (sender.retry if sender is not None else RetryPolicy())
        self._contract: Contract = w3.eth.contract(address=self._address, abi=load_artifact(CONTRACT_NAME).abi)
        self._event_by_topic: dict[bytes, str] = {
            event_abi_to_log_topic(item): item["name"]
            for item in self._contract.abi
            if item["type"] == "event"
        }
        self._chain_id: int | None = None
        self._params: DeploymentParams | None = None

    # -- the deployed code ----------------------------------------------------------------------
    def ensure_deployed(self) -> None:
        """Raise DeploymentNotFoundError unless this version of WWWServe is at `address` and this
        version of WWWServeExt at the extension address it delegates to."""
        self._ensure_code(self._address, CONTRACT_NAME)
        self._ensure_code(self.extension(), EXTENSION_CONTRACT)

    def _ensure_code(self, address: str, name: str) -> None:
        code = bytes(self._view_raw(lambda: self._w3.eth.get_code(Web3.to_checksum_address(address)), "eth_getCode"))
        if not code:
            raise DeploymentNotFoundError(f"no {name} contract at {address} on chain {self.chain_id}")
        expected = HexBytes(load_artifact(name).deployed_bytecode)
        # Vyper appends the immutables after the runtime code, so compare the prefix.
        if not code.startswith(bytes(expected)):
            raise DeploymentNotFoundError(
                f"the contract at {address} on chain {self.chain_id} is not this version of {name}"
            )

    # -- properties -----------------------------------------------------------------------------
    @property
    def address(self) -> ChecksumAddress:
        return self._address

    @property
    def w3(self) -> Web3:
        return self._w3

    @property
    def contract(self) -> Contract:
        """The underlying web3 contract (for event filters and log queries)."""
        return self._contract

    @property
    def sender(self) -> TxSender | None:
        return self._sender

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self._view_raw(lambda: self._w3.eth.chain_id, "eth_chainId"))
        return self._chain_id

    def extension(self) -> ChecksumAddress:
        """The WWWServeExt address this WWWServe delegatecalls (fixed at deployment)."""
        return Web3.to_checksum_address(str(self._view("EXTENSION")))

    # -- plumbing -------------------------------------------------------------------------------
    def _view_raw(self, op: Callable[[], T], function: str) -> T:
        return call_with_retries(self._w3, op, function=function, retry=self._retry)

    def _view(self, name: str, *args: Any) -> Any:
        fn = self._contract.functions[name](*args)
        return self._view_raw(fn.call, f"{CONTRACT_NAME}.{name}")

    def decode_events(self, receipt: TxReceipt) -> tuple[DecodedEvent, ...]:
        """The WWWServe events in `receipt`, in log order (logs of other contracts are skipped)."""
        out: list[DecodedEvent] = []
        for log in receipt["logs"]:
            if log["address"] != self._address or not log["topics"]:
                continue
            name = self._event_by_topic.get(bytes(log["topics"][0]))
            if name is None:
                continue
            decoded = self._contract.events[name]().process_log(log)
            out.append(DecodedEvent(name=name, args=arg.plain(dict(decoded["args"])), log_index=int(log["logIndex"])))
        return tuple(out)

    def _me(self) -> str:
        if self._sender is None:
            raise LedgerValueError("this client has no sender; pass the account address explicitly")
        return self._sender.address

    def _duel_logs(self, event: str, duel_id: int, from_block: int) -> list[Any]:
        """Logs of `event` about one duel (every duel event indexes its duelId), in chain order."""
        did = arg.duel_id(duel_id)
        logs = self._view_raw(
            lambda: self._contract.events[event]().get_logs(
                from_block=arg.uint(from_block, "from_block"), argument_filters={"duelId": did}
            ),
            f"eth_getLogs({event})",
        )
        return sorted(logs, key=lambda lg: (lg["blockNumber"], lg["logIndex"]))

    # -- registry -------------------------------------------------------------------------------
    def registration_value_wei(self, address: str) -> int:
        """What `register` must be sent by `address`: the registration bond, unless it holds a slot already."""
        return 0 if self.registered_once(address) else self.params().registration_bond_wei

    def node(self, address: str) -> NodeInfo | None:
        """The registry entry of `address`; None if it holds no registry slot (never registered, or gave
        its slot back)."""
        who = arg.checksum_address(address)
        if not self.registered_once(who):
            return None
        pubkey, endpoint, models, metadata, active, leaf = self._view("nodes", who)
        return NodeInfo(
            address=who,
            pubkey=bytes(pubkey),
            endpoint=str(endpoint),
            models=tuple(str(m) for m in models),
            metadata=str(metadata),
            active=bool(active),
            leaf=int(leaf),
        )

    def get_models(self, address: str) -> tuple[str, ...]:
        """The models `address` serves (empty if it never registered)."""
        return tuple(str(m) for m in self._view("getModels", arg.checksum_address(address)))

    def registered_once(self, address: str) -> bool:
        """Whether `address` holds a registry slot (registered, and has not released it)."""
        return bool(self._view("registeredOnce", arg.checksum_address(address)))

    def pubkey_owner(self, pubkey: bytes | str) -> str | None:
        """The active node that registered `pubkey`, if any."""
        return arg.address_or_none(self._view("pubkeyOwner", arg.bytes32(pubkey, "pubkey")))

    def active_node_count(self) -> int:
        return int(self._view("activeNodeCount"))

    def serves_model(self, address: str, model: str) -> bool:
        """Whether `address` counts as serving `model` (by name) in this epoch: only such nodes are
        drawn as challengers of a duel over that model. Registrations count from the next epoch."""
        name = arg.text(model, "model", arg.MAX_MODEL_BYTES)
        return bool(self._view("servesModel", arg.checksum_address(address), model_hash(name)))

    def model_id(self, model: str) -> int:
        """The contract's small id of a model name (0 if no node ever registered it)."""
        return int(self._view("modelId", model_hash(arg.text(model, "model", arg.MAX_MODEL_BYTES))))

    def model_count(self) -> int:
        """How many distinct model names were ever registered."""
        return int(self._view("modelCount"))

    # -- credits and stake ----------------------------------------------------------------------
    def credit(self, address: str) -> int:
        return int(self._view("credit", arg.checksum_address(address)))

    def pending_withdrawal(self, address: str) -> int:
        return int(self._view("pendingWithdrawal", arg.checksum_address(address)))

    def withdrawable_at(self, address: str) -> int:
        """Unix time (s) from which the pending withdrawal can be paid out."""
        return int(self._view("withdrawableAt", arg.checksum_address(address)))

    def active_stake(self, address: str) -> int:
        return int(self._view("activeStake", arg.checksum_address(address)))

    def unbonding_stake(self, address: str) -> int:
        return int(self._view("unbondingStake", arg.checksum_address(address)))

    def unbonding_end(self, address: str) -> int:
        """Unix time (s) at which the unbonding stake can be withdrawn (see also `unbonding_block`)."""
        return int(self._view("unbondingEnd", arg.checksum_address(address)))

    def unbonding_block(self, address: str) -> int:
        """Block of the last unstake request: withdrawing also waits DUEL_SPAN_BLOCKS blocks after it."""
        return int(self._view("unbondingBlock", arg.checksum_address(address)))

    def reserved(self, address: str) -> int:
        """Stake (wei) bonded by open duels in which `address` is a duelist (part of its stake)."""
        return int(self._view("reserved", arg.checksum_address(address)))

    def reserve(self) -> int:
        """The duel reserve (wei): lost bonds and judge penalties, paid out to coherent judges."""
        return int(self._view("reserve"))

    def verdicts(self) -> VerdictCounts:
        """Decided verdicts so far, decayed (A won, B won): the counts behind the verdict weight that
        scales coherent seats' pay (`VerdictCounts.pay_scale`). The contract packs them in one word,
        A won in the low 128 bits, B won in the high 128."""
        word = int(self._view("verdicts"))
        return VerdictCounts(a_won=word & (2**128 - 1), b_won=word >> 128)

    def balances(self, address: str) -> Balances:
        """All of `address`'s money in the contract."""
        who = arg.checksum_address(address)
        return Balances(
            credit_wei=self.credit(who),
            pending_withdrawal_wei=self.pending_withdrawal(who),
            withdrawable_at_s=self.withdrawable_at(who),
            active_stake_wei=self.active_stake(who),
            unbonding_stake_wei=self.unbonding_stake(who),
            unbonding_end_s=self.unbonding_end(who),
            unbonding_block=self.unbonding_block(who),
            bonded_wei=self.reserved(who),
        )

    # -- fee vouchers ---------------------------------------------------------------------------
    def sign_voucher(self, account: LocalAccount, executor: str, cumulative_wei: int) -> bytes:
        """`account` (the origin) signs a voucher owing `executor` `cumulative_wei` in total."""
        return sign_voucher_offline(account, self.chain_id, self._address, executor, cumulative_wei)

    def voucher_digest(self, origin: str, executor: str, cumulative_wei: int) -> bytes:
        """The EIP-712 digest of a voucher, computed locally."""
        return voucher_digest(self.chain_id, self._address, origin, executor, cumulative_wei)

    def voucher_digest_onchain(self, origin: str, executor: str, cumulative_wei: int) -> bytes:
        """The contract's own voucherDigest (to cross-check the local one)."""
        return bytes(
            self._view(
                "voucherDigest",
                arg.checksum_address(origin, "origin"),
                arg.checksum_address(executor, "executor"),
                arg.wei(cumulative_wei, "cumulative_wei"),
            )
        )

    def recover_voucher_signer(self, origin: str, executor: str, cumulative_wei: int, signature: bytes) -> str:
        return recover_voucher_signer(self.chain_id, self._address, origin, executor, cumulative_wei, signature)

    def claimed(self, origin: str, executor: str) -> int:
        """Cumulative wei already paid from `origin` to `executor` under vouchers."""
        return int(self._view("claimed", arg.checksum_address(origin, "origin"),
                              arg.checksum_address(executor, "executor")))

    # -- work attestations ----------------------------------------------------------------------
    def work_digest(self, work: WorkAttestation) -> bytes:
        """The EIP-712 digest the executor signs (computed locally with `ledger.work`)."""
        return _work_digest(self.chain_id, self._address, arg.work_unsigned(work))

    def work_digest_onchain(self, work: WorkAttestation) -> bytes:
        """The contract's own workDigest (to cross-check the local one)."""
        w = arg.work_unsigned(work)
        return bytes(self._view(
            "workDigest", arg.checksum_address(w.origin, "work.origin"),
            arg.checksum_address(w.executor, "work.executor"),
            w.request_id, w.request_hash, w.model_hash, w.answer_hash, w.inspect, w.issued_at,
        ))

    def sign_work(self, account: LocalAccount, work: WorkAttestation) -> WorkAttestation:
        """`account` (the executor) signs `work` for this contract and chain."""
        try:
            return sign_work(account, self.chain_id, self._address, arg.work_unsigned(work))
        except WorkError as exc:
            raise LedgerValueError(str(exc)) from None

    def inspect_commitment_onchain(self, request_id: bytes | str, wants_duel: bool, salt: bytes | str) -> bytes:
        """The contract's inspectCommitment (ledger.work.inspect_commitment computes it locally)."""
        if not isinstance(wants_duel, bool):
            raise LedgerValueError(f"wants_duel must be a bool, got {wants_duel!r}")
        return bytes(self._view("inspectCommitment", arg.bytes32(request_id, "request_id"), wants_duel,
                                arg.bytes32(salt, "salt")))

    def duel_id_of(self, origin: str, request_id: bytes | str) -> int:
        """The id a duel over this origin's request gets (computed locally; whether or not opened)."""
        return _duel_id_of(arg.checksum_address(origin, "origin"), arg.bytes32(request_id, "request_id"))

    def duel_id_of_onchain(self, origin: str, request_id: bytes | str) -> int:
        """The contract's duelIdOf (to cross-check `duel_id_of`)."""
        return int(self._view("duelIdOf", arg.checksum_address(origin, "origin"),
                              arg.bytes32(request_id, "request_id")))

    # -- duels: views ---------------------------------------------------------------------------
    def duel(self, duel_id: int) -> DuelState:
        """A duel's state as the contract stores it, with the seats and revealed votes of every round
        reached (the current round's windows too; a past round's read as over), its hashes left None
        (they live in events: see `duel_with_hashes`); UnknownDuelError if there is none."""
        did = arg.duel_id(duel_id)
        origin, a, b, seed, deadline, bond, round_, status_, outcome = self._view("getDuel", did)
        status = DuelStatus(int(status_))
        round_no = int(round_)
        deadline = int(deadline)
        rounds = [DuelRound(r, self.judges(did, r), self.votes(did, r)) for r in range(1, round_no + 1)]
        appeal_window_blocks = 0
        if status is DuelStatus.JUDGING:
            p = self.params()
            rounds[-1] = replace(rounds[-1], commit_end=deadline, reveal_end=deadline + p.reveal_window_blocks)
            appeal_window_blocks = p.appeal_window_blocks
        return DuelState(
            duel_id=did,
            origin=str(origin),
            a=str(a),
            b=arg.address_or_none(b),
            status=status,
            seed_block=int(seed),
            deadline=deadline,
            outcome=DuelOutcome(int(outcome)),
            bond_wei=int(bond),
            rounds=tuple(rounds),
            appeal_window_blocks=appeal_window_blocks,
        )

    def duel_with_hashes(self, duel_id: int, from_block: int = 0) -> DuelState:
        """`duel`, with what the duel's events add: the request and answer hashes and, while it is open,
        the request published on-chain. `from_block` narrows the log search (use the deployment block)."""
        state = self.duel(duel_id)
        hashes = self.duel_hashes(duel_id, from_block=from_block)
        return replace(
            state,
            appeal_window_blocks=self.params().appeal_window_blocks,
            request_hash=hashes.request_hash,
            answer_a_hash=hashes.answer_a_hash,
            answer_b_hash=hashes.answer_b_hash,
            published_request=self.published_request(duel_id, from_block=from_block) if state.is_open else None,
        )

    def judges(self, duel_id: int, round: int) -> tuple[str, ...]:
        """The seats of a round in seat order (a judge drawn twice appears twice); empty if not drawn."""
        return tuple(str(j) for j in self._view("getJudges", arg.duel_id(duel_id), arg.round_number(round)))

    def votes(self, duel_id: int, round: int) -> tuple[Vote, ...]:
        """Revealed votes of a round, per seat (Vote.NONE = not revealed)."""
        return tuple(Vote(v) for v in self._view("getVotes", arg.duel_id(duel_id), arg.round_number(round)))

    def challenger_of(self, duel_id: int) -> str | None:
        """The challenger: the recorded one, or (in the answer window, before anyone drew it) the one
        a draw would pick now; None when there is none (yet)."""
        return arg.address_or_none(self._view("challengerOf", arg.duel_id(duel_id)))

    def commitment_of(self, duel_id: int, round: int, judge: str) -> bytes:
        """The first 16 bytes of the judge's commitment in that round (16 zero bytes if none)."""
        return bytes(self._view("commitmentOf", arg.duel_id(duel_id), arg.round_number(round),
                                arg.checksum_address(judge, "judge")))

    def vote_commitment(
        self, duel_id: int, round: int, judge: str, vote: Vote | int, salt: bytes | str
    ) -> bytes:
        """The commitment for `vote` with `salt`, computed locally (equals the contract's voteCommitment)."""
        return vote_commitment(self.chain_id, self._address, duel_id, round, judge, vote, salt)

    def vote_commitment_onchain(
        self, duel_id: int, round: int, judge: str, vote: Vote | int, salt: bytes | str
    ) -> bytes:
        return bytes(
            self._view(
                "voteCommitment",
                arg.duel_id(duel_id),
                arg.round_number(round),
                arg.checksum_address(judge, "judge"),
                int(arg.vote(vote)),
                arg.bytes32(salt, "salt"),
            )
        )

    def duel_hashes(self, duel_id: int, from_block: int = 0) -> DuelHashes:
        """(request, answer A, answer B) hashes of a duel, from its DuelOpened and DuelAnswered events
        (the contract keeps no hashes in storage). Answer B is None until B answered.

        `from_block` narrows the log search on chains whose RPC limits ranges (use the deployment block).
        """
        opened = self._duel_logs("DuelOpened", duel_id, from_block)
        if not opened:
            raise UnknownDuelError("Duel: unknown duel", f"{CONTRACT_NAME}.duel_hashes")
        args = opened[0]["args"]
        answered = self._duel_logs("DuelAnswered", duel_id, int(opened[0]["blockNumber"]))
        return DuelHashes(
            request_hash=bytes(args["requestHash"]),
            answer_a_hash=bytes(args["answerAHash"]),
            answer_b_hash=bytes(answered[-1]["args"]["answerBHash"]) if answered else None,
        )

    def published_request(self, duel_id: int, from_block: int = 0) -> bytes | None:
        """The request bytes published on-chain for a duel whose challenger could not get them, if any."""
        logs = self._duel_logs("RequestPublished", duel_id, from_block)
        return bytes(logs[-1]["args"]["request"]) if logs else None

    def duel_settlement(self, duel_id: int, from_block: int = 0) -> DuelSettlement | None:
        """What settling a duel decided, from its DuelSettled event; None while it is not settled (and
        for a cancelled duel, which has no verdict: see its DuelCancelled event)."""
        logs = self._duel_logs("DuelSettled", duel_id, from_block)
        if not logs:
            return None
        args = logs[0]["args"]
        return DuelSettlement(
            outcome=DuelOutcome(int(args["outcome"])),
            round=int(args["round"]),
            votes_a=int(args["votesA"]),
            votes_b=int(args["votesB"]),
            stake_moved_wei=int(args["stakeMoved"]),
            block_number=int(logs[0]["blockNumber"]),
            tx_hash="0x" + bytes(logs[0]["transactionHash"]).hex(),
        )

    def duel_cancel_reason(self, duel_id: int, from_block: int = 0) -> CancelReason | None:
        """Why a cancelled duel was cancelled, from its DuelCancelled event; None if it was not."""
        logs = self._duel_logs("DuelCancelled", duel_id, from_block)
        return CancelReason(int(logs[0]["args"]["reason"])) if logs else None

    def duel_ids(self, from_block: int = 0) -> list[int]:
        """Ids of every duel opened since `from_block`, oldest first (from DuelOpened events: duel
        ids are hashes, not a counter)."""
        logs = self._view_raw(
            lambda: self._contract.events.DuelOpened().get_logs(from_block=arg.uint(from_block, "from_block")),
            "eth_getLogs(DuelOpened)",
        )
        ordered = sorted(logs, key=lambda lg: (lg["blockNumber"], lg["logIndex"]))
        return [int(lg["args"]["duelId"]) for lg in ordered]

    # -- sortition ------------------------------------------------------------------------------
    def total_weight(self) -> int:
        """Total drawable stake (wei) in the sortition tree (live; draws read it frozen per epoch)."""
        return int(self._view("totalWeight"))

    def leaf_weight(self, leaf: int) -> int:
        return int(self._view("leafWeight", arg.uint(leaf, "leaf")))

    def leaf_owner(self, leaf: int) -> str | None:
        return arg.address_or_none(self._view("leafOwner", arg.uint(leaf, "leaf")))

    def leaf_count(self) -> int:
        """Leaves ever handed out (released ones included)."""
        return int(self._view("leafCount"))

    def leaf_since(self, leaf: int) -> int:
        """The block in which the leaf's current owner took it."""
        return int(self._view("leafSince", arg.uint(leaf, "leaf")))

    def free_leaf_count(self) -> int:
        """Released leaves waiting for a new owner."""
        return int(self._view("freeLeafCount"))

    # -- deployment parameters -----------------------------------------------------------------
    def params(self) -> DeploymentParams:
        """The deployment parameters, read once from the contract's public immutables."""
        if self._params is None:
            values = {f.name: int(self._view(PARAM_GETTERS[f.name])) for f in fields(DeploymentParams)}
            try:
                self._params = DeploymentParams(**values)
            except ValueError as exc:
                raise ChainRequestError(f"{CONTRACT_NAME} immutables", f"out-of-range parameters: {exc}") from exc
        return self._params

    def duel_escrow_wei(self) -> int:
        """What an origin escrows per duel (the duelist fee + K judge fees)."""
        return int(self._view("DUEL_ESCROW"))

    def appeal_fee_wei(self) -> int:
        """What an appeal costs the losing duelist ((2K + 1) judge fees)."""
        return int(self._view("APPEAL_FEE"))

    def duel_span_blocks(self) -> int:
        """The most blocks a duel can stay open (appeal included)."""
        return int(self._view("DUEL_SPAN_BLOCKS"))

    def slot_cooldown_blocks(self) -> int:
        """Blocks a released registry slot waits before another node gets it."""
        return int(self._view("SLOT_COOLDOWN_BLOCKS"))

    def params_digest(self) -> bytes:
        """keccak256 of every deployment parameter (WWWServe and its extension agree on it)."""
        return bytes(self._view("paramsDigest"))

    def domain_separator(self) -> bytes:
        """The contract's EIP-712 domain separator (vouchers and work attestations)."""
        return bytes(self._view("DOMAIN_SEPARATOR"))
