"""`wwwserve stake ...`: stake credit, unbond, withdraw, and the on-chain stake tables (also shown by
`devnet up` and `node show`)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Annotated, Any

import typer
from rich.markup import escape
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


@dataclass(frozen=True)
class ModelPool:
    """The nodes a request for one model is routed among: the active ones that registered the model."""

    model: str
    weights_wei: dict[str, int]  # every active node serving it: the stake routing weighs it by (0 below MIN_STAKE)

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every active node serving the model, routable or not."""
        return tuple(self.weights_wei)

    @property
    def total_wei(self) -> int:
        return sum(self.weights_wei.values())

    def share(self, address: str) -> Fraction | None:
        """`address`'s chance of being drawn first for this model; None when no node serving it is routable."""
        total = self.total_wei
        return Fraction(self.weights_wei.get(address, 0), total) if total else None


def model_pools(rows: list[dict[str, Any]], min_stake_wei: int) -> dict[str, ModelPool]:
    """Per model, the pool routing draws from (node.routing.pos_sample: stake-weighted among the active nodes
    that serve the requested model, each weighed by `routable_stake_wei`), from `stake_rows` of every node."""
    from wwwserve.node.routing import routable_stake_wei

    members: dict[str, dict[str, int]] = {}
    for row in rows:
        info = row["node"]
        if info is None or not info.active:
            continue
        weight = routable_stake_wei(row["balances"].active_stake_wei, min_stake_wei)
        for model in info.models:
            members.setdefault(model, {})[row["address"]] = weight
    return {model: ModelPool(model, weights) for model, weights in sorted(members.items())}


def _share_cell(info: Any, address: str, pools: dict[str, ModelPool]) -> str:
    if info is None or not info.active:
        return "-"
    lines = []
    for model in info.models:
        pool = pools[model]
        share = pool.share(address)
        alone = " (alone)" if len(pool.nodes) == 1 else ""
        lines.append(f"{'-' if share is None else f'{100 * float(share):.1f}%'} of {escape(model)}{alone}")
    return "\n".join(lines)


def print_stake_table(client: Any, addresses: list[str], title: str = "Stake (on-chain)") -> None:
    """The balances of `addresses`, each with its route share per model it serves, and the models table."""
    every = stake_rows(client, all_node_addresses(client))
    by_address = {row["address"]: row for row in every}
    missing = [a for a in addresses if a not in by_address]
    rows = [by_address[a] for a in addresses if a in by_address] + stake_rows(client, missing)
    rows.sort(key=lambda r: r["balances"].active_stake_wei, reverse=True)
    pools = model_pools(every, client.params().min_stake_wei)
    table = Table(title=title)
    money = ("stake", "unbonding", "bonded", "credit")
    for col in ("node", "active", "endpoint", "models", *money, "route share (per model)"):
        table.add_column(col, justify="right" if col in money else "left")
    for row in rows:
        info, bal = row["node"], row["balances"]
        table.add_row(
            row["address"],
            "yes" if info is not None and info.active else "no",
            escape(info.endpoint) if info else "-",  # registered strings are anyone's: never markup
            escape(",".join(info.models)) if info else "-",
            fmt_wei(bal.active_stake_wei),
            fmt_wei(bal.unbonding_stake_wei),
            fmt_wei(bal.bonded_wei),
            fmt_wei(bal.credit_wei),
            _share_cell(info, row["address"], pools),
        )
    console.print(table)
    shown = {m for row in rows if row["node"] is not None and row["node"].active for m in row["node"].models}
    if not shown:
        return
    models = Table(title="Models (a request for a model is routed only among the nodes serving it)")
    for col in ("model", "nodes", "routable", "routable stake"):
        models.add_column(col, justify="left" if col == "model" else "right")
    for model in sorted(shown):
        pool = pools[model]
        models.add_row(escape(model), str(len(pool.nodes)), str(sum(1 for w in pool.weights_wei.values() if w)),
                       fmt_wei(pool.total_wei))
    console.print(models)


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
