"""What a process hop costs on this machine, before any wwwserve code: the floor under bench/serving.py.

A chain of minimal forwarding proxies (raw asyncio, keep-alive HTTP/1.1) in front of serving.py's instant
fake backend; each proxy can burn a fixed amount of CPU per request (`--work-ms`, a busy loop standing in
for a node's own work). One client sends sequential requests; the table gives the p50 latency through
0, 1 and 2 proxies, with the processes free to run on any core and then all pinned to one core.

Why it exists: on a small VM, handing a request to a process whose vCPU went idle can cost far more
than the work itself (the hypervisor has to wake the vCPU). If latency through a proxy that works
0.5 ms exceeds 0.5 ms + the zero-work hop by much when unpinned, but not when pinned, that excess is the
machine's, and every hop of a delegation pays it. Figures are printed, never asserted.

Usage:
  python bench/handoff.py [--work-ms 0 0.5 1] [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from harness.common import HOST, MODEL  # noqa: E402 - bench/harness: serving.py's fake backend and client
from harness.fake_backend import chat_answer, fake_backend_command, http_response  # noqa: E402
from harness.load import RawConnection  # noqa: E402
from harness.procs import Processes, free_port  # noqa: E402
from harness.stats import percentile  # noqa: E402

BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}).encode()
PATH = "/v1/chat/completions"


def serve_proxy(port: int, upstream: int, work_s: float) -> None:
    """Forward each request to `upstream` (one keep-alive connection) after `work_s` of busy CPU."""

    async def main() -> None:
        conn = RawConnection(HOST, upstream, PATH, BODY)
        answer = http_response("200 OK", chat_answer(MODEL))

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    await reader.readexactly(length)
                    until = time.perf_counter() + work_s
                    while time.perf_counter() < until:
                        pass
                    await conn.call()
                    writer.write(answer)
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
                writer.close()

        server = await asyncio.start_server(handle, HOST, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with server:
            await stop.wait()
            server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()  # open connections' handlers: end quietly
            await asyncio.gather(*(asyncio.all_tasks() - {asyncio.current_task()}), return_exceptions=True)

    asyncio.run(main())


def measure(port: int, requests: int) -> float:
    """p50 latency (ms) of sequential requests on one keep-alive connection."""

    async def run() -> list[float]:
        conn = RawConnection(HOST, port, PATH, BODY)
        for _ in range(min(300, requests)):
            await conn.call()
        out = []
        for _ in range(requests):
            t0 = time.perf_counter()
            await conn.call()
            out.append(time.perf_counter() - t0)
        await conn.close()
        return out

    return percentile(asyncio.run(run()), 50) * 1000.0


def chain(work_s: float, pin: bool, requests: int) -> tuple[float, float, float]:
    """p50 through 0, 1 and 2 proxies (each burning `work_s`), optionally all on CPU 0 (client too)."""
    logs = Path(tempfile.mkdtemp(prefix="wwwserve-handoff-"))  # a log per process, for the errors' tails
    procs = Processes(logs)
    here = os.sched_getaffinity(0)
    try:
        backend = free_port()
        procs.ready(procs.start("backend", fake_backend_command(backend)), 10.0, f"http://{HOST}:{backend}/v1/models")
        ports = [backend]
        for hop in (1, 2):
            port = free_port()
            proxy = procs.start(f"proxy-{hop}", [sys.executable, __file__, "--serve-proxy", str(port), str(ports[-1]),
                                                 str(work_s)])
            procs.ready(proxy, 10.0, f"http://{HOST}:{port}{PATH}")  # any request is forwarded and answered
            ports.append(port)
        if pin:
            for proc in procs.processes:
                os.sched_setaffinity(proc.pid, {0})
            os.sched_setaffinity(0, {0})
        return measure(ports[0], requests), measure(ports[1], requests), measure(ports[2], requests)
    finally:
        os.sched_setaffinity(0, here)
        procs.close()
        shutil.rmtree(logs, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-ms", type=float, nargs="+", default=[0.0, 0.5, 1.0],
                        help="CPU each proxy burns per request (ms)")
    parser.add_argument("--requests", type=int, default=2000, help="sequential requests per measurement")
    parser.add_argument("--serve-proxy", nargs=3, metavar=("PORT", "UPSTREAM", "WORK_S"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_proxy:
        port, upstream, work = args.serve_proxy
        serve_proxy(int(port), int(upstream), float(work))
        return
    if args.requests < 1 or any(w < 0 for w in args.work_ms):
        parser.error("--requests must be >= 1 and --work-ms >= 0")
    print(f"process hand-off latency - {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}, {args.requests} sequential requests per figure\n")
    head = f"{'work/proxy ms':>13}  {'cores':>9}  {'direct':>8}  {'1 proxy':>8}  {'2 proxies':>9}  " \
           f"{'added per proxy':>15}  {'beyond its work':>15}"
    print(head)
    print("-" * len(head))
    for work_ms in args.work_ms:
        for pin in (False, True):
            d, one, two = chain(work_ms / 1000.0, pin, args.requests)
            per = (two - d) / 2
            print(f"{work_ms:>13.2f}  {'one' if pin else 'any':>9}  {d:>8.3f}  {one:>8.3f}  {two:>9.3f}  "
                  f"{per:>15.3f}  {per - work_ms:>15.3f}", flush=True)
    print("\nms, p50. 'beyond its work': what a hop costs on top of the CPU its process spends; compare the "
          "'any' and 'one' rows of the same work.")


if __name__ == "__main__":
    main()
