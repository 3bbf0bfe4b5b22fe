"""Server-sent events of the user API's streams: one `data:` event, and the `[DONE]` sentinel that ends them."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

SSE_DONE = b"data: [DONE]\n\n"
"""The sentinel event that ends every OpenAI stream, after a normal end or an error event."""


def sse_event(payload: BaseModel | dict[str, Any]) -> bytes:
    """One SSE `data:` event (`b'data: {...}\\n\\n'`) carrying a model or a plain dict as compact JSON."""
    if isinstance(payload, BaseModel):
        body = payload.model_dump_json()
    else:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return b"data: " + body.encode() + b"\n\n"
