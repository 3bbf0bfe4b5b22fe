"""Run N serving-node processes on one machine: the node half of `wwwserve up`.

`LocalNetwork` starts one `wwwserve node run` process per demo wallet (`python -m wwwserve.cli`, so it uses
this interpreter and this checkout), each on its own port and logging to `<home>/logs/node-<i>.log`;
`wait_ready` polls every node's `GET /ready` until all answer 200, and `stop` ends them (SIGTERM, then
SIGKILL for stragglers). `restart` stops and starts one node, and `process` hands out one node's process to
signal (the chaos tests, tests/chaos/).

Orphans: the children stay in our session and process group, so a Ctrl-C in the terminal reaches them
too, and the caller's `finally` calls `stop`. On Linux each node also asks the kernel for SIGTERM when
its parent dies (PR_SET_PDEATHSIG, `death_signal_preexec`; `wwwserve up` gives anvil the same), so even a
SIGKILLed `wwwserve up` leaves nothing behind; elsewhere a SIGKILL of the parent can leave processes that
must be stopped by hand.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO

import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table

from wwwserve.devnet.anvil import DevnetError

DEFAULT_HOST = "127.0.0.1"
LOG_TAIL_LINES = 25
# uvicorn drains in-flight requests for up to 10 s (node/main.py) before it exits; give it a little more.
DEFAULT_STOP_TIMEOUT_S = 12.0
_POLL_INTERVAL_S = 0.5
_READY_PROBE_TIMEOUT_S = 1.0
_PR_SET_PDEATHSIG = 1


class NetworkError(DevnetError):
    """The local network could not be started or kept running."""


class NetworkPortTakenError(NetworkError):
    """A port the network needs is already in use; raised before anything starts."""


class NetworkNodeExitedError(NetworkError):
    """A node process exited (at start-up or later); the message ends with the tail of its log."""


class NetworkStartTimeoutError(NetworkError):
    """Not every node became ready in time."""


class NodeState(Enum):
    """What a node process is doing, as seen from outside."""

    STARTING = "starting"  # process up, HTTP not answering yet
    LOADING = "loading model"  # HTTP answers, /ready is not 200 yet (the backend is loading)
    READY = "ready"
    EXITED = "exited"


@dataclass(frozen=True)
class NodeStatus:
    """One node's state at one moment, for progress displays."""

    name: str
    endpoint: str
    state: NodeState
    elapsed_s: float
    exit_code: int | None = None


def ports_in_use(ports: Sequence[int], host: str = DEFAULT_HOST) -> list[int]:
    """The ports of `ports` that something listens on (or that cannot be bound) at `host`.

    Binds with SO_REUSEADDR like uvicorn and anvil do, so a port left in TIME_WAIT by a previous run
    counts as free (it is, for them) while a listening socket still counts as taken.
    """
    taken = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                taken.append(port)
    return taken


def free_port_block(count: int, host: str = DEFAULT_HOST) -> int:
    """A base port with `count` consecutive free ports at `host`, outside the kernel's ephemeral range
    (nodes listen on base, base + 1, ...)."""
    for _ in range(200):
        base = random.randrange(20000, 30000 - count)
        if not ports_in_use(range(base, base + count), host):
            return base
    raise RuntimeError("no block of free ports found")


