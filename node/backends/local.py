"""kind = "local": a small model (SmolLM2-135M-Instruct by default) on CPU, inside the node's process.

The model comes from `local_model` (the packaged GGUF, converted once to a Hugging Face directory); the
decode loop, sampling and stop strings are `local_generate`'s. This module is the `Backend` around them.

`LocalBackend` loads in a background thread, so the node's HTTP server answers at once and `/ready`
says 503 until the model is in memory. Generation is our own decode loop on one worker thread (two
cores do not gain from batching a 135M model in eager PyTorch): requests run one at a time, in
arrival order, and the rest wait in the backend's own queue, which `load()` reports. The loop checks
an abort flag between tokens (and between prefill chunks), which is how `abort(request_id)` and a
closed stream stop the work promptly.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import sys
import threading
import time
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from wwwserve.node.backends.base import (
    BackendLoad,
    GenerationAbortedError,
    GenerationRequest,
    GenerationResult,
    StreamDelta,
)
from wwwserve.node.backends.local_generate import (
    JOB_ENDED,
    DecodeJob,
    StopScanner,
    decode,
    find_stop,
    held_back_chars,
    sample_next_token,
)
from wwwserve.node.backends.local_model import (
    CACHE_MARKER,
    DEFAULT_HF_DIR_NAME,
    DEFAULT_MODEL_FILE,
    DEFAULT_PACKAGE,
    MODEL_PACKAGE_SPEC,
    LocalModelUnavailableError,
    default_hf_cache_dir,
    end_token_ids,
    ensure_model_package,
    export_hf_model,
    load_models,
)
from wwwserve.node.errors import (
    BackendUnavailableError,
    ContextLengthExceededError,
    InvalidRequestError,
    ModelNotFoundError,
    RequestInFlightError,
)
from wwwserve.node.settings import DEFAULT_LOCAL_MODEL, LocalBackendSettings, NodeSettings

__all__ = [
    "CACHE_MARKER",
    "DEFAULT_HF_DIR_NAME",
    "DEFAULT_MODEL_FILE",
    "DEFAULT_PACKAGE",
    "MODEL_PACKAGE_SPEC",
    "LocalBackend",
    "LocalModelUnavailableError",
    "StopScanner",
    "build_local_backend",
    "check_local_dependencies",
    "default_hf_cache_dir",
    "ensure_model_package",
    "export_hf_model",
    "find_stop",
    "held_back_chars",
    "sample_next_token",
]

logger = logging.getLogger(__name__)

# The SmolLM2 model card's recommended sampling, used when a request leaves the field unset; vLLM does
# the same with a model's generation_config. OpenAI's own default (1.0) makes a 135M model ramble.
DEFAULT_TEMPERATURE = 0.2
DEFAULT_TOP_P = 0.9
LOAD_RETRY_AFTER_S = 5.0
# What the `local` extra installs; checked before a backend starts so a missing one is a clear error.
_RUNTIME_MODULES = ("torch", "transformers", "gguf", "accelerate")


def check_local_dependencies() -> None:
    """Raise `LocalModelUnavailableError` naming the install command when the `local` extra is missing."""
    missing = [name for name in _RUNTIME_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        command = [sys.executable, "-m", "pip", "install", "wwwserve[local]"]
        raise LocalModelUnavailableError(
            f"the local backend needs {', '.join(missing)}; run: {sys.executable} -m pip install 'wwwserve[local]'",
            command,
        )


class LocalBackend:
    """A `Backend` running a small causal LM with transformers on CPU, one request at a time."""

    def __init__(
        self,
        models: list[str] | None = None,
        *,
        package: str = DEFAULT_PACKAGE,
        model_file: str = DEFAULT_MODEL_FILE,
        max_context_tokens: int = 2048,
        threads: int | None = None,
        cache_dir: Path | None = None,
        name: str = "local",
        start: bool = True,
        default_temperature: float = DEFAULT_TEMPERATURE,
        default_top_p: float = DEFAULT_TOP_P,
        max_tokens_cap: int | None = None,
        force_temperature: float | None = None,
    ) -> None:
        if max_tokens_cap is not None and max_tokens_cap < 1:
            raise ValueError(f"max_tokens_cap must be >= 1, got {max_tokens_cap}")
        if force_temperature is not None and not 0.0 <= force_temperature <= 10.0:
            raise ValueError(f"force_temperature must be in [0, 10], got {force_temperature}")
        if max_context_tokens < 16:
            raise ValueError(f"max_context_tokens must be >= 16, got {max_context_tokens}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.name = name
        self.models: list[str] = list(models) if models else [DEFAULT_LOCAL_MODEL]
        self.package = package
        self.model_file = model_file
        self.max_context_tokens = max_context_tokens
        self.threads = threads
        self.cache_dir = cache_dir if cache_dir is not None else default_hf_cache_dir(model_file)
        self.default_temperature = default_temperature
        self.default_top_p = default_top_p
        # A deliberately degraded provider (incentive experiments, bench/incentives.py): every answer is
        # cut to max_tokens_cap tokens and/or sampled at force_temperature, whatever the request asks.
        self.max_tokens_cap = max_tokens_cap
        self.force_temperature = force_temperature
        self.status = "not started"  # one line for humans: loading step, "ready" or "failed: ..."
        self.load_seconds: float | None = None
        self.loaded_from: Path | None = None  # the converted directory, or the GGUF on a first start
        self._tokenizer: Any = None
        self._model: Any = None
        self._eos_ids: frozenset[int] = frozenset()
        self._load_error: BaseException | None = None
        self._loaded = threading.Event()  # set when loading ended, successfully or not
        self._loader: threading.Thread | None = None
        self._closed = False
        # Tokenizer calls come from the event loop's helper threads and the worker; the Rust tokenizer
        # must not be used from two threads at once.
        self._tokenizer_lock = threading.Lock()
        # One worker thread: jobs run one at a time, in submission order (the backend's FIFO).
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-generate")
        self._jobs: dict[str, DecodeJob] = {}
        if start:
            self.start()

    # ---- loading ----------------------------------------------------------------------------

    def start(self) -> None:
        """Begin loading the model in a background thread (idempotent; the constructor calls it)."""
        if self._loader is not None:
            return
        self.status = "loading"
        self._loader = threading.Thread(target=self._load, name=f"{self.name}-load", daemon=True)
        self._loader.start()

    def _progress(self, message: str) -> None:
        self.status = f"loading: {message}"
        logger.info("local backend %s: %s", self.name, message)

    def _load(self) -> None:
        started = time.monotonic()
        try:
            import torch

            if self.threads is not None:
                torch.set_num_threads(self.threads)
            tokenizer, model, source = load_models(self.model_file, self.package, self.cache_dir, self._progress)
            model.eval()
            limit = getattr(model.config, "max_position_embeddings", None)
            if isinstance(limit, int) and 0 < limit < self.max_context_tokens:
                logger.warning(
                    "max_context_tokens %d is above the model's %d positions; using %d",
                    self.max_context_tokens, limit, limit,
                )
                self.max_context_tokens = limit
            self._eos_ids = end_token_ids(tokenizer, model)
            self._tokenizer, self._model = tokenizer, model
            self.loaded_from = source
            self.load_seconds = time.monotonic() - started
            self.status = "ready"
            logger.info("local backend %s ready in %.1f s", self.name, self.load_seconds)
        except BaseException as exc:
            self._load_error = exc
            self.status = f"failed: {exc}"
            logger.error("local backend %s failed to load: %s", self.name, exc)
        finally:
            self._loaded.set()

    @property
    def ready(self) -> bool:
        """Whether the model is loaded and the backend not closed."""
        return self._model is not None and not self._closed

    async def wait_ready(self, timeout_s: float | None = None) -> None:
        """Wait until loading ends; raises what loading raised, or TimeoutError after `timeout_s`."""
        self.start()
        done = await asyncio.to_thread(self._loaded.wait, timeout_s)
        if not done:
            raise TimeoutError(f"the local model did not load within {timeout_s} s ({self.status})")
        if self._load_error is not None:
            raise self._load_error

    # ---- request preparation ----------------------------------------------------------------

    def _check_available(self) -> None:
        if self._closed:
            raise BackendUnavailableError("The local model backend is shut down.")
        if self._load_error is not None:
            raise BackendUnavailableError(f"The local model failed to load: {self._load_error}")
        if self._model is None:
            raise BackendUnavailableError(
                f"The local model is still loading ({self.status}).", retry_after_s=LOAD_RETRY_AFTER_S
            )

    def _prompt_ids(self, req: GenerationRequest) -> list[int]:
        tokenizer = self._tokenizer
        with self._tokenizer_lock:
            if req.is_chat:
                assert req.messages is not None
                # Only role and content reach the template: names and tool fields are not in its grammar.
                messages = [{"role": m.get("role", "user"), "content": m.get("content") or ""} for m in req.messages]
                try:
                    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
                except Exception as exc:  # jinja errors: a role order the template rejects
                    raise InvalidRequestError(f"The messages do not fit the model's chat template: {exc}",
                                              param="messages") from exc
            else:
                text = req.prompt or ""
            ids = [int(i) for i in tokenizer(str(text), add_special_tokens=False)["input_ids"]]
        if not ids:
            # An empty completion prompt (OpenAI allows it): start from the beginning-of-text token.
            start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
            if start is None:
                raise InvalidRequestError("The prompt is empty.", param="prompt")
            ids = [int(start)]
        return ids

    def _prepare(self, req: GenerationRequest, prompt_ids: list[int]) -> DecodeJob:
        """Check the request against the context window and queue it; runs on the event loop."""
        if req.request_id in self._jobs:
            raise RequestInFlightError(req.request_id)
        prompt_tokens = len(prompt_ids)
        if req.max_tokens is not None:
            needed = prompt_tokens + req.max_tokens
            max_new = req.max_tokens
        else:
            needed = prompt_tokens + 1  # the answer may use whatever room is left, but needs some
            max_new = self.max_context_tokens - prompt_tokens
        if needed > self.max_context_tokens:
            raise ContextLengthExceededError(
                prompt_tokens=needed,
                max_context_tokens=self.max_context_tokens,
                param="messages" if req.is_chat else "prompt",
            )
        if self.max_tokens_cap is not None:
            max_new = min(max_new, self.max_tokens_cap)
        job = DecodeJob(req=req, prompt_ids=prompt_ids, max_new_tokens=max_new, loop=asyncio.get_running_loop())
        self._jobs[req.request_id] = job
        self._worker.submit(self._run_job, job)
        return job

    async def _submit(self, req: GenerationRequest) -> DecodeJob:
        self._check_available()
        if req.model not in self.models:
            raise ModelNotFoundError(req.model)
        # Tokenizing a long prompt takes milliseconds; off the loop, it never stalls other requests.
        prompt_ids = await asyncio.to_thread(self._prompt_ids, req)
        self._check_available()
        return self._prepare(req, prompt_ids)

    # ---- the worker -------------------------------------------------------------------------

    def _run_job(self, job: DecodeJob) -> None:
        """Generate one job on the worker thread; every outcome ends with a final item or `JOB_ENDED`."""
        try:
            if job.aborted.is_set() or self._closed:
                job.put(JOB_ENDED)
                return
            job.state = "running"
            self._decode(job)
        except BaseException as exc:
            logger.error("local generation %s failed", job.req.request_id, exc_info=True)
            job.put(BackendUnavailableError(f"The local model failed while generating: {type(exc).__name__}"))
        finally:
            job.state = "done"
            job.tokens = 0
            with contextlib.suppress(RuntimeError):  # the loop is closed (shutdown)
                job.loop.call_soon_threadsafe(self._forget, job)

    def _forget(self, job: DecodeJob) -> None:
        """Stop counting `job` in `load()` (on the event loop); a later job with the same id stays."""
        if self._jobs.get(job.req.request_id) is job:
            del self._jobs[job.req.request_id]

    def _decode(self, job: DecodeJob) -> None:
        req = job.req
        temperature = self.default_temperature if req.temperature is None else float(req.temperature)
        if self.force_temperature is not None:
            temperature = self.force_temperature
        top_p = self.default_top_p if req.top_p is None else float(req.top_p)
        decode(job, self._model, self._tokenizer, self._tokenizer_lock, self._eos_ids, temperature, top_p)

    # ---- Backend ----------------------------------------------------------------------------

    async def stream(self, req: GenerationRequest) -> AsyncGenerator[StreamDelta, None]:
        """Text deltas as tokens are decoded, then one final delta; closing the generator aborts the work.

        When the stream ends, `load()` no longer counts it: not after the worker thread's own bookkeeping,
        which may come later, and a stream closed while the worker runs it returns once the worker has
        stopped (at its next token or prefill chunk), not while the worker still computes for nobody.
        """
        job = await self._submit(req)
        ended = False  # the worker has handed over its last item for this job
        try:
            while True:
                item = await job.queue.get()
                ended = item is JOB_ENDED or isinstance(item, BaseException) or item.is_final
                if item is JOB_ENDED:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.is_final:
                    return
        finally:
            job.aborted.set()  # a consumer that stopped early frees the worker at the next token
            try:
                if not ended and job.state == "running":
                    await self._until_ended(job)
            finally:
                self._forget(job)

    @staticmethod
    async def _until_ended(job: DecodeJob) -> None:
        """Wait for an aborted running job's last item (`JOB_ENDED`, a final delta or an error)."""
        while True:
            item = await job.queue.get()
            if item is JOB_ENDED or isinstance(item, BaseException) or item.is_final:
                return

    async def generate(self, req: GenerationRequest) -> GenerationResult:
        """The whole answer; raises `GenerationAbortedError` if aborted while queued or running."""
        pieces: list[str] = []
        async with contextlib.aclosing(self.stream(req)) as deltas:
            async for delta in deltas:
                if delta.is_final:
                    assert delta.finish_reason is not None
                    return GenerationResult(
                        text="".join(pieces),
                        finish_reason=delta.finish_reason,
                        prompt_tokens=delta.prompt_tokens or 0,
                        completion_tokens=delta.completion_tokens or 0,
                    )
                pieces.append(delta.text)
        raise GenerationAbortedError(req.request_id)

    async def abort(self, request_id: str) -> None:
        """Stop a queued or running request at its next token; a no-op for an unknown or finished one."""
        job = self._jobs.get(request_id)
        if job is not None:
            job.aborted.set()

    async def health(self) -> bool:
        """True once the model is loaded (False while loading, after a failed load, after `aclose`)."""
        return self.ready

    async def load(self) -> BackendLoad:
        """`running` 0/1, `waiting` queued requests, `kv_usage` = tokens in flight / context window."""
        jobs = list(self._jobs.values())
        running = [j for j in jobs if j.state == "running"]
        waiting = sum(1 for j in jobs if j.state == "waiting" and not j.aborted.is_set())
        tokens = sum(j.tokens for j in running)
        return BackendLoad(
            kv_usage=min(1.0, tokens / self.max_context_tokens),
            running=len(running),
            waiting=waiting,
            max_context_tokens=self.max_context_tokens,
            max_running=1,
        )

    async def aclose(self) -> None:
        """Abort every request, stop the worker and drop the model."""
        self._closed = True
        for job in list(self._jobs.values()):
            job.aborted.set()
        await asyncio.to_thread(self._worker.shutdown, wait=True, cancel_futures=False)
        self._model = None
        self._tokenizer = None


def build_local_backend(settings: NodeSettings, *, start: bool = True) -> LocalBackend:
    """The local backend `settings.backend` describes (kind = "local"); starts loading at once unless told not to.

    Raises `LocalModelUnavailableError` at once when torch/transformers/gguf/accelerate are missing,
    so the node can refuse to start with the install command instead of failing in the background.
    """
    check_local_dependencies()
    local: LocalBackendSettings = settings.backend.local
    return LocalBackend(
        list(settings.backend.models),
        package=local.package,
        model_file=local.model_file,
        max_context_tokens=local.max_context_tokens,
        threads=local.threads,
        start=start,
        max_tokens_cap=local.max_tokens_cap,
        force_temperature=local.force_temperature,
    )
