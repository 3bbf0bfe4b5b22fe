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
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import math
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MODEL = "bench-model"
HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
LITELLM_VENV = BENCH_DIR / ".venv-litellm"

# Targets of issue 3.
TARGET_HOP_P50_MS = 2.0
TARGET_NODE_RPS = 1000.0
TARGET_OVERHEAD_VS_LITELLM = 0.5
# The reference implementation dispatches one request per node per 0.5 s scheduler tick.
REFERENCE_TICK_S = 0.5

CHAT_BODY = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "Say hello to the network."}], "max_tokens": 16}
).encode()
STREAM_BODY = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "Say hello to the network."}], "max_tokens": 16,
     "stream": True}
).encode()
ANSWER_WORDS = ["Hello", " from", " the", " bench", "."]

PATH_LABELS = {
    "direct": "(a) backend direct",
    "node": "(b) node -> openai backend",
    "node-fake": "(c) node, in-process fake",
    "litellm": "(d) LiteLLM proxy",
    "hop": "(e) node A -> node B (hop)",
}


class BenchError(RuntimeError):
    """The benchmark could not set up or measure a path (the message says which and why)."""


# ------------------------------------------------------------------------------------------------
# pure helpers: statistics, targets, report (unit-tested in tests/unit/test_bench_serving.py)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class LatencyStats:
    """Latency of sequential requests, in milliseconds."""

    n: int
    p50_ms: float
    p99_ms: float
    mean_ms: float

    @classmethod
    def from_seconds(cls, samples_s: Sequence[float]) -> LatencyStats:
        """Summarize per-request latencies given in seconds."""
        ms = [s * 1000.0 for s in samples_s]
        return cls(n=len(ms), p50_ms=percentile(ms, 50), p99_ms=percentile(ms, 99), mean_ms=sum(ms) / len(ms))


@dataclass
class Throughput:
    """Requests/s at one concurrency, with the CPU each side spent (1.0 = one core busy)."""

    concurrency: int
    requests: int
    errors: int
    wall_s: float
    rps: float
    client_cpu_cores: float
    server_cpu_cores: float
    # Busy cores machine-wide minus client and server: other processes competing for the CPU.
    other_cpu_cores: float = 0.0


@dataclass
class PathResult:
    """Everything measured on one path; `skipped` says why a path has no figures."""

    name: str
    label: str
    latency: LatencyStats | None = None
    throughput: list[Throughput] = field(default_factory=list)
    ttft: LatencyStats | None = None
    # CPU (ms, user + system) per request of each server process during the sequential measurement.
    sequential_cpu_ms: dict[str, float] = field(default_factory=dict)
    skipped: str | None = None
    note: str | None = None

    def best_rps(self) -> float | None:
        """The highest requests/s over the concurrencies measured."""
        return max((t.rps for t in self.throughput), default=None)


@dataclass
class TargetCheck:
    """One target of the issue against its measured figure; `passed` is None when it was not measured."""

    name: str
    goal: str
    measured: str
    passed: bool | None


def overhead_ms(results: dict[str, PathResult], name: str, base: str = "direct") -> float | None:
    """p50 latency of `name` minus p50 of `base` (ms); None when either was not measured."""
    path, ref = results.get(name), results.get(base)
    if path is None or ref is None or path.latency is None or ref.latency is None:
        return None
    return path.latency.p50_ms - ref.latency.p50_ms


def evaluate_targets(results: dict[str, PathResult]) -> list[TargetCheck]:
    """The three targets of issue 3, from measured figures (a missing figure gives passed=None)."""
    checks = []
    hop = overhead_ms(results, "hop", base="node")
    checks.append(TargetCheck(
        "hop adds <= 2 ms p50", f"<= {TARGET_HOP_P50_MS:.1f} ms",
        "not measured" if hop is None else f"{hop:.2f} ms (p50 of e minus p50 of b)",
        None if hop is None else hop <= TARGET_HOP_P50_MS,
    ))
    node_rps = results["node-fake"].best_rps() if "node-fake" in results else None
    checks.append(TargetCheck(
        "one node >= 1,000 req/s", f">= {TARGET_NODE_RPS:,.0f} req/s",
        "not measured" if node_rps is None else f"{node_rps:,.0f} req/s (path c)",
        None if node_rps is None else node_rps >= TARGET_NODE_RPS,
    ))
    ours, theirs = overhead_ms(results, "node"), overhead_ms(results, "litellm")
    ratio = None if ours is None or theirs is None or theirs <= 0 else ours / theirs
    checks.append(TargetCheck(
        "overhead <= half of LiteLLM's", f"<= {TARGET_OVERHEAD_VS_LITELLM:.2f}",
        "not measured" if ratio is None else f"{ratio:.2f} ({ours:.2f} ms vs {theirs:.2f} ms)",
        None if ratio is None else ratio <= TARGET_OVERHEAD_VS_LITELLM,
    ))
    return checks


