"""Reading the settings: `NodeSettings` (every section, from overrides, environment and TOML), `load_settings`,
`parse_override_pairs`, and the one-line-per-problem `SettingsError`."""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings import SettingsError as _PydanticSettingsError

from wwwserve.errors import WWWServeError
from wwwserve.node.settings.backend import BackendSettings
from wwwserve.node.settings.checks import problem, raise_problems
from wwwserve.node.settings.sections import (
    ChainSettings,
    IdentitySettings,
    JudgeSettings,
    PeerSettings,
    PolicySettings,
    ServerSettings,
)

ENV_PREFIX = "WWWSERVE_NODE__"
ENV_NESTED_DELIMITER = "__"

# Which TOML file the settings source reads. A context variable rather than class state, so concurrent
# loads (tests, the embedded network starting N nodes in one process) cannot see each other's file.
_TOML_PATH: ContextVar[Path | None] = ContextVar("wwwserve_node_toml_path", default=None)

# Paths (as dotted strings) whose values are secrets: never echoed in error messages.
_SECRET_LEAVES = frozenset({"api_key", "api_keys"})
_PREFIXED_INT_RE = re.compile(r"^[+-]?0[xXoObB]")


class SettingsError(WWWServeError, ValueError):
    """The node's settings are invalid; the message lists every problem, one `path: problem (got X)` a line."""

    def __init__(self, problems: Sequence[str], *, source: str | None = None) -> None:
        self.problems = list(problems)
        head = "invalid node settings" + (f" ({source})" if source else "")
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"{head}, {len(self.problems)} {noun}:\n" + "\n".join(f"  {p}" for p in self.problems))


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
            raise_problems(
                "NodeSettings",
                [problem("backend.vllm.port", f"clashes with server.port on {self.server.host}", self.server.port)],
            )
        return self


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
