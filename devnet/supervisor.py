"""Keep a background anvil under its memory cap: `python -m wwwserve.devnet.supervisor --port P [...]`.

`wwwserve devnet up` starts this small process detached (its own session) instead of anvil itself, so the
memory watchdog keeps running after the CLI returns. SIGTERM/SIGINT stop anvil and then the supervisor;
if anvil dies, the supervisor exits with anvil's status.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from wwwserve.devnet.anvil import DEFAULT_CHAIN_ID, DEFAULT_HOST, DEFAULT_MEMORY_CAP_MB, start_anvil


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chain-id", type=int, default=DEFAULT_CHAIN_ID)
    parser.add_argument("--block-time", type=int, default=0)
    parser.add_argument("--memory-cap-mb", type=int, default=DEFAULT_MEMORY_CAP_MB)
    parser.add_argument("--log", type=Path, default=None)
    args = parser.parse_args(argv)

    node = start_anvil(host=args.host, port=args.port, chain_id=args.chain_id, block_time_s=args.block_time or None,
                       memory_cap_mb=args.memory_cap_mb, log_path=args.log)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"anvil pid {node.pid} at {node.rpc_url}", flush=True)
    while not stop.wait(0.5):
        if not node.alive():
            reason = f"memory cap of {node.memory_cap_mb} MB" if node.killed_for_memory else "it exited"
            print(f"anvil stopped: {reason}", file=sys.stderr, flush=True)
            return 1
    node.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def start_background(port: int, block_time_s: int, log_path: Path, ready_timeout_s: float = 20.0) -> int:
    """Start a detached supervisor+anvil and return the supervisor's pid once the chain answers."""
    import subprocess
    import time

    from wwwserve.devnet.anvil import DevnetError, ensure_anvil
    from wwwserve.ledger.chain import chain_id_at

    ensure_anvil()  # install before detaching, so npm errors reach the user
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wwwserve.devnet.supervisor", "--port", str(port), "--block-time", str(block_time_s),
             "--log", str(log_path)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    url = f"http://{DEFAULT_HOST}:{port}"
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DevnetError(f"the devnet exited at start (code {proc.returncode}); see {log_path}")
        if chain_id_at(url, timeout_s=0.5) is not None:
            return proc.pid
        time.sleep(0.1)
    proc.terminate()
    raise DevnetError(f"the devnet did not answer at {url} within {ready_timeout_s:.0f} s; see {log_path}")