def _fmt(value: float | None, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def format_report(results: dict[str, PathResult], checks: Sequence[TargetCheck], machine: str) -> str:
    """The closing table: one row per path, then the targets with PASS/MISS and the reference limit."""
    concurrencies = sorted({t.concurrency for r in results.values() for t in r.throughput})
    head = ["path", *[f"req/s c={c}" for c in concurrencies], "p50 ms", "p99 ms", "overhead ms",
            "vs LiteLLM", "TTFT p50 ms", "CPU client/server/other"]
    litellm_overhead = overhead_ms(results, "litellm")
    rows = []
    for name, r in results.items():
        if r.skipped:
            rows.append([r.label, f"skipped: {r.skipped}"])
            continue
        by_c = {t.concurrency: t for t in r.throughput}
        over = overhead_ms(results, name) if name != "direct" else None
        ratio = (over / litellm_overhead) if over is not None and litellm_overhead and litellm_overhead > 0 else None
        top = max(r.throughput, key=lambda t: t.rps) if r.throughput else None
        rows.append([
            r.label,
            *[_fmt(by_c[c].rps if c in by_c else None, ",.0f") for c in concurrencies],
            _fmt(r.latency.p50_ms if r.latency else None, ".2f"),
            _fmt(r.latency.p99_ms if r.latency else None, ".2f"),
            "0 (base)" if name == "direct" else _fmt(over, "+.2f"),
            _fmt(ratio, ".2f"),
            _fmt(r.ttft.p50_ms if r.ttft else None, ".2f"),
            "-" if top is None else f"{top.client_cpu_cores:.2f}/{top.server_cpu_cores:.2f}/{top.other_cpu_cores:.2f}",
        ])
    full = [row for row in [head, *rows] if len(row) == len(head)]
    widths = [max(len(str(row[i])) for row in full) for i in range(len(head))]
    widths[0] = max(widths[0], *(len(row[0]) for row in rows))
    lines = [f"wwwserve serving benchmark - {machine}", ""]
    for row in [head, *rows]:
        if len(row) != len(head):
            lines.append(f"{row[0]:<{widths[0]}}  {row[1]}")
        else:
            lines.append("  ".join(str(cell).ljust(widths[i]) if i == 0 else str(cell).rjust(widths[i])
                                   for i, cell in enumerate(row)))
        if row is head:
            lines.append("  ".join("-" * w for w in widths))
    notes = [f"  {r.label}: {r.note}" for r in results.values() if r.note]
    notes += [f"  {r.label}: CPU per sequential request " +
              ", ".join(f"{name} {ms:.2f} ms" for name, ms in r.sequential_cpu_ms.items())
              for r in results.values() if r.sequential_cpu_ms]
    if notes:
        lines += ["", "notes:", *notes]
    lines += ["", "targets:"]
    for c in checks:
        verdict = "n/a " if c.passed is None else ("PASS" if c.passed else "MISS")
        lines.append(f"  [{verdict}] {c.name:<32} goal {c.goal:<16} measured {c.measured}")
    lines += ["", f"reference implementation's design limit: one dispatch per {REFERENCE_TICK_S} s tick per node "
              f"= {1 / REFERENCE_TICK_S:.0f} req/s per node"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# the instant fake OpenAI-compatible backend (raw asyncio HTTP/1.1, keep-alive, SSE via chunked encoding)


def _http_response(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    return (f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
            "connection: keep-alive\r\n\r\n").encode() + body


def _chat_answer(model: str) -> bytes:
    return json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(ANSWER_WORDS)},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 6, "completion_tokens": len(ANSWER_WORDS),
                  "total_tokens": 6 + len(ANSWER_WORDS)},
    }).encode()


