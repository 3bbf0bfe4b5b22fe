"""`wwwserve wallet ...`: encrypted operator wallets (eth-account keystores in `$WWWSERVE_HOME/keystores`)."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from wwwserve.cli.common import ask_password, console, contract_client, fail, fmt_wei, options_of

wallet_app = typer.Typer(help="Encrypted operator wallets (eth-account keystores).", no_args_is_help=True)


@wallet_app.command("new")
def wallet_new(name: Annotated[str, typer.Argument(help="Keystore name.")]) -> None:
    """Create a new encrypted keystore."""
    from wwwserve.ledger.wallet import create_wallet

    pw = ask_password(confirm=True)
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
    pw = ask_password(confirm=True)
    w = (import_wallet(name, key, pw))
    console.print(f"imported wallet {name}: {w.address} ({w.path})", highlight=False)


@wallet_app.command("show")
def wallet_show(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Keystore name (default: --wallet).")] = None,
) -> None:
    """Show a wallet's address and, if the chain is up, its ETH, credit and stake."""
    from wwwserve.ledger.wallet import wallet_info

    opts = options_of(ctx)
    name = name or opts.wallet
    if not name:
        fail("which wallet? pass a NAME or --wallet", 2)
    address = (wallet_info(name).address)
    console.print(f"wallet {name}: {address}", highlight=False)

    def balances() -> None:
        client = contract_client(ctx, signing=False)
        bal = client.balances(address)
        console.print(f"ETH {fmt_wei(client.w3.eth.get_balance(address))} · credit {fmt_wei(bal.credit_wei)} · "
                      f"stake {fmt_wei(bal.active_stake_wei)} · unbonding {fmt_wei(bal.unbonding_stake_wei)} · "
                      f"bonded {fmt_wei(bal.bonded_wei)} · pending withdrawal {fmt_wei(bal.pending_withdrawal_wei)}",
                      highlight=False)

    balances()


@wallet_app.command("list")
def wallet_list() -> None:
    """List keystores."""
    from wwwserve.ledger.wallet import list_wallets

    for w in list_wallets():
        console.print(f"{w.name}\t{w.address}", highlight=False)
