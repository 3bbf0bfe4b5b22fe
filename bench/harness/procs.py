"""The processes a benchmark starts, each in its own session, and stops again: anvil, the contract, nodes.

`Processes.close()` stops every one in reverse order (SIGINT, then SIGKILL after 10 s), so Ctrl-C, SIGTERM
or an error never leaves a process behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.common import HOST, MODEL, REPO_ROOT, BenchError


def free_port() -> int:
    """A TCP port free on HOST right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Processes:
    """Every process the benchmark starts, stopped in reverse order by `close()` (idempotent)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stoppers: list[Callable[[], None]] = []

    def start(self, name: str, cmd: Sequence[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `cmd` with its output in <workdir>/<name>.log, in its own session (Ctrl-C reaches only us)."""
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(list(cmd), env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=REPO_ROOT)
        log.close()
        self.procs.append((name, proc))
        return proc

    def log_tail(self, name: str, lines: int = 15) -> str:
        """The last lines of a process's log, for error messages."""
        path = self.workdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def close(self) -> None:
        """SIGINT every process (graceful), then SIGKILL what is still alive after 10 s."""
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + 10.0
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()
        for stop in reversed(self.stoppers):
            with contextlib.suppress(Exception):
                stop()
        self.stoppers.clear()


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str, logs: Processes, log_name: str,
              timeout_s: float, ok: Callable[[int], bool] = lambda code: code == 200) -> None:
    """Poll `url` until it answers ok, failing early (with the log tail) if the process exits."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode}:\n{logs.log_tail(log_name)}")
        try:
            if ok(httpx.get(url, timeout=1.0).status_code):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise BenchError(f"{what} not ready after {timeout_s:.0f} s:\n{logs.log_tail(log_name)}")


@dataclass
class NodeSpec:
    """One node process: its wallet name (= identity key name), port and `--set` overrides."""

    wallet: str
    port: int
    sets: list[str]


def demo_password() -> str:
    """The devnet demo keystores' password (public knowledge, devnet only)."""
    from wwwserve.devnet.deploy import DEMO_PASSWORD

    return DEMO_PASSWORD


def node_command(spec: NodeSpec) -> list[str]:
    """The `wwwserve node run` command line of one benchmark node."""
    cmd = [sys.executable, "-m", "wwwserve.cli", "-w", spec.wallet, "node", "run",
           "--set", f"server.port={spec.port}", "--set", f"backend.models=['{MODEL}']",
           "--set", "policy.auto_stake=false"]
    for s in spec.sets:
        cmd += ["--set", s]
    return cmd


def free_port_pair() -> int:
    """A port p with p and p + 1 both free on HOST (demo nodes register consecutive ports)."""
    for _ in range(100):
        port = free_port()
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind((HOST, port))
                b.bind((HOST, port + 1))
            except OSError:
                continue
            return port
    raise BenchError("no two consecutive free ports")


def setup_chain(procs: Processes, home: Path, base_port: int,
                progress: Callable[[str], None]) -> tuple[str, dict[str, str]]:
    """Anvil, the contract, and demo nodes 1 (dispatcher A) and 2 (executor B) registered, staked, with credit.

    Demo node 3 gets a wallet but is not registered: it is the standalone `fake`-backend node (path c),
    kept off the registry so that A never delegates to it. Returns (rpc_url, {wallet name: address}).
    """
    from wwwserve.devnet.anvil import start_anvil
    from wwwserve.devnet.deploy import (
        DEMO_PASSWORD,
        bring_up_demo_nodes,
        demo_account,
        ensure_demo_wallet,
        ensure_deployment,
    )
    from wwwserve.ledger.chain import connect
    from wwwserve.ledger.params import WEI_PER_ETH

    anvil = start_anvil(log_path=home / "anvil.log")
    procs.stoppers.append(anvil.stop)
    progress(f"anvil at {anvil.rpc_url}; deploying and registering 2 nodes")
    w3 = connect(anvil.rpc_url)
    deployment, _ = ensure_deployment(w3, anvil.rpc_url)
    names = {i: ensure_demo_wallet(i, DEMO_PASSWORD) for i in (1, 2, 3)}
    # 100 ETH of credit: a full run delegates thousands of requests at fee_wei each (1 credit by default).
    bring_up_demo_nodes(w3, deployment, 2, stake_wei=WEI_PER_ETH, deposit_wei=100 * WEI_PER_ETH, base_port=base_port,
                        models=(MODEL,), progress=progress)
    return anvil.rpc_url, {name: str(demo_account(i).address) for i, name in names.items()}