def _completion_answer(model: str) -> bytes:
    return json.dumps({
        "id": "cmpl-bench", "object": "text_completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "text": "".join(ANSWER_WORDS), "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 6, "completion_tokens": len(ANSWER_WORDS), "total_tokens": 6 + len(ANSWER_WORDS)},
    }).encode()


def _chat_stream(model: str, include_usage: bool) -> bytes:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": word}) for word in ANSWER_WORDS]
    events.append(chunk({}, "stop"))
    if include_usage:
        events.append({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": int(time.time()),
                       "model": model, "choices": [],
                       "usage": {"prompt_tokens": 6, "completion_tokens": len(ANSWER_WORDS),
                                 "total_tokens": 6 + len(ANSWER_WORDS)}})
    out = b""
    for data in [*(json.dumps(e).encode() for e in events), b"[DONE]"]:
        payload = b"data: " + data + b"\n\n"
        out += f"{len(payload):x}\r\n".encode() + payload + b"\r\n"
    head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
            b"connection: keep-alive\r\n\r\n")
    return head + out + b"0\r\n\r\n"


# Connections accepted and requests answered by this fake backend process (GET /bench/stats), so the
# benchmark can tell whether a proxy in front reuses its upstream connections.
FAKE_STATS = {"connections": 0, "requests": 0}


class FakeOpenAIProtocol(asyncio.Protocol):
    """One connection of the fake backend: parses requests as they arrive and answers each at once."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        FAKE_STATS["connections"] += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            method, target = head[0].split(" ")[:2]
            FAKE_STATS["requests"] += 1
            assert self.transport is not None
            self.transport.write(answer_request(method, target.split("?")[0], body))


def answer_request(method: str, path: str, body: bytes) -> bytes:
    """The fake backend's whole HTTP response to one request."""
    if method == "GET" and path in ("/v1/models", "/models"):
        return _http_response("200 OK", json.dumps(
            {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "bench",
                                         "max_model_len": 4096}]}).encode())
    if method == "GET" and path == "/bench/stats":
        return _http_response("200 OK", json.dumps(FAKE_STATS).encode())
    if method == "GET" and path in ("/health", "/"):
        return _http_response("200 OK", b"{}")
    if method == "POST" and path.endswith("/completions"):
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            return _http_response("400 Bad Request", b'{"error":{"message":"bad json","type":"invalid_request_error"}}')
        model = str(req.get("model") or MODEL)
        if req.get("stream"):
            include = bool((req.get("stream_options") or {}).get("include_usage"))
            return _chat_stream(model, include)
        is_chat = path.endswith("/chat/completions")
        return _http_response("200 OK", _chat_answer(model) if is_chat else _completion_answer(model))
    return _http_response("404 Not Found", b'{"error":{"message":"not found","type":"not_found"}}')


