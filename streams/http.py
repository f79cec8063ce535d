"""The worker's HTTP endpoint: ``/metrics`` for Prometheus, ``/status``, and read-only ``/query``.

chDB lets one process own a data directory, so while a worker runs,
``pulse query`` from another terminal sends its SQL here and the worker runs
it on a read-only client (``readonly=1``: ClickHouse itself refuses writes).
Binds to loopback by default.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["PulseHTTPServer", "QUERY_FORMATS"]

log = logging.getLogger(__name__)

#: ``pulse query --format`` names and the ClickHouse output formats behind them.
QUERY_FORMATS = {"table": "PrettyCompactMonoBlock", "csv": "CSVWithNames", "json": "JSONEachRow"}

QueryRunner = Callable[[str, str], bytes]


class PulseHTTPServer:
    """Serves metrics, status and read-only queries from a background thread."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        status: Callable[[], dict[str, Any]],
        query: QueryRunner | None,
    ) -> None:
        handler = _handler(registry, status, query)
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="pulse-http", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        return f"http://{name}:{port}"

    def start(self) -> PulseHTTPServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(
    registry: CollectorRegistry,
    status: Callable[[], dict[str, Any]],
    query: QueryRunner | None,
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("http: " + format, *args)

        def _send(self, code: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            path = urlparse(self.path).path
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/status", "/healthz"):
                self._send(200, json.dumps(status(), default=str).encode(), "application/json")
            else:
                self._send(404, b"not found: try /metrics, /status or POST /query\n")

        def do_POST(self) -> None:  # noqa: N802
            parsed = urlparse(self.path)
            if parsed.path != "/query" or query is None:
                self._send(404, b"not found\n")
                return
            fmt = parse_qs(parsed.query).get("format", ["table"])[0]
            if fmt not in QUERY_FORMATS:
                self._send(400, f"unknown format {fmt!r}\n".encode())
                return
            length = int(self.headers.get("Content-Length", "0"))
            sql = self.rfile.read(length).decode("utf-8", "replace")
            try:
                self._send(200, query(sql, QUERY_FORMATS[fmt]))
            except Exception as exc:  # the client shows ClickHouse's message
                self._send(400, f"{type(exc).__name__}: {exc}\n".encode())

    return Handler
