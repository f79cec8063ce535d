"""Serving the web app with uvicorn from its own thread and event loop.

The Faust worker's loop does CPU work (validation, scoring); the HTTP endpoint
must answer ``/healthz`` and the member API while it does. So uvicorn runs in a
thread of its own with its own asyncio loop; blocking work (ClickHouse reads,
``/query``) goes to that loop's thread pool. The socket is bound before the
thread starts, so a taken port fails :meth:`WebServer.start` at once and port 0
yields the real port in :attr:`WebServer.url`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import uvicorn

from schemas.errors import PulseError

__all__ = ["WebServer", "WebServerError"]


class WebServerError(PulseError):
    """The HTTP endpoint could not bind or start."""


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        raise WebServerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.setblocking(False)
    return sock


class WebServer:
    """An ASGI app served on ``host:port`` by uvicorn in a background thread."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        self._socket = _bind(host, port)
        self._config = uvicorn.Config(
            app,
            log_config=None,  # the worker's logging configuration applies
            access_log=False,  # paths may carry member ids; streams.web.app logs route templates
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(self._config)
        self._thread = threading.Thread(target=self._run, name="pulse-web", daemon=True)
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        host, port = self._socket.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._server.serve(sockets=[self._socket]))
        except BaseException as exc:  # reported to start()
            self.error = exc
        finally:
            loop.close()

    def start(self, timeout: float = 30.0) -> WebServer:
        """Start serving; return once the app's start-up ran, or raise WebServerError."""
        self._thread.start()
        waited = 0.0
        while not self._server.started:
            if not self._thread.is_alive() or waited > timeout:
                self.stop()
                raise WebServerError(f"the HTTP endpoint did not start: {self.error!r}")
            self._thread.join(0.02)
            waited += 0.02
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, finish open requests (a few seconds at most), stop the app."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._socket.close()
