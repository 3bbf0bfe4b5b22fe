"""Reading an OpenAI-style server-sent event stream on the client side (bench/soak.py, tests/chaos).

Only the standard library: the chaos tier loads this file on its own.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any


class SSEReader:
    """The JSON events of an OpenAI-style SSE stream, in order, up to `data: [DONE]`.

    `async for event in SSEReader(resp.content)` reads the raw lines of a response body (aiohttp's
    `resp.content` yields them) and skips every line that is not a `data:` line. After the loop, `done`
    says whether the stream ended with `[DONE]`: a stream cut short ends the loop with `done` False.
    Leaving the loop early (an error event) leaves the rest of the body unread.
    """

    def __init__(self, lines: AsyncIterable[bytes]) -> None:
        self._lines: AsyncIterator[bytes] = aiter(lines)
        self.done = False

    def __aiter__(self) -> SSEReader:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if not self.done:
            async for raw in self._lines:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    self.done = True
                    break
                event: dict[str, Any] = json.loads(data)
                return event
        raise StopAsyncIteration
