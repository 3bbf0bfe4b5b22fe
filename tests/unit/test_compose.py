"""docker-compose.yml and the Dockerfile agree with the code they run: anvil's arguments, the deployer's and
every node's command line (parsed by the real CLI and settings), the endpoints the deployer registers and the
nodes serve, the ports, the image's model and torch pins. tests/compose/ runs the file with a real engine."""

from __future__ import annotations

import json
import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from wwwserve.devnet.anvil import ANVIL_VERSION, DEFAULT_CHAIN_ID, anvil_args
from wwwserve.devnet.deploy import DEMO_PASSWORD, demo_wallet_name
from wwwserve.node.settings import DEFAULT_LOCAL_MODEL, load_settings, parse_override_pairs

ROOT = Path(__file__).resolve().parents[2]
NODES = ("node1", "node2", "node3")
WWWSERVE_SERVICES = ("deployer", *NODES, "node4")


def _defaults(value: Any) -> Any:
    """`value` as compose reads it with no variable set: `${NAME:-default}` -> default, `$$` -> `$`."""
    if isinstance(value, str):
        return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value).replace("$$", "$")
    if isinstance(value, list):
        return [_defaults(v) for v in value]
    if isinstance(value, dict):
        return {k: _defaults(v) for k, v in value.items()}
    return value


