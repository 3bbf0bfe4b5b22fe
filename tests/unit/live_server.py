"""A real uvicorn server for an ASGI app on a loopback socket, in a thread: for tests that need what only
real sockets show (disconnects, raw framing, slow clients, connection limits)."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

from wwwserve.devnet.ports import bound_socket


class LiveServer:
    """`with LiveServer(app, **uvicorn_config) as server:` serves `app` on 127.0.0.1:`server.port` until the
    block ends (started when the block begins, stopped gracefully after it)."""

    def __init__(self, app: Any, **config: Any) -> None:
        self.sock = bound_socket()  # handed to uvicorn: nothing can take the port before it listens
        self.port: int = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, **{"log_level": "critical", **config}))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
