"""Deploy the WWWServe contract, fund accounts, and bring up a devnet with demo nodes.

`ensure_deployment()` reuses the contract recorded in `deployments/<chain_id>.json` when the chain still
has its code (an attached devnet), and deploys afresh otherwise (a restarted anvil forgets everything).
It works against any EVM RPC URL; only the funding of demo accounts assumes anvil's dev keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3 import Web3

from contracts import load_artifact
from devnet.anvil import DEV_KEYS
from ledger.client import WWWServeClient
from ledger.deployment import Deployment, load_deployment
from ledger.errors import DeploymentNotFoundError
from ledger.params import WEI_PER_ETH, DeploymentParams
from ledger.tx import TxSender

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def demo_account(index: int) -> LocalAccount:
    """Deterministic demo node wallet number `index` (devnet only: the key is public knowledge)."""
    account: LocalAccount = Account.from_key(keccak(text=f"wwwserve-demo-node-{index}"))
    return account


def deployed_code_matches(w3: Web3, address: str) -> bool:
    """True when `address` holds the runtime code of the committed artifact."""
    try:
        WWWServeClient(w3, address).ensure_deployed()
    except DeploymentNotFoundError:
        return False
    return True


def ensure_deployment(
    w3: Web3,
    rpc_url: str,
    deployer_key: str = DEV_KEYS[0],
    params: DeploymentParams | None = None,
    progress: Progress = _quiet,
) -> tuple[Deployment, bool]:
    """Return (deployment, newly_deployed): reuse the recorded contract if its code is on-chain."""
    chain_id = w3.eth.chain_id
    try:
        existing = load_deployment(chain_id)
        if deployed_code_matches(w3, existing.address) and (params is None or existing.params == params):
            progress(f"contract already deployed at {existing.address}")
            return existing, False
    except DeploymentNotFoundError:
        pass
    params = params or DeploymentParams()
    account: LocalAccount = Account.from_key(deployer_key)
    progress("deploying WWWServe ...")
    address, block = WWWServeClient.deploy(w3, TxSender(w3, account), params)
    artifact = load_artifact()
    deployment = Deployment(
        chain_id=chain_id,
        address=address,
        block_number=block,
        deployer=account.address,
        rpc_url=rpc_url,
        params=params,
        abi_hash=artifact.abi_hash,
        source_hash=artifact.source_hash,
        compiler=artifact.compiler,
        evm_version=artifact.evm_version,
    )
    deployment.save()
    progress(f"deployed WWWServe at {address} (block {block})")
    return deployment, True


def fund(w3: Web3, funder: TxSender, addresses: list[str], amount_wei: int) -> None:
    """Top every address up to at least `amount_wei` of native ETH, serially from one funder."""
    for address in addresses:
        balance = w3.eth.get_balance(Web3.to_checksum_address(address))
        if balance < amount_wei:
            funder.send(to=Web3.to_checksum_address(address), value_wei=amount_wei - balance, function="fund")


@dataclass(frozen=True)
class DemoNode:
    """A demo node set up by `bring_up_demo_nodes`."""

    name: str
    address: str
    endpoint: str
    pubkey_hex: str


def bring_up_demo_nodes(
    w3: Web3,
    deployment: Deployment,
    count: int,
    stake_wei: int,
    deposit_wei: int,
    base_port: int = 9101,
    models: tuple[str, ...] = ("smollm2-135m-instruct",),
    progress: Progress = _quiet,
) -> list[DemoNode]:
    """Fund, register and stake `count` deterministic demo nodes (idempotent on re-run)."""
    from node.identity import load_or_create_identity, public_key_bytes

    funder = TxSender(w3, Account.from_key(DEV_KEYS[0]))
    accounts = [demo_account(i + 1) for i in range(count)]
    fund(w3, funder, [a.address for a in accounts], deposit_wei + stake_wei + WEI_PER_ETH)
    nodes = []
    for i, account in enumerate(accounts):
        name = f"demo-node-{i + 1}"
        client = WWWServeClient(w3, deployment.address, TxSender(w3, account))
        key = load_or_create_identity(name)
        endpoint = f"http://127.0.0.1:{base_port + i}"
        if client.node(account.address) is None:
            progress(f"registering {name} ({account.address})")
            client.register(public_key_bytes(key), endpoint, list(models), '{"demo": true}')
        balances = client.balances(account.address)
        if balances.active_stake_wei < stake_wei:
            missing = stake_wei - balances.active_stake_wei
            if balances.credit_wei < missing + deposit_wei:
                client.deposit(missing + deposit_wei - balances.credit_wei)
            progress(f"staking {name}")
            client.stake(missing)
        nodes.append(DemoNode(name, account.address, endpoint, public_key_bytes(key).hex()))
    return nodes
