"""The `wwwserve` command line, the composition root: the only code that wires every layer together.

Every command reads balances and state on-chain through the typed ledger client. Bad input, a missing
wallet, a wrong password, an unreachable chain or a contract revert print one clear line
(`error: ...`) and exit non-zero; tracebacks are for bugs only.

One module per command group: `devnet`, `wallet`, `node` (with `node run`), `credit`, `stake`, `duel`,
`sim`, and the top-level `up`, `burst`, `verify` and `explorer`; `common` holds the global options, the error
line and the argument helpers they share. The console script `wwwserve` and `python -m wwwserve.cli` both run `main`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core

from wwwserve import __version__
from wwwserve.cli.burst import burst
from wwwserve.cli.common import DEFAULT_RPC_URL, Options, console, friendly_errors
from wwwserve.cli.credit import credit_app
from wwwserve.cli.devnet import devnet_app
from wwwserve.cli.duel import duel_app
from wwwserve.cli.explorer import explorer
from wwwserve.cli.node import node_app
from wwwserve.cli.sim import sim_app
from wwwserve.cli.stake import stake_app
from wwwserve.cli.up import up
from wwwserve.cli.verify import verify
from wwwserve.cli.wallet import wallet_app

__all__ = ["app", "main"]


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
for sub, name in ((devnet_app, "devnet"), (wallet_app, "wallet"), (node_app, "node"), (credit_app, "credit"),
                  (stake_app, "stake"), (duel_app, "duel"), (sim_app, "sim")):
    app.add_typer(sub, name=name)
app.command("up")(up)
app.command("verify")(verify)
app.command("burst")(burst)
app.command("explorer")(explorer)


def _print_version(value: bool) -> None:
    # Eager: it runs while the options are parsed, before click asks for the missing command.
    if value:
        console.print(f"wwwserve {__version__}")
        raise typer.Exit(0)


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
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    if home is not None:
        os.environ["WWWSERVE_HOME"] = str(home)
    ctx.obj = Options(rpc_url=rpc_url, contract=contract, wallet=wallet)


def main() -> None:
    """Console-script entry point."""
    app()
