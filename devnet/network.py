"""The demo network of `wwwserve up`: N serving-node processes on one machine, and their progress display.

`LocalNetwork` plans one `wwwserve node run` process per demo wallet (wallet `wallets[i]` on port
base_port + i, logging to `<home>/logs/node-<i>.log`) and runs them with the launcher, devnet/localnet.py,
which starts, waits for (`GET /ready`) and stops every local process of the project (SIGTERM, then SIGKILL
for stragglers; the children die with their parent on Linux). `restart` stops and starts one node, and
`process` hands out one node's process to signal (the chaos tests, tests/chaos/).
`wait_ready_with_progress` shows the nodes' start-up as a live table in a terminal, or a line per change.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from wwwserve.devnet.localnet import (
    DEFAULT_STOP_TIMEOUT_S,
    LocalNet,
    LocalProcess,
    NetworkError,
    NetworkNodeExitedError,
    NodeLaunch,
    NodeState,
    NodeStatus,
    check_ports_free,
    death_signal_preexec,
    url_of,
)
from wwwserve.devnet.ports import LOOPBACK

# `wwwserve up` imports these from here, beside LocalNetwork.
__all__ = ["LocalNetwork", "NetworkError", "check_ports_free", "death_signal_preexec", "progress_table",
           "wait_ready_with_progress"]


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
    listen_host: str = LOOPBACK
    public_host: str = LOOPBACK
    extra_overrides: Sequence[str] = ()
    # More `--set` strings for single nodes: node i (1-based) also gets node_overrides[i - 1] (a network
    # whose nodes play different parts, as in the chaos tests).
    node_overrides: Sequence[Sequence[str]] = ()
    _net: LocalNet | None = field(default=None, init=False, repr=False)

    def local_threads(self) -> int:
        """Torch threads of each `local` node: the CPUs this process may use, shared out between the nodes.

        torch's default (one thread per core in every process) oversubscribes a machine that runs several
        nodes: measured with three SmolLM2 processes on 2 busy cores, a 48-token answer took 156-163 s with
        the default 2 threads each and 16-19 s with 1 (its OpenMP threads spin, waiting for each other).
        """
        return max(1, len(os.sched_getaffinity(0)) // max(1, len(self.wallets)))

    @property
    def ports(self) -> list[int]:
        return [self.base_port + i for i in range(len(self.wallets))]

    def launches(self) -> list[NodeLaunch]:
        """The start plan of every node (no side effects)."""
        plans = []
        for i, wallet in enumerate(self.wallets):
            port = self.base_port + i
            overrides = (
                f"identity.wallet={wallet}",
                f"chain.rpc_url={self.rpc_url}",
                f"chain.contract_address={self.contract_address}",
                f"backend.kind={self.backend}",
                *((f"backend.local.threads={self.local_threads()}",) if self.backend == "local" else ()),
                "policy.auto_stake=false",
                f"server.host={self.listen_host}",
                f"server.public_url={url_of(self.public_host, port)}",
                *self.extra_overrides,
                *(self.node_overrides[i] if i < len(self.node_overrides) else ()),
            )
            plans.append(NodeLaunch(f"node {i + 1}", port, self.home / "logs" / f"node-{i + 1}.log", overrides,
                                    endpoint=url_of(self.public_host, port)))
        return plans

    def start(self) -> None:
        """Check the ports, then start every node process (returns at once; see `wait_ready`)."""
        if self._net is not None:
            raise NetworkError("this network is already started")
        self._net = LocalNet(self.home / "logs", env={"WWWSERVE_HOME": str(self.home),
                                                      "WWWSERVE_PASSWORD": self.password})
        try:
            self._net.start_nodes(self.launches(), listen_host=self.listen_host)
        except BaseException:
            self.stop()
            raise

    def _nodes(self) -> list[LocalProcess]:
        return self._net.nodes if self._net is not None else []

    def process(self, index: int) -> subprocess.Popen[bytes]:
        """The process of node `index` (1-based), to signal one node (SIGSTOP, SIGKILL) from a test."""
        return self._nodes()[index - 1].proc

    def restart(self, index: int, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        """Stop node `index` (1-based) if it runs (SIGTERM: it finishes the requests in flight; SIGKILL after
        `timeout_s`) and start it again on its port, appending to its log; `wait_ready` then waits for it."""
        if self._net is None:
            raise NetworkError("this network is not started")
        self._net.restart(self._nodes()[index - 1], timeout_s)

    def exited(self) -> NodeStatus | None:
        """The first node whose process has exited, if any (no HTTP)."""
        for node in self._nodes():
            code = node.poll()
            if code is not None:
                return NodeStatus(node.name, node.endpoint, NodeState.EXITED, time.monotonic() - node.started_at,
                                  code)
        return None

    def exited_error(self, status: NodeStatus, when: str) -> NetworkNodeExitedError:
        """The error for a node that exited, with the tail of its log."""
        return next(n for n in self._nodes() if n.name == status.name).exited_error(when)

    def wait_ready(
        self, timeout_s: float, on_update: Callable[[list[NodeStatus]], None] | None = None
    ) -> list[NodeStatus]:
        """Poll until every node's /ready answers 200; call `on_update` after every round.

        A node process that exits raises NetworkNodeExitedError (with its log tail); the caller stops the
        rest. NetworkStartTimeoutError (with the log tail of each node not ready) after `timeout_s`.
        """
        if self._net is None:
            raise NetworkError("this network is not started")
        return self._net.wait_ready(timeout_s, on_update)

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> int:
        """SIGTERM every node, wait up to `timeout_s` in all, SIGKILL the rest; return how many were running.

        Idempotent; reaps every child so none is left as a zombie or an orphan.
        """
        net, self._net = self._net, None
        return net.stop(timeout_s) if net is not None else 0


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
