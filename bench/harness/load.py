"""The load generator: a minimal keep-alive HTTP/1.1 client on raw asyncio streams, run in worker processes.

httpx costs several times more CPU per request; this client lets one core drive a server that answers in
well under a millisecond. `LoadRunner` measures sequential latency, requests/s at a fixed concurrency and
the time to first token of a stream, with the CPU the client, the server processes and everything else on
the machine spent meanwhile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import multiprocessing
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.common import HOST, MODEL, BenchError
from harness.stats import LatencyStats, Throughput

CHAT_BODY = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "Say hello to the network."}], "max_tokens": 16}
).encode()
STREAM_BODY = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "Say hello to the network."}], "max_tokens": 16,
     "stream": True}
).encode()


class RawConnection:
    """One keep-alive HTTP/1.1 connection that sends a fixed POST and reads the whole response."""

    def __init__(self, host: str, port: int, path: str, body: bytes) -> None:
        self.host, self.port = host, port
        self.request = (f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
                        f"authorization: Bearer sk-bench\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def call(self) -> int:
        """Send the request and read the response; returns the HTTP status (reconnects when closed)."""
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            sock = self.writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert self.reader is not None
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        length, chunked, close = None, False, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value:
                chunked = True
            elif name == "connection" and value == "close":
                close = True
        if chunked:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        elif length is not None:
            await self.reader.readexactly(length)
        else:
            await self.reader.read()
            close = True
        if close:
            await self.close()
        return status

    async def close(self) -> None:
        """Close the connection (the next call reconnects)."""
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
            self.writer = None


async def _drive(spec: dict[str, Any]) -> dict[str, Any]:
    host, port, path, body = spec["host"], spec["port"], spec["path"], spec["body"]
    conns = [RawConnection(host, port, path, body) for _ in range(spec["concurrency"])]
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0, "sent": 0}
    record = {"on": False}
    warm_end = time.perf_counter() + spec["warmup_s"]
    end = warm_end + spec["duration_s"]
    max_requests = spec.get("max_requests")

    async def worker(conn: RawConnection) -> None:
        while True:
            now = time.perf_counter()
            if now >= end or (max_requests is not None and counts["ok"] + counts["errors"] >= max_requests):
                return
            t0 = time.perf_counter()
            try:
                status = await conn.call()
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                status = 0
                await conn.close()
                await asyncio.sleep(0.01)
            t1 = time.perf_counter()
            counts["sent"] += 1
            if t0 >= warm_end and record["on"]:
                if status == 200:
                    counts["ok"] += 1
                    if spec["keep_latencies"]:
                        latencies.append(t1 - t0)
                else:
                    counts["errors"] += 1

    async def arm() -> None:
        await asyncio.sleep(max(0.0, warm_end - time.perf_counter()))
        record["on"] = True

    arm_task = asyncio.create_task(arm())
    await asyncio.sleep(0)
    cpu0 = time.process_time()
    await asyncio.gather(*(worker(c) for c in conns))
    await arm_task
    wall = spec["duration_s"] if max_requests is None else time.perf_counter() - warm_end
    for c in conns:
        await c.close()
    return {"ok": counts["ok"], "errors": counts["errors"], "sent": counts["sent"], "wall_s": wall,
            "cpu_s": time.process_time() - cpu0, "latencies_s": latencies}


def load_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Entry point of one load process: drive `concurrency` connections and report counts and CPU."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent tears down; workers just stop with it
    return asyncio.run(_drive(spec))


def proc_cpu_s(pids: Sequence[int]) -> float:
    """User+system CPU seconds of processes and all their descendants (0 for vanished ones)."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            continue
    return total


def busy_cpu_s() -> float:
    """CPU seconds spent busy machine-wide (all cores, all processes) since boot."""
    import psutil

    t = psutil.cpu_times()
    return float(sum(t)) - float(t.idle) - float(getattr(t, "iowait", 0.0))


@dataclass
class Target:
    """Where a path is called, and which server processes to charge CPU to."""

    name: str
    port: int
    path: str
    server_pids: list[int]


