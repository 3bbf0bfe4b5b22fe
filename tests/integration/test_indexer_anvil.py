"""Event indexer against a real anvil (JSON-RPC over HTTP, --prune-history), with locally signed txs.

Small on purpose: deploy (the extension, then WWWServe), two nodes deposit/register/stake, sync,
restart the indexer on the same database, add events, sync again; no duplicates and every indexed
balance equals the contract's. Runs on SQLite and, in the `postgres` tier, on a throwaway PostgreSQL
(`fresh_index_url`, tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract

from wwwserve.contracts import EXTENSION_CONTRACT, load_artifact
from wwwserve.devnet.anvil import AnvilProcess
from wwwserve.ledger.chain import connect
from wwwserve.ledger.client import WWWServeClient
from wwwserve.ledger.indexer import Indexer
from wwwserve.ledger.params import WEI_PER_CREDIT, DeploymentParams

DEV_KEY0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
PARAMS = DeploymentParams()
MIN = PARAMS.min_stake_wei


class Signer:
    """Signs and sends transactions for one local key, counting nonces locally."""

    def __init__(self, w3: Web3, account: LocalAccount) -> None:
        self.w3 = w3
        self.account = account
        self.address = account.address
        self.nonce: int = w3.eth.get_transaction_count(account.address)

    def send(self, tx: dict[str, Any]) -> Any:
        tx = {
            "from": self.address,
            "nonce": self.nonce,
            "chainId": self.w3.eth.chain_id,
            "gas": 3_000_000,
            "maxFeePerGas": 10 * 10**9,
            "maxPriorityFeePerGas": 10**9,
            **tx,
        }
        signed = self.account.sign_transaction(tx)
        self.nonce += 1
        receipt = self.w3.eth.wait_for_transaction_receipt(self.w3.eth.send_raw_transaction(signed.raw_transaction))
        assert receipt["status"] == 1, receipt
        return receipt

    def call(self, fn: Any, value: int = 0) -> Any:
        return self.send(fn.build_transaction({"from": self.address, "value": value, "gas": 3_000_000,
                                               "nonce": self.nonce}))


def test_indexer_follows_anvil_and_resumes(anvil: AnvilProcess, fresh_index_url: Callable[[], str]) -> None:
    w3 = connect(anvil.rpc_url)
    funder = Signer(w3, Account.from_key(DEV_KEY0))
    # the extension first, then WWWServe over it; every event comes from WWWServe's address
    extension = None
    for art in (load_artifact(EXTENSION_CONTRACT), load_artifact()):
        args = PARAMS.constructor_args() + ([extension] if extension else [])
        deploy_tx = w3.eth.contract(abi=art.abi, bytecode=art.bytecode).constructor(*args).build_transaction(
            {"from": funder.address, "nonce": funder.nonce, "gas": 15_000_000}
        )
        receipt = funder.send(dict(deploy_tx))
        extension = receipt["contractAddress"]
    contract: Contract = w3.eth.contract(address=receipt["contractAddress"], abi=art.abi)
    f = contract.functions

    # two fresh node keys, funded from the dev account
    nodes = [Signer(w3, Account.from_key(bytes([0x51 + i]) * 32)) for i in range(2)]
    for node in nodes:
        funder.send({"to": node.address, "value": 10**18})
    for i, node in enumerate(nodes):
        node.call(f.deposit(), value=300 * WEI_PER_CREDIT)
        node.call(f.register(bytes([i + 1]) * 32, f"http://127.0.0.1:{9000 + i}", ["smollm2"], ""),
                  value=PARAMS.registration_bond_wei)
        node.call(f.stake(MIN * (i + 1)))

    db_url = fresh_index_url()
    idx = Indexer(w3, contract.address, db_url, batch_blocks=3)  # several batches over a short chain
    first = idx.sync()
    assert first.events_applied == 6 and first.batches > 1
    assert [e.address for e in idx.stake_table()] == [nodes[1].address, nodes[0].address]
    count = idx.event_count()
    idx.close()
    del idx

    # more activity while no indexer runs
    nodes[0].call(f.requestUnstake(MIN // 2))
    nodes[1].call(f.requestWithdrawal(10 * WEI_PER_CREDIT))

    restarted = Indexer(w3, contract.address, db_url, batch_blocks=3)
    second = restarted.sync()
    assert second.from_block == first.to_block + 1
    assert (second.events_applied, second.events_skipped) == (2, 0)
    assert restarted.event_count() == count + 2
    assert restarted.sync().events_applied == 0

    a0 = restarted.account(nodes[0].address)
    assert (a0.active_stake_wei, a0.unbonding_stake_wei) == (MIN // 2, MIN // 2)
    a1 = restarted.account(nodes[1].address)
    assert a1.pending_withdrawal_wei == 10 * WEI_PER_CREDIT
    assert restarted.reconcile(WWWServeClient(w3, contract.address)) == []
    bonds = PARAMS.registration_bond_wei * sum(n.slot_held for n in restarted.nodes(active_only=False))
    assert bonds == 2 * PARAMS.registration_bond_wei
    assert sum(a.total_wei for a in restarted.accounts()) + bonds == w3.eth.get_balance(contract.address)