def check_ports_free(ports: Sequence[int], host: str = DEFAULT_HOST) -> None:
    """Raise NetworkPortTakenError naming every taken port of `ports`."""
    taken = ports_in_use(ports, host)
    if taken:
        listed = ", ".join(str(p) for p in taken)
        raise NetworkPortTakenError(
            f"port{'s' if len(taken) > 1 else ''} {listed} on {host} already in use "
            "(another `wwwserve up` or node running?): stop it, or pick other ports with --port / --base-port"
        )


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log file ('' if it cannot be read)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def death_signal_preexec() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGTERM when its parent dies (Linux), else None."""
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    # Resolved here, before fork: the child should only make the system call.
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nobody would stop us
            os._exit(1)

    return preexec


@dataclass(frozen=True)
class NodeLaunch:
    """How one node process of the network is started."""

    index: int  # 1-based
    wallet: str
    port: int
    log_path: Path
    overrides: tuple[str, ...]
    endpoint: str  # as registered on-chain

    @property
    def name(self) -> str:
        return f"node {self.index}"

    @property
    def local_url(self) -> str:
        """Where this machine reaches the node (loopback works for any listen address we use)."""
        return f"http://{DEFAULT_HOST}:{self.port}"


@dataclass
class _Running:
    launch: NodeLaunch
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    started_at: float
    ready_at: float | None = None


@dataclass
class LocalNetwork:
    """N `wwwserve node run` processes for the demo wallets `wallets[i]`, on ports base_port + i.

    `backend` is the node's `backend.kind` ("local" or "fake"). `extra_overrides` are more `--set
    section.field=value` strings given to every node. Auto-stake is off, so the stakes `wwwserve up`
    set stay put; the user changes them with `wwwserve stake`.
    """

    rpc_url: str
    contract_address: str
    wallets: Sequence[str]
    password: str
    home: Path
    backend: str = "local"
    base_port: int = 9101
    # Where the nodes listen, and the host in the endpoint they register (peers and users dial it);
    # another machine can only join when they listen on all interfaces and a reachable host is given.
    listen_host: str = DEFAULT_HOST
    public_host: str = DEFAULT_HOST
    extra_overrides: Sequence[str] = ()
    # More `--set` strings for single nodes: node i (1-based) also gets node_overrides[i - 1] (a network
    # whose nodes play different parts, as in the chaos tests).
    node_overrides: Sequence[Sequence[str]] = ()
    _running: list[_Running] = field(default_factory=list, init=False, repr=False)

    @property
    def ports(self) -> list[int]:
        return [self.base_port + i for i in range(len(self.wallets))]

    def launches(self) -> list[NodeLaunch]:
        """The start plan of every node (no side effects)."""
        plans = []
        for i, wallet in enumerate(self.wallets):
            port = self.base_port + i
            overrides = (
                f"server.port={port}",
                f"identity.wallet={wallet}",
                f"chain.rpc_url={self.rpc_url}",
                f"chain.contract_address={self.contract_address}",
                f"backend.kind={self.backend}",
                "policy.auto_stake=false",
                f"server.host={self.listen_host}",
                f"server.public_url={_url(self.public_host, port)}",
                *self.extra_overrides,
                *(self.node_overrides[i] if i < len(self.node_overrides) else ()),
            )
            plans.append(NodeLaunch(i + 1, wallet, port, self.home / "logs" / f"node-{i + 1}.log", overrides,
                                    _url(self.public_host, port)))
        return plans

    def command(self, launch: NodeLaunch) -> list[str]:
        """The argv of one node process."""
        argv = [sys.executable, "-m", "wwwserve.cli", "node", "run"]
        for override in launch.overrides:
            argv += ["--set", override]
        return argv

    def start(self) -> None:
        """Check the ports, then start every node process (returns at once; see `wait_ready`)."""
        if self._running:
            raise NetworkError("this network is already started")
        check_ports_free(self.ports, self.listen_host)
        try:
            for launch in self.launches():
                self._running.append(self._spawn(launch, "wb"))
        except BaseException:
            self.stop()
            raise

    def _spawn(self, launch: NodeLaunch, log_mode: str) -> _Running:
        env = {**os.environ, "WWWSERVE_HOME": str(self.home), "WWWSERVE_PASSWORD": self.password,
               "PYTHONUNBUFFERED": "1"}
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(launch.log_path, log_mode)  # noqa: SIM115 (closed in stop)
        log.write(f"$ {' '.join(self.command(launch))}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(self.command(launch), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, preexec_fn=death_signal_preexec())
        except BaseException:
            log.close()
            raise
        return _Running(launch, proc, log, time.monotonic())

    def process(self, index: int) -> subprocess.Popen[bytes]:
        """The process of node `index` (1-based), to signal one node (SIGSTOP, SIGKILL) from a test."""
        return self._running[index - 1].proc

    def restart(self, index: int, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """Stop node `index` (1-based) if it runs (SIGTERM: it finishes the requests in flight; SIGKILL after
        `timeout_s`) and start it again on its port, appending to its log; `wait_ready` then waits for it."""
        run = self._running[index - 1]
        if run.proc.poll() is None:
            _signal(run.proc, signal.SIGTERM)
            try:
                run.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _signal(run.proc, signal.SIGKILL)
                run.proc.wait()
        run.log.close()
        self._running[index - 1] = self._spawn(run.launch, "ab")

    def statuses(self) -> list[NodeStatus]:
        """Every node's state now (one quick /ready probe per node not yet seen ready)."""
        now = time.monotonic()
        out = []
        with httpx.Client(timeout=_READY_PROBE_TIMEOUT_S, trust_env=False) as http:
            for run in self._running:
                code = run.proc.poll()
                if code is not None:
                    state = NodeState.EXITED
                elif run.ready_at is not None:
                    state = NodeState.READY
                else:
                    state = self._probe(http, run.launch.local_url)
                    if state is NodeState.READY:
                        run.ready_at = now
                end = run.ready_at if run.ready_at is not None else now
                out.append(NodeStatus(run.launch.name, run.launch.endpoint, state, end - run.started_at, code))
        return out

    @staticmethod
    def _probe(http: httpx.Client, endpoint: str) -> NodeState:
        try:
            response = http.get(f"{endpoint}/ready")
        except httpx.TransportError:
            return NodeState.STARTING
        return NodeState.READY if response.status_code == 200 else NodeState.LOADING

    def exited(self) -> NodeStatus | None:
        """The first node whose process has exited, if any (no HTTP)."""
        for run in self._running:
            code = run.proc.poll()
            if code is not None:
                return NodeStatus(run.launch.name, run.launch.endpoint, NodeState.EXITED,
                                  time.monotonic() - run.started_at, code)
        return None

    def exited_error(self, status: NodeStatus, when: str) -> NetworkNodeExitedError:
        """The error for a node that exited, with the tail of its log."""
        run = next(r for r in self._running if r.launch.name == status.name)
        run.log.flush()
        tail = log_tail(run.launch.log_path)
        return NetworkNodeExitedError(
            f"{status.name} ({status.endpoint}) exited {when} with code {status.exit_code}; "
            f"last lines of {run.launch.log_path}:\n{tail}"
        )

    def wait_ready(
        self, timeout_s: float, on_update: Callable[[list[NodeStatus]], None] | None = None
    ) -> list[NodeStatus]:
        """Poll until every node's /ready answers 200; call `on_update` after every round.

        A node process that exits raises NetworkNodeExitedError (with its log tail); the caller stops the
        rest. NetworkStartTimeoutError after `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            statuses = self.statuses()
            if on_update is not None:
                on_update(statuses)
            for status in statuses:
                if status.state is NodeState.EXITED:
                    raise self.exited_error(status, "during start-up")
            if all(s.state is NodeState.READY for s in statuses):
                return statuses
            if time.monotonic() > deadline:
                waiting = ", ".join(f"{s.name} ({s.state.value})" for s in statuses if s.state is not NodeState.READY)
                raise NetworkStartTimeoutError(
                    f"not ready after {timeout_s:.0f} s: {waiting}; logs in {self.home / 'logs'}"
                )
            time.sleep(_POLL_INTERVAL_S)

    def pids(self) -> list[int]:
        """Process ids of the node processes started (running or not)."""
        return [run.proc.pid for run in self._running]

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> int:
        """SIGTERM every node, wait up to `timeout_s` in all, SIGKILL the rest; return how many were running.

        Idempotent; reaps every child so none is left as a zombie or an orphan.
        """
        running = [run for run in self._running if run.proc.poll() is None]
        for run in running:
            _signal(run.proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for run in running:
            try:
                run.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(run.proc, signal.SIGKILL)
                run.proc.wait()
        for run in self._running:
            if run.proc.poll() is None:  # started after the snapshot above? cannot happen, but never leak
                _signal(run.proc, signal.SIGKILL)
                run.proc.wait()
            run.log.close()
        self._running.clear()
        return len(running)


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        proc.send_signal(sig)
    except OSError as exc:  # already gone
        if exc.errno != errno.ESRCH:
            raise


def progress_table(statuses: Sequence[NodeStatus]) -> Table:
    """One line per node: name, endpoint, state, seconds since start (until ready)."""
    table = Table(title="starting nodes", title_justify="left")
    for col in ("node", "endpoint", "state", "elapsed"):
        table.add_column(col, justify="right" if col == "elapsed" else "left")
    colour = {NodeState.READY: "green", NodeState.EXITED: "red", NodeState.LOADING: "yellow",
              NodeState.STARTING: "cyan"}
    for s in statuses:
        table.add_row(s.name, s.endpoint, f"[{colour[s.state]}]{s.state.value}[/]", f"{s.elapsed_s:.0f} s")
    return table


def wait_ready_with_progress(network: LocalNetwork, console: Console, timeout_s: float) -> list[NodeStatus]:
    """`network.wait_ready` with a live table in a terminal, or a line per state change otherwise."""
    if console.is_terminal:
        with Live(progress_table([]), console=console, refresh_per_second=4, transient=False) as live:
            return network.wait_ready(timeout_s, lambda statuses: live.update(progress_table(statuses)))
    last: dict[str, NodeState] = {}

    def report(statuses: list[NodeStatus]) -> None:
        for s in statuses:
            if last.get(s.name) is not s.state:
                last[s.name] = s.state
                console.print(f"{s.name} {s.endpoint}: {s.state.value} ({s.elapsed_s:.0f} s)", highlight=False)

    return network.wait_ready(timeout_s, report)
