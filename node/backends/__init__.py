"""LLM backends of the Model manager: one small `Backend` protocol and its implementations.

`FakeBackend` (deterministic, in-process: tests and benchmarks) and `OpenAIBackend` (any
OpenAI-compatible server: vLLM, SGLang, llama.cpp). The supervised-vLLM and local-CPU backends build
on the same interface.
"""

from wwwserve.node.backends.base import (
    Backend,
    BackendLoad,
    GenerationAbortedError,
    GenerationRequest,
    GenerationResult,
    StreamDelta,
    estimate_tokens,
    normalize_finish_reason,
)
from wwwserve.node.backends.fake import FakeBackend
from wwwserve.node.backends.openai_compat import OpenAIBackend

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
