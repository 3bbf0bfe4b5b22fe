"""Start, find, attach to and stop the embedded anvil devnet.

anvil comes from npm (`@foundry-rs/anvil-<platform>`, pinned in `devnet/package.json`). It always runs
with `--prune-history`: without it anvil stalls and grows without bound under bursts of transactions
(see STACK.md). A watchdog thread also kills it if its resident memory passes a cap, so a runaway devnet
can never take the machine down.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from wwwserve.devnet.ports import free_port
from wwwserve.errors import WWWServeError
from wwwserve.ledger.chain import chain_id_at, rpc_call
from wwwserve.ledger.home import wwwserve_home

ANVIL_VERSION = "1.7.1"
DEVNET_DIR = Path(__file__).resolve().parent
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8545
DEFAULT_CHAIN_ID = 31337
DEFAULT_MEMORY_CAP_MB = 2048
# anvil's built-in dev accounts (mnemonic "test test ... junk"); only ever used on a local devnet.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
)


class DevnetError(WWWServeError, RuntimeError):
    """The devnet could not be found, installed, started or reached."""


def _platform_package() -> str:
    system = {"Linux": "linux", "Darwin": "darwin"}.get(platform.system())
    machine = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower()
    )
    if system is None or machine is None:
        raise DevnetError(f"no anvil build for {platform.system()}/{platform.machine()}")
    return f"@foundry-rs/anvil-{system}-{machine}"


def _binary_in(prefix: Path) -> Path:
    return prefix / "node_modules" / _platform_package() / "bin" / "anvil"


def find_anvil() -> Path | None:
    """The anvil binary: $WWWSERVE_ANVIL, then devnet/node_modules, then $WWWSERVE_HOME/npm, then PATH."""
    env = os.environ.get("WWWSERVE_ANVIL")
    if env:
        return Path(env) if Path(env).exists() else None
    for prefix in (DEVNET_DIR, wwwserve_home() / "npm"):
        candidate = _binary_in(prefix)
        if candidate.exists():
            return candidate
    on_path = shutil.which("anvil")
    return Path(on_path) if on_path else None


def install_anvil(quiet: bool = False) -> Path:
    """Install the pinned anvil from npm into $WWWSERVE_HOME/npm and return its path."""
    npm = shutil.which("npm")
    if npm is None:
        raise DevnetError("anvil is not installed and npm is not on PATH: install Node.js/npm, or set WWWSERVE_ANVIL")
    prefix = wwwserve_home() / "npm"
    prefix.mkdir(parents=True, exist_ok=True)
    cmd = [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--silent",
           f"{_platform_package()}@{ANVIL_VERSION}"]
    if not quiet:
        print(f"installing anvil {ANVIL_VERSION} from npm into {prefix} ...", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    binary = _binary_in(prefix)
    if proc.returncode != 0 or not binary.exists():
        raise DevnetError(f"npm could not install anvil: {proc.stderr.strip()[-500:] or proc.stdout.strip()[-500:]}")
    return binary


def ensure_anvil(quiet: bool = False) -> Path:
    """Find anvil or install it."""
    return find_anvil() or install_anvil(quiet=quiet)


def _rss_mb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    except OSError:
        return None
    return None


@dataclass
class AnvilProcess:
    """A running anvil started by us (or attached to, when `proc` is None and `pid` is known)."""

    rpc_url: str
    chain_id: int
    pid: int
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    memory_cap_mb: int = DEFAULT_MEMORY_CAP_MB
    killed_for_memory: bool = False
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def start_watchdog(self, interval_s: float = 1.0) -> None:
        """Kill anvil if its RSS passes the cap (Linux /proc only; elsewhere a no-op)."""

        def watch() -> None:
            while not self._stop.wait(interval_s):
                rss = _rss_mb(self.pid)
                if rss is None:
                    return
                if rss > self.memory_cap_mb:
                    self.killed_for_memory = True
                    os.kill(self.pid, signal.SIGKILL)
                    return

        threading.Thread(target=watch, name="anvil-watchdog", daemon=True).start()

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        try:
            os.kill(self.pid, 0)
        except OSError:
            return False
        return True

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate anvil (SIGTERM, then SIGKILL)."""
        self._stop.set()
        if not self.alive():
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None:
                if self.proc.poll() is not None:
                    return
            elif not self.alive():
                return
            time.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=timeout_s)


def anvil_args(host: str, port: int, chain_id: int = DEFAULT_CHAIN_ID, block_time_s: int | None = None) -> list[str]:
    """anvil's command-line arguments; docker-compose.yml must use the same (a test checks). `--silent`:
    anvil otherwise logs every block and call, which buries a compose log and fills the devnet's."""
    args = ["--host", host, "--port", str(port), "--chain-id", str(chain_id), "--prune-history", "--silent",
            "--accounts", str(len(DEV_KEYS))]
    if block_time_s:
        args += ["--block-time", str(block_time_s)]
    return args


def start_anvil(
    host: str = DEFAULT_HOST,
    port: int | None = None,
    chain_id: int = DEFAULT_CHAIN_ID,
    block_time_s: int | None = None,
    memory_cap_mb: int = DEFAULT_MEMORY_CAP_MB,
    log_path: Path | None = None,
    detach: bool = False,
    ready_timeout_s: float = 15.0,
    anvil: Path | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> AnvilProcess:
    """Start anvil and wait until it answers JSON-RPC.

    `block_time_s=None` mines a block per transaction (fast tests); an integer mines on an interval like
    a real chain. `detach=True` starts it in its own session so it outlives this process
    (`wwwserve devnet up`); the memory watchdog then only runs while this process does. `preexec_fn` runs
    in the child before anvil starts (`wwwserve up` uses it to have anvil die with its parent).
    """
    binary = anvil or ensure_anvil()
    port = port or free_port(host)
    url = f"http://{host}:{port}"
    if chain_id_at(url, timeout_s=0.5) is not None:
        raise DevnetError(f"something already serves JSON-RPC at {url}")
    cmd = [str(binary), *anvil_args(host, port, chain_id, block_time_s)]
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 (owned by the child)
    try:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=detach, preexec_fn=preexec_fn)
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]
    node = AnvilProcess(rpc_url=url, chain_id=chain_id, pid=proc.pid, log_path=log_path, proc=proc,
                        memory_cap_mb=memory_cap_mb)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DevnetError(f"anvil exited at start with code {proc.returncode} (log: {log_path or 'none'})")
        if chain_id_at(url, timeout_s=0.5) == chain_id:
            node.start_watchdog()
            return node
        time.sleep(0.05)
    node.stop()
    raise DevnetError(f"anvil did not answer at {url} within {ready_timeout_s:.0f} s")


def mine(url: str, blocks: int = 1) -> None:
    """Mine `blocks` empty blocks at once (anvil_mine); for tests and demos on an automine devnet."""
    rpc_call(url, "anvil_mine", [hex(blocks)])


def increase_time(url: str, seconds: int) -> None:
    """Move the devnet clock forward and mine a block so the new time is visible to the next call."""
    rpc_call(url, "evm_increaseTime", [seconds])
    mine(url, 1)
