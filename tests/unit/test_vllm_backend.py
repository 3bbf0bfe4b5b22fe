"""The `vllm` backend's supervisor, against a fake `vllm` package (tests/fixtures/fake_vllm).

The fake is a real child process started exactly as vLLM would be (`python -m
vllm.entrypoints.openai.api_server ...`, found through PYTHONPATH in the backend's env), serving an
instant OpenAI API with uvicorn; environment knobs make it crash, start slowly, exit at once, fork an
engine-like child or ignore SIGTERM. So these tests exercise the real process handling: readiness
polling, 503s meanwhile, restarts with backoff, giving up, startup timeouts, process-group shutdown
and the port check.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from wwwserve.devnet.ports import free_port
from wwwserve.node.backends.base import Backend, GenerationRequest, StreamDelta
from wwwserve.node.backends.vllm import (
    VLLM_SERVER_MODULE,
    VllmBackend,
    VllmBackendError,
    VllmDownError,
    VllmLaunchError,
    VllmPortInUseError,
    build_vllm_backend,
    vllm_command,
)
from wwwserve.node.errors import BackendUnavailableError
from wwwserve.node.settings import VllmBackendSettings, load_settings

pytestmark = pytest.mark.component  # the fake vLLM is a real child process on a loopback port

FAKE_VLLM_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "fake_vllm"
READY_TIMEOUT_S = 30.0


def fake_settings(env: dict[str, str] | None = None, **overrides: Any) -> VllmBackendSettings:
    """Settings that start the fake vLLM with this interpreter on a free port."""
    fields: dict[str, Any] = {
        "python_path": Path(sys.executable),
        "model": "/models/fake",
        "port": free_port(),
        "env": {"PYTHONPATH": str(FAKE_VLLM_DIR), **(env or {})},
        "startup_timeout_s": READY_TIMEOUT_S,
        "restart_backoff_s": 0.05,
        "max_restarts": 3,
        **overrides,
    }
    return VllmBackendSettings(**fields)


def make_backend(tmp_path: Path, settings: VllmBackendSettings, **kw: Any) -> VllmBackend:
    kw.setdefault("health_interval_s", 0.1)
    kw.setdefault("stop_timeout_s", 3.0)
    return VllmBackend(settings, models=["fake-llm"], timeout_s=10.0, log_dir=tmp_path / "logs", **kw)


def chat(content: str, request_id: str = "r1") -> GenerationRequest:
    return GenerationRequest(request_id=request_id, model="fake-llm", messages=[{"role": "user", "content": content}])


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie awaiting its reaper counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def state_of(backend: VllmBackend) -> str:
    """The state now (a call, so that mypy does not keep an earlier narrowing of the property)."""
    return backend.state


async def until(condition: Callable[[], bool], timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# pure parts


def test_command_is_the_api_server_module_with_served_names_and_extra_args() -> None:
    settings = VllmBackendSettings(
        python_path=Path("/venv/bin/python"), model="/m", host="0.0.0.0", port=8123,
        extra_args=["--max-model-len", "1024", "--enforce-eager"],
    )
    assert vllm_command(settings, ["a", "b"]) == [
        "/venv/bin/python", "-m", VLLM_SERVER_MODULE, "--model", "/m", "--served-model-name", "a", "b",
        "--host", "0.0.0.0", "--port", "8123", "--max-model-len", "1024", "--enforce-eager",
    ]
    backend = VllmBackend(settings, ["a"], log_dir=Path("/nonexistent"))
    assert backend.base_url == "http://127.0.0.1:8123"  # a wildcard bind is reached over loopback
    assert backend.state == "idle" and backend.pid is None


def test_build_from_node_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WWWSERVE_HOME", str(tmp_path))
    settings = load_settings(overrides={
        "backend.kind": "vllm", "backend.vllm.model": "/models/smol", "backend.vllm.port": 8555,
        "server.request_timeout_s": 42.0,
    })
    backend = build_vllm_backend(settings)
    assert isinstance(backend, Backend)
    assert backend.models == ["/models/smol"]  # models default to the vLLM model's own name
    assert backend.log_path == tmp_path / "logs" / "vllm-8555.log"
    assert backend.command()[backend.command().index("--served-model-name") + 1] == "/models/smol"
    named = build_vllm_backend(load_settings(overrides={
        "backend.kind": "vllm", "backend.vllm.model": "/models/smol", "backend.models": ["smol", "smol2"],
    }))
    assert named.models == ["smol", "smol2"]


# ---------------------------------------------------------------------------------------------
# supervision against the fake vLLM process


def test_starts_in_background_answers_503_meanwhile_then_serves(tmp_path: Path) -> None:
    gate = tmp_path / "model-loaded"  # the fake listens once this file exists: its load ends when we say so
    settings = fake_settings(env={"FAKE_VLLM_START_GATE": str(gate)}, extra_args=["--enforce-eager"])
    backend = make_backend(tmp_path, settings)

    async def go() -> None:
        async with asyncio.timeout(READY_TIMEOUT_S):  # start() returns while the process loads: the gate is shut
            await backend.start()
        try:
            assert backend.state == "starting" and backend.pid is not None
            assert await backend.health() is False
            with pytest.raises(BackendUnavailableError) as info:
                await backend.generate(chat("hello"))
            assert info.value.http_status == 503 and info.value.retry_after_s is not None
            with pytest.raises(BackendUnavailableError):
                await backend.load()
            with pytest.raises(BackendUnavailableError):
                [d async for d in backend.stream(chat("hello"))]
            assert backend.engine_kv_usage() is None  # the metrics gauge has no series while vLLM starts

            gate.touch()
            await backend.wait_ready(READY_TIMEOUT_S)
            assert state_of(backend) == "ready" and await backend.health() is True
            result = await backend.generate(chat("hello there"))
            assert result.text == "echo: hello there"
            assert (result.prompt_tokens, result.completion_tokens) == (2, 3)
            deltas: list[StreamDelta] = [d async for d in backend.stream(chat("one two three", "r2"))]
            assert "".join(d.text for d in deltas) == "echo: one two three"
            assert deltas[-1].is_final and deltas[-1].completion_tokens == 4
            load = await backend.load()  # from the fake's vLLM-named Prometheus metrics
            assert (load.kv_usage, load.running, load.waiting, load.max_context_tokens) == (0.25, 1, 2, 2048)
            assert backend.engine_kv_usage() == 0.25  # that scrape, for wwwserve_engine_kv_cache_usage_ratio
        finally:
            await backend.aclose()

    asyncio.run(go())
    log = backend.log_path.read_text()
    assert "wwwserve starts vLLM" in log and "served-model-name fake-llm" in log
    assert "extra=['--enforce-eager']" in log  # extra args reach the server


def test_crash_is_restarted_and_serves_again(tmp_path: Path) -> None:
    backend = make_backend(tmp_path, fake_settings(env={"FAKE_VLLM_CRASH_AFTER": "2"}))

    async def go() -> None:
        await backend.start()
        try:
            await backend.wait_ready(READY_TIMEOUT_S)
            first_pid = backend.pid
            assert (await backend.generate(chat("a"))).text == "echo: a"
            with pytest.raises(BackendUnavailableError):
                await backend.generate(chat("b", "r2"))  # the process dies under this request
            await until(lambda: backend.restarts == 1)
            await backend.wait_ready(READY_TIMEOUT_S)
            assert backend.pid != first_pid
            assert first_pid is not None and not alive(first_pid)
            assert (await backend.generate(chat("c", "r3"))).text == "echo: c"
            assert backend.failure is None
        finally:
            await backend.aclose()

    asyncio.run(go())
    assert backend.log_path.read_text().count("wwwserve starts vLLM") == 2
    assert "EngineDeadError" in backend.log_path.read_text()


def test_crash_loop_is_declared_down_with_the_log_tail(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = fake_settings(env={"FAKE_VLLM_EXIT_AT_ONCE": "1"}, max_restarts=2, restart_backoff_s=0.2)
    backend = make_backend(tmp_path, settings)

    async def go() -> None:
        started = time.monotonic()
        await backend.start()
        try:
            with pytest.raises(VllmDownError) as info:
                await backend.wait_ready(READY_TIMEOUT_S)
            assert time.monotonic() - started >= 0.2 + 0.4  # the backoff doubles between restarts
            assert backend.state == "down" and backend.restarts == 2 and backend.pid is None
            assert "exit code 1" in str(info.value) and "max_restarts=2" in str(info.value)
            assert "engine core failed to start" in info.value.log_tail
            assert backend.failure is info.value
            assert await backend.health() is False
            with pytest.raises(BackendUnavailableError) as unavailable:
                await backend.generate(chat("x"))
            assert unavailable.value.retry_after_s is None  # down: retrying soon will not help
        finally:
            await backend.aclose()

    asyncio.run(go())
    assert backend.log_path.read_text().count("wwwserve starts vLLM") == 3
    assert any("engine core failed to start" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


def test_restart_never_leaves_it_down_after_a_crash(tmp_path: Path) -> None:
    backend = make_backend(tmp_path, fake_settings(env={"FAKE_VLLM_CRASH_AFTER": "1"}, restart="never"))

    async def go() -> None:
        await backend.start()
        try:
            await backend.wait_ready(READY_TIMEOUT_S)
            with pytest.raises(BackendUnavailableError):
                await backend.generate(chat("a"))
            await until(lambda: backend.state == "down")
            assert backend.restarts == 0
            assert backend.failure is not None
            assert "exit code 3" in backend.failure.reason and "restart='never'" in backend.failure.reason
            assert "EngineDeadError" in backend.failure.log_tail
        finally:
            await backend.aclose()

    asyncio.run(go())


@pytest.mark.parametrize(("policy", "restarts"), [("on-failure", 0), ("always", 1)])
def test_clean_exit_restarts_only_with_always(tmp_path: Path, policy: str, restarts: int) -> None:
    settings = fake_settings(env={"FAKE_VLLM_EXIT_AT_ONCE": "0"}, restart=policy, max_restarts=1)
    backend = make_backend(tmp_path, settings)

    async def go() -> None:
        await backend.start()
        try:
            with pytest.raises(VllmDownError) as info:
                await backend.wait_ready(READY_TIMEOUT_S)
            assert "exit code 0" in info.value.reason
            assert backend.restarts == restarts
        finally:
            await backend.aclose()

    asyncio.run(go())


def test_startup_timeout_counts_as_a_crash(tmp_path: Path) -> None:
    settings = fake_settings(env={"FAKE_VLLM_STARTUP_DELAY_S": "120"}, startup_timeout_s=1.0, max_restarts=1)
    backend = make_backend(tmp_path, settings)

    async def go() -> None:
        await backend.start()
        pids = [backend.pid]
        try:
            await until(lambda: backend.restarts == 1 and backend.pid is not None)
            pids.append(backend.pid)
            with pytest.raises(VllmDownError) as info:
                await backend.wait_ready(READY_TIMEOUT_S)
            assert "did not answer /health within startup_timeout_s=1" in info.value.reason
            assert "max_restarts=1" in info.value.reason
        finally:
            await backend.aclose()
        # A hung startup is killed, not left behind.
        assert all(pid is not None and not alive(pid) for pid in pids)

    asyncio.run(go())


def test_healthy_period_resets_the_crash_count(tmp_path: Path) -> None:
    # stable_after_s=0: every crash after serving starts a fresh count, so max_restarts=1 is never hit.
    backend = make_backend(tmp_path, fake_settings(env={"FAKE_VLLM_CRASH_AFTER": "1"}, max_restarts=1),
                           stable_after_s=0.0)

    async def go() -> None:
        await backend.start()
        try:
            for crash in (1, 2):
                await backend.wait_ready(READY_TIMEOUT_S)
                with pytest.raises(BackendUnavailableError):
                    await backend.generate(chat("a", f"r{crash}"))
                await until(lambda: backend.restarts == crash)  # noqa: B023 (awaited inside the loop)
            await backend.wait_ready(READY_TIMEOUT_S)
            assert backend.state == "ready" and backend.failure is None
        finally:
            await backend.aclose()

    asyncio.run(go())


def test_aclose_kills_the_whole_process_group_even_if_sigterm_is_ignored(tmp_path: Path) -> None:
    child_file = tmp_path / "child.pid"
    settings = fake_settings(env={"FAKE_VLLM_SPAWN_CHILD": str(child_file), "FAKE_VLLM_IGNORE_SIGTERM": "1"})
    backend = make_backend(tmp_path, settings, stop_timeout_s=1.0)

    async def go() -> tuple[int, int]:
        await backend.start()
        await backend.wait_ready(READY_TIMEOUT_S)
        pid = backend.pid
        assert pid is not None
        child = int(child_file.read_text())
        assert alive(pid) and alive(child) and os.getpgid(child) == pid
        # SIGKILL after stop_timeout_s (1 s); a hang, or the default stop timeout (15 s), would overrun this
        async with asyncio.timeout(10.0):
            await backend.aclose()
        assert backend.state == "closed" and backend.pid is None
        await backend.aclose()  # idempotent
        return pid, child

    pid, child = asyncio.run(go())
    assert not alive(pid) and not alive(child)


def test_process_is_killed_at_interpreter_exit_without_aclose(tmp_path: Path) -> None:
    # A node that crashes out of its event loop must not leave vLLM running: the finalizer stops it.
    settings = fake_settings()
    pid_file = tmp_path / "vllm.pid"
    script = textwrap.dedent(f"""
        import asyncio, pathlib
        from wwwserve.node.backends.vllm import VllmBackend
        from wwwserve.node.settings import VllmBackendSettings
        settings = VllmBackendSettings.model_validate_json({settings.model_dump_json()!r})
        backend = VllmBackend(settings, ["fake-llm"], log_dir=pathlib.Path({str(tmp_path)!r}),
                              health_interval_s=0.1, stop_timeout_s=2.0)
        async def main():
            await backend.start()
            await backend.wait_ready(30)
            pathlib.Path({str(pid_file)!r}).write_text(str(backend.pid))
        asyncio.run(main())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)


