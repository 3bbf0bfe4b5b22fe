"""`wwwserve explorer`: the network explorer without a node, over an index of the chain of its own."""

from __future__ import annotations

from typing import Annotated

import typer

from wwwserve.cli.common import console, contract_address, index_start_block, options_of, web3_for

__all__ = ["explorer"]


def explorer(
    ctx: typer.Context,
    rpc_url: Annotated[str | None, typer.Option(help="JSON-RPC URL of the chain (default: the global --rpc-url).")
                       ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the explorer's page.")] = 9100,
    index_db_url: Annotated[str | None, typer.Option(
        help="SQLAlchemy URL of the explorer's event index (default: a SQLite file in WWWSERVE_HOME/explorer; "
             "postgresql+psycopg://USER:PASSWORD@HOST:5432/DB with the postgres extra).")] = None,
    poll_interval: Annotated[float, typer.Option(min=0.1, help="Seconds between reads of new blocks.")] = 2.0,
) -> None:
    """Serve the network explorer (nodes, stakes, duels, totals; http://HOST:PORT/explorer/) without running a
    node: it indexes the contract's events itself, from the deployment block, then follows the chain."""
    import uvicorn
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from wwwserve.explorer.standalone import StandaloneExplorer, standalone_app
    from wwwserve.ledger.home import wwwserve_home
    from wwwserve.ledger.indexer import Indexer

    opts = options_of(ctx)
    url = rpc_url or opts.rpc_url
    w3 = web3_for(url)
    address = contract_address(w3, opts)
    chain_id = int(w3.eth.chain_id)
    start = index_start_block(chain_id, address)
    if index_db_url is None:
        path = wwwserve_home() / "explorer" / f"index-{chain_id}-{address}.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        index_db_url = f"sqlite:///{path}"
    db_url = index_db_url
    explorer_state = StandaloneExplorer(lambda: Indexer(w3, address, db_url, start_block=start), db_url,
                                        poll_interval_s=poll_interval)
    with Progress(TextColumn("reading the contract's events"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("blocks"), console=console, transient=True) as bar:
        task = bar.add_task("index", total=None)

        def progress(block: int, head: int) -> None:
            bar.update(task, completed=block - start + 1, total=head - start + 1)

        explorer_state.catch_up(progress)
    explorer_state.start()
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    console.print(f"explorer of {address} on chain {chain_id}: http://{shown}:{port}/explorer/  (Ctrl-C stops it)")
    try:
        # Open live streams (a browser's api/stream) never end by themselves: stop waiting for them after 5 s.
        uvicorn.run(standalone_app(explorer_state), host=host, port=port, log_level="warning",
                    timeout_graceful_shutdown=5)
    finally:
        explorer_state.stop()
