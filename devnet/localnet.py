"""The one launcher of local processes: anvil and `wwwserve node run` nodes, for `wwwserve up`, the
benchmarks and the tests.

`LocalNet` owns what it starts. `start_anvil` is devnet.anvil's anvil (memory watchdog and all), logging to
`<log_dir>/anvil.log`; `start_node` / `start_nodes` start one `python -m wwwserve.cli [-w WALLET] node run
--set ...` subprocess per `NodeLaunch` (this interpreter, this checkout); `spawn` starts any other command a
benchmark needs (a fake engine, a proxy). Every process writes its stdout and stderr to its own log file,
headed by its command line. `wait_ready` polls each node's `GET /ready` until it answers 200, waiting on the
process itself between polls so an exit is seen at once; a process that exits, or a deadline that passes,
raises an error that ends with the tail of that process's log. `stop` ends every process (SIGTERM: a node
drains the requests in flight, node/main.py; SIGKILL after a timeout), then anvil, and reaps every child.

Orphans: on Linux each child asks the kernel for SIGTERM when its parent dies (PR_SET_PDEATHSIG,
`death_signal_preexec`), so even a SIGKILLed parent leaves nothing behind; elsewhere a SIGKILL of the parent
can leave processes that must be stopped by hand. By default the children stay in the parent's process
group, so a Ctrl-C in the terminal reaches them too (`wwwserve up`). With `own_session=True` each child
gets its own session, so only the parent sees a Ctrl-C and stops them in order (the benchmarks), and every
signal goes to the child's whole process group.

Ports come from devnet/ports.py; `check_ports_free` turns a taken one into an error before anything starts.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import TracebackType

import httpx

from wwwserve.devnet.anvil import DEFAULT_CHAIN_ID, AnvilProcess, DevnetError, start_anvil
from wwwserve.devnet.ports import LOOPBACK, ports_in_use

LOG_TAIL_LINES = 25
# uvicorn drains in-flight requests for up to 10 s (node/main.py) before it exits; give it a little more.
DEFAULT_STOP_TIMEOUT_S = 12.0
_POLL_INTERVAL_S = 0.25
_READY_PROBE_TIMEOUT_S = 1.0
_PR_SET_PDEATHSIG = 1


class NetworkError(DevnetError):
    """A local process or network could not be started or kept running."""


class NetworkPortTakenError(NetworkError):
    """A port the network needs is already in use; raised before anything starts."""


class NetworkNodeExitedError(NetworkError):
    """A process exited (at start-up or later); the message ends with the tail of its log."""


class NetworkStartTimeoutError(NetworkError):
    """A process did not become ready in time; the message ends with the tail of its log."""


class NodeState(Enum):
    """What a started process is doing, as seen from outside."""

    STARTING = "starting"  # process up, HTTP not answering yet
    LOADING = "loading model"  # HTTP answers, /ready is not 200 yet (a node's backend is loading)
    READY = "ready"
    EXITED = "exited"


@dataclass(frozen=True)
class NodeStatus:
    """One process's state at one moment, for progress displays."""

    name: str
    endpoint: str
    state: NodeState
    elapsed_s: float
    exit_code: int | None = None


def check_ports_free(ports: Iterable[int], host: str = LOOPBACK) -> None:
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


