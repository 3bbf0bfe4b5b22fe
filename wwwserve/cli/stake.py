"""`wwwserve stake ...`: stake credit, unbond, withdraw, and the on-chain stake tables (also shown by
`devnet up` and `node show`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from wwwserve.cli.common import (
    AMOUNT_SETTINGS,
    address_arg,
    console,
    contract_client,
    fail,
    fmt_wei,
    options_of,
    print_done,
    wei_arg,
)

stake_app = typer.Typer(help="Stake credit, unstake (unbonding), withdraw, and show stake tables.",
                        no_args_is_help=True)


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
            fmt_wei(bal.active_stake_wei),
            fmt_wei(bal.unbonding_stake_wei),
            fmt_wei(bal.bonded_wei),
            fmt_wei(bal.credit_wei),
            share,
        )
    console.print(table)


@stake_app.command("add", context_settings=AMOUNT_SETTINGS)
def stake_add(ctx: typer.Context, amount: Annotated[str, typer.Argument(help="e.g. 1eth")]) -> None:
    """Move free credit into active stake."""
    wei = wei_arg(amount)
    client = contract_client(ctx)
    print_done(f"staked {fmt_wei(wei)}", (client.stake(wei)))


@stake_app.command("remove", context_settings=AMOUNT_SETTINGS)
def stake_remove(ctx: typer.Context, amount: Annotated[str, typer.Argument(help="e.g. 0.5eth")]) -> None:
    """Start unbonding stake (still slashable until withdrawn)."""
    wei = wei_arg(amount)
    client = contract_client(ctx)
    result = (client.request_unstake(wei))
    bal = client.balances(client.sender.address)
    # unbonding stake stays slashable as long as a duel it could answer for can stay open
    print_done(f"unbonding {fmt_wei(wei)} until unix time {bal.unbonding_end_s} and block "
          f"{bal.unbonding_block + client.duel_span_blocks() + 1}", result)


@stake_app.command("withdraw")
def stake_withdraw(ctx: typer.Context) -> None:
    """Move unbonded stake back to free credit (all but what open duels bond)."""
    client = contract_client(ctx)
    print_done("moved unbonded stake to credit", client.withdraw_stake())


@stake_app.command("show")
def stake_show(
    ctx: typer.Context,
    address: Annotated[str | None, typer.Argument(help="Address (default: --wallet's).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every node that ever registered.")] = False,
) -> None:
    """Stake, unbonding stake, stake bonded by open duels and credit, read on-chain."""
    from wwwserve.ledger.wallet import wallet_info

    opts = options_of(ctx)
    client = (contract_client(ctx, signing=False))
    if all_:
        addresses = (all_node_addresses(client))
        if not addresses:
            console.print("no node has registered yet")
            return
    elif address:
        addresses = [address_arg(address)]
    elif opts.wallet:
        addresses = [(wallet_info(str(opts.wallet)).address)]
    else:
        fail("give an ADDRESS, --wallet NAME, or --all", 2)
    (print_stake_table(client, addresses))