def _services() -> dict[str, Any]:
    services: dict[str, Any] = _defaults(yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"])
    return services


def _cli_params(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Resolve `wwwserve ...` the way click does at run time: (command path, every level's params merged).
    Bad options raise here."""
    from typer.main import get_command

    from wwwserve.cli import app

    assert argv[0] == "wwwserve"
    command: Any = get_command(app)
    ctx = command.make_context("wwwserve", list(argv[1:]))
    path, params = [], dict(ctx.params)
    while hasattr(command, "list_commands"):  # a group (typer vendors its own click)
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        sub = command.get_command(ctx, rest[0])
        assert sub is not None, f"no command {rest[0]!r} in {argv}"
        ctx = sub.make_context(rest[0], rest[1:], parent=ctx)
        path.append(rest[0])
        params.update(ctx.params)
        command = sub
    return path, params


def _node_settings(service: dict[str, Any]) -> tuple[str, Any]:
    """(wallet, NodeSettings) of a node service's `wwwserve node run` command."""
    path, params = _cli_params(service["command"])
    assert path == ["node", "run"]
    return params["wallet"], load_settings(params["config"], parse_override_pairs(params["set_"]))


def _deployer_params(argv: list[str]) -> dict[str, Any]:
    path, params = _cli_params(argv)
    assert path == ["devnet", "up"]
    return params


def test_services_present() -> None:
    services = _services()
    assert {"anvil", "deployer", *NODES, "vllm", "node4"} == set(services)
    # the GPU pair runs only with `--profile gpu`; the rest with a plain `docker compose up`
    assert {name for name, s in services.items() if s.get("profiles")} == {"vllm", "node4"}
    assert services["vllm"]["profiles"] == services["node4"]["profiles"] == ["gpu"]


def test_anvil_image_pinned_to_the_npm_version() -> None:
    anvil = _services()["anvil"]
    assert anvil["image"] == f"ghcr.io/foundry-rs/foundry:v{ANVIL_VERSION}"
    pkg = json.loads((ROOT / "devnet" / "package.json").read_text())
    assert set(pkg["optionalDependencies"].values()) == {ANVIL_VERSION}


def test_anvil_command_matches_devnet_code() -> None:
    anvil = _services()["anvil"]
    assert anvil["entrypoint"] == ["anvil"]
    assert anvil["command"] == anvil_args("0.0.0.0", 8545, DEFAULT_CHAIN_ID, block_time_s=1)
    assert "--prune-history" in anvil["command"]
    assert "--silent" in anvil["command"]  # not a line per block in `docker compose logs`
    assert anvil["ports"] == ["127.0.0.1:8545:8545"]  # the host port `wwwserve up` takes too (README)
    assert anvil.get("mem_limit"), "anvil needs a memory cap"


def test_deployer_deploys_through_anvil_and_records_the_host_address() -> None:
    deployer = _services()["deployer"]
    params = _deployer_params(deployer["command"])
    assert params["rpc_url"] == "http://anvil:8545"  # the compose service, not localhost
    assert params["record_rpc_url"] == "http://127.0.0.1:8545"  # what works on the host, beside anvil's port
    assert params["demo_nodes"] == len(NODES)
    assert params["demo_endpoint_host"] == "node{i}"
    assert deployer["depends_on"]["anvil"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", NODES)
def test_node_serves_the_endpoint_the_deployer_registered(name: str) -> None:
    services = _services()
    number = int(name.removeprefix("node"))
    deployer = _deployer_params(services["deployer"]["command"])
    service = services[name]
    wallet, settings = _node_settings(service)
    assert wallet == demo_wallet_name(number)  # the keystore the deployer funded, registered and staked
    # bring_up_demo_nodes registers http://<host with {i}>:<9101 + i - 1>
    host = deployer["demo_endpoint_host"].replace("{i}", str(number))
    port = 9100 + number
    assert settings.server.endpoint_url == f"http://{host}:{port}" == f"http://{name}:{port}"
    assert settings.server.port == port and settings.server.host == "0.0.0.0"
    assert service["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert service["environment"]["NODE_PORT"] == str(port)  # what its healthcheck asks /ready on
    assert str(settings.chain.rpc_url).rstrip("/") == "http://anvil:8545"
    assert settings.backend.kind == "local" and list(settings.backend.models) == [DEFAULT_LOCAL_MODEL]
    assert settings.policy.auto_stake is False  # the stakes the deployer set stay put, as in `wwwserve up`
    assert service["environment"]["WWWSERVE_PASSWORD"] == DEMO_PASSWORD
    assert service["depends_on"]["deployer"]["condition"] == "service_completed_successfully"
    assert "/ready" in " ".join(service["healthcheck"]["test"])


@pytest.mark.parametrize("name", NODES)
def test_each_local_node_runs_one_torch_thread(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three containers each with torch's default (a thread per core) oversubscribe the machine: measured on 2
    cores, 156-163 s for a 48-token answer instead of 16-19 s with one thread each."""
    service = _services()[name]
    for key, value in service["environment"].items():
        if key.startswith("WWWSERVE_NODE__"):
            monkeypatch.setenv(key, str(value))
    _, settings = _node_settings(service)  # the settings the node reads: --set, then its environment
    assert settings.backend.local.threads == 1


@pytest.mark.parametrize("name", WWWSERVE_SERVICES)
def test_state_lands_in_the_mounted_checkout(name: str) -> None:
    service = _services()[name]
    assert service["image"] == "wwwserve" and service["build"]["context"] == "."
    assert service["build"]["args"]["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert ".:/project" in service["volumes"]
    # docker/entrypoint.sh runs the command as the owner of the nearest directory above WWWSERVE_HOME
    assert service["environment"]["WWWSERVE_HOME"] == "/project/.wwwserve"


def test_gpu_profile_is_a_vllm_backed_fourth_node() -> None:
    services = _services()
    vllm, node4 = services["vllm"], services["node4"]
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    served = vllm["command"][vllm["command"].index("--served-model-name") + 1]
    wallet, settings = _node_settings(node4)
    assert wallet == demo_wallet_name(4)
    assert settings.backend.kind == "openai" and list(settings.backend.models) == [served] == [DEFAULT_LOCAL_MODEL]
    assert str(settings.backend.openai.base_url).startswith("http://vllm:8000/")
    assert settings.server.endpoint_url == "http://node4:9104"
    assert node4["depends_on"]["vllm"]["condition"] == "service_healthy"
    # its entrypoint registers demo wallet 4 with the same host template before `node run`
    script = node4["entrypoint"][node4["entrypoint"].index("-c") + 1]
    register = script.split("&&")[0].replace("'", "").split()
    params = _deployer_params(register)
    assert params["demo_nodes"] == 4 and params["demo_endpoint_host"] == "node{i}"
    assert params["record_rpc_url"] == "http://127.0.0.1:8545"
    assert script.rstrip().endswith('exec "$@"')


def test_dockerfile_installs_every_package_the_local_backend_and_the_model() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    # every folder the wheel installs through a wwwserve/ link (a new one was missed once: the image's nodes
    # could not import wwwserve.explorer), and wwwserve/ itself
    linked = sorted(p.name for p in (ROOT / "wwwserve").iterdir() if p.is_symlink())
    assert {"contracts", "devnet", "ledger", "node", "judge", "sim", "explorer"} <= set(linked), linked
    for pkg in (*linked, "wwwserve"):
        assert f"COPY {pkg} ./{pkg}" in dockerfile, f"the Dockerfile does not copy {pkg}/"
    # torch: the version the `local` extra pins, from the CPU index unless the build says otherwise
    local = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["local"]
    torch_pin = next(req for req in local if req.startswith("torch=="))
    assert f"ARG TORCH_VERSION={torch_pin.removeprefix('torch==')}" in dockerfile
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in dockerfile
    assert "['optional-dependencies']['local']" in dockerfile
    assert "export_hf_model" in dockerfile and "ENV WWWSERVE_MODELS_DIR=" in dockerfile
    assert 'ENTRYPOINT ["wwwserve-entrypoint"]' in dockerfile
    assert "COPY docker/entrypoint.sh /usr/local/bin/wwwserve-entrypoint" in dockerfile
    assert os.stat(ROOT / "docker" / "entrypoint.sh").st_mode & stat.S_IXUSR


def test_models_dir_variable_moves_the_converted_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from wwwserve.node.backends.local_model import DEFAULT_HF_DIR_NAME, default_hf_cache_dir

    monkeypatch.setenv("WWWSERVE_MODELS_DIR", str(tmp_path / "image-models"))
    assert default_hf_cache_dir() == tmp_path / "image-models" / DEFAULT_HF_DIR_NAME
    monkeypatch.delenv("WWWSERVE_MODELS_DIR")
    monkeypatch.setenv("WWWSERVE_HOME", str(tmp_path / "home"))
    assert default_hf_cache_dir() == tmp_path / "home" / "models" / DEFAULT_HF_DIR_NAME
