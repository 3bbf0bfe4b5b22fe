"""Soak: many concurrent streams through a delegation hop for minutes, on real node processes (issue 13).

Node A (a pure dispatcher) delegates every request to node B, which streams from an instant
OpenAI-compatible fake backend (bench/harness/fake_backend.py), on anvil with the contract, vouchers and all. N
clients (default 200) each stream one chat completion after another for D seconds (default 300). Every
stream must end with `[DONE]`, carry the executor's signed result and no error event. Printed: requests,
errors by kind, latency p50/p99 of a whole stream, time to first token p99, where the streams ran (on A
itself or on a peer, by the executor each answer names) with the share and latency p50/p99 of each route,
each node's RSS at the start, the end and its peak (sampled every 5 s), and PASS/MISS against the
targets (0 errors; RSS growth of each node under 100 MB). Exit status 1 on a MISS.

With `--origin-engine-latency S`, A's own engine is a slow one (the in-process fake backend: S seconds
before each answer, `--origin-engine-capacity` at once) instead of the instant backend: a busy origin,
whose queued requests wait for it unless a peer takes them.

Usage:
  python bench/soak.py                       # 200 streams for 300 s
  python bench/soak.py --streams 50 --duration 60 --json out.json
  python bench/soak.py --duration 120 --origin-engine-latency 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness.common import HOST, MODEL  # bench/harness: processes, chain set-up, the fake backend
from harness.fake_backend import fake_backend_command
from harness.node_metrics import delegation_note, dispatch_counters
from harness.procs import NodeSpec, Processes, demo_password, free_port, free_port_block, node_launch, setup_chain
from harness.sse import SSEReader
from harness.stats import percentile

RSS_GROWTH_TARGET_MB = 100.0
EXECUTOR_HEADER = "X-WWWServe-Executor"  # node.app's: the node whose signature the answer carries


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class SoakResult:
    streams: int
    duration_s: float
    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latency_ms: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)
    rss_mb: dict[str, list[float]] = field(default_factory=dict)
    # "local" (executed by node A itself) or "peer" -> whole-stream latencies of the streams that went there
    latency_ms_by_route: dict[str, list[float]] = field(default_factory=dict)

    def routes(self) -> dict[str, dict[str, float]]:
        """Per route: streams, their share of all completed streams, latency p50/p99 (ms)."""
        out = {}
        for route, values in sorted(self.latency_ms_by_route.items()):
            out[route] = {"streams": len(values), "share": len(values) / self.requests if self.requests else 0.0,
                          "latency_ms_p50": percentile(values, 50),
                          "latency_ms_p99": percentile(values, 99)}
        return out

    def summary(self) -> dict[str, Any]:
        growth = {name: (samples[-1] - samples[0]) if samples else None for name, samples in self.rss_mb.items()}
        return {
            "streams": self.streams, "duration_s": self.duration_s, "requests": self.requests,
            "requests_per_s": self.requests / self.duration_s if self.duration_s else 0.0,
            "errors": dict(self.errors), "error_count": sum(self.errors.values()),
            "latency_ms_p50": percentile(self.latency_ms, 50) if self.latency_ms else None,
            "latency_ms_p99": percentile(self.latency_ms, 99) if self.latency_ms else None,
            "ttft_ms_p99": percentile(self.ttft_ms, 99) if self.ttft_ms else None,
            "rss_mb": {name: {"start": s[0], "end": s[-1], "peak": max(s)} for name, s in self.rss_mb.items() if s},
            "rss_growth_mb": growth,
            "routes": self.routes(),
        }


async def one_client(session: aiohttp.ClientSession, url: str, stop_at: float, result: SoakResult,
                     origin: str) -> None:
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "soak"}]}
    while time.monotonic() < stop_at:
        start = time.monotonic()
        first: float | None = None
        failure: str | None = None
        signed = done = False
        executor = ""
        try:
            async with session.post(url, json=body) as resp:
                executor = resp.headers.get(EXECUTOR_HEADER, "")
                if resp.status != 200:
                    await resp.read()
                    failure = f"HTTP {resp.status}"
                else:
                    events = SSEReader(resp.content)
                    async for event in events:
                        if "error" in event:
                            failure = f"error event: {event['error'].get('code')}"
                            break
                        if first is None and any((c.get("delta") or {}).get("content")
                                                 for c in event.get("choices", [])):
                            first = time.monotonic()
                        signed = signed or bool(event.get("wwwserve"))
                    done = events.done
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = type(exc).__name__
        if failure is None and not done:
            failure = "no [DONE]"
        if failure is None and not signed:
            failure = "unsigned"
        if failure is not None:
            result.errors[failure] += 1
            continue
        result.requests += 1
        result.latency_ms.append(1000 * (time.monotonic() - start))
        route = "local" if executor.lower() == origin.lower() else "peer"
        result.latency_ms_by_route.setdefault(route, []).append(result.latency_ms[-1])
        if first is not None:
            result.ttft_ms.append(1000 * (first - start))


async def drive(port: int, streams: int, duration_s: float, pids: dict[str, int],
                progress: Any, origin: str) -> SoakResult:
    result = SoakResult(streams, duration_s, rss_mb={name: [] for name in pids})
    stop_at = time.monotonic() + duration_s
    connector = aiohttp.TCPConnector(limit=streams)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        url = f"http://{HOST}:{port}/v1/chat/completions"
        clients = [asyncio.create_task(one_client(session, url, stop_at, result, origin)) for _ in range(streams)]
        while time.monotonic() < stop_at:
            for name, pid in pids.items():
                value = rss_mb(pid)
                if value is not None:
                    result.rss_mb[name].append(value)
            progress(f"{result.requests} streams done, {sum(result.errors.values())} errors, "
                     + ", ".join(f"{n} {s[-1]:.0f} MB" for n, s in result.rss_mb.items() if s))
            await asyncio.sleep(min(5.0, max(0.0, stop_at - time.monotonic())))
        await asyncio.gather(*clients)
        for name, pid in pids.items():
            value = rss_mb(pid)
            if value is not None:
                result.rss_mb[name].append(value)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    start = time.monotonic()

    def progress(msg: str) -> None:
        print(f"[{time.monotonic() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="wwwserve-soak-"))
    home = workdir / "home"
    home.mkdir()
    os.environ["WWWSERVE_HOME"] = str(home)
    procs = Processes(workdir)
    try:
        backend_port = free_port()
        backend = procs.start("backend", fake_backend_command(backend_port))
        procs.ready(backend, 10.0, f"http://{HOST}:{backend_port}/v1/models")
        base_port = free_port_block(2)  # demo nodes 1 and 2 register consecutive ports
        rpc_url, addresses = setup_chain(procs, home, base_port, progress)
        env = {**os.environ, "WWWSERVE_HOME": str(home), "WWWSERVE_PASSWORD": demo_password(),
               "WWWSERVE_RPC_URL": rpc_url, "PYTHONUNBUFFERED": "1"}
        openai = ["backend.kind=openai", f"backend.openai.base_url=http://{HOST}:{backend_port}/v1",
                  "policy.p_inspect=0", "peers.fee_wei=1"]  # 1 wei a request: the credit lasts any run
        origin_engine = openai
        if args.origin_engine_latency is not None:
            origin_engine = ["backend.kind=fake", f"backend.fake.latency_s={args.origin_engine_latency}",
                             f"backend.fake.capacity={args.origin_engine_capacity}", "policy.p_inspect=0",
                             "peers.fee_wei=1"]
        nodes = {
            "B": NodeSpec("demo-node-2", base_port + 1, [*openai, "policy.accept_frequency=1.0"]),
            "A": NodeSpec("demo-node-1", base_port, [*origin_engine, "policy.target_token_usage=-1",
                                               "policy.offload_frequency=1.0", "policy.accept_frequency=0"]),
        }
        pids = {}
        for name, spec in nodes.items():
            proc = procs.start_node(node_launch(name, spec, workdir), env)
            procs.ready(proc, 60.0)
            pids[name] = proc.pid
        progress(f"{args.streams} streams through A -> B for {args.duration:.0f} s; logs in {workdir}")
        result = asyncio.run(drive(base_port, args.streams, args.duration, pids, progress,
                                   addresses["demo-node-1"]))
        summary = result.summary()
        summary["origin_engine"] = ("instant backend" if args.origin_engine_latency is None else
                                    f"fake, latency {args.origin_engine_latency:g} s, capacity "
                                    f"{args.origin_engine_capacity}")
        summary["delegated"] = dispatch_counters(base_port)
        return summary
    finally:
        procs.close()


def report(summary: dict[str, Any]) -> tuple[str, bool]:
    growth = {k: v for k, v in summary["rss_growth_mb"].items() if v is not None}
    ok_errors = summary["error_count"] == 0
    ok_rss = all(v < RSS_GROWTH_TARGET_MB for v in growth.values())
    lines = [
        f"soak: {summary['streams']} concurrent streams for {summary['duration_s']:.0f} s through a delegation hop "
        f"(node A's own engine: {summary.get('origin_engine', 'instant backend')})",
        f"  streams completed   {summary['requests']:,} ({summary['requests_per_s']:.1f}/s)",
        f"  errors              {summary['error_count']} {summary['errors'] or ''}",
        f"  stream latency      p50 {summary['latency_ms_p50'] or 0:.1f} ms, "
        f"p99 {summary['latency_ms_p99'] or 0:.1f} ms",
        f"  time to first token p99 {summary['ttft_ms_p99'] or 0:.1f} ms",
    ]
    for route, figures in summary.get("routes", {}).items():
        where = "on node A itself" if route == "local" else "by a peer"
        lines.append(f"  executed {where:<17} {figures['streams']:,} ({100 * figures['share']:.1f} %), "
                     f"p50 {figures['latency_ms_p50']:,.1f} ms, p99 {figures['latency_ms_p99']:,.1f} ms")
    lines.append("  " + delegation_note({}, summary.get("delegated", {})))
    for name, rss in summary["rss_mb"].items():
        lines.append(f"  node {name} RSS        start {rss['start']:.0f} MB, end {rss['end']:.0f} MB, "
                     f"peak {rss['peak']:.0f} MB (growth {growth.get(name, 0):+.0f} MB)")
    lines.append(f"  target: 0 errors                    {'PASS' if ok_errors else 'MISS'}")
    lines.append(f"  target: RSS growth < {RSS_GROWTH_TARGET_MB:.0f} MB per node   {'PASS' if ok_rss else 'MISS'}")
    return "\n".join(lines), ok_errors and ok_rss


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=200, help="concurrent streaming clients (default 200)")
    p.add_argument("--duration", type=float, default=300.0, help="seconds of load (default 300)")
    p.add_argument("--origin-engine-latency", type=float, metavar="S",
                   help="node A's own engine answers after S seconds (in-process fake backend) instead of instantly")
    p.add_argument("--origin-engine-capacity", type=int, default=2,
                   help="requests A's slow engine runs at once (default 2; with --origin-engine-latency)")
    p.add_argument("--json", type=Path, help="save the figures here")
    args = p.parse_args(argv)
    summary = run(args)
    text, ok = report(summary)
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
