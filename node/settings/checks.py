"""The value checks and field types the settings sections share, and `Section`, the base of every section.

Each check raises `ValueError` with the message the user sees (`loading` adds the path and the value);
a cross-field rule of a section raises through `raise_problems`, located at its own field.
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

MIB = 1024 * 1024

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")


def problem(field: str, message: str, got: Any) -> InitErrorDetails:
    """One error located at `field` (dotted, relative to the model raising it)."""
    return InitErrorDetails(
        type=PydanticCustomError("setting_invalid", "{message}", {"message": message}),
        loc=tuple(field.split(".")),
        input=got,
    )


def raise_problems(title: str, problems: list[InitErrorDetails]) -> None:
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
ApiKeys = Annotated[list[SecretStr], AfterValidator(_check_api_keys)]
DatabaseUrl = Annotated[str, AfterValidator(_check_sqlalchemy_url)]
Port = Annotated[int, Field(ge=1, le=65535)]
PositiveSeconds = Annotated[float, Field(gt=0)]


class Section(BaseModel):
    """A settings section: frozen, and an unknown key is an error rather than silently ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid")
