"""Serving overhead of wwwserve on loopback: one node, a delegation hop, and LiteLLM's proxy, in one run.

Every path ends at the same instant OpenAI-compatible backend (a raw-asyncio HTTP server in its own
process, answering a fixed chat completion), so the figures measure the layers in front of it:

  (a) direct     client -> fake backend
  (b) node       client -> wwwserve node (backend.kind=openai) -> fake backend
  (c) node-fake  client -> wwwserve node with the in-process `fake` backend (latency 0): no upstream hop
  (d) litellm    client -> LiteLLM proxy (openai/ provider, api_base = fake backend) -> fake backend
  (e) hop        client -> node A (pure dispatcher) -> node B (executor, path b) -> fake backend

For each path: requests/s at fixed concurrency (non-streaming), latency p50/p99 with one sequential
client, the overhead against (a) (p50 difference) and its ratio to LiteLLM's overhead, and the time to
first token of a stream. The load generator is a minimal keep-alive HTTP/1.1 client on raw asyncio
streams (httpx costs several times more CPU per request), run in worker processes whose CPU is printed
beside each server's, so a reader sees which side saturated. Figures are printed, never asserted;
targets are printed beside them with PASS/MISS.

Usage:
  python bench/serving.py [--quick] [--json out.json] [--client-procs N] [--concurrency 32 64]
  python bench/serving.py --no-litellm      # skip installing/starting LiteLLM
LiteLLM is installed on first use into bench/.venv-litellm (pip, from PyPI; about a minute).

This file is the scenario: which processes, which paths, in which order. The harness it drives (the fake
backend, the load generator, processes, statistics and the report) is bench/harness/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from harness.common import HOST, REPO_ROOT, BenchError  # noqa: E402 - bench/ is on sys.path from here on
from harness.fake_backend import backend_stats, fake_backend_command, serve_fake_backend  # noqa: E402
from harness.litellm_proxy import start_litellm  # noqa: E402
from harness.load import LoadRunner, Target  # noqa: E402
from harness.node_metrics import check_delegated, delegation_note, dispatch_counters  # noqa: E402
from harness.procs import (  # noqa: E402
    NodeSpec,
    Processes,
    demo_password,
    free_port,
    free_port_block,
    node_launch,
    setup_chain,
    wait_http,
)
from harness.profiling import Profiler, py_spy  # noqa: E402
from harness.report import (  # noqa: E402
    PATH_LABELS,
    PathResult,
    evaluate_targets,
    format_report,
    note_upstream,
    to_json,
)

__all__ = ["BenchError", "Processes", "free_port", "wait_http"]  # bench/incentives.py imports these from here


def machine_line() -> str:
    """Cores, CPU model, Python and date, for the report header."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()[0]
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {load:.1f} at start")


def measure(runner: LoadRunner, target: Target, label: str, concurrencies: Sequence[int],
            progress: Callable[[str], None], ttft: bool = True, profiler: Profiler | None = None,
            profile_pids: dict[str, int] | None = None, cpu_pids: dict[str, int] | None = None) -> PathResult:
    """Latency, throughput at each concurrency and TTFT of one path."""
    result = PathResult(target.name, label)
    progress(f"{label}: sequential latency ({runner.latency_requests} requests or {runner.latency_cap_s:.0f} s)")
    if profiler is not None and profile_pids:
        with profiler.record(f"{target.name}-sequential", profile_pids, idle=True):
            result.latency, result.sequential_cpu_ms = runner.latency(target, cpu_pids)
    else:
        result.latency, result.sequential_cpu_ms = runner.latency(target, cpu_pids)
    progress(f"{label}: p50 {result.latency.p50_ms:.2f} ms, p99 {result.latency.p99_ms:.2f} ms")
    for c in concurrencies:
        progress(f"{label}: throughput at concurrency {c} ({runner.warmup_s:.0f}+{runner.duration_s:.0f} s)")
        if profiler is not None and profile_pids and c == concurrencies[0]:
            with profiler.record(target.name, profile_pids):
                t = runner.throughput(target, c)
        else:
            t = runner.throughput(target, c)
        result.throughput.append(t)
        progress(f"{label}: {t.rps:,.0f} req/s at c={c} ({t.errors} errors; CPU cores client {t.client_cpu_cores:.2f}"
                 f", server {t.server_cpu_cores:.2f}, other processes {t.other_cpu_cores:.2f})")
    if ttft:
        result.ttft = runner.ttft(target)
        progress(f"{label}: TTFT p50 {result.ttft.p50_ms:.2f} ms")
    return result


