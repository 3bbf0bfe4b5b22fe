"""docker-compose.yml cannot be run here (no Docker engine): check it agrees with the devnet code."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import yaml

from wwwserve.devnet.anvil import ANVIL_VERSION, DEFAULT_CHAIN_ID, anvil_args

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_present() -> None:
    services = _compose()["services"]
    assert {"anvil", "deployer"} <= set(services)


def test_anvil_image_pinned_to_the_npm_version() -> None:
    anvil = _compose()["services"]["anvil"]
    assert anvil["image"] == f"ghcr.io/foundry-rs/foundry:v{ANVIL_VERSION}"
    pkg = json.loads((ROOT / "devnet" / "package.json").read_text())
    assert set(pkg["optionalDependencies"].values()) == {ANVIL_VERSION}


def test_anvil_command_matches_devnet_code() -> None:
    anvil = _compose()["services"]["anvil"]
    assert anvil["entrypoint"] == ["anvil"]
    assert anvil["command"] == anvil_args("0.0.0.0", 8545, DEFAULT_CHAIN_ID, block_time_s=1)
    assert "--prune-history" in anvil["command"]
    assert "127.0.0.1:8545:8545" in anvil["ports"]
    assert anvil.get("mem_limit"), "anvil needs a memory cap"


def test_deployer_command_is_a_valid_cli_invocation() -> None:
    from typer.main import get_command

    from wwwserve.cli import app

    deployer = _compose()["services"]["deployer"]
    argv = deployer["command"]
    assert argv[0] == "wwwserve"
    assert deployer["depends_on"]["anvil"]["condition"] == "service_healthy"
    cli = get_command(app)
    # resolve the sub-command chain the same way click does at run time; bad options raise here
    ctx = cli.make_context("wwwserve", list(argv[1:]))
    assert ctx.params["rpc_url"] == "http://anvil:8545"
    rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
    sub = cli.get_command(ctx, rest[0])
    sub_ctx = sub.make_context(rest[0], rest[1:], parent=ctx)
    rest = [*getattr(sub_ctx, "_protected_args", []), *sub_ctx.args]
    leaf = sub.get_command(sub_ctx, rest[0])
    leaf_ctx = leaf.make_context(rest[0], rest[1:], parent=sub_ctx)
    assert leaf_ctx.params["demo_nodes"] == 1
    # the deployer talks to the compose service, not to localhost
    assert "http://anvil:8545" in shlex.join(argv)
    assert deployer["environment"]["WWWSERVE_HOME"] == "/data"


def test_dockerfile_installs_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for pkg in ("contracts", "devnet", "ledger", "node", "judge", "wwwserve"):
        assert f"COPY {pkg} ./{pkg}" in dockerfile
