"""Operations routes: ``/metrics``, ``/healthz``, ``/status`` and read-only ``POST /query``.

``/query`` runs the caller's SQL on a read-only ClickHouse client whose settings
carry ``max_execution_time``, ``max_memory_usage`` and ``max_result_rows``
(``PULSE_QUERY_MAX_*``): a runaway query ends with ClickHouse's own error within
the limit, and ``readonly=1`` refuses writes and settings changes.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.config import Settings
from streams.web.body import read_body
from streams.web.deps import WebDeps
from streams.web.models import HealthDocument, Problem

__all__ = ["ops_router", "QUERY_FORMATS", "redact", "secrets_of"]

#: ``pulse query --format`` names and the ClickHouse output formats behind them.
QUERY_FORMATS = {"table": "PrettyCompactMonoBlock", "csv": "CSVWithNames", "json": "JSONEachRow"}

#: ClickHouse errors that mean "a limit stopped the query", and the setting behind each.
_LIMIT_ERRORS = {
    "TIMEOUT_EXCEEDED": "PULSE_QUERY_MAX_EXECUTION_SECONDS",
    "MEMORY_LIMIT_EXCEEDED": "PULSE_QUERY_MAX_MEMORY_BYTES",
    "TOO_MANY_ROWS_OR_BYTES": "PULSE_QUERY_MAX_RESULT_ROWS",
}
_REDACTED = "<redacted>"


def secrets_of(settings: Settings) -> list[str]:
    """Values that must never be shown: the API token, pseudonym key, ClickHouse password."""
    values = [settings.api_token, settings.pseudonym_key]
    if settings.clickhouse_url:
        parts = urlsplit(settings.clickhouse_url)
        values.append(parts.password or "")
    return [v for v in values if v]


def redact(document: Any, secrets: Iterable[str]) -> Any:
    """``document`` with every occurrence of a secret replaced, recursively.

    >>> redact({"a": "key=abc123", "b": [1, "abc123"]}, ["abc123"])
    {'a': 'key=<redacted>', 'b': [1, '<redacted>']}
    """
    secrets = [s for s in secrets if s]
    if isinstance(document, str):
        for secret in secrets:
            document = document.replace(secret, _REDACTED)
        return document
    if isinstance(document, dict):
        return {k: redact(v, secrets) for k, v in document.items()}
    if isinstance(document, list | tuple):
        return [redact(v, secrets) for v in document]
    return document


def _query_error(exc: Exception) -> PlainTextResponse:
    message = " ".join(str(exc).split())[:2000] or type(exc).__name__
    limits = [n for n in re.findall(r"\(([A-Z_]+)\)", message) if n in _LIMIT_ERRORS]
    if limits:
        return PlainTextResponse(
            f"query stopped by a limit ({_LIMIT_ERRORS[limits[0]]}): {message}\n",
            status_code=422,
        )
    return PlainTextResponse(f"{type(exc).__name__}: {message}\n", status_code=400)


def ops_router(deps: WebDeps, guard: Callable[[Request], Awaitable[None]]) -> APIRouter:
    router = APIRouter(tags=["operations"])
    settings = deps.settings
    secrets = secrets_of(settings)

    @router.get(
        "/metrics",
        summary="Prometheus metrics (no token needed)",
        response_class=PlainTextResponse,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    )
    def metrics() -> Response:
        return Response(generate_latest(deps.registry), media_type=CONTENT_TYPE_LATEST)

    @router.get(
        "/healthz",
        summary="Liveness: 503 with the reasons when the worker cannot do its job",
        response_model=HealthDocument,
        responses={503: {"model": HealthDocument, "description": "unhealthy"}},
    )
    def healthz() -> JSONResponse:
        health = deps.health()
        document = HealthDocument(
            status="ok" if health.ok else "unhealthy",
            reasons=[redact(r, secrets) for r in health.reasons],
            checks=dict(health.checks),
        )
        return JSONResponse(document.model_dump(), status_code=200 if health.ok else 503)

    @router.get(
        "/status",
        summary="The worker's counters (never a secret)",
        dependencies=[Depends(guard)],
        response_model=dict[str, Any],
        responses={401: {"model": Problem}, 403: {"model": Problem}},
    )
    def status() -> dict[str, Any]:
        result: dict[str, Any] = redact(deps.status(), secrets)
        return result

    @router.post(
        "/query",
        summary="A read-only SQL query on Pulse's ClickHouse database, with limits",
        dependencies=[Depends(guard)],
        response_class=PlainTextResponse,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
        responses={
            200: {"content": {"text/plain": {}}, "description": "ClickHouse's formatted output"},
            400: {"content": {"text/plain": {}}, "description": "ClickHouse refused the query"},
            401: {"model": Problem},
            403: {"model": Problem},
            413: {"model": Problem},
            422: {"content": {"text/plain": {}}, "description": "a PULSE_QUERY_MAX_* limit hit"},
        },
    )
    async def query(
        request: Request,
        format: str = Query("table", pattern="^(table|csv|json)$"),  # noqa: A002
    ) -> Response:
        raw = await read_body(request, settings.http_max_body_bytes)
        sql = raw.decode("utf-8", "replace").strip()
        if not sql:
            return PlainTextResponse("empty query: send the SQL as the body\n", status_code=400)
        try:
            result = await run_in_threadpool(deps.query, sql, QUERY_FORMATS[format])
        except Exception as exc:  # ClickHouse's message is what the caller needs
            return _query_error(exc)
        return Response(result, media_type="text/plain; charset=utf-8")

    return router