def run(args: argparse.Namespace) -> dict[str, PathResult]:
    """Start everything, measure every path, stop everything (also on Ctrl-C or an error)."""
    start = time.monotonic()

    def progress(msg: str) -> None:
        print(f"[{time.monotonic() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="wwwserve-bench-", dir=args.workdir))
    home = workdir / "home"
    home.mkdir()
    os.environ["WWWSERVE_HOME"] = str(home)
    procs = Processes(workdir)
    runner: LoadRunner | None = None
    results: dict[str, PathResult] = {}
    try:
        runner = LoadRunner(args.client_procs, args.warmup_s, args.duration_s, args.latency_requests,
                            args.ttft_requests)
        backend_port = free_port()
        backend = procs.start("backend", fake_backend_command(backend_port))
        procs.ready(backend, 10.0, f"http://{HOST}:{backend_port}/v1/models")
        progress(f"fake backend on :{backend_port} (pid {backend.pid}); logs in {workdir}")

        base_port = free_port_block(2)  # demo nodes 1 and 2 register consecutive ports
        rpc_url, addresses = setup_chain(procs, home, base_port, progress)
        ports = {"demo-node-1": base_port, "demo-node-2": base_port + 1, "demo-node-3": free_port()}
        env = {**os.environ, "WWWSERVE_HOME": str(home), "WWWSERVE_PASSWORD": demo_password(),
               "WWWSERVE_RPC_URL": rpc_url, "PYTHONUNBUFFERED": "1"}
        base_url = f"http://{HOST}:{backend_port}/v1"
        openai = ["backend.kind=openai", f"backend.openai.base_url={base_url}", "policy.p_inspect=0"]
        nodes = {
            # B: executor in front of the fake backend; also path (b) when called directly.
            "demo-node-2": NodeSpec("demo-node-2", ports["demo-node-2"], [*openai, "policy.accept_frequency=1.0"]),
            # A: a pure dispatcher, never executes locally, always offloads, accepts no probes.
            "demo-node-1": NodeSpec("demo-node-1", ports["demo-node-1"], [
                *openai, "policy.target_token_usage=-1", "policy.offload_frequency=1.0",
                "policy.accept_frequency=0"]),
            # C: in-process fake backend, latency 0 (the >= 1,000 req/s target).
            "demo-node-3": NodeSpec("demo-node-3", ports["demo-node-3"], ["backend.kind=fake",
                                                                           "backend.fake.latency_s=0",
                                                                           "backend.fake.capacity=100000"]),
        }
        node_procs = {name: procs.start_node(node_launch(name, spec, workdir), env) for name, spec in nodes.items()}
        for name, spec in nodes.items():
            progress(f"waiting for {name} on :{spec.port}")
            procs.ready(node_procs[name], 60.0)

        litellm: Target | None = None
        if not args.no_litellm:
            try:
                litellm = start_litellm(procs, backend_port, progress)
            except (BenchError, subprocess.CalledProcessError) as exc:
                results["litellm"] = PathResult("litellm", PATH_LABELS["litellm"], skipped=str(exc).splitlines()[0])

        chat = "/v1/chat/completions"
        targets = [
            Target("direct", backend_port, chat, [backend.pid]),
            Target("node", ports["demo-node-2"], chat, [node_procs["demo-node-2"].pid, backend.pid]),
            Target("node-fake", ports["demo-node-3"], chat, [node_procs["demo-node-3"].pid]),
        ]
        if litellm is not None:
            targets.append(litellm)
        profiler = Profiler(py_spy(progress), workdir, args.warmup_s + args.duration_s) if args.profile else None
        node_pids = {"A": node_procs["demo-node-1"].pid, "B": node_procs["demo-node-2"].pid,
                     "C": node_procs["demo-node-3"].pid}
        profile_of = {"node": {"B": node_pids["B"]}, "node-fake": {"C": node_pids["C"]},
                      "hop": {"A": node_pids["A"], "B": node_pids["B"]}}
        # CPU per sequential request of each process on the path (the fake backend's work is the same on
        # every path, so its figure shows how much the machine slows a process down as more take turns).
        cpu_of = {"direct": {"backend": backend.pid}, "node": {"B": node_pids["B"], "backend": backend.pid},
                  "node-fake": {"C": node_pids["C"]},
                  "hop": {"A": node_pids["A"], "B": node_pids["B"], "backend": backend.pid}}
        for target in targets:
            before = backend_stats(backend_port)
            results[target.name] = measure(runner, target, PATH_LABELS[target.name], args.concurrency, progress,
                                           profiler=profiler, profile_pids=profile_of.get(target.name),
                                           cpu_pids=cpu_of.get(target.name))
            note_upstream(results[target.name], before, backend_stats(backend_port))

        # (e) the hop: only figures from answers that really went A -> B count.
        hop_target = Target("hop", ports["demo-node-1"], chat,
                            [node_procs["demo-node-1"].pid, node_procs["demo-node-2"].pid, backend.pid])
        why = check_delegated(ports["demo-node-1"], addresses["demo-node-1"], addresses["demo-node-2"])
        if why is not None:
            results["hop"] = PathResult("hop", PATH_LABELS["hop"], skipped=f"hop: not delegated ({why})")
            progress(f"hop: not delegated ({why})")
        else:
            before = backend_stats(backend_port)
            counted = dispatch_counters(ports["demo-node-1"])
            results["hop"] = measure(runner, hop_target, PATH_LABELS["hop"], args.concurrency, progress,
                                     profiler=profiler, profile_pids=profile_of["hop"], cpu_pids=cpu_of["hop"])
            note_upstream(results["hop"], before, backend_stats(backend_port))
            results["hop"].note = ((results["hop"].note + "; ") if results["hop"].note else "") + \
                delegation_note(counted, dispatch_counters(ports["demo-node-1"]))
            why = check_delegated(ports["demo-node-1"], addresses["demo-node-1"], addresses["demo-node-2"])
            if why is not None:
                results["hop"].note = f"after the load, an answer was not delegated ({why}): figures may mix paths"
        for r in results.values():
            for t in r.throughput:
                if t.client_cpu_cores >= 0.9 * args.client_procs:
                    r.note = ((r.note + "; ") if r.note else "") + \
                        f"client saturated at c={t.concurrency} ({t.client_cpu_cores:.2f} cores)"
        if profiler is not None:
            args.profiles = profiler.reports
            print(profiler.format(), file=sys.stderr)
        order = ["direct", "node", "node-fake", "litellm", "hop"]
        return {k: results[k] for k in order if k in results}
    finally:
        progress("stopping every process")
        if runner is not None:
            runner.close()
        procs.close()
        if not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; --quick shortens every phase."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="short run (about a minute of measuring)")
    p.add_argument("--json", type=Path, help="save the figures to this JSON file")
    p.add_argument("--concurrency", type=int, nargs="+", help="connections for req/s (default 32 64; quick 32)")
    p.add_argument("--client-procs", type=int, default=1, help="load-generator processes (default 1)")
    p.add_argument("--no-litellm", action="store_true", help="skip LiteLLM (no install, no comparison)")
    p.add_argument("--keep-logs", action="store_true", help="keep the temporary folder with every process's log")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where the temporary WWWSERVE_HOME and logs go (e.g. /dev/shm: no fsync cost)")
    p.add_argument("--profile", action="store_true",
                   help="py-spy the node processes during their first throughput phase; print the top frames")
    p.add_argument("--serve-fake-backend", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.concurrency = args.concurrency or ([32] if args.quick else [32, 64])
    args.warmup_s, args.duration_s = (0.5, 2.0) if args.quick else (2.0, 8.0)
    args.latency_requests = 300 if args.quick else 2000
    args.ttft_requests = 30 if args.quick else 200
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table; exit 130 on Ctrl-C (after teardown)."""
    args = parse_args(argv)
    if args.serve_fake_backend:
        serve_fake_backend(args.serve_fake_backend)
        return 0
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    machine = machine_line()
    try:
        results = run(args)
    except KeyboardInterrupt:
        print("interrupted; every process was stopped", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    checks = evaluate_targets(results)
    print(format_report(results, checks, machine))
    if args.json:
        args.json.write_text(json.dumps(to_json(results, checks, machine, args), indent=2))
        print(f"\nsaved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
