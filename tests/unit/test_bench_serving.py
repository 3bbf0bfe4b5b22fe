"""The serving benchmark's pure parts: percentile math, target verdicts, the report, the fake backend's answers,
and the SSE reader bench/soak.py and the chaos tier share."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from bench_scripts import load_bench_script

BENCH = Path(__file__).resolve().parents[2] / "bench"
# bench/ is a folder of scripts, not a package: its harness is imported the way the scripts import it.
sys.path.insert(0, str(BENCH))

from harness import common, fake_backend, load, node_metrics, profiling, report, sse, stats  # noqa: E402


def test_the_scenario_script_loads_and_reads_its_options() -> None:
    module = load_bench_script("serving.py", "bench_serving")
    args = module.parse_args(["--quick", "--no-litellm"])
    assert (args.concurrency, args.latency_requests, args.ttft_requests) == ([32], 300, 30)
    assert module.fake_backend_command(8000)[-2:] == ["--serve-fake-backend", "8000"]


def test_percentile_interpolates_like_numpy_linear() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert stats.percentile(values, 0) == 1.0
    assert stats.percentile(values, 100) == 5.0
    assert stats.percentile(values, 50) == 3.0
    assert stats.percentile(values, 25) == 2.0
    assert stats.percentile([1.0, 2.0], 50) == pytest.approx(1.5)
    assert stats.percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    assert stats.percentile([7.0], 99) == 7.0


@pytest.mark.parametrize("bad", [-1.0, 100.1])
def test_percentile_rejects_out_of_range_and_empty(bad: float) -> None:
    with pytest.raises(ValueError):
        stats.percentile([1.0], bad)
    with pytest.raises(ValueError):
        stats.percentile([], 50)


def test_latency_stats_are_in_milliseconds() -> None:
    latency = stats.LatencyStats.from_seconds([0.001, 0.002, 0.003])
    assert latency.n == 3
    assert latency.p50_ms == pytest.approx(2.0)
    assert latency.mean_ms == pytest.approx(2.0)
    assert latency.p99_ms == pytest.approx(2.98)


def _path(name: str, p50_ms: float, rps: float | None = None) -> object:
    latency = stats.LatencyStats(100, p50_ms, p50_ms * 2, p50_ms)
    result = report.PathResult(name, report.PATH_LABELS[name], latency=latency)
    if rps is not None:
        result.throughput.append(stats.Throughput(32, int(rps * 2), 0, 2.0, rps, 0.5, 0.9, 0.1))
    return result


def _results(hop_p50: float, node_fake_rps: float, node_p50: float, litellm_p50: float) -> dict[str, object]:
    return {
        "direct": _path("direct", 0.2, 5000.0),
        "node": _path("node", node_p50, 900.0),
        "node-fake": _path("node-fake", 0.9, node_fake_rps),
        "litellm": _path("litellm", litellm_p50, 300.0),
        "hop": _path("hop", hop_p50, 500.0),
    }


def test_targets_pass_and_miss_on_the_measured_figures() -> None:
    good = report.evaluate_targets(_results(hop_p50=2.5, node_fake_rps=1200.0, node_p50=1.2, litellm_p50=4.2))
    assert [c.passed for c in good] == [True, True, True]
    # hop = 2.5 - 1.2 = 1.3 ms; overhead ratio = (1.2 - 0.2) / (4.2 - 0.2) = 0.25
    assert "1.30 ms" in good[0].measured and "0.25" in good[2].measured

    bad = report.evaluate_targets(_results(hop_p50=6.0, node_fake_rps=999.0, node_p50=3.2, litellm_p50=4.2))
    assert [c.passed for c in bad] == [False, False, False]


def test_targets_not_measured_are_neither_pass_nor_miss() -> None:
    results = _results(hop_p50=2.5, node_fake_rps=1200.0, node_p50=1.2, litellm_p50=4.2)
    results["hop"] = report.PathResult("hop", report.PATH_LABELS["hop"], skipped="hop: not delegated (route [A])")
    del results["litellm"]
    checks = report.evaluate_targets(results)
    assert [c.passed for c in checks] == [None, True, None]
    assert report.overhead_ms(results, "hop", base="node") is None


def test_report_lists_every_path_targets_and_the_reference_limit() -> None:
    results = _results(hop_p50=2.5, node_fake_rps=1200.0, node_p50=1.2, litellm_p50=4.2)
    results["hop"] = report.PathResult("hop", report.PATH_LABELS["hop"], skipped="hop: not delegated (route [A])")
    text = report.format_report(results, report.evaluate_targets(results), "2 cores (test)")
    lines = text.splitlines()
    assert "2 cores (test)" in lines[0]
    row = next(line for line in lines if line.startswith("(b) node -> openai backend"))
    assert "900" in row and "1.20" in row and "+1.00" in row and "0.25" in row
    assert any(line.startswith("(e)") and "not delegated" in line for line in lines)
    assert any("[PASS] one node >= 1,000 req/s" in line for line in lines)
    assert any("[n/a ] hop adds" in line for line in lines)
    assert "= 2 req/s per node" in text


def test_fake_backend_answers_openai_shapes() -> None:
    plain = fake_backend.answer_request("POST", "/v1/chat/completions", load.CHAT_BODY)
    head, body = plain.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200") and f"content-length: {len(body)}".encode() in head
    answer = json.loads(body)
    assert answer["model"] == common.MODEL and answer["choices"][0]["message"]["content"] == "Hello from the bench."

    stream = fake_backend.answer_request("POST", "/v1/chat/completions",
                               json.dumps({"model": "m", "stream": True,
                                           "stream_options": {"include_usage": True}}).encode())
    assert b"transfer-encoding: chunked" in stream and stream.endswith(b"0\r\n\r\n")
    events = [line[6:].strip() for line in stream.split(b"\r\n") if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == \
        "Hello from the bench."
    assert chunks[-1]["usage"]["completion_tokens"] == len(fake_backend.ANSWER_WORDS)

    models = json.loads(fake_backend.answer_request("GET", "/v1/models", b"").split(b"\r\n\r\n", 1)[1])
    assert [m["id"] for m in models["data"]] == [common.MODEL]
    assert fake_backend.answer_request("GET", "/nope", b"").startswith(b"HTTP/1.1 404")


def test_fake_backend_answers_plain_completions_too() -> None:
    answer = fake_backend.answer_request("POST", "/v1/completions", b'{"model": "m", "prompt": "hi"}')
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(body)["choices"][0]["text"] == "Hello from the bench."


def test_top_frames_ranks_self_time_and_counts_inclusive_once_per_stack() -> None:
    raw = "\n".join([
        "main (a.py:1);serve (b.py:2);sign (c.py:3) 6",
        "main (a.py:1);serve (b.py:2) 3",
        "main (a.py:1);idle (d.py:4);idle (d.py:4) 1",
        "garbage line without count",
    ])
    frames = profiling.top_frames(raw, n=2)
    assert [f for f, _, _ in frames] == ["sign (c.py:3)", "serve (b.py:2)"]
    assert frames[0][1] == pytest.approx(0.6) and frames[0][2] == pytest.approx(0.6)
    assert frames[1][1] == pytest.approx(0.3) and frames[1][2] == pytest.approx(0.9)
    assert profiling.top_frames("") == []


def test_upstream_note_counts_new_connections_per_request() -> None:
    result = report.PathResult("node", report.PATH_LABELS["node"])
    report.note_upstream(result, {"connections": 10, "requests": 100}, {"connections": 12, "requests": 601})
    assert result.note is not None and "500 backend requests" in result.note and "over 1 new connections" in result.note
    direct = report.PathResult("direct", report.PATH_LABELS["direct"])
    report.note_upstream(direct, {"connections": 0, "requests": 0}, {"connections": 5, "requests": 50})
    assert direct.note is None


def test_report_gives_cpu_per_sequential_request_and_delegation_counts() -> None:
    results = _results(hop_p50=2.5, node_fake_rps=1200.0, node_p50=1.2, litellm_p50=4.2)
    results["hop"].sequential_cpu_ms = {"A": 1.5, "B": 1.25, "backend": 0.125}  # type: ignore[attr-defined]
    text = report.format_report(results, report.evaluate_targets(results), "2 cores (test)")
    assert "(e) node A -> node B (hop): CPU per sequential request A 1.50 ms, B 1.25 ms, backend 0.12 ms" in text
    before = {'wwwserve_delegations_total{outcome="ok"}': 3.0}
    after = {'wwwserve_delegations_total{outcome="ok"}': 10.0, 'wwwserve_dispatch_decisions_total{action="retry"}': 2.0}
    assert node_metrics.delegation_note(before, after) == "node A: delegation outcome=ok: 7, decision action=retry: 2"
    assert node_metrics.delegation_note(after, after) == "node A: no dispatch recorded"


def test_sse_reader_gives_data_events_until_done() -> None:
    async def read(lines: list[bytes]) -> tuple[list[dict[str, Any]], bool]:
        async def body() -> AsyncIterator[bytes]:
            for line in lines:
                yield line

        reader = sse.SSEReader(body())
        return [event async for event in reader], reader.done

    stream = [b": keep-alive\n", b'data: {"a": 1}\n', b"\n", b'data:{"b": 2}\r\n', b"data: [DONE]\n",
              b'data: {"c": 3}\n']
    assert asyncio.run(read(stream)) == ([{"a": 1}, {"b": 2}], True)
    assert asyncio.run(read(stream[:3])) == ([{"a": 1}], False)  # cut before [DONE]
