"""`docker-compose up --build` on the real docker-compose.yml, with a real Docker engine, as a user meets it.

The checkout is copied to a temporary directory (what git tracks or would track, with uncommitted changes)
owned by a user that is not root -- uid 4242 when the test runs as root, as on CI, else the user running it
-- and compose runs there under a project name of its own, with host ports chosen free (WWWSERVE_RPC_PORT,
WWWSERVE_NODE1_PORT, ... override the defaults 8545 and 9101-9103), so it never meets a `wwwserve up` or
another run. The test then does what the README's Docker section promises, from the host: a signed chat
completion over a published node port (checked with `wwwserve verify`), the stakes with `wwwserve stake
show --all` and the deployment record compose wrote, a burst of which at least one answer was executed by
another container, files in ./.wwwserve owned by the checkout's owner, a quiet anvil, and `wwwserve sim` in
the image. `docker-compose down -v` always runs, whatever failed.

torch: the image installs it from TORCH_INDEX_URL (default PyTorch's CPU index). When the environment sets
no TORCH_INDEX_URL and pip's find-links (this machine's /opt/wheels) hold the torch wheel the `local` extra
pins, the test serves that one wheel as a package index on the Docker bridge, so the build needs no
PyTorch download; the other packages come from PyPI, which the build must reach.

Needs `docker` and `docker-compose` (v1.29+, or set WWWSERVE_COMPOSE="docker compose"); offline, run
../shared/tools/docker-standins.sh first. Timings of the last run are printed with -s.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from wwwserve.devnet.deploy import demo_account
from wwwserve.devnet.ports import free_port
from wwwserve.node.settings import DEFAULT_LOCAL_MODEL

# tier: compose (its folder's); the image build with torch is most of the time
pytestmark = pytest.mark.timeout(1800)

ROOT = Path(__file__).resolve().parents[2]
NODES = 3
NON_ROOT_UID = 4242
IMAGE = "wwwserve"  # docker-compose.yml's image name; kept between runs, so a rebuild reuses its layers
READY_TIMEOUT_S = 600.0
BURST = 12
ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")


def _compose_command() -> list[str]:
    return shlex.split(os.environ.get("WWWSERVE_COMPOSE", "docker-compose"))


def _require_engine() -> None:
    """Fail (not skip: this tier exists to run it) with what to do when there is no engine."""
    compose = _compose_command()
    missing = [tool for tool in ("docker", compose[0]) if shutil.which(tool) is None]
    hint = "install Docker and docker-compose, or run ../shared/tools/docker-standins.sh on this machine"
    if missing:
        pytest.fail(f"the compose tier needs {' and '.join(missing)} on PATH: {hint}", pytrace=False)
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if info.returncode != 0:
        pytest.fail(f"no Docker engine answers (`docker info`: {info.stderr.strip()[-300:]}): {hint}", pytrace=False)


def _copy_checkout(dest: Path) -> None:
    """The files git tracks or would track (ignored ones left out: .venv, node_modules, .wwwserve, ...)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the work tree, not yet committed
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            target.symlink_to(os.readlink(src))
        elif src.is_file():
            shutil.copy2(src, target)


def _torch_wheel() -> Path | None:
    """The wheel of the torch the `local` extra pins, in one of pip's find-links directories, if any."""
    local = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["local"]
    version = next(req for req in local if req.startswith("torch==")).removeprefix("torch==")
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    dirs = re.findall(r"find-links='([^']+)'", listed) + os.environ.get("PIP_FIND_LINKS", "").split()
    for directory in dirs:
        path = Path(directory.removeprefix("file://"))
        if path.is_dir():
            found = sorted(path.glob(f"torch-{version}+cpu-cp311-cp311-manylinux*_x86_64.whl"))
            if found:
                return found[0]
    return None


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return None


