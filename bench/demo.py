"""What a newcomer sees: `wwwserve up`, the README's burst, and the first duels, timed end to end.

Each run starts `wwwserve up` (local SmolLM2 backend, the README's defaults) in a fresh WWWSERVE_HOME, waits
for its "Ctrl-C stops the network" line, sends the README's burst (`wwwserve burst`: 12 requests at once to
node 1, max_tokens 48), then follows the contract's events until every duel the burst opened has ended, and
stops the network with SIGINT as a user's Ctrl-C would. It prints, per run and as means with a 95 % interval
over the runs:

- seconds from `wwwserve up` to the ready table, and the burst's wall time, p50 and max latency;
- the share of the burst peers executed (from each answer's `wwwserve.route` / `executor`);
- duels opened, settled and cancelled (with the reason), seconds from `up` to the first settled duel, and
  the seats that stayed silent (a judge that missed its commit window pays SILENT_PENALTY).

    .venv/bin/python bench/demo.py                 # one run, about 5 minutes
    .venv/bin/python bench/demo.py --runs 3 --json out.json

The SmolLM2 files are prepared once under ~/.cache/wwwserve-bench-demo and linked into every run's home, so
the first-run download and conversion (about a minute) is timed only with --fresh-model. No figure here is
asserted; on a busy machine every time grows (the load average is printed beside the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from wwwserve.cli.burst import Outcome, _send_all, percentile
from wwwserve.ledger.chain import connect
from wwwserve.ledger.indexer import Indexer
from wwwserve.sim.metrics import mean_interval

MODEL_CACHE = Path.home() / ".cache" / "wwwserve-bench-demo"
READY_LINE = "Ctrl-C stops the network."


def _wait_for_line(path: Path, needle: str, proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if needle in text:
            return text
        if proc.poll() is not None:
            raise RuntimeError(f"wwwserve up exited with {proc.returncode}:\n{text[-2000:]}")
        time.sleep(0.5)
    raise RuntimeError(f"no {needle!r} after {timeout_s:.0f} s")


def mean_ci(values: list[float]) -> str:
    """Mean and a 95 % t-interval half-width (the value alone for one run), by the simulator's interval."""
    f = mean_interval(values)
    mean, hi = f["mean"], f["hi"]
    assert mean is not None
    return f"{mean:.1f}" if hi is None else f"{mean:.1f} ± {hi - mean:.1f}"


def one_run(args: argparse.Namespace, run: int) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix=f"wwwserve-demo-{run}-"))
    if not args.fresh_model and (MODEL_CACHE / "models").is_dir():
        (home / "models").symlink_to(MODEL_CACHE / "models")
    env = {**os.environ, "WWWSERVE_HOME": str(home)}
    out = home / "up.out"
    cmd = [sys.executable, "-m", "wwwserve.cli", "up", *args.up_args]
    started = time.monotonic()
    with out.open("wb") as sink:
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        text = _wait_for_line(out, READY_LINE, proc, args.ready_timeout)
        ready_s = time.monotonic() - started
        if not (MODEL_CACHE / "models").is_dir() and (home / "models").is_dir() and not args.fresh_model:
            MODEL_CACHE.mkdir(parents=True, exist_ok=True)
            (home / "models").rename(MODEL_CACHE / "models")
            (home / "models").symlink_to(MODEL_CACHE / "models")
        found = re.search(r"contract (0x[0-9a-fA-F]{40})", text)
        if found is None:
            raise RuntimeError("wwwserve up printed no contract address")
        burst_started = time.monotonic()
        _, outcomes = asyncio.run(_send_all(args.url, None, args.requests, args.max_tokens, 600.0, lambda o: None))
        burst_s = time.monotonic() - burst_started
        w3 = connect("http://127.0.0.1:8545")
        index = Indexer(w3, found.group(1), f"sqlite:///{home / 'bench-index.sqlite'}")
        first_settled_s = None
        deadline = time.monotonic() + args.duel_timeout
        duels: list[Any] = []
        while time.monotonic() < deadline:
            index.sync()
            duels = index.duels(limit=None)
            if first_settled_s is None and any(d.status == "settled" for d in duels):
                first_settled_s = time.monotonic() - started
            if duels and not any(d.is_open for d in duels):
                break
            time.sleep(2.0)
        return summarize(run, ready_s, burst_s, outcomes, duels, first_settled_s)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def summarize(run: int, ready_s: float, burst_s: float, outcomes: list[Outcome], duels: list[Any],
              first_settled_s: float | None) -> dict[str, Any]:
    answered = [o for o in outcomes if o.executor is not None]
    seconds = [o.seconds for o in answered]
    seats = [s for d in duels if not d.is_open for s in d.judges]
    return {
        "run": run,
        "load_average_1m": os.getloadavg()[0],
        "ready_s": round(ready_s, 1),
        "burst_wall_s": round(burst_s, 1),
        "answered": len(answered),
        "requests": len(outcomes),
        "p50_s": round(percentile(seconds, 0.5), 1) if seconds else None,
        "max_s": round(max(seconds), 1) if seconds else None,
        "by_peers": sum(o.by_peer for o in answered),
        "duels_opened": len(duels),
        "duels_settled": sum(d.status == "settled" for d in duels),
        "duels_cancelled": {r: sum(d.cancel_reason == r for d in duels)
                            for r in sorted({d.cancel_reason for d in duels if d.cancel_reason})},
        "outcomes": {o: sum(d.outcome == o for d in duels) for o in sorted({d.outcome for d in duels if d.outcome})},
        "seats": len(seats),
        "silent_seats": sum(s.vote is None for s in seats),  # never revealed, in a duel that ended
        "first_settled_s": round(first_settled_s, 1) if first_settled_s is not None else None,
        "still_open": sum(d.is_open for d in duels),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--url", default="http://127.0.0.1:9101")
    parser.add_argument("--ready-timeout", type=float, default=600.0)
    parser.add_argument("--duel-timeout", type=float, default=420.0, help="Seconds after the burst to follow duels.")
    parser.add_argument("--fresh-model", action="store_true", help="Prepare SmolLM2 in every run's home (timed).")
    parser.add_argument("--json", type=Path, help="Also write the runs as JSON here.")
    parser.add_argument("up_args", nargs="*", help="More `wwwserve up` arguments (after --).")
    args = parser.parse_args()
    results = []
    for run in range(1, args.runs + 1):
        result = one_run(args, run)
        results.append(result)
        print(json.dumps(result), flush=True)
    print(f"\n{len(results)} run(s); mean ± 95 % interval")
    for key, label in (("ready_s", "up to ready table (s)"), ("burst_wall_s", "burst wall time (s)"),
                       ("p50_s", "answer p50 (s)"), ("max_s", "answer max (s)"), ("by_peers", "executed by peers"),
                       ("duels_opened", "duels opened"), ("duels_settled", "duels settled"),
                       ("silent_seats", "silent seats"), ("first_settled_s", "up to first settled duel (s)")):
        values = [float(r[key]) for r in results if r[key] is not None]
        shown = mean_ci(values) if values else "-"
        missing = len(results) - len(values)
        print(f"  {label:32s} {shown}{f' ({missing} run(s) without one)' if missing else ''}")
    print(f"  requests per burst               {args.requests}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
