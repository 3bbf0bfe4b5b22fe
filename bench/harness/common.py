"""Names every part of the benchmark harness uses."""

from __future__ import annotations

from pathlib import Path

MODEL = "bench-model"
HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = BENCH_DIR.parent
# A virtualenv of benchmark-only tools (LiteLLM's proxy, py-spy), created on first use; it carries its own
# .gitignore.
LITELLM_VENV = BENCH_DIR / ".venv-litellm"


class BenchError(RuntimeError):
    """The benchmark could not set up or measure a path (the message says which and why)."""