def url_of(host: str, port: int) -> str:
    """`http://host:port`, with an IPv6 host in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@dataclass(frozen=True)
class NodeLaunch:
    """How one `wwwserve node run` process is started: its name in messages, its port, its log file, its
    `--set section.field=value` overrides (after `server.port`), and the wallet given as the global `-w`
    option (None: the overrides or the environment name it, e.g. `identity.wallet=...`)."""

    name: str
    port: int
    log_path: Path
    overrides: tuple[str, ...] = ()
    wallet: str | None = None
    endpoint: str = ""  # as registered on-chain, for messages; the local URL when empty

    @property
    def local_url(self) -> str:
        """Where this machine reaches the node (loopback works for any listen address we use)."""
        return url_of(LOOPBACK, self.port)

    def command(self) -> list[str]:
        """The argv of the node process."""
        argv = [sys.executable, "-m", "wwwserve.cli"]
        if self.wallet is not None:
            argv += ["-w", self.wallet]
        argv += ["node", "run"]
        for override in (f"server.port={self.port}", *self.overrides):
            argv += ["--set", override]
        return argv


class LocalProcess:
    """A process `LocalNet` started: its `Popen`, its log file and, for a server, the URL that answers 200
    once it is ready (a node's `/ready`)."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path,
                 proc: subprocess.Popen[bytes], *, own_session: bool, ready_url: str | None,
                 launch: NodeLaunch | None) -> None:
        self.name = name
        self.argv = tuple(argv)
        self.env = dict(env)  # what the caller added to the environment (for a restart)
        self.log_path = log_path
        self.proc = proc
        self.own_session = own_session
        self.ready_url = ready_url
        self.launch = launch
        self.started_at = time.monotonic()
        self.ready_at: float | None = None

    def __repr__(self) -> str:
        return f"LocalProcess({self.name!r}, pid={self.pid}, log={str(self.log_path)!r})"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def poll(self) -> int | None:
        """The exit status, or None while it runs."""
        return self.proc.poll()

    @property
    def endpoint(self) -> str:
        """What messages call it: a node's registered endpoint, else where it is polled, else its name."""
        if self.launch is not None:
            return self.launch.endpoint or self.launch.local_url
        return self.ready_url or self.name

    def send_signal(self, sig: int) -> None:
        """Signal the process (its whole process group when it has its own session); gone is not an error.

        Never once it is reaped: its pid, and so its group's id, may then belong to another process.
        """
        if self.proc.poll() is not None:
            return
        try:
            if self.own_session:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                raise

    def kill(self) -> None:
        """SIGKILL, and reap."""
        self.send_signal(signal.SIGKILL)
        self.proc.wait()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail(self.log_path, lines)

    def exited_error(self, when: str) -> NetworkNodeExitedError:
        """The error for this process having exited, with the tail of its log."""
        return NetworkNodeExitedError(
            f"{self.name} ({self.endpoint}) exited {when} with code {self.proc.poll()}; "
            f"last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def status(self, http: httpx.Client) -> NodeStatus:
        """Its state now: one quick probe of `ready_url` unless it was seen ready or has exited."""
        now = time.monotonic()
        code = self.proc.poll()
        if code is not None:
            state = NodeState.EXITED
        elif self.ready_at is not None or self.ready_url is None:
            state = NodeState.READY
        else:
            try:
                response = http.get(self.ready_url)
            except httpx.TransportError:
                state = NodeState.STARTING
            else:
                state = NodeState.READY if response.status_code == 200 else NodeState.LOADING
        if state is NodeState.READY and self.ready_at is None:
            self.ready_at = now
        end = self.ready_at if self.ready_at is not None else now
        return NodeStatus(self.name, self.endpoint, state, end - self.started_at, code)

    def wait_ready(self, timeout_s: float) -> None:
        """Until `ready_url` answers 200; NetworkNodeExitedError or NetworkStartTimeoutError with the log tail."""
        wait_ready([self], timeout_s)

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> bool:
        """SIGTERM, SIGKILL after `timeout_s`, reaped; whether it was running."""
        return stop_processes([self], timeout_s) == 1


def wait_ready(processes: Sequence[LocalProcess], timeout_s: float,
               on_update: Callable[[list[NodeStatus]], None] | None = None) -> list[NodeStatus]:
    """Poll every process's `ready_url` until all answer 200; call `on_update` after every round.

    Between rounds it waits on a process not yet ready, so an exit ends the wait at once. A process that
    exits raises NetworkNodeExitedError, a deadline that passes NetworkStartTimeoutError, each with the tail
    of the log of the process concerned; the caller stops the rest.
    """
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=_READY_PROBE_TIMEOUT_S, trust_env=False) as http:
        while True:
            statuses = [p.status(http) for p in processes]
            if on_update is not None:
                on_update(statuses)
            for process, status in zip(processes, statuses, strict=True):
                if status.state is NodeState.EXITED:
                    raise process.exited_error("during start-up")
            waiting = [(p, s) for p, s in zip(processes, statuses, strict=True) if s.state is not NodeState.READY]
            if not waiting:
                return statuses
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                names = ", ".join(f"{s.name} ({s.state.value})" for _, s in waiting)
                tails = "".join(f"\nlast lines of {p.log_path}:\n{p.log_tail()}" for p, _ in waiting)
                raise NetworkStartTimeoutError(f"not ready after {timeout_s:.0f} s: {names}{tails}")
            with contextlib.suppress(subprocess.TimeoutExpired):  # the wait between polls, cut short by an exit
                waiting[0][0].proc.wait(timeout=min(_POLL_INTERVAL_S, left_s))


