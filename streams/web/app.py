"""The web app: one FastAPI application for every HTTP concern of a worker.

``create_app(deps)`` wires the routers (operations, collector, members, live page)
around one access rule (:mod:`streams.web.auth`): ``/metrics`` and ``/healthz``
are open, everything else needs the API token, or a loopback client when no token
is set. A small ASGI middleware counts requests and logs them by route template,
never by path (a path may carry a member id). CORS is off unless
``PULSE_HTTP_CORS_ORIGINS`` names origins. The OpenAPI document is served to
authorised callers at ``/openapi.json`` and exported by ``pulse schemas export``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.envelope import SCHEMA_VERSION
from schemas.registry import EVENT_ADAPTER
from streams.metrics import HttpMetrics
from streams.web.auth import access
from streams.web.collector import KafkaSender, collector_router
from streams.web.dashboard import DashboardSource, RegistrySampler, dashboard_router
from streams.web.deps import WebDeps
from streams.web.members import members_router
from streams.web.ops import ops_router

__all__ = ["create_app", "API_VERSION"]

log = logging.getLogger("streams.web")

API_VERSION = "1.0"


class _Observe:
    """Counts and times requests by route template; logs them at debug level."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def observe(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            route = getattr(scope.get("route"), "path", None) or "(unmatched)"
            elapsed = time.perf_counter() - started
            self.metrics.requests.labels(route, scope["method"], str(status["code"])).inc()
            self.metrics.duration.labels(route).observe(elapsed)
            log.debug("%s %s %s %.1fms", scope["method"], route, status["code"], elapsed * 1e3)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the event schemas the collector's body refers to."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        events = EVENT_ADAPTER.json_schema(ref_template="#/components/schemas/{model}")
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(events.pop("$defs", {}))
        schemas["Event"] = events
        document["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "PULSE_API_TOKEN"},
            "basic": {
                "type": "http",
                "scheme": "basic",
                "description": "any user name, PULSE_API_TOKEN as the password (browsers)",
            },
        }
        open_paths = {"/metrics", "/healthz"}
        for path, operations in document["paths"].items():
            if path not in open_paths:
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}, {"basic": []}]
        app.openapi_schema = document
    return app.openapi_schema


def create_app(deps: WebDeps) -> FastAPI:
    """The worker's web app; start-up opens the collector's producer and the sampler."""
    settings = deps.settings
    metrics = HttpMetrics(deps.registry)
    sampler = RegistrySampler(deps.registry)
    sender: dict[str, KafkaSender | None] = {"kafka": None}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sender["kafka"] = KafkaSender(
            deps.producer_config,
            timeout=settings.http_produce_timeout_seconds,
            max_message_bytes=settings.http_max_body_bytes + 65536,
        )
        sampling = asyncio.create_task(sampler.run())
        try:
            yield
        finally:
            sampling.cancel()
            with suppress(asyncio.CancelledError):
                await sampling
            kafka, sender["kafka"] = sender["kafka"], None
            if kafka is not None:
                await run_in_threadpool(kafka.close)

    app = FastAPI(
        title="Community Pulse",
        version=API_VERSION,
        description=(
            "The HTTP API of a Pulse worker: an event collector, member scores, the live "
            f"community page and operations endpoints. Event schemas: version {SCHEMA_VERSION}."
        ),
        lifespan=lifespan,
        docs_url=None,  # the interactive docs load assets from a CDN: not without internet
        redoc_url=None,
        openapi_url=None,  # served below, behind the token
    )
    api_guard = access(settings.api_token, "Bearer")
    page_guard = access(settings.api_token, "Basic")

    app.include_router(ops_router(deps, api_guard))
    app.include_router(collector_router(settings, lambda: sender["kafka"], metrics, api_guard))
    app.include_router(members_router(deps, api_guard))
    source = DashboardSource(deps.select, settings.clickhouse_database, sampler)
    app.include_router(dashboard_router(deps, source, page_guard, api_guard))

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(api_guard)])
    def openapi() -> JSONResponse:
        return JSONResponse(_openapi(app))

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Retry-After"],
            max_age=600,
        )
    app.add_middleware(_Observe, metrics=metrics)
    return app