def serve_fake_backend(port: int) -> None:
    """Run the fake backend on HOST:port until SIGTERM/SIGINT (the `--serve-fake-backend` mode)."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(FakeOpenAIProtocol, HOST, port, backlog=1024)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with server:
            await stop.wait()

    asyncio.run(main())


# ------------------------------------------------------------------------------------------------
# load generator: a minimal keep-alive HTTP/1.1 client on asyncio streams, run in worker processes


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


def _proc_cpu_s(pids: Sequence[int]) -> float:
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


def _busy_cpu_s() -> float:
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
        cpu0, busy0, t0 = _proc_cpu_s(target.server_pids), _busy_cpu_s(), time.perf_counter()
        outs = list(self.pool.map(load_worker, specs))
        # CPU over the whole call (warm-up included) per second of it: cores kept busy.
        elapsed = max(time.perf_counter() - t0, 1e-9)
        server_cpu = (_proc_cpu_s(target.server_pids) - cpu0) / elapsed
        busy = (_busy_cpu_s() - busy0) / elapsed
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
        before = {label: _proc_cpu_s([pid]) for label, pid in pids.items()}
        out = self.pool.submit(load_worker, spec).result()
        if not out["latencies_s"]:
            raise BenchError(f"{target.name}: no successful request ({out['errors']} errors)")
        sent = max(1, out["sent"])
        cpu = {label: (_proc_cpu_s([pid]) - before[label]) / sent * 1000.0 for label, pid in pids.items()}
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


def free_port() -> int:
    """A TCP port free on HOST right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Processes:
    """Every process the benchmark starts, stopped in reverse order by `close()` (idempotent)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stoppers: list[Callable[[], None]] = []

    def start(self, name: str, cmd: Sequence[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `cmd` with its output in <workdir>/<name>.log, in its own session (Ctrl-C reaches only us)."""
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(list(cmd), env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=REPO_ROOT)
        log.close()
        self.procs.append((name, proc))
        return proc

    def log_tail(self, name: str, lines: int = 15) -> str:
        """The last lines of a process's log, for error messages."""
        path = self.workdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def close(self) -> None:
        """SIGINT every process (graceful), then SIGKILL what is still alive after 10 s."""
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + 10.0
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()
        for stop in reversed(self.stoppers):
            with contextlib.suppress(Exception):
                stop()
        self.stoppers.clear()


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str, logs: Processes, log_name: str,
              timeout_s: float, ok: Callable[[int], bool] = lambda code: code == 200) -> None:
    """Poll `url` until it answers ok, failing early (with the log tail) if the process exits."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode}:\n{logs.log_tail(log_name)}")
        try:
            if ok(httpx.get(url, timeout=1.0).status_code):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise BenchError(f"{what} not ready after {timeout_s:.0f} s:\n{logs.log_tail(log_name)}")


@dataclass
class NodeSpec:
    """One node process: its wallet name (= identity key name), port and `--set` overrides."""

    wallet: str
    port: int
    sets: list[str]


def demo_password() -> str:
    """The devnet demo keystores' password (public knowledge, devnet only)."""
    from wwwserve.devnet.deploy import DEMO_PASSWORD

    return DEMO_PASSWORD


def node_command(spec: NodeSpec) -> list[str]:
    """The `wwwserve node run` command line of one benchmark node."""
    cmd = [sys.executable, "-m", "wwwserve.cli", "-w", spec.wallet, "node", "run",
           "--set", f"server.port={spec.port}", "--set", f"backend.models=['{MODEL}']",
           "--set", "policy.auto_stake=false"]
    for s in spec.sets:
        cmd += ["--set", s]
    return cmd


def free_port_pair() -> int:
    """A port p with p and p + 1 both free on HOST (demo nodes register consecutive ports)."""
    for _ in range(100):
        port = free_port()
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind((HOST, port))
                b.bind((HOST, port + 1))
            except OSError:
                continue
            return port
    raise BenchError("no two consecutive free ports")


def setup_chain(procs: Processes, home: Path, base_port: int,
                progress: Callable[[str], None]) -> tuple[str, dict[str, str]]:
    """Anvil, the contract, and demo nodes 1 (dispatcher A) and 2 (executor B) registered, staked, with credit.

    Demo node 3 gets a wallet but is not registered: it is the standalone `fake`-backend node (path c),
    kept off the registry so that A never delegates to it. Returns (rpc_url, {wallet name: address}).
    """
    from web3 import Web3

    from wwwserve.devnet.anvil import start_anvil
    from wwwserve.devnet.deploy import (
        DEMO_PASSWORD,
        bring_up_demo_nodes,
        demo_account,
        ensure_demo_wallet,
        ensure_deployment,
    )
    from wwwserve.ledger.params import WEI_PER_ETH

    anvil = start_anvil(log_path=home / "anvil.log")
    procs.stoppers.append(anvil.stop)
    progress(f"anvil at {anvil.rpc_url}; deploying and registering 2 nodes")
    w3 = Web3(Web3.HTTPProvider(anvil.rpc_url))
    deployment, _ = ensure_deployment(w3, anvil.rpc_url)
    names = {i: ensure_demo_wallet(i, DEMO_PASSWORD) for i in (1, 2, 3)}
    # 100 ETH of credit: a full run delegates thousands of requests at fee_wei each (1 credit by default).
    bring_up_demo_nodes(w3, deployment, 2, stake_wei=WEI_PER_ETH, deposit_wei=100 * WEI_PER_ETH, base_port=base_port,
                        models=(MODEL,), progress=progress)
    return anvil.rpc_url, {name: str(demo_account(i).address) for i, name in names.items()}


