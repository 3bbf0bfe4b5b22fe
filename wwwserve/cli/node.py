"""`wwwserve node ...`: register, update, leave and release the on-chain registry entry, show one, and run a
node (`node run`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from wwwserve.cli.common import (
    address_arg,
    console,
    contract_client,
    fail,
    fmt_wei,
    options_of,
    print_done,
)
from wwwserve.cli.stake import print_stake_table

node_app = typer.Typer(help="Register, update and leave the on-chain node registry.", no_args_is_help=True)


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
    client = contract_client(ctx)
    key = load_or_create_identity(options_of(ctx).wallet or "default")
    bond = client.registration_value_wei(client.sender.address)
    result = (client.register(public_key_bytes(key), endpoint, model, metadata))
    paid = f", registration bond {fmt_wei(bond)} (returned by `wwwserve node release`)" if bond else ""
    print_done(f"registered {client.sender.address} with ed25519 key {public_key_bytes(key).hex()}{paid}", result)


@node_app.command("update")
def node_update(
    ctx: typer.Context,
    endpoint: Annotated[str | None, typer.Option(help="New endpoint URL.")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Models served (repeat).")] = None,
    metadata: Annotated[str | None, typer.Option(help="New JSON metadata.")] = None,
) -> None:
    """Change the node's endpoint, models or metadata (unspecified fields stay)."""
    client = contract_client(ctx)
    me = client.sender.address
    info = (client.node(me))
    if info is None or not info.active:
        fail(f"{me} is not a registered node")
    ep, ms, md = endpoint or info.endpoint, model or list(info.models), metadata or info.metadata
    _node_fields(ep, ms, md)
    result = (client.update_node(info.pubkey, ep, ms, md))
    print_done("updated node", result)


@node_app.command("leave")
def node_leave(ctx: typer.Context) -> None:
    """Leave the registry: no longer routable nor a judge. Stake stays until unstaked."""
    client = contract_client(ctx)
    print_done("left the network", client.leave())


@node_app.command("release")
def node_release(ctx: typer.Context) -> None:
    """Give the registry slot back and get the registration bond back as free credit: after `node leave`
    and once all stake is withdrawn. Registering again later takes a new slot and a new bond."""
    client = contract_client(ctx)
    me = client.sender.address
    info = client.node(me)
    if info is None:
        fail(f"{me} holds no registry slot")
    if info.active:
        fail("leave first: `wwwserve node leave`")
    bal = client.balances(me)
    if bal.active_stake_wei or bal.unbonding_stake_wei:
        fail(f"withdraw the stake first ({fmt_wei(bal.active_stake_wei)} active, {fmt_wei(bal.unbonding_stake_wei)} "
             "unbonding): `wwwserve stake remove` then `wwwserve stake withdraw`")
    print_done(f"released the registry slot; {fmt_wei(client.params().registration_bond_wei)} is free credit again",
          client.release_slot())


@node_app.command("show")
def node_show(ctx: typer.Context, address: Annotated[str, typer.Argument(help="Node address.")]) -> None:
    """Show a node's registry entry and balances."""
    client = contract_client(ctx, signing=False)
    addr = address_arg(address)
    info = (client.node(addr))
    if info is None:
        fail(f"{addr} holds no registry slot (never registered, or released it)")
    console.print(f"node {addr}: {'active' if info.active else 'left'}\n  endpoint {info.endpoint}\n"
                  f"  models {', '.join(info.models)}\n  ed25519 {info.pubkey.hex()}\n  metadata {info.metadata}",
                  highlight=False)
    print_stake_table(client, [addr])


@node_app.command("run")
def node_run(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML settings file.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override one setting: section.field=value "
                                                  "(repeat).")] = None,
    log_format: Annotated[str, typer.Option("--log-format", help="Log lines as 'text' or 'json' (one JSON "
                                            "object per line, with the request id).")] = "text",
) -> None:
    """Serve the OpenAI-compatible API from this node's backend until Ctrl-C (or SIGTERM)."""
    from wwwserve.node.logs import LOG_FORMATS
    from wwwserve.node.main import NodeStartupError, run_node
    from wwwserve.node.settings import SettingsError, load_settings, parse_override_pairs

    if log_format not in LOG_FORMATS:
        fail(f"--log-format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}", 2)
    opts = options_of(ctx)
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
    from wwwserve.explorer.feature import explorer_feature
    from wwwserve.judge.feature import duel_feature

    try:
        # The composition root: serving, plus duels, plus the explorer at /explorer.
        run_node(settings, log_format=log_format, features=(duel_feature, explorer_feature))
    except (NodeStartupError, SettingsError) as exc:
        fail(str(exc).replace("\n", " "), 1 if isinstance(exc, NodeStartupError) else 2)
