"""The Ledger manager against a real anvil chain and the deployed WWWServe contract.

Registry and stakes reach the in-memory view on refresh; fee vouchers go origin -> executor -> chain
and move exactly the owed credit; both sides survive a restart; every rejection is typed; auto-stake
and fixed stake move the node's on-chain stake through the manager's own transactions.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from wwwserve.devnet.anvil import DEV_KEYS, AnvilProcess
from wwwserve.ledger.chain import connect
from wwwserve.ledger.client import WWWServeClient, sign_voucher_offline
from wwwserve.ledger.deployment import Deployment
from wwwserve.ledger.errors import LedgerError
from wwwserve.ledger.params import WEI_PER_CREDIT, DeploymentParams
from wwwserve.ledger.tx import TxSender
from wwwserve.ledger.work import WorkAttestation, check_work
from wwwserve.node.managers.ledger import LedgerAccountMissingError, LedgerManager, PeerRecord
from wwwserve.node.policy import DefaultPolicy, LoadSnapshot, ModelLoad, PolicyConfig
from wwwserve.node.routing import Peer
from wwwserve.node.settings import load_settings
from wwwserve.node.vouchers import (
    SignedVoucher,
    VoucherCreditExceededError,
    VoucherForgedError,
    VoucherMalformedError,
    VoucherOverdrawnError,
    VoucherStaleError,
    VoucherWrongExecutorError,
)

pytestmark = pytest.mark.integration

PARAMS = DeploymentParams()
UNIT = PARAMS.min_stake_wei
FEE = WEI_PER_CREDIT


@dataclass
class Chain:
    anvil: AnvilProcess
    w3: Web3
    contract: str
    deploy_block: int

    def client(self, account: LocalAccount | None = None) -> WWWServeClient:
        sender = TxSender(self.w3, account) if account is not None else None
        return WWWServeClient(self.w3, self.contract, sender)

    def node(self, *, deposit_wei: int = 10 * UNIT, stake_wei: int = UNIT, models: tuple[str, ...] = ("m",),
             endpoint: str = "http://127.0.0.1:9000") -> LocalAccount:
        """A fresh funded account, registered, with `deposit_wei` deposited and `stake_wei` staked."""
        account: LocalAccount = Account.create()
        self.w3.provider.make_request("anvil_setBalance", [account.address, hex(10**22)])  # type: ignore[arg-type]
        client = self.client(account)
        client.register(os.urandom(32), endpoint, list(models))
        if deposit_wei:
            client.deposit(deposit_wei)
        if stake_wei:
            client.stake(stake_wei)
        return account


@pytest.fixture(scope="module")
def chain(anvil_module: AnvilProcess) -> Chain:
    w3 = connect(anvil_module.rpc_url)
    address, block = WWWServeClient.deploy(w3, TxSender(w3, Account.from_key(DEV_KEYS[0])), PARAMS)
    return Chain(anvil_module, w3, address, block)


def manager(chain: Chain, account: LocalAccount, home: Path, *, with_account: bool = True,
            **kwargs: object) -> LedgerManager:
    """A manager whose background loops stay quiet unless a test asks otherwise (it drives refresh/claims)."""
    options: dict[str, object] = {"poll_interval_s": 3600.0, "voucher_claim_interval_s": 3600.0, **kwargs}
    return LedgerManager(
        rpc_url=chain.anvil.rpc_url,
        contract_address=chain.contract,
        chain_id=chain.anvil.chain_id,
        my_address=account.address,
        account=account if with_account else None,
        home=home,
        **options,  # type: ignore[arg-type]
    )


async def _wait_for(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


def test_peers_follow_registrations_stake_changes_and_leaving(chain: Chain, tmp_path: Path) -> None:
    a = chain.node(models=("m1",), endpoint="http://a.example:8001/")
    b = chain.node(models=("m1", "m2"), endpoint="http://b.example:8002", stake_wei=2 * UNIT)
    b_client = chain.client(b)
    b_key = chain.client().node(b.address)
    assert b_key is not None

    async def scenario() -> None:
        mgr = manager(chain, a, tmp_path, poll_interval_s=0.3)
        await mgr.start()
        try:
            addresses = {p.address for p in mgr.peers()}
            assert {a.address, b.address} <= addresses  # self included
            pb = mgr.peer(b.address.lower())
            assert pb == PeerRecord(
                address=b.address, pubkey=bytes(b_key.pubkey), endpoint="http://b.example:8002",
                models=frozenset({"m1", "m2"}), stake_wei=2 * UNIT,
            )
            pa = mgr.peer(a.address)
            assert pa is not None and pa.endpoint == "http://a.example:8001"  # trailing slash dropped
            assert pb.routing_peer() == Peer(b.address, 2 * UNIT, frozenset({"m1", "m2"}), "http://b.example:8002")
            assert mgr.pubkey_of(b.address) == bytes(b_key.pubkey)
            assert mgr.stake_wei() == UNIT and mgr.credit_wei() == 9 * UNIT
            number = mgr.recent_block_number()
            assert mgr.recent_block_hash() == bytes(chain.w3.eth.get_block(number)["hash"])

            b_client.stake(UNIT)

            async def restaked() -> bool:  # picked up by the background poll, no refresh() call
                peer = mgr.peer(b.address)
                return peer is not None and peer.stake_wei == 3 * UNIT

            await _wait_for(restaked, timeout_s=15.0)
            assert mgr.recent_block_number() > number

            # Below the contract's MIN_STAKE (as after lost duels) a node is not routable: stake 0.
            b_client.request_unstake(3 * UNIT - (UNIT - 1))
            await mgr.refresh()
            peer = mgr.peer(b.address)
            assert peer is not None and peer.stake_wei == 0 and chain.client().active_stake(b.address) == UNIT - 1

            b_client.leave()
            await mgr.refresh()
            assert mgr.peer(b.address) is None and b.address not in {p.address for p in mgr.peers()}
            assert mgr.pubkey_of(b.address) == bytes(b_key.pubkey)  # results it signed still verify
            assert mgr.pubkey_of(Account.create().address) is None
            # ... and it can still be reached for the duel evidence of the work it attested.
            assert mgr.contact(b.address) == Peer(b.address, 0, frozenset(), "http://b.example:8002")
            assert mgr.contact(a.address.lower()) == pa.routing_peer()
            assert mgr.contact(Account.create().address) is None
        finally:
            await mgr.aclose()

    asyncio.run(scenario())


def test_work_is_signed_with_the_wallet_for_this_chain_and_contract(chain: Chain, tmp_path: Path) -> None:
    node = chain.node()
    origin = chain.node()
    work = WorkAttestation(origin=origin.address, executor=node.address, request_id=b"\x01" * 32,
                           request_hash=b"\x02" * 32, model_hash=b"\x03" * 32, answer_hash=b"\x04" * 32,
                           inspect=b"\x05" * 32, issued_at=int(time.time()))
    signed = manager(chain, node, tmp_path).sign_work(work)
    check_work(chain.anvil.chain_id, chain.contract, signed)  # what openDuel will check
    assert chain.client().work_digest_onchain(signed) == signed.digest(chain.anvil.chain_id, chain.contract)
    with pytest.raises(LedgerAccountMissingError):  # a locked wallet signs no work (and takes no delegations)
        manager(chain, node, tmp_path / "locked", with_account=False).sign_work(work)


def test_vouchers_are_signed_accepted_claimed_and_survive_restarts(chain: Chain, tmp_path: Path) -> None:
    origin = chain.node(deposit_wei=2 * UNIT, stake_wei=UNIT)
    executor = chain.node()
    reader = chain.client()
    home_o, home_e = tmp_path / "origin", tmp_path / "executor"

    async def first_life() -> list[SignedVoucher]:
        mo, me = manager(chain, origin, home_o), manager(chain, executor, home_e)
        await mo.start()
        await me.start()
        try:
            assert mo.credit_wei() == UNIT
            v1 = mo.record_fee(executor.address, FEE)
            v2 = mo.record_fee(executor.address, 2 * FEE)
            assert (v1.cumulative_wei, v2.cumulative_wei) == (FEE, 3 * FEE)
            assert reader.recover_voucher_signer(origin.address, executor.address, FEE, v1.signature) == origin.address
            # The contract's own digest agrees with what was signed.
            assert reader.voucher_digest_onchain(origin.address, executor.address, FEE) == reader.voucher_digest(
                origin.address, executor.address, FEE
            )
            assert mo.credit_wei() == UNIT - 3 * FEE  # promised, unclaimed: never spendable twice

            wire = [SignedVoucher.from_json(v.to_json()) for v in (v1, v2)]
            assert me.accept_voucher(wire[0]) == FEE
            assert me.accept_voucher(wire[1]) == 2 * FEE
            with pytest.raises(VoucherStaleError):
                me.accept_voucher(wire[0])
            assert me.owed_to_me() == {origin.address: 3 * FEE}
            # what node.billing reads of the origin: its best voucher, its funds on the ledger, nothing claimed
            standing = me.standing(origin.address.lower())
            assert (standing.vouchered_wei, standing.claimed_wei) == (3 * FEE, 0)
            assert standing.funds_wei == reader.credit(origin.address) + reader.pending_withdrawal(origin.address)

            credit_before = reader.credit(executor.address)
            results = await me.claim_vouchers()
            assert len(results) == 1
            assert reader.credit(executor.address) - credit_before == 3 * FEE
            assert reader.claimed(origin.address, executor.address) == 3 * FEE
            assert me.owed_to_me() == {}
            assert me.credit_wei() == reader.credit(executor.address)  # refreshed after the claim
            assert me.standing(origin.address).claimed_wei == 3 * FEE

            nonce = chain.w3.eth.get_transaction_count(executor.address)
            assert await me.claim_vouchers() == []
            assert chain.w3.eth.get_transaction_count(executor.address) == nonce  # nothing sent

            await mo.refresh()
            assert mo.credit_wei() == reader.credit(origin.address) == UNIT - 3 * FEE
            return [v1, v2]
        finally:
            await mo.aclose()
            await me.aclose()

    async def second_life(old: list[SignedVoucher]) -> None:
        mo, me = manager(chain, origin, home_o), manager(chain, executor, home_e, voucher_claim_interval_s=0.3)
        await mo.start()
        await me.start()
        try:
            v3 = mo.record_fee(executor.address, FEE)
            assert v3.cumulative_wei == 4 * FEE  # continues from where it was
            assert me.standing(origin.address).vouchered_wei == 3 * FEE  # the cache starts from the store
            for v in old:
                with pytest.raises(VoucherStaleError):
                    me.accept_voucher(v)
            assert me.accept_voucher(v3) == FEE  # counts only what is new
            assert me.owed_to_me() == {origin.address: FEE}

            async def claimed_by_the_loop() -> bool:
                return me.owed_to_me() == {}

            await _wait_for(claimed_by_the_loop, timeout_s=15.0)
            assert reader.claimed(origin.address, executor.address) == 4 * FEE
        finally:
            await mo.aclose()
            await me.aclose()

    asyncio.run(second_life(asyncio.run(first_life())))


def test_rejections_are_typed(chain: Chain, tmp_path: Path) -> None:
    origin = chain.node(deposit_wei=UNIT + 5 * FEE, stake_wei=UNIT)
    executor = chain.node()
    stranger = chain.node()

    async def scenario() -> None:
        mo, me = manager(chain, origin, tmp_path / "o"), manager(chain, executor, tmp_path / "e")
        await mo.start()
        await me.start()
        try:
            to_stranger = mo.record_fee(stranger.address, FEE)
            with pytest.raises(VoucherWrongExecutorError):
                me.accept_voucher(to_stranger)

            signature = sign_voucher_offline(stranger, chain.anvil.chain_id, chain.contract, executor.address, FEE)
            forged = SignedVoucher(origin.address, executor.address, FEE, signature)
            with pytest.raises(VoucherForgedError):
                me.accept_voucher(forged)

            good = mo.record_fee(executor.address, 2 * FEE)
            assert me.accept_voucher(good) == 2 * FEE
            with pytest.raises(VoucherStaleError):
                me.accept_voucher(good)  # a replay earns nothing

            # Signed by the real origin, but for more than it holds on the ledger.
            big = 10 * UNIT
            signature = sign_voucher_offline(origin, chain.anvil.chain_id, chain.contract, executor.address, big)
            with pytest.raises(VoucherOverdrawnError):
                me.accept_voucher(SignedVoucher(origin.address, executor.address, big, signature))

            bad = good.to_json()
            bad["cumulative_wei"] = "-3"
            with pytest.raises(VoucherMalformedError):
                SignedVoucher.from_json(bad)

            # 5 FEE of free credit, 3 promised: a fee of 3 more would over-promise.
            assert mo.credit_wei() == 2 * FEE
            with pytest.raises(VoucherCreditExceededError):
                mo.record_fee(executor.address, 3 * FEE)
            assert mo.record_fee(executor.address, 2 * FEE).cumulative_wei == 4 * FEE
            assert mo.credit_wei() == 0
        finally:
            await mo.aclose()
            await me.aclose()

        readonly = manager(chain, origin, tmp_path / "ro", with_account=False)
        await readonly.start()
        try:
            with pytest.raises(LedgerAccountMissingError):
                readonly.record_fee(executor.address, FEE)
            with pytest.raises(LedgerAccountMissingError):
                await readonly.claim_vouchers()
            assert readonly.stake_wei() == UNIT
        finally:
            await readonly.aclose()

    asyncio.run(scenario())


def test_auto_stake_follows_load_and_fixed_stake_is_reached(chain: Chain, tmp_path: Path) -> None:
    node = chain.node(deposit_wei=10 * UNIT, stake_wei=UNIT)
    reader = chain.client()
    idle = LoadSnapshot(models={"m": ModelLoad(kv_usage=0.0)})
    busy = LoadSnapshot(models={"m": ModelLoad(kv_usage=1.0)}, user_queue=3)
    current = {"snapshot": idle}
    config = PolicyConfig(auto_stake=True, auto_stake_interval_s=0.2, stake_unit_wei=UNIT,
                          auto_stake_settle_intervals=2)
    seen: list[int] = []
    looks = {"n": 0, "flap": False}

    async def load_snapshot() -> LoadSnapshot:
        looks["n"] += 1
        if looks["flap"]:  # every look calls for a move the other way than the one before
            return idle if looks["n"] % 2 else busy
        return current["snapshot"]

    async def scenario() -> None:
        import random

        mgr = manager(chain, node, tmp_path / "auto", policy=DefaultPolicy(config, random.Random(1)),
                      load_snapshot=load_snapshot)
        await mgr.start()

        async def stake_is(units: int) -> bool:
            onchain = reader.active_stake(node.address)
            if not seen or seen[-1] != onchain:
                seen.append(onchain)
            return onchain == units * UNIT and mgr.stake_wei() == units * UNIT

        try:
            await _wait_for(lambda: stake_is(4))  # idle: the reference target is 4 units, at most 2 per step
            current["snapshot"] = busy
            # Loaded and queueing: the reference target is 0, but auto-stake stops at MIN_STAKE (= UNIT).
            await _wait_for(lambda: stake_is(1))
            # A load that flaps at every look sends no transaction (the reference rule sent one per look).
            nonce = chain.w3.eth.get_transaction_count(node.address)
            looks["flap"], start = True, looks["n"]

            async def looked_20_times() -> bool:
                return looks["n"] >= start + 20

            await _wait_for(looked_20_times)
            assert chain.w3.eth.get_transaction_count(node.address) == nonce and await stake_is(1)
        finally:
            await mgr.aclose()
        assert seen == [UNIT, 3 * UNIT, 4 * UNIT, 2 * UNIT, UNIT]  # steps of at most 2 units, no overshoot

        fixed = PolicyConfig(auto_stake=False, fixed_stake_wei=3 * UNIT, auto_stake_interval_s=0.2)
        mgr = manager(chain, node, tmp_path / "fixed", policy=DefaultPolicy(fixed, random.Random(1)),
                      poll_interval_s=0.2)
        await mgr.start()
        try:
            await _wait_for(lambda: stake_is(3))
            # Stake taken away (as a lost duel does; here the operator's own unstake): held, so topped up.
            chain.client(node).request_unstake(2 * UNIT)
            assert reader.active_stake(node.address) == UNIT
            await _wait_for(lambda: stake_is(3))
        finally:
            await mgr.aclose()

    asyncio.run(scenario())


def test_from_settings_finds_the_contract_in_the_deployment_record(chain: Chain, tmp_path: Path) -> None:
    node = chain.node()
    home = tmp_path / "home"
    Deployment(
        chain_id=chain.anvil.chain_id, address=chain.contract, block_number=chain.deploy_block,
        deployer=Account.from_key(DEV_KEYS[0]).address, rpc_url=chain.anvil.rpc_url, params=PARAMS,
        abi_hash="-", source_hash="-", compiler="-", evm_version="-",
    ).save(home)
    settings = load_settings(None, {"chain.rpc_url": chain.anvil.rpc_url, "backend.kind": "fake"})

    async def scenario() -> None:
        mgr = LedgerManager.from_settings(
            settings, chain_id=chain.anvil.chain_id, my_address=node.address, account=node, home=home
        )
        assert mgr.contract_address == chain.contract
        await mgr.start()
        try:
            assert mgr.peer(node.address) is not None and mgr.stake_wei() == UNIT
        finally:
            await mgr.aclose()
        # The default index is one file per chain, contract, node and deployment (tagged by the hash of
        # the deployment block: a restarted devnet redeploys at the same address), under <home>/indexes.
        tag = bytes(chain.w3.eth.get_block(chain.deploy_block)["hash"]).hex()[:12]
        index = home / "indexes" / f"{chain.anvil.chain_id}-{chain.contract}-{node.address}-{tag}.sqlite"
        assert index.exists()
        assert (home / "vouchers" / f"{chain.anvil.chain_id}-{node.address}-{tag}.db").exists()

    asyncio.run(scenario())


def test_a_chain_outage_keeps_the_last_view_and_closes_cleanly(anvil: AnvilProcess, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    w3 = connect(anvil.rpc_url)
    address, block = WWWServeClient.deploy(w3, TxSender(w3, Account.from_key(DEV_KEYS[0])), PARAMS)
    own = Chain(anvil, w3, address, block)
    origin, executor = own.node(), own.node()

    async def scenario() -> None:
        mgr = manager(own, origin, tmp_path, poll_interval_s=0.2)
        await mgr.start()
        try:
            before = mgr.peers()
            anvil.stop()
            caplog.set_level("WARNING", logger="wwwserve.node.managers.ledger")
            with pytest.raises(LedgerError):
                await mgr.refresh()
            # the poll loop fails too (it says so once), and keeps running
            async with asyncio.timeout(30):
                while "refresh failed (keeping the last view)" not in caplog.text:
                    await asyncio.sleep(0.05)
            poll = next(t for t in mgr._tasks if t.get_name() == "ledger-poll")
            assert not poll.done()
            assert mgr.peers() == before and mgr.stake_wei() == UNIT
            # Paying needs no chain: the voucher is signed from memory and the store.
            assert mgr.record_fee(executor.address, FEE).cumulative_wei == FEE
        finally:
            await mgr.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize("configured_index", [False, True], ids=["default index", "chain.index_db_url"])
def test_a_chain_reset_is_told_once_served_through_and_re_indexed(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                                   configured_index: bool) -> None:
    """Issue 13, finding 8: after anvil was killed and started afresh, the indexer stopped on a block-hash
    mismatch and warned every second until the node was restarted. Now the node says once that the chain
    was reset, drops its peers (it serves locally), and when the contract is deployed again re-indexes on
    its own and sees the nodes registered on the new chain: into a fresh index file by default, into the
    operator's own database (emptied first) when `chain.index_db_url` names one."""
    from wwwserve.devnet.anvil import start_anvil
    from wwwserve.devnet.ports import free_port

    port = free_port()
    first = start_anvil(port=port)
    second: AnvilProcess | None = None

    def deploy(anvil: AnvilProcess) -> Chain:
        w3 = connect(anvil.rpc_url)
        address, block = WWWServeClient.deploy(w3, TxSender(w3, Account.from_key(DEV_KEYS[0])), PARAMS)
        return Chain(anvil, w3, address, block)

    try:
        old = deploy(first)
        me, peer = old.node(), old.node(endpoint="http://b.example:9000")
        index_url = f"sqlite:///{tmp_path / 'operators-index.sqlite'}" if configured_index else None
        m = manager(old, me, tmp_path, poll_interval_s=0.2, index_db_url=index_url)

        async def run() -> None:
            nonlocal second
            await m.start()
            try:
                assert {p.address for p in m.peers()} == {me.address, peer.address}
                assert m.standing(peer.address).epoch == 0
                first.stop()
                second = start_anvil(port=port)  # a fresh devnet: same chain id, same port, no contract

                async def reset_seen() -> bool:
                    return m.chain_reset is not None

                await _wait_for(reset_seen)
                assert m.peers() == [] and m.stake_wei() == 0  # serves locally, delegates nothing
                for _ in range(10):  # more polls: no new warning
                    await asyncio.sleep(0.2)
                new = deploy(second)
                assert new.contract == old.contract  # the same deployer nonces: the same address
                newcomer = new.node(endpoint="http://c.example:9000")

                async def reindexed() -> bool:
                    return m.chain_reset is None and newcomer.address in {p.address for p in m.peers()}

                await _wait_for(reindexed)
                assert me.address not in {p.address for p in m.peers()}  # not registered on the new chain
                # A new deployment: what peers owe is billed afresh against its vouchers (node.billing).
                assert m.standing(newcomer.address).epoch == 1
            finally:
                await m.aclose()

        with caplog.at_level("WARNING", logger="wwwserve.node.managers.ledger"):
            asyncio.run(run())
        told = [r.getMessage() for r in caplog.records if "the chain was reset" in r.getMessage()]
        assert len(told) == 1, told
        assert sum("refresh failed" in r.getMessage() for r in caplog.records) <= 3  # deduplicated
        assert any("re-indexing from block 0" in r.getMessage() for r in caplog.records)
        if configured_index:  # the same database, holding the new chain only
            assert any(f"into {index_url}" in r.getMessage() for r in caplog.records)
            from wwwserve.ledger.indexer import Indexer

            assert second is not None
            idx = Indexer(connect(second.rpc_url), old.contract, index_url)
            try:
                assert me.address not in {n.address for n in idx.nodes(active_only=False)}
            finally:
                idx.close()
    finally:
        first.stop()
        if second is not None:
            second.stop()
