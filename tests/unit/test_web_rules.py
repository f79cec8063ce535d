"""The web app's rules without I/O: body parsing, validation parity, access, CORS, OpenAPI.

The app under test is the real one (``create_app``) driven in-process through
httpx's ASGI transport, which lets a test choose the client's address (a
non-loopback client without any network).
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from factories import event
from fastapi import HTTPException
from prometheus_client import CollectorRegistry

from schemas.errors import EventRejected
from schemas.registry import decode_event
from streams.cli import main
from streams.config import Settings, SettingsError
from streams.web import Health, WebDeps, create_app
from streams.web.collector import split_body, validate
from streams.web.ops import redact

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
TOKEN = "t0ken-for-tests"
ENDPOINTS = {
    ("GET", "/metrics"),
    ("GET", "/healthz"),
    ("GET", "/status"),
    ("POST", "/query"),
    ("POST", "/v1/events"),
    ("GET", "/v1/members/{member_id}"),
    ("GET", "/v1/members"),
    ("GET", "/v1/dashboard"),
    ("GET", "/"),
    ("GET", "/static/{name}"),
}
GUARDED = [
    ("GET", "/status"),
    ("GET", "/v1/members/m-1"),
    ("GET", "/v1/members?churn_risk=high"),
    ("GET", "/v1/dashboard"),
    ("GET", "/"),
    ("GET", "/static/dashboard.js"),
    ("GET", "/openapi.json"),
    ("POST", "/query"),
    ("POST", "/v1/events"),
]


def _raw(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc).encode()


# --- body parsing ------------------------------------------------------------------
def test_split_body_keeps_each_events_exact_bytes() -> None:
    a = _raw(event("post_created", "m-1"))
    b = b'{ "event_type" : "quiz_answered",\n "x": [1, {"y": "]"}] }'
    body = b"[\n  " + a + b" ,\t" + b + b"\n]\n"
    assert split_body(body, "application/json; charset=utf-8") == [a, b]
    assert split_body(b"  " + a + b"\n", "application/json") == [a]
    assert split_body(a + b"\n\n" + b"{not json\r\n", "application/x-ndjson") == [a, b"{not json"]


@pytest.mark.parametrize(
    ("body", "content_type", "code", "words"),
    [
        (b"{}", "text/plain", 415, "unsupported content type"),
        (b"{}", "", 415, "(none)"),
        (b"{oops", "application/json", 400, "not JSON"),
        (b"\xff\xfe{}", "application/json", 400, "not UTF-8"),
        (b"[" * 5000 + b"]" * 5000, "application/json", 400, "not JSON"),
        (b"42", "application/json", 400, "expected an event object or an array"),
    ],
)
def test_split_body_refuses_bad_bodies(
    body: bytes, content_type: str, code: int, words: str
) -> None:
    with pytest.raises(HTTPException) as refused:
        split_body(body, content_type)
    assert refused.value.status_code == code and words in refused.value.detail


def test_validation_is_the_pipelines_and_parser_limits_are_invalid_json() -> None:
    settings = Settings()
    raws = [
        _raw(event("post_created", "m-1", datetime(2026, 3, 1, 10, tzinfo=UTC))),
        _raw({**event("post_created", "m-2"), "channel": "fax"}),
        b'{"event_type": "teleported"}',
        b"[1, 2]",
        b'{"event_type": "post_created", "n": ' + b"9" * 5000 + b"}",
        b'{"a": ' + b"[" * 3000 + b"]" * 3000 + b"}",
        b'{"event_type": "post_created", "pad": "' + b"x" * 70_000 + b'"}',
    ]
    checked = validate(raws, settings, NOW)
    for raw, item in zip(raws[:3], checked[:3], strict=True):
        try:
            expected: str | None = decode_event(raw, now=NOW).event_type  # type: ignore[attr-defined]
        except EventRejected as exc:
            expected = exc.reason
        got = item.event.event_type if item.event else item.rejection.reason  # type: ignore[union-attr,attr-defined]
        assert got == expected
    reasons = [c.rejection.reason if c.rejection else None for c in checked]
    assert reasons == [
        None,
        "schema_violation",
        "unknown_event_type",
        "invalid_json",
        "invalid_json",
        "invalid_json",
        "oversize",
    ]


# --- the app, in process ----------------------------------------------------------
def _unused(*args: Any) -> Any:
    raise AssertionError("not called in this test")


def _app(settings: Settings, health: Health | None = None) -> Any:
    deps = WebDeps(
        settings=settings,
        registry=CollectorRegistry(),
        status=lambda: {"pid": 1, "note": f"key {settings.pseudonym_key} token {TOKEN}"},
        health=lambda: health or Health(),
        query=lambda sql, fmt: b"1\n",
        select=lambda sql, params: [],
        pseudonym=lambda member_id: "p" * 32,
        producer_config={},
    )
    return create_app(deps)


def _call(
    app: Any, method: str, path: str, client: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(client, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://pulse") as http:
            return await http.request(
                method, path, headers=headers, content=b"SELECT 1" if method == "POST" else None
            )

    return asyncio.run(go())


@pytest.mark.parametrize(("method", "path"), GUARDED)
def test_without_a_token_only_loopback_clients_are_served(method: str, path: str) -> None:
    app = _app(Settings())
    remote = _call(app, method, path, "203.0.113.9")
    assert remote.status_code == 403, remote.text
    assert "loopback" in remote.json()["detail"]
    local = _call(app, method, path, "127.0.0.1")
    assert local.status_code not in (401, 403), local.text


@pytest.mark.parametrize(("method", "path"), GUARDED)
def test_with_a_token_every_guarded_route_needs_it(method: str, path: str) -> None:
    app = _app(Settings(api_token=TOKEN))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Token {TOKEN}"}):
        refused = _call(app, method, path, "127.0.0.1", headers)
        assert refused.status_code == 401, (headers, refused.text)
        assert refused.headers["www-authenticate"].startswith(("Bearer", "Basic"))
    bearer = _call(app, method, path, "203.0.113.9", {"Authorization": f"Bearer {TOKEN}"})
    assert bearer.status_code not in (401, 403), bearer.text
    basic = base64.b64encode(f"ops:{TOKEN}".encode()).decode()
    browser = _call(app, method, path, "203.0.113.9", {"Authorization": f"Basic {basic}"})
    assert browser.status_code not in (401, 403), browser.text


def test_the_page_asks_browsers_for_basic_auth_and_the_api_for_a_bearer_token() -> None:
    app = _app(Settings(api_token=TOKEN))
    assert _call(app, "GET", "/", "127.0.0.1").headers["www-authenticate"].startswith("Basic")
    assert (
        _call(app, "GET", "/status", "127.0.0.1").headers["www-authenticate"].startswith("Bearer")
    )


@pytest.mark.parametrize("token", ["", TOKEN])
def test_metrics_and_healthz_are_open_and_healthz_says_why(token: str) -> None:
    sick = Health(("consumer stopped: the Faust worker is not running",), {"consumer": "stopped"})
    app = _app(Settings(api_token=token), sick)
    assert _call(app, "GET", "/metrics", "203.0.113.9").status_code == 200
    health = _call(app, "GET", "/healthz", "203.0.113.9")
    assert health.status_code == 503
    assert health.json()["reasons"] == ["consumer stopped: the Faust worker is not running"]
    assert _call(_app(Settings(api_token=token)), "GET", "/healthz", "10.1.1.1").status_code == 200


def test_status_never_shows_a_secret() -> None:
    settings = Settings(api_token=TOKEN, pseudonym_key="k" * 40)
    shown = _call(
        _app(settings), "GET", "/status", "127.0.0.1", {"Authorization": f"Bearer {TOKEN}"}
    )
    assert shown.status_code == 200
    assert TOKEN not in shown.text and "k" * 40 not in shown.text
    assert shown.json()["note"] == "key <redacted> token <redacted>"
    assert redact({"x": ["a-secret-b"]}, ["secret"]) == {"x": ["a-<redacted>-b"]}
    assert TOKEN not in repr(settings)


def test_cors_only_for_configured_origins() -> None:
    app = _app(Settings(http_cors_origins="https://app.example, https://m.example"))

    async def preflight(origin: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://pulse") as http:
            return await http.options(
                "/v1/events",
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization, content-type",
                },
            )

    allowed = asyncio.run(preflight("https://m.example"))
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://m.example"
    refused = asyncio.run(preflight("https://evil.example"))
    assert "access-control-allow-origin" not in refused.headers
    plain = _app(Settings())
    off = _call(plain, "GET", "/healthz", "127.0.0.1", {"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in off.headers


def test_new_settings_are_checked() -> None:
    for env in (
        {"PULSE_HTTP_MAX_EVENTS": "0"},
        {"PULSE_HTTP_MAX_BODY_BYTES": "10"},
        {"PULSE_QUERY_MAX_EXECUTION_SECONDS": "0"},
        {"PULSE_HTTP_PRODUCE_TIMEOUT_SECONDS": "-1"},
        {"PULSE_API_TOKEN": "two words"},
    ):
        with pytest.raises(SettingsError):
            Settings.from_env(env)
    assert Settings.from_env({"PULSE_HTTP_CORS_ORIGINS": " a , ,b "}).cors_origins == ["a", "b"]


# --- OpenAPI ------------------------------------------------------------------------
def test_openapi_covers_every_route_and_is_exported_with_the_schemas(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["pulse"])
    assert main(["schemas", "export", str(tmp_path)]) == 0
    assert "openapi.json" in capsys.readouterr().out
    document = json.loads((tmp_path / "openapi.json").read_text())
    documented = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert documented == ENDPOINTS
    body = document["paths"]["/v1/events"]["post"]["requestBody"]["content"]
    assert "application/x-ndjson" in body
    event_schema = document["components"]["schemas"]["Event"]
    assert len(event_schema["oneOf"]) == len(list(tmp_path.glob("*.schema.json")))
    for path, operations in document["paths"].items():
        for operation in operations.values():
            assert operation.get("summary"), path
            assert ("security" in operation) == (path not in ("/metrics", "/healthz")), path
