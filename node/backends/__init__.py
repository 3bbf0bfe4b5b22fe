"""LLM backends of the Model manager: one small `Backend` protocol and its implementations.

`FakeBackend` (deterministic, in-process: tests and benchmarks) and `OpenAIBackend` (any
OpenAI-compatible server: vLLM, SGLang, llama.cpp). The supervised-vLLM and local-CPU backends build
on the same interface.
"""

from node.backends.base import (
    Backend,
    BackendLoad,
    GenerationAbortedError,
    GenerationRequest,
    GenerationResult,
    StreamDelta,
    estimate_tokens,
    normalize_finish_reason,
)
from node.backends.fake import FakeBackend
from node.backends.openai_compat import OpenAIBackend

__all__ = [
    "Backend",
    "BackendLoad",
    "FakeBackend",
    "GenerationAbortedError",
    "GenerationRequest",
    "GenerationResult",
    "OpenAIBackend",
    "StreamDelta",
    "estimate_tokens",
    "normalize_finish_reason",
]