def py_spy(progress: Callable[[str], None]) -> Path:
    """A py-spy executable: on PATH, or installed into bench/.venv-litellm on first use."""
    found = shutil.which("py-spy")
    if found:
        return Path(found)
    exe = LITELLM_VENV / "bin" / "py-spy"
    if not exe.exists():
        progress("installing py-spy into bench/.venv-litellm")
        if not LITELLM_VENV.exists():
            subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
            (LITELLM_VENV / ".gitignore").write_text("*\n")
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "py-spy"], check=True)
    return exe


def litellm_python(progress: Callable[[str], None]) -> Path:
    """bench/.venv-litellm's litellm executable, installing `litellm[proxy]` there on first use."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    progress("installing litellm[proxy] into bench/.venv-litellm (first run only, about a minute)")
    subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    # The venv is a build output: keep it out of git without touching the repository's .gitignore.
    (LITELLM_VENV / ".gitignore").write_text("*\n")
    subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)
    if not exe.exists():
        raise BenchError("pip installed litellm[proxy] but bench/.venv-litellm/bin/litellm is missing")
    return exe


def start_litellm(procs: Processes, backend_port: int, progress: Callable[[str], None]) -> Target:
    """LiteLLM's proxy with one model routed (openai/ provider) to the fake backend; waits until ready."""
    exe = litellm_python(progress)
    config = procs.workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: http://{HOST}:{backend_port}/v1\n"
        "      api_key: sk-bench\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  drop_params: true\n"
    )
    port = free_port()
    # No internet here: the bundled model-cost map instead of fetching it; no telemetry; quiet logs.
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
           "LITELLM_TELEMETRY": "False",
           "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true", "DISABLE_SCHEMA_UPDATE": "True"}
    proc = procs.start("litellm", [str(exe), "--config", str(config), "--host", HOST, "--port", str(port),
                                   "--num_workers", "1"], env=env)
    progress(f"waiting for LiteLLM on :{port}")
    wait_http(f"http://{HOST}:{port}/health/liveliness", proc, "LiteLLM", procs, "litellm", timeout_s=120.0)
    return Target("litellm", port, "/v1/chat/completions", [proc.pid])


# ------------------------------------------------------------------------------------------------
# the run


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


def check_delegated(port: int, dispatcher: str, executor: str) -> str | None:
    """None when a request to node A was executed by B through a 2-node route; else why not."""
    import httpx

    resp = httpx.post(f"http://{HOST}:{port}/v1/chat/completions", content=CHAT_BODY,
                      headers={"content-type": "application/json"}, timeout=30.0)
    if resp.status_code != 200:
        return f"node A answered {resp.status_code}: {resp.text[:200]}"
    ext = resp.json().get("wwwserve") or {}
    route = ext.get("route") or []
    if len(route) < 2 or str(ext.get("executor", "")).lower() == dispatcher.lower():
        return f"route {route}, executor {ext.get('executor')}"
    if str(ext.get("executor", "")).lower() != executor.lower():
        return f"executed by {ext.get('executor')}, not node B"
    return None


def dispatch_counters(port: int) -> dict[str, float]:
    """Node A's dispatch decisions and delegation outcomes so far, from its /metrics."""
    import httpx

    text = httpx.get(f"http://{HOST}:{port}/metrics", timeout=5.0).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("wwwserve_dispatch_decisions_total{", "wwwserve_delegations_total{",
                            "wwwserve_reoffers_total{")):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def delegation_note(before: dict[str, float], after: dict[str, float]) -> str:
    """How node A handled the requests of a measurement: decisions and delegation outcomes (a delta)."""
    parts = []
    for name in sorted(after):
        delta = after[name] - before.get(name, 0.0)
        if delta:
            label = name.split("{", 1)[1].rstrip("}").replace('"', "")
            kind = ("decision" if name.startswith("wwwserve_dispatch") else
                    "re-offer" if name.startswith("wwwserve_reoffers") else "delegation")
            parts.append(f"{kind} {label}: {delta:,.0f}")
    return "node A: " + (", ".join(parts) if parts else "no dispatch recorded")


