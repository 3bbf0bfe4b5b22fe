"""What every `wwwserve` command shares: the global options, the one-line errors, the consoles, and the
helpers that turn command-line text into checked values (amounts, addresses) and a contract client.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import typer
from rich.console import Console

console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, soft_wrap=True)

DEFAULT_RPC_URL = "http://127.0.0.1:8545"


# "-5" must reach the amount parser (which explains what is wrong) instead of being read as an option
AMOUNT_SETTINGS: dict[str, Any] = {"ignore_unknown_options": True}


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


def options_of(ctx: typer.Context) -> Options:
    obj = ctx.find_root().obj
    assert isinstance(obj, Options)
    return obj


def web3_for(rpc_url: str) -> Any:
    from wwwserve.ledger.chain import chain_id_at, connect
    from wwwserve.ledger.errors import ChainUnreachableError

    if chain_id_at(rpc_url, timeout_s=3.0) is None:
        raise ChainUnreachableError(rpc_url, "nothing answers there (start a devnet with `wwwserve devnet up`)")
    return connect(rpc_url, timeout_s=30.0)


def contract_address(w3: Any, opts: Options) -> str:
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


def index_start_block(chain_id: int, address: str) -> int:
    """Where an index of the contract at `address` starts reading: its deployment block when this home's
    deployment record names it, else block 0."""
    from wwwserve.ledger.deployment import load_deployment
    from wwwserve.ledger.errors import DeploymentNotFoundError

    try:
        record = load_deployment(chain_id)
    except DeploymentNotFoundError:
        return 0
    return record.block_number if record.address == address else 0


def ask_password(confirm: bool = False) -> str:
    env = os.environ.get("WWWSERVE_PASSWORD")
    if env is not None:
        return env
    if not sys.stdin.isatty():
        fail("no password: set WWWSERVE_PASSWORD or run in a terminal to be prompted")
    pw = getpass.getpass("keystore password: ")
    if confirm and getpass.getpass("repeat password: ") != pw:
        fail("passwords do not match")
    return pw


def signing_account(opts: Options) -> Any:
    from wwwserve.ledger.wallet import load_wallet

    if not opts.wallet:
        fail("no wallet: pass --wallet NAME (or set WWWSERVE_WALLET); create one with `wwwserve wallet new NAME`", 2)
    return load_wallet(opts.wallet, ask_password())


def contract_client(ctx: typer.Context, signing: bool = True) -> Any:
    from wwwserve.ledger.client import WWWServeClient
    from wwwserve.ledger.tx import TxSender

    opts = options_of(ctx)
    w3 = web3_for(opts.rpc_url)
    address = contract_address(w3, opts)
    sender = TxSender(w3, signing_account(opts)) if signing else None
    return WWWServeClient(w3, address, sender)


def wei_arg(text: str, what: str = "amount") -> int:
    from wwwserve.ledger.errors import InvalidAmountError
    from wwwserve.ledger.units import parse_amount

    try:
        wei = parse_amount(text)
    except InvalidAmountError as exc:
        fail(str(exc) if what == "amount" else f"{what}: {exc}", 2)
    if wei <= 0:
        fail(f"{what} must be positive, got {text!r}", 2)
    return int(wei)


def address_arg(text: str) -> str:
    from web3 import Web3

    if not Web3.is_address(text):
        fail(f"not an address: {text!r}", 2)
    return str(Web3.to_checksum_address(text))


def fmt_wei(wei: int) -> str:
    from wwwserve.ledger.units import format_wei

    return str(format_wei(wei))


def print_done(what: str, result: Any) -> None:
    console.print(f"[green]✓[/] {what} (tx {result.tx_hash}, block {result.block_number}, gas {result.gas_used})",
                  highlight=False)