class LoadRunner:
    """Runs measurements in a pool of client processes (created once, reused for every path)."""

    def __init__(self, client_procs: int, warmup_s: float, duration_s: float, latency_requests: int,
                 ttft_requests: int) -> None:
        self.client_procs = client_procs
        self.warmup_s, self.duration_s = warmup_s, duration_s
        self.latency_requests, self.ttft_requests = latency_requests, ttft_requests
        # A slow path (hundreds of ms a request) stops at this many seconds rather than at the count.
        self.latency_cap_s = 10.0 if duration_s < 5 else 30.0
        self.pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=client_procs, mp_context=multiprocessing.get_context("spawn"))

    def close(self) -> None:
        """Stop the client processes."""
        self.pool.shutdown(wait=False, cancel_futures=True)

    def throughput(self, target: Target, concurrency: int) -> Throughput:
        """Requests/s with `concurrency` connections spread over the client processes."""
        per = [concurrency // self.client_procs + (1 if i < concurrency % self.client_procs else 0)
               for i in range(self.client_procs)]
        specs = [{"host": HOST, "port": target.port, "path": target.path, "body": CHAT_BODY, "concurrency": n,
                  "warmup_s": self.warmup_s, "duration_s": self.duration_s, "keep_latencies": False}
                 for n in per if n > 0]
        cpu0, busy0, t0 = proc_cpu_s(target.server_pids), busy_cpu_s(), time.perf_counter()
        outs = list(self.pool.map(load_worker, specs))
        # CPU over the whole call (warm-up included) per second of it: cores kept busy.
        elapsed = max(time.perf_counter() - t0, 1e-9)
        server_cpu = (proc_cpu_s(target.server_pids) - cpu0) / elapsed
        busy = (busy_cpu_s() - busy0) / elapsed
        ok, errors = sum(o["ok"] for o in outs), sum(o["errors"] for o in outs)
        wall = max(o["wall_s"] for o in outs)
        client_cpu = sum(o["cpu_s"] for o in outs) / (self.warmup_s + self.duration_s)
        return Throughput(concurrency, ok, errors, wall, ok / wall, client_cpu, server_cpu,
                          max(0.0, busy - client_cpu - server_cpu))

    def latency(self, target: Target, cpu_pids: dict[str, int] | None = None) -> tuple[LatencyStats, dict[str, float]]:
        """One client, sequential requests on one keep-alive connection; also the CPU (ms, user + system)
        each process in `cpu_pids` spent per request meanwhile."""
        spec = {"host": HOST, "port": target.port, "path": target.path, "body": CHAT_BODY, "concurrency": 1,
                "warmup_s": min(self.warmup_s, 0.5), "duration_s": self.latency_cap_s, "keep_latencies": True,
                "max_requests": self.latency_requests}
        pids = cpu_pids or {}
        before = {label: proc_cpu_s([pid]) for label, pid in pids.items()}
        out = self.pool.submit(load_worker, spec).result()
        if not out["latencies_s"]:
            raise BenchError(f"{target.name}: no successful request ({out['errors']} errors)")
        sent = max(1, out["sent"])
        cpu = {label: (proc_cpu_s([pid]) - before[label]) / sent * 1000.0 for label, pid in pids.items()}
        return LatencyStats.from_seconds(out["latencies_s"]), cpu

    def ttft(self, target: Target) -> LatencyStats:
        """Time to the first content token of a stream (httpx, sequential, keep-alive)."""
        import httpx

        samples = []
        with httpx.Client(base_url=f"http://{HOST}:{target.port}", timeout=30.0,
                          headers={"authorization": "Bearer sk-bench"}) as client:
            for i in range(self.ttft_requests + 5):
                t0 = time.perf_counter()
                first = None
                with client.stream("POST", target.path, content=STREAM_BODY,
                                   headers={"content-type": "application/json"}) as resp:
                    if resp.status_code != 200:
                        raise BenchError(f"{target.name}: stream answered {resp.status_code}: {resp.read()!r}")
                    for line in resp.iter_lines():
                        if first is None and '"content"' in line and '"content":""' not in line.replace(" ", ""):
                            first = time.perf_counter()
                if first is not None and i >= 5:  # the first few warm up connections and caches
                    samples.append(first - t0)
        if not samples:
            raise BenchError(f"{target.name}: streams carried no content")
        return LatencyStats.from_seconds(samples)


# ------------------------------------------------------------------------------------------------
# processes: fake backend, anvil + deployment + nodes, LiteLLM