def top_frames(collapsed: str, n: int = 12) -> list[tuple[str, float, float]]:
    """(frame, self share, inclusive share) of the n frames with most self time in py-spy raw output.

    Raw (collapsed) output has one `frame;frame;...;leaf count` line per distinct stack.
    """
    self_counts: dict[str, int] = {}
    incl_counts: dict[str, int] = {}
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + count
        for frame in set(frames):
            incl_counts[frame] = incl_counts.get(frame, 0) + count
    if total == 0:
        return []
    ranked = sorted(self_counts.items(), key=lambda kv: -kv[1])[:n]
    return [(frame, c / total, incl_counts[frame] / total) for frame, c in ranked]


class Profiler:
    """py-spy recordings of server processes during a throughput phase (--profile)."""

    def __init__(self, exe: Path, workdir: Path, duration_s: float) -> None:
        self.exe, self.workdir, self.duration_s = exe, workdir, duration_s
        self.reports: dict[str, list[tuple[str, float, float]]] = {}

    @contextlib.contextmanager
    def record(self, name: str, pids: dict[str, int], idle: bool = False) -> Any:
        """Record every pid in `pids` (label -> pid) while the body runs.

        idle=False samples only running threads (where CPU goes); idle=True also waiting ones, which is
        where wall-clock time goes (the sequential-latency view).
        """
        running = []
        for label, pid in pids.items():
            out = self.workdir / f"profile-{name}-{label}.txt"
            cmd = [str(self.exe), "record", "--format", "raw", "--nonblocking", "-r", "250", "-o", str(out),
                   "-p", str(pid), *(["--idle"] if idle else [])]
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            running.append((label, proc, out))
        time.sleep(0.5)  # py-spy attaches
        try:
            yield
        finally:
            for label, proc, out in running:
                proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                if out.exists():
                    self.reports[f"{name}/{label}"] = top_frames(out.read_text())

    def format(self) -> str:
        """The top frames of every recording."""
        lines = []
        for key, frames in self.reports.items():
            lines.append(f"profile {key} (self %, inclusive %):")
            lines += [f"  {share * 100:5.1f}  {incl * 100:5.1f}  {frame}" for frame, share, incl in frames]
        return "\n".join(lines)


def backend_stats(port: int) -> dict[str, int]:
    """Connections accepted and requests answered so far by the fake backend."""
    import httpx

    stats: dict[str, int] = httpx.get(f"http://{HOST}:{port}/bench/stats", timeout=5.0).json()
    return stats


def note_upstream(result: PathResult, before: dict[str, int], after: dict[str, int]) -> None:
    """Note how many upstream connections a proxy opened for its requests (1 per request = no keep-alive)."""
    requests = after["requests"] - before["requests"] - 1  # minus the stats call itself
    connections = after["connections"] - before["connections"] - 1
    if result.name not in ("direct", "node-fake") and requests > 0:
        result.note = ((result.note + "; ") if result.note else "") + \
            f"upstream: {requests:,} backend requests (incl. background polls) over {connections:,} new connections"


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
        backend = procs.start("backend", [sys.executable, str(Path(__file__).resolve()), "--serve-fake-backend",
                                          str(backend_port)])
        wait_http(f"http://{HOST}:{backend_port}/v1/models", backend, "fake backend", procs, "backend", 10.0)
        progress(f"fake backend on :{backend_port} (pid {backend.pid}); logs in {workdir}")

        base_port = free_port_pair()
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
        node_procs = {}
        for name, spec in nodes.items():
            node_procs[name] = procs.start(name, node_command(spec), env=env)
        for name, spec in nodes.items():
            progress(f"waiting for {name} on :{spec.port}")
            wait_http(f"http://{HOST}:{spec.port}/ready", node_procs[name], name, procs, name, 60.0)

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


def to_json(results: dict[str, PathResult], checks: Sequence[TargetCheck], machine: str,
            args: argparse.Namespace) -> dict[str, Any]:
    """Everything measured, as plain JSON."""
    return {"machine": machine, "quick": args.quick, "concurrency": list(args.concurrency),
            "client_procs": args.client_procs, "duration_s": args.duration_s,
            "paths": {k: asdict(v) for k, v in results.items()},
            "overhead_ms": {k: overhead_ms(results, k) for k in results if k != "direct"},
            "hop_overhead_ms": overhead_ms(results, "hop", base="node"),
            "targets": [asdict(c) for c in checks],
            "reference_design_limit_rps_per_node": 1 / REFERENCE_TICK_S,
            "profiles": getattr(args, "profiles", {})}


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
