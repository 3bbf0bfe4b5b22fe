"""The local backend's load accounting when a request ends, over a tiny stand-in model (no SmolLM2).

Found by the conformance suite (tests/conformance): `load()` counted a request as running after its answer
had reached the caller, until the worker thread got round to its own bookkeeping, and a stream closed by
its consumer was counted, with the worker still computing for nobody, after `aclose()` returned. The
policy reads `load()` on every dispatch, so a one-at-a-time engine looked full just after each answer.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from wwwserve.node.backends import local as local_module
from wwwserve.node.backends import local_generate
from wwwserve.node.backends.base import GenerationRequest
from wwwserve.node.backends.local import LocalBackend
from wwwserve.node.settings import DEFAULT_LOCAL_MODEL

VOCAB = 16


class CountingModel:
    """A causal LM stand-in: the next token is always the last one plus one (mod VOCAB); a forward pass
    takes `forward_s`, and `busy` is set while one runs."""

    def __init__(self, forward_s: float = 0.0) -> None:
        self.forward_s = forward_s
        self.busy = threading.Event()

    def __call__(self, input_ids: torch.Tensor, past_key_values: Any = None, use_cache: bool = True) -> Any:
        self.busy.set()
        try:
            time.sleep(self.forward_s)
            logits = torch.full((1, input_ids.shape[1], VOCAB), -1e9)
            logits[0, -1, (int(input_ids[0, -1]) + 1) % VOCAB] = 0.0
            return SimpleNamespace(past_key_values=None, logits=logits)
        finally:
            self.busy.clear()


class LetterTokenizer:
    """One token per character; token i decodes to the i-th letter."""

    bos_token_id = 0
    eos_token_id = None

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) % VOCAB for c in text]}

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(ord("a") + i) for i in ids)

    def apply_chat_template(self, messages: list[dict[str, str]], **_: Any) -> str:
        return " ".join(m["content"] for m in messages)


def loaded_backend(tmp_path: Path, forward_s: float = 0.0) -> tuple[LocalBackend, CountingModel]:
    backend = LocalBackend(cache_dir=tmp_path, start=False)
    model = CountingModel(forward_s)
    backend._tokenizer, backend._model, backend._eos_ids = LetterTokenizer(), model, frozenset()
    backend._loaded.set()
    return backend, model


def req(request_id: str, max_tokens: int) -> GenerationRequest:
    return GenerationRequest(request_id=request_id, model=DEFAULT_LOCAL_MODEL, prompt="abc", max_tokens=max_tokens,
                             temperature=0.0)


@pytest.fixture
def slow_bookkeeping(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker thread lingers after handing over a job's last item (as when the event loop's thread holds
    the GIL), so its own bookkeeping comes well after the caller has the answer."""
    decode = local_generate.decode

    def decode_then_linger(*args: Any) -> None:
        decode(*args)
        time.sleep(0.3)

    monkeypatch.setattr(local_module, "decode", decode_then_linger)


@pytest.mark.usefixtures("slow_bookkeeping")
def test_an_answered_request_is_no_longer_running_and_its_id_is_free(tmp_path: Path) -> None:
    backend, _ = loaded_backend(tmp_path)

    async def go() -> None:
        result = await backend.generate(req("same", 3))
        assert (result.text, result.finish_reason, result.completion_tokens) == ("efg", "length", 3)
        load = await backend.load()
        assert (load.running, load.waiting, load.kv_usage) == (0, 0, 0.0)
        # The id is free at once (it was RequestInFlightError until the worker's bookkeeping), and the
        # earlier job's late bookkeeping does not drop the new one from the load.
        stream = backend.stream(req("same", 50))
        first = asyncio.ensure_future(anext(stream))
        deadline = time.monotonic() + 5
        while (await backend.load()).waiting == 0:  # queued behind the lingering worker
            assert time.monotonic() < deadline and not first.done()
            await asyncio.sleep(0.01)
        assert (await first).text
        await asyncio.sleep(0.05)  # the first job's late bookkeeping has run on the loop by now
        assert (await backend.load()).running == 1
        await stream.aclose()
        assert (await backend.load()).running == 0
        await backend.aclose()

    asyncio.run(go())


def test_a_closed_stream_has_stopped_the_worker_when_aclose_returns(tmp_path: Path) -> None:
    backend, model = loaded_backend(tmp_path, forward_s=0.05)

    async def go() -> None:
        stream = backend.stream(req("closed", 200))
        assert (await anext(stream)).text
        assert (await backend.load()).running == 1
        await stream.aclose()
        assert not model.busy.is_set()  # the worker is not computing for nobody
        load = await backend.load()
        assert (load.running, load.waiting) == (0, 0)
        after = await backend.generate(req("next", 2))
        assert after.completion_tokens == 2
        await backend.aclose()

    asyncio.run(go())