def test_port_already_taken_is_a_typed_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        backend = make_backend(tmp_path, fake_settings(port=port))

        async def go() -> None:
            with pytest.raises(VllmPortInUseError) as info:
                await backend.start()
            assert info.value.port == port and f"port {port}" in str(info.value)
            assert isinstance(info.value, VllmBackendError)
            assert backend.state == "idle" and backend.pid is None
            await backend.aclose()

        asyncio.run(go())
    assert not backend.log_path.exists()  # nothing was started


def test_first_use_starts_it_when_nobody_called_start(tmp_path: Path) -> None:
    backend = make_backend(tmp_path, fake_settings())

    async def go() -> None:
        try:
            assert await backend.health() is False  # starts it, not ready yet
            assert backend.state == "starting"
            await backend.wait_ready(READY_TIMEOUT_S)
            assert await backend.health() is True
        finally:
            await backend.aclose()

    asyncio.run(go())


def test_port_taken_during_a_restart_declares_it_down(tmp_path: Path) -> None:
    settings = fake_settings(env={"FAKE_VLLM_CRASH_AFTER": "1"}, restart_backoff_s=1.0)
    backend = make_backend(tmp_path, settings)

    async def go() -> None:
        await backend.start()
        try:
            await backend.wait_ready(READY_TIMEOUT_S)
            with pytest.raises(BackendUnavailableError):
                await backend.generate(chat("a"))
            await until(lambda: backend.state == "restarting")
            with socket.socket() as squatter:  # someone grabs the port while the backend backs off
                squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do (TIME_WAIT)
                squatter.bind(("127.0.0.1", settings.port))
                squatter.listen()
                with pytest.raises(VllmDownError) as info:
                    await backend.wait_ready(READY_TIMEOUT_S)
            assert f"port {settings.port}" in info.value.reason and "already in use" in info.value.reason
            assert backend.pid is None
        finally:
            await backend.aclose()

    asyncio.run(go())


def test_unrunnable_python_is_a_typed_error(tmp_path: Path) -> None:
    backend = make_backend(tmp_path, fake_settings(python_path=tmp_path / "no-such-python"))

    async def go() -> None:
        with pytest.raises(VllmLaunchError) as info:
            await backend.start()
        assert "no-such-python" in str(info.value) and "python_path" in str(info.value)
        assert backend.state == "idle"
        await backend.aclose()

    asyncio.run(go())
