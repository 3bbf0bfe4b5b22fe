"""LiteLLM's proxy in front of the fake backend: the comparison the serving benchmark prints beside ours."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from harness.common import HOST, LITELLM_VENV, MODEL, BenchError
from harness.load import Target
from harness.procs import Processes, free_port


def litellm_python(progress: Callable[[str], None]) -> Path:
    """bench/.venv-litellm's litellm executable, installing `litellm[proxy]` there on first use."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    progress("installing litellm[proxy] into bench/.venv-litellm (first run only, about a minute)")
    subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    # The venv is a build output: keep it out of git without touching the repository's .gitignore.
    (LITELLM_VENV / ".gitignore").write_text("*\n")
    subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)
    if not exe.exists():
        raise BenchError("pip installed litellm[proxy] but bench/.venv-litellm/bin/litellm is missing")
    return exe


def start_litellm(procs: Processes, backend_port: int, progress: Callable[[str], None]) -> Target:
    """LiteLLM's proxy with one model routed (openai/ provider) to the fake backend; waits until ready."""
    exe = litellm_python(progress)
    config = procs.workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: http://{HOST}:{backend_port}/v1\n"
        "      api_key: sk-bench\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  drop_params: true\n"
    )
    port = free_port()
    # No internet here: the bundled model-cost map instead of fetching it; no telemetry; quiet logs.
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
           "LITELLM_TELEMETRY": "False",
           "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true", "DISABLE_SCHEMA_UPDATE": "True"}
    proc = procs.start("litellm", [str(exe), "--config", str(config), "--host", HOST, "--port", str(port),
                                   "--num_workers", "1"], env=env)
    progress(f"waiting for LiteLLM on :{port}")
    procs.ready(proc, 120.0, f"http://{HOST}:{port}/health/liveliness")
    return Target("litellm", port, "/v1/chat/completions", [proc.pid])


# ------------------------------------------------------------------------------------------------
# the run