@contextlib.contextmanager
def _wheel_index(wheel: Path, tmp: Path) -> Iterator[str]:
    """Serve `wheel` as a one-package index (PEP 503) on the Docker bridge's gateway; yields its URL."""
    ipam = json.loads(subprocess.run(["docker", "network", "inspect", "bridge", "--format", "{{json .IPAM.Config}}"],
                                     capture_output=True, text=True, check=True).stdout)
    v4 = next(c for c in ipam if ":" not in c["Subnet"])
    # the host's address on the bridge: the gateway, which the engine leaves unnamed when it is the default
    gateway = v4.get("Gateway") or str(next(ipaddress.ip_network(v4["Subnet"]).hosts()))
    root = tmp / "torch-index"
    (root / "torch").mkdir(parents=True)
    (root / "torch" / wheel.name).symlink_to(wheel)
    href = wheel.name.replace("+", "%2B")
    (root / "torch" / "index.html").write_text(f'<html><body><a href="{href}">{wheel.name}</a></body></html>\n')
    server = http.server.ThreadingHTTPServer((gateway, 0), functools.partial(_QuietFiles, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, name="torch-index", daemon=True)
    thread.start()
    try:
        yield f"http://{gateway}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Compose:
    """One compose project on a copy of the checkout."""

    directory: Path
    project: str
    env: dict[str, str]
    rpc_port: int
    node_ports: list[int]
    timings_s: dict[str, float] = field(default_factory=dict)

    def run(self, *args: str, timeout_s: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*_compose_command(), "-p", self.project, *args], cwd=self.directory, env=self.env,
                              capture_output=True, text=True, timeout=timeout_s)
        if check and proc.returncode != 0:
            pytest.fail(f"`docker-compose {' '.join(args)}` exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                        f"{proc.stderr[-3000:]}\n{self.logs()}", pytrace=False)
        return proc

    def logs(self, *services: str) -> str:
        proc = subprocess.run([*_compose_command(), "-p", self.project, "logs", "--no-color", "--tail", "60",
                               *services], cwd=self.directory, env=self.env, capture_output=True, text=True,
                              timeout=60)
        return proc.stdout[-8000:]

    def exited(self, service: str) -> bool:
        ids = self.run("ps", "-q", service, check=False).stdout.split()
        if not ids:
            return False
        state = subprocess.run(["docker", "inspect", "--format", "{{.State.Status}}", ids[0]],
                               capture_output=True, text=True).stdout.strip()
        return state in ("exited", "dead")

    @property
    def home(self) -> Path:
        return self.directory / ".wwwserve"

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """The host's `wwwserve`, reading the deployment record compose wrote (WWWSERVE_HOME=./.wwwserve)."""
        env = {**os.environ, "WWWSERVE_HOME": str(self.home), "WWWSERVE_RPC_URL": f"http://127.0.0.1:{self.rpc_port}"}
        return subprocess.run([sys.executable, "-m", "wwwserve.cli", *args], input=stdin, capture_output=True,
                              text=True, timeout=120, env=env)


def _image_id(name: str = IMAGE) -> str | None:
    done = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", name], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compose]:
    _require_engine()
    tmp = tmp_path_factory.mktemp("compose")
    directory = tmp / "checkout"
    directory.mkdir()
    _copy_checkout(directory)
    owner = NON_ROOT_UID if os.geteuid() == 0 else os.getuid()
    if os.geteuid() == 0:
        for path in [directory, *directory.rglob("*")]:
            os.lchown(path, NON_ROOT_UID, NON_ROOT_UID)
        tmp.chmod(0o755)  # the copy's parents stay root's; the containers only see the mount
    assert directory.stat().st_uid == owner
    rpc_port, node_ports = free_port(), [free_port() for _ in range(NODES)]
    env = {**os.environ, "WWWSERVE_RPC_PORT": str(rpc_port),
           **{f"WWWSERVE_NODE{i + 1}_PORT": str(port) for i, port in enumerate(node_ports)}}
    project = f"wwwservetest{os.getpid()}"
    stack = contextlib.ExitStack()
    wheel = _torch_wheel()
    if "TORCH_INDEX_URL" not in env and wheel is not None:
        env["TORCH_INDEX_URL"] = stack.enter_context(_wheel_index(wheel, tmp))
    net = Compose(directory, project, env, rpc_port, node_ports)
    try:
        before = _image_id()
        started = time.monotonic()
        net.run("build", timeout_s=1500)
        net.timings_s["build"] = time.monotonic() - started
        if before is not None and before != _image_id():
            # The image of a previous run, now untagged: its last layers (the converted model, ~0.5 GB) would
            # pile up run after run. Refused harmlessly when a container still uses it.
            subprocess.run(["docker", "rmi", before], capture_output=True, check=False)
        started = time.monotonic()
        net.run("up", "-d", timeout_s=600)  # returns once the deployer has finished (depends_on)
        net.timings_s["up -d (anvil, deployer, nodes started)"] = time.monotonic() - started
        _wait_ready(net)
        net.timings_s["up -d to every node ready"] = time.monotonic() - started
        yield net
    finally:
        net.run("down", "-v", "--remove-orphans", "--timeout", "20", timeout_s=300, check=False)
        stack.close()
        print("\ncompose timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in net.timings_s.items()))


def _wait_ready(net: Compose) -> None:
    """Until every node's /ready answers 200 on its published port; a node container that exits fails at once."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = {f"node{i + 1}": port for i, port in enumerate(net.node_ports)}
    with httpx.Client(timeout=3.0) as client:
        while pending:
            for name, port in list(pending.items()):
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"http://127.0.0.1:{port}/ready").status_code == 200:
                        del pending[name]
                        continue
                if net.exited(name):
                    pytest.fail(f"{name} exited before it was ready:\n{net.logs(name)}", pytrace=False)
            if pending and time.monotonic() > deadline:
                pytest.fail(f"not ready after {READY_TIMEOUT_S:.0f} s: {sorted(pending)}\n{net.logs()}",
                            pytrace=False)
            if pending:
                time.sleep(1.0)


def _chat(port: int, content: str, max_tokens: int = 24) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=600.0, json={
        "model": DEFAULT_LOCAL_MODEL, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": content}]})


def _verified(net: Compose, body: dict[str, object]) -> str:
    """`wwwserve verify -` on the host must accept the saved answer; returns its output."""
    done = net.cli("verify", "-", stdin=json.dumps(body))
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_record_names_the_host_address_and_files_belong_to_the_checkout_owner(compose: Compose) -> None:
    record = json.loads((compose.home / "deployments" / "31337.json").read_text())
    assert record["rpcUrl"] == f"http://127.0.0.1:{compose.rpc_port}"
    owner = compose.directory.stat().st_uid
    written = [compose.home, *compose.home.rglob("*")]
    assert len(written) > 5  # the record, wallets, identities, indexes
    not_owned = [f"{p} (uid {p.lstat().st_uid})" for p in written if p.lstat().st_uid != owner]
    assert not not_owned, f"files the containers wrote not owned by uid {owner}: {not_owned[:10]}"


def test_a_published_node_port_answers_a_signed_completion(compose: Compose) -> None:
    response = _chat(compose.node_ports[1], "Name a colour.")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"].strip(), body
    assert body["wwwserve"]["model"] == DEFAULT_LOCAL_MODEL
    assert body["wwwserve"]["executor"] in {demo_account(i + 1).address for i in range(NODES)}
    assert "signed by " + body["wwwserve"]["executor"] in _verified(compose, body)


def test_the_host_cli_reads_the_stakes(compose: Compose) -> None:
    show = compose.cli("stake", "show", "--all")
    assert show.returncode == 0, show.stdout + show.stderr
    assert set(ADDRESS_RE.findall(show.stdout)) >= {demo_account(i + 1).address for i in range(NODES)}, show.stdout


def test_a_published_node_port_serves_the_explorer_over_the_nodes_index(compose: Compose) -> None:
    base = f"http://127.0.0.1:{compose.node_ports[0]}/explorer"
    page = httpx.get(f"{base}/", timeout=30)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"], page.text[:500]
    nodes = httpx.get(f"{base}/api/nodes", timeout=30).json()
    assert {row["address"] for row in nodes["items"]} == {demo_account(i + 1).address for i in range(NODES)}, nodes


def test_a_burst_is_delegated_between_containers(compose: Compose) -> None:
    entry = demo_account(1).address
    started = time.monotonic()
    with ThreadPoolExecutor(BURST) as pool:
        responses = list(pool.map(lambda i: _chat(compose.node_ports[0], f"Count to {i + 3}.", 16), range(BURST)))
    compose.timings_s[f"burst of {BURST}"] = time.monotonic() - started
    bodies = []
    for response in responses:
        assert response.status_code == 200, response.text
        bodies.append(response.json())
    executors = [body["wwwserve"]["executor"] for body in bodies]
    by_peers = [body for body in bodies if body["wwwserve"]["executor"] != entry]
    assert by_peers, f"node1 ran all {BURST} answers itself: {executors}"
    nodes = {demo_account(i + 1).address for i in range(NODES)}
    for body in by_peers:
        route = body["wwwserve"]["route"]  # node1, maybe a peer that passed it on, the executor
        assert route[0] == entry and route[-1] == body["wwwserve"]["executor"], route
        assert set(route) <= nodes and len(set(route)) == len(route), route
        _verified(compose, body)  # signed by the container that ran it, with the key it registered
    print(f"\nburst of {BURST} to node1: {len(by_peers)} executed by peers")


def test_anvil_is_quiet_and_the_image_runs_the_simulator(compose: Compose) -> None:
    anvil_log = compose.run("logs", "--no-color", "anvil").stdout
    assert "eth_" not in anvil_log and "Block Number" not in anvil_log, anvil_log[-2000:]
    sim = compose.run("run", "--rm", "--no-deps", "deployer", "wwwserve", "sim", "run", "azure", "-m", "single",
                      "--scale", "300", "--json")
    summary = json.loads(sim.stdout[sim.stdout.index("{"):sim.stdout.rindex("}") + 1])
    assert summary, sim.stdout
