"""Deploy the WWWServe contract, fund accounts, and bring up a devnet with demo nodes.

WWWServe is two contracts (see `contracts/`): the extension WWWServeExt goes first, then WWWServe with
its address; users only ever see WWWServe's. `ensure_deployment()` reuses the pair recorded in
`deployments/<chain_id>.json` when the chain still has both codes (an attached devnet), and deploys
afresh otherwise (a restarted anvil forgets everything).
It works against any EVM RPC URL; only the funding of demo accounts assumes anvil's dev keys.

The demo node wallets are deterministic and their keys are public knowledge (`demo_account(i)` derives
them from a fixed string), as is `DEMO_PASSWORD`, the password of their keystores `demo-node-<i>`: they
exist so that `wwwserve up` can run node processes that sign transactions on a local devnet. Never fund
them on a chain with real value: `ensure_deployment` (with a dev key) and `bring_up_demo_nodes` refuse a
chain whose id is not in `DEVNET_CHAIN_IDS` unless told `allow_public_keys`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3 import Web3

from wwwserve.contracts import load_artifact
from wwwserve.devnet.anvil import DEV_KEYS, DevnetError
from wwwserve.ledger.client import WWWServeClient
from wwwserve.ledger.deployment import Deployment, load_deployment
from wwwserve.ledger.errors import DeploymentNotFoundError
from wwwserve.ledger.identity import load_or_create_identity, public_key_bytes
from wwwserve.ledger.params import DEVNET_CHAIN_IDS, WEI_PER_ETH, DeploymentParams
from wwwserve.ledger.tx import TxSender
from wwwserve.ledger.wallet import Kdf, import_wallet, wallet_info, wallet_path

# Public devnet password of the demo keystores `demo-node-<i>` (their keys are public anyway).
DEMO_PASSWORD = "wwwserve-devnet-demo"
# The keys are public, so a slow KDF would protect nothing; a cheap one keeps node start-up fast.
DEMO_KDF = Kdf("scrypt", 2**10)

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    return None




def check_public_keys_allowed(w3: Web3, *, allow: bool = False) -> None:
    """Refuse (`DevnetError`) to sign with public keys on a chain that is not a known devnet: anything those
    keys deploy, fund or stake there belongs to whoever reads this source. `allow` overrides."""
    chain_id = w3.eth.chain_id
    if chain_id not in DEVNET_CHAIN_IDS and not allow:
        raise DevnetError(
            f"chain {chain_id} is not a known devnet ({', '.join(map(str, sorted(DEVNET_CHAIN_IDS)))}): the demo "
            "keys and anvil's dev keys are public, so anyone could take what they deploy, fund or stake there; "
            "pass --allow-public-keys to use them anyway")


def demo_account(index: int) -> LocalAccount:
    """Deterministic demo node wallet number `index` (devnet only: the key is public knowledge)."""
    account: LocalAccount = Account.from_key(keccak(text=f"wwwserve-demo-node-{index}"))
    return account


def demo_wallet_name(index: int) -> str:
    """Keystore (and identity key) name of demo node number `index` (1-based)."""
    return f"demo-node-{index}"


def ensure_demo_wallet(index: int, password: str = DEMO_PASSWORD, home: Path | None = None) -> str:
    """Import demo account `index` as keystore `demo-node-<index>` unless present; return its name.

    An existing keystore of that name must hold the demo account: a different key there would make the
    node sign as someone other than the registered demo node.
    """
    name = demo_wallet_name(index)
    expected = demo_account(index).address
    if wallet_path(name, home).exists():
        found = wallet_info(name, home).address
        if found != expected:
            raise DevnetError(f"keystore {name!r} holds {found}, not demo account {expected}: "
                              f"move {wallet_path(name, home)} away and run again")
        return name
    import_wallet(name, bytes(demo_account(index).key), password, home=home, kdf=DEMO_KDF)
    return name


def deployed_code_matches(w3: Web3, address: str) -> bool:
    """True when `address` holds the committed WWWServe runtime code, and the extension it
    delegates to the committed WWWServeExt code."""
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
    allow_public_keys: bool = False,
) -> tuple[Deployment, bool]:
    """Return (deployment, newly_deployed): reuse the recorded contract if its code is on-chain. Deploying
    with one of anvil's public dev keys is refused off a devnet unless `allow_public_keys`.

    `rpc_url` is only written to the record (`w3` is the connection used): the address the record's
    readers reach the chain at, which differs from `w3`'s when the deployer runs elsewhere (in compose it
    dials http://anvil:8545 while the record says http://127.0.0.1:8545 for the host). A reused record
    naming another address is rewritten with this one."""
    chain_id = w3.eth.chain_id
    try:
        existing = load_deployment(chain_id)
        if (deployed_code_matches(w3, existing.address) and (params is None or existing.params == params)
                and existing.extension == WWWServeClient(w3, existing.address).extension()):
            progress(f"contract already deployed at {existing.address}")
            if existing.rpc_url != rpc_url:
                existing = replace(existing, rpc_url=rpc_url)
                existing.save()
            return existing, False
    except DeploymentNotFoundError:
        pass
    if deployer_key in DEV_KEYS:
        check_public_keys_allowed(w3, allow=allow_public_keys)
    params = params or DeploymentParams()
    account: LocalAccount = Account.from_key(deployer_key)
    progress("deploying WWWServe (the extension first, then the contract) ...")
    deployed = WWWServeClient.deploy_contracts(w3, TxSender(w3, account), params)
    artifact = load_artifact()
    deployment = Deployment(
        chain_id=chain_id,
        address=deployed.address,
        extension=deployed.extension,
        block_number=deployed.block_number,
        deployer=account.address,
        rpc_url=rpc_url,
        params=params,
        abi_hash=artifact.abi_hash,
        source_hash=artifact.source_hash,
        compiler=artifact.compiler,
        evm_version=artifact.evm_version,
    )
    deployment.save()
    progress(f"deployed WWWServe at {deployed.address} (block {deployed.block_number}; "
             f"extension {deployed.extension})")
    return deployment, True


def fund(w3: Web3, funder: TxSender, addresses: list[str], amount_wei: int) -> None:
    """Top every address up to at least `amount_wei` of native ETH, serially from one funder."""
    for address in addresses:
        balance = w3.eth.get_balance(Web3.to_checksum_address(address))
        if balance < amount_wei:
            funder.send(to=Web3.to_checksum_address(address), value_wei=amount_wei - balance, function="fund")


@dataclass(frozen=True)
class DemoNode:
    """A demo node set up by `bring_up_demo_nodes`; `wallet` names its keystore and identity key."""

    name: str
    address: str
    endpoint: str
    pubkey_hex: str
    wallet: str
    models: tuple[str, ...]
    stake_wei: int


def bring_up_demo_nodes(
    w3: Web3,
    deployment: Deployment,
    count: int,
    stake_wei: int,
    deposit_wei: int,
    *,
    models: tuple[str, ...],
    base_port: int = 9101,
    progress: Progress = _quiet,
    password: str = DEMO_PASSWORD,
    endpoint_host: str = "127.0.0.1",
    allow_public_keys: bool = False,
) -> list[DemoNode]:
    """Fund, register and stake `count` deterministic demo nodes (idempotent on re-run).

    Each gets keystore and identity key `demo-node-<i>` (imported/created if missing) and is registered
    with endpoint `http://<endpoint_host>:<base_port + i - 1>` (`{i}` in `endpoint_host` stands for the
    node's number: `node{i}` gives each compose service its own host name) and `models` (what the node
    processes about to start will serve: the caller knows their backend, the devnet does not). A re-run
    with other models, another port or a new identity key updates the registration, so the chain always
    says what those processes serve.
    """
    if not models:
        raise DevnetError("bring_up_demo_nodes: give the models the demo nodes serve")
    check_public_keys_allowed(w3, allow=allow_public_keys)  # every key used here is public
    wanted_models = tuple(models)
    funder = TxSender(w3, Account.from_key(DEV_KEYS[0]))
    accounts = [demo_account(i + 1) for i in range(count)]
    fund(w3, funder, [a.address for a in accounts], deposit_wei + stake_wei + WEI_PER_ETH)
    nodes = []
    for i, account in enumerate(accounts):
        name = ensure_demo_wallet(i + 1, password)
        client = WWWServeClient(w3, deployment.address, TxSender(w3, account))
        key = load_or_create_identity(name)
        pubkey = public_key_bytes(key)
        host = endpoint_host.replace("{i}", str(i + 1))
        host = f"[{host}]" if ":" in host else host
        endpoint = f"http://{host}:{base_port + i}"
        info = client.node(account.address)
        if info is None:
            progress(f"registering {name} ({account.address})")
            client.register(pubkey, endpoint, list(wanted_models), '{"demo": true}')
        elif (info.models, info.endpoint, info.pubkey) != (wanted_models, endpoint, pubkey) or not info.active:
            if not info.active:
                # A node that left cannot update; registering again re-activates it.
                progress(f"re-registering {name} ({account.address})")
                client.register(pubkey, endpoint, list(wanted_models), '{"demo": true}')
            else:
                progress(f"updating {name}: {endpoint}, {', '.join(wanted_models)}")
                client.update_node(pubkey, endpoint, list(wanted_models), '{"demo": true}')
        balances = client.balances(account.address)
        if balances.active_stake_wei < stake_wei:
            missing = stake_wei - balances.active_stake_wei
            if balances.credit_wei < missing + deposit_wei:
                client.deposit(missing + deposit_wei - balances.credit_wei)
            progress(f"staking {name}")
            client.stake(missing)
            balances = client.balances(account.address)
        nodes.append(DemoNode(name, account.address, endpoint, pubkey.hex(), name, wanted_models,
                              balances.active_stake_wei))
    return nodes
