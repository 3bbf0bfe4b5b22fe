"""The processes a benchmark starts and stops again (anvil, the contract, nodes, helper servers), through
the project's one launcher, devnet/localnet.py.

`Processes` is a `LocalNet` whose children run in the repository root, each in its own session (a Ctrl-C
reaches only the benchmark, which then stops them in order), each logging to `<workdir>/<name>.log`.
`close()` stops every one (SIGTERM to its process group, SIGKILL after 10 s), then the `stoppers` and anvil,
so Ctrl-C, SIGTERM or an error never leaves a process behind. A process that exits before it is ready, or
is not ready in time, is a `BenchError` with the tail of its log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.common import MODEL, REPO_ROOT, BenchError
from wwwserve.devnet.localnet import LocalNet, LocalProcess, NetworkError, NodeLaunch
from wwwserve.devnet.ports import free_port, free_port_block

__all__ = ["NodeSpec", "Processes", "demo_password", "free_port", "free_port_block", "node_launch", "setup_chain",
           "wait_http"]

STOP_TIMEOUT_S = 10.0


class Processes(LocalNet):
    """Every process the benchmark starts, stopped by `close()` (idempotent)."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, cwd=REPO_ROOT, own_session=True)
        self.workdir = workdir

    @property
    def stoppers(self) -> list[Callable[[], None]]:
        """What `close()` calls after the processes, last added first (anvil's stop, a miner's stop event)."""
        return self.stop_callbacks

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> LocalProcess:
        """Start `cmd` with its output in <workdir>/<name>.log (returns at once)."""
        return self.spawn(name, cmd, env=env)

    def ready(self, process: LocalProcess, timeout_s: float, url: str | None = None) -> None:
        """Until `url` (default: the process's own ready URL, a node's /ready) answers 200; BenchError with
        the tail of its log if the process exits first or the deadline passes."""
        if url is not None:
            process.ready_url = url
        try:
            process.wait_ready(timeout_s)
        except NetworkError as exc:
            raise BenchError(str(exc)) from None

    def close(self) -> None:
        """Stop every process, then the stoppers and anvil."""
        self.stop(STOP_TIMEOUT_S)


def wait_http(url: str, proc: LocalProcess, what: str, logs: Processes, log_name: str,
              timeout_s: float) -> None:
    """`logs.ready(proc, timeout_s, url)` under the arguments bench/incentives.py passes (`what` and
    `log_name` are the process's own name and log now)."""
    logs.ready(proc, timeout_s, url)


@dataclass
class NodeSpec:
    """One node process: its wallet name (= identity key name), port and `--set` overrides."""

    wallet: str
    port: int
    sets: list[str]


def node_launch(name: str, spec: NodeSpec, workdir: Path) -> NodeLaunch:
    """How one benchmark node starts: `-w WALLET node run`, serving the bench model, auto-stake off, then the
    spec's settings; logging to <workdir>/<name>.log."""
    return NodeLaunch(name, spec.port, workdir / f"{name}.log",
                      (f"backend.models=['{MODEL}']", "policy.auto_stake=false", *spec.sets), wallet=spec.wallet)


def demo_password() -> str:
    """The devnet demo keystores' password (public knowledge, devnet only)."""
    from wwwserve.devnet.deploy import DEMO_PASSWORD

    return DEMO_PASSWORD


def setup_chain(procs: Processes, home: Path, base_port: int,
                progress: Callable[[str], None]) -> tuple[str, dict[str, str]]:
    """Anvil, the contract, and demo nodes 1 (dispatcher A) and 2 (executor B) registered, staked, with credit.

    Demo node 3 gets a wallet but is not registered: it is the standalone `fake`-backend node (path c),
    kept off the registry so that A never delegates to it. Returns (rpc_url, {wallet name: address}).
    """
    from wwwserve.devnet.deploy import (
        DEMO_PASSWORD,
        bring_up_demo_nodes,
        demo_account,
        ensure_demo_wallet,
        ensure_deployment,
    )
    from wwwserve.ledger.chain import connect
    from wwwserve.ledger.params import WEI_PER_ETH

    anvil = procs.start_anvil()  # logs to <workdir>/anvil.log; stopped last by `procs.close()`
    progress(f"anvil at {anvil.rpc_url}; deploying and registering 2 nodes")
    w3 = connect(anvil.rpc_url)
    deployment, _ = ensure_deployment(w3, anvil.rpc_url)
    names = {i: ensure_demo_wallet(i, DEMO_PASSWORD) for i in (1, 2, 3)}
    # 100 ETH of credit: a full run delegates thousands of requests at fee_wei each (1 credit by default).
    bring_up_demo_nodes(w3, deployment, 2, stake_wei=WEI_PER_ETH, deposit_wei=100 * WEI_PER_ETH, base_port=base_port,
                        models=(MODEL,), progress=progress)
    return anvil.rpc_url, {name: str(demo_account(i).address) for i, name in names.items()}
