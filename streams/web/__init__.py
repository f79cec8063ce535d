"""The worker's one HTTP endpoint (FastAPI on uvicorn): ops, collector, member API, live page."""

from __future__ import annotations

from streams.web.app import create_app
from streams.web.deps import Health, WebDeps
from streams.web.server import WebServer

__all__ = ["Health", "WebDeps", "WebServer", "create_app"]
