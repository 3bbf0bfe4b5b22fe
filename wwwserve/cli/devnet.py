"""`wwwserve devnet ...`: start, inspect and stop the background devnet (anvil), deploy the contracts, fund
accounts."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from wwwserve.cli.common import (
    AMOUNT_SETTINGS,
    address_arg,
    console,
    fail,
    fmt_wei,
    options_of,
    web3_for,
    wei_arg,
)
from wwwserve.cli.stake import all_node_addresses, print_stake_table

devnet_app = typer.Typer(help="Start, inspect and stop the local devnet (anvil) and deploy the contracts.",
                         no_args_is_help=True)


def _devnet_state_path() -> Path:
    from wwwserve.ledger.home import wwwserve_home

    return wwwserve_home() / "devnet.json"


def _is_local(rpc_url: str) -> bool:
    from urllib.parse import urlparse

    return (urlparse(rpc_url).hostname or "") in ("127.0.0.1", "localhost", "::1")


def _port_of(rpc_url: str) -> int:
    from urllib.parse import urlparse

    return urlparse(rpc_url).port or 8545


def _deploy_and_demo(rpc_url: str, demo_nodes: int, stake_wei: int, progress: Callable[[str], None],
                     allow_public_keys: bool = False, record_rpc_url: str | None = None,
                     endpoint_host: str = "127.0.0.1") -> Any:
    from wwwserve.devnet.anvil import DEV_KEYS
    from wwwserve.devnet.deploy import bring_up_demo_nodes, ensure_deployment
    from wwwserve.node.settings import DEFAULT_LOCAL_MODEL

    w3 = web3_for(rpc_url)
    deployment, _ = ensure_deployment(w3, record_rpc_url or rpc_url, DEV_KEYS[0], progress=progress,
                                      allow_public_keys=allow_public_keys)
    nodes = bring_up_demo_nodes(w3, deployment, demo_nodes, stake_wei=stake_wei, deposit_wei=stake_wei,
                                models=(DEFAULT_LOCAL_MODEL,), progress=progress, endpoint_host=endpoint_host,
                                allow_public_keys=allow_public_keys) if demo_nodes else []
    return w3, deployment, nodes


@devnet_app.command("up")
def devnet_up(
    ctx: typer.Context,
    block_time: Annotated[int, typer.Option(help="Seconds per block (0 = a block per transaction).")] = 1,
    demo_nodes: Annotated[int, typer.Option(min=0, max=16, help="Demo nodes to register and stake.")] = 1,
    stake: Annotated[str, typer.Option(help="Stake of each demo node.")] = "1eth",
    allow_public_keys: Annotated[bool, typer.Option(
        help="Deploy, fund and stake with the public dev and demo keys even on a chain that is not a known "
             "devnet (chain id 31337 or 1337): anyone can take what they hold.")] = False,
    record_rpc_url: Annotated[str | None, typer.Option(
        help="Chain address written to the deployment record, for those who read it (default: --rpc-url). "
             "docker-compose.yml deploys through http://anvil:8545 and records http://127.0.0.1:8545, "
             "the address that works on the host.")] = None,
    demo_endpoint_host: Annotated[str, typer.Option(
        help="Host in the endpoint each demo node registers (http://HOST:9101, :9102, ...); {i} stands for "
             "the node's number, e.g. node{i} for compose services named node1, node2, ...")] = "127.0.0.1",
) -> None:
    """Start anvil (or attach to the chain at --rpc-url), deploy, fund and stake demo nodes."""
    from wwwserve.devnet.supervisor import start_background
    from wwwserve.ledger.chain import chain_id_at
    from wwwserve.ledger.home import wwwserve_home

    opts = options_of(ctx)
    stake_wei = wei_arg(stake, "--stake")
    if record_rpc_url is not None and not record_rpc_url.startswith(("http://", "https://")):
        fail(f"--record-rpc-url: expected an http:// or https:// URL, got {record_rpc_url!r}", 2)
    if not demo_endpoint_host or any(c in demo_endpoint_host for c in "/ @?#"):
        fail(f"--demo-endpoint-host: expected a host name or address, got {demo_endpoint_host!r}", 2)

    def go() -> None:
        if chain_id_at(opts.rpc_url) is not None:
            console.print(f"attaching to the chain at {opts.rpc_url}")
        elif _is_local(opts.rpc_url):
            home = wwwserve_home()
            home.mkdir(parents=True, exist_ok=True)
            pid = start_background(_port_of(opts.rpc_url), block_time, home / "anvil.log")
            _devnet_state_path().write_text(json.dumps({"pid": pid, "rpcUrl": opts.rpc_url,
                                                        "log": str(home / "anvil.log")}))
            console.print(f"started anvil in the background (supervisor pid {pid}) at {opts.rpc_url}; "
                          "stop it with `wwwserve devnet down`")
        else:
            fail(f"nothing answers at {opts.rpc_url}, and it is not local, so no devnet can be started there")
        w3, deployment, _ = _deploy_and_demo(opts.rpc_url, demo_nodes, stake_wei, console.print, allow_public_keys,
                                             record_rpc_url, demo_endpoint_host)
        from wwwserve.ledger.client import WWWServeClient

        client = WWWServeClient(w3, deployment.address, None)
        console.print(f"contract {deployment.address} on chain {deployment.chain_id}; "
                      f"record in {wwwserve_home() / 'deployments'}")
        addresses = all_node_addresses(client)
        if addresses:
            print_stake_table(client, addresses)
        else:
            console.print("no node has registered yet")

    go()


@devnet_app.command("down")
def devnet_down() -> None:
    """Stop the anvil started by `wwwserve devnet up`."""
    path = _devnet_state_path()
    if not path.exists():
        fail("no devnet started by `wwwserve devnet up` is recorded here")
    from wwwserve.ledger.chain import chain_id_at

    state = json.loads(path.read_text())
    try:
        os.kill(int(state["pid"]), signal.SIGTERM)
    except ProcessLookupError:
        console.print(f"the devnet (pid {state['pid']}) was not running")
        path.unlink()
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and chain_id_at(state["rpcUrl"], timeout_s=0.3) is not None:
        time.sleep(0.1)
    path.unlink()
    console.print(f"stopped the devnet at {state['rpcUrl']}")


@devnet_app.command("fund", context_settings=AMOUNT_SETTINGS)
def devnet_fund(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(help="Address to send ETH to.")],
    amount: Annotated[str, typer.Argument(help="e.g. 5eth")] = "10eth",
) -> None:
    """Send native ETH from anvil's first dev account (devnet only: its key is public)."""
    from eth_account import Account

    from wwwserve.devnet.anvil import DEFAULT_CHAIN_ID, DEV_KEYS
    from wwwserve.ledger.tx import TxSender

    to, wei = address_arg(address), wei_arg(amount)
    w3 = web3_for(options_of(ctx).rpc_url)
    if w3.eth.chain_id != DEFAULT_CHAIN_ID:
        fail(f"`devnet fund` only works on the local devnet (chain {DEFAULT_CHAIN_ID}), not chain {w3.eth.chain_id}")
    receipt = TxSender(w3, Account.from_key(DEV_KEYS[0])).send(to=to, value_wei=wei, function="fund")
    console.print(f"[green]✓[/] sent {fmt_wei(wei)} to {to} (tx {receipt['transactionHash'].hex()})", highlight=False)


@devnet_app.command("status")
def devnet_status(ctx: typer.Context) -> None:
    """Is the chain up, which block, and is the contract deployed there?"""
    from wwwserve.devnet.deploy import deployed_code_matches
    from wwwserve.ledger.chain import chain_id_at, rpc_call
    from wwwserve.ledger.deployment import load_deployment
    from wwwserve.ledger.errors import DeploymentNotFoundError

    opts = options_of(ctx)
    chain_id = chain_id_at(opts.rpc_url)
    if chain_id is None:
        fail(f"chain unreachable at {opts.rpc_url}")
    block = int(str(rpc_call(opts.rpc_url, "eth_blockNumber")), 16)
    console.print(f"chain {chain_id} at {opts.rpc_url}, block {block}")
    try:
        dep = load_deployment(chain_id)
    except DeploymentNotFoundError as exc:
        console.print(f"contract: {exc}")
        raise typer.Exit(1) from None
    ok = (deployed_code_matches(web3_for(opts.rpc_url), dep.address))
    console.print(f"contract {dep.address}: {'deployed' if ok else 'MISSING (redeploy with `wwwserve devnet up`)'}")
    if not ok:
        raise typer.Exit(1)