def stop_processes(processes: Sequence[LocalProcess], timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> int:
    """SIGTERM every running process (last started first), wait up to `timeout_s` in all, SIGKILL the rest;
    reap every one so none is left as a zombie or an orphan. Returns how many were running."""
    running = [p for p in reversed(processes) if p.proc.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for process in running:
        try:
            process.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
    return len(running)


class LocalNet:
    """Every process of one local network, stopped together by `stop` (idempotent) or at the end of a `with`.

    `log_dir` holds a log per process (`<name>.log`, unless a launch names another file). `env` is added to
    this process's environment for every child, and `cwd` is their working directory.
    """

    def __init__(self, log_dir: Path, *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
                 own_session: bool = False) -> None:
        self.log_dir = log_dir
        self.env = dict(env or {})
        self.cwd = cwd
        self.own_session = own_session
        self.processes: list[LocalProcess] = []
        self.anvil: AnvilProcess | None = None
        # Called by `stop` after the processes, last added first (anvil's stop, a miner's stop event, ...).
        self.stop_callbacks: list[Callable[[], None]] = []

    def __enter__(self) -> LocalNet:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def nodes(self) -> list[LocalProcess]:
        """The node processes, in the order they were started."""
        return [p for p in self.processes if p.launch is not None]

    def start_anvil(self, host: str = LOOPBACK, port: int | None = None, chain_id: int = DEFAULT_CHAIN_ID,
                    block_time_s: int | None = None) -> AnvilProcess:
        """devnet.anvil's anvil, logging to `<log_dir>/anvil.log` and dying with this process; `stop` stops
        it after every other process."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        anvil = start_anvil(host=host, port=port, chain_id=chain_id, block_time_s=block_time_s,
                            log_path=self.log_dir / "anvil.log", preexec_fn=death_signal_preexec())
        self.anvil = anvil
        self.stop_callbacks.insert(0, anvil.stop)
        return anvil

    def spawn(self, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
              log_path: Path | None = None, ready_url: str | None = None, launch: NodeLaunch | None = None,
              append_log: bool = False) -> LocalProcess:
        """Start `argv` with its output in `log_path` (default `<log_dir>/<name>.log`); returns at once."""
        log_path = log_path or self.log_dir / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        added = dict(env or {})
        with open(log_path, "ab" if append_log else "wb") as log:
            log.write(f"$ {shlex.join(argv)}\n".encode())
            log.flush()
            # The child has its own copy of the descriptor: ours closes with the `with`.
            proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**os.environ, **self.env, **added}, cwd=self.cwd,
                                    start_new_session=self.own_session, preexec_fn=death_signal_preexec())
        process = LocalProcess(name, argv, added, log_path, proc, own_session=self.own_session,
                               ready_url=ready_url, launch=launch)
        self.processes.append(process)
        return process

    def start_node(self, launch: NodeLaunch, env: Mapping[str, str] | None = None) -> LocalProcess:
        """Start one `wwwserve node run` process (returns at once; see `wait_ready`)."""
        return self.spawn(launch.name, launch.command(), env={"PYTHONUNBUFFERED": "1", **(env or {})},
                          log_path=launch.log_path, ready_url=f"{launch.local_url}/ready", launch=launch)

    def start_nodes(self, launches: Sequence[NodeLaunch], env: Mapping[str, str] | None = None,
                    listen_host: str = LOOPBACK) -> list[LocalProcess]:
        """Check that every port is free at `listen_host` (NetworkPortTakenError before anything starts), then
        start every node."""
        check_ports_free([launch.port for launch in launches], listen_host)
        return [self.start_node(launch, env) for launch in launches]

    def restart(self, process: LocalProcess, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> LocalProcess:
        """Stop `process` if it runs (SIGTERM: a node finishes the requests in flight; SIGKILL after
        `timeout_s`) and start it again the same way, appending to its log; `wait_ready` then waits for it."""
        process.stop(timeout_s)
        index = self.processes.index(process)
        again = self.spawn(process.name, process.argv, env=process.env, log_path=process.log_path,
                           ready_url=process.ready_url, launch=process.launch, append_log=True)
        self.processes.pop()
        self.processes[index] = again
        return again

    def wait_ready(self, timeout_s: float, on_update: Callable[[list[NodeStatus]], None] | None = None
                   ) -> list[NodeStatus]:
        """`wait_ready` over every node started."""
        return wait_ready(self.nodes, timeout_s, on_update)

    def exited(self) -> LocalProcess | None:
        """The first process that has exited, if any (no HTTP)."""
        return next((p for p in self.processes if p.proc.poll() is not None), None)

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> int:
        """Stop every process (`stop_processes`), then run `stop_callbacks` (anvil last); returns how many
        processes were running. Idempotent."""
        try:
            return stop_processes(self.processes, timeout_s)
        finally:
            self.processes.clear()
            failure: Exception | None = None
            while self.stop_callbacks:
                try:
                    self.stop_callbacks.pop()()
                except Exception as exc:  # every callback still runs; the first failure is raised after
                    failure = failure or exc
            if failure is not None:
                raise failure
