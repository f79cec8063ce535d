"""The webhook outbox and sender on the real ClickHouse engine (chDB), with real HTTP
receivers on loopback: signed deliveries without member ids, https-only, resumption
after a restart with the same Idempotency-Key, and a sender that nothing kills."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from helpers import wait_for

from scoring.alerts import AlertRecord, RuleSet, alert_id
from scoring.alerts.rules import Webhook
from sinks.clickhouse import ClickHouseSink, connect
from sinks.migrations import apply_migrations
from sinks.privacy import Pseudonymizer
from streams.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookSender,
    outbox_rows,
    verify_signature,
)

pytestmark = pytest.mark.integration

SECRET = "whsec-SECRET-5f2b9c"
ENV = {"CRM_HOOK_SECRET": SECRET, "OTHER_HOOK_SECRET": "other-SECRET"}
PSEUDONYM = Pseudonymizer(b"webhook-test-key-0123456789abcdef")
MEMBER = "member-4711@example.com"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class Receiver:
    """A real HTTP server on loopback that answers with the next of ``codes``."""

    def __init__(self, codes: list[int] | None = None) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.codes = list(codes or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers.items()), body))
                self.send_response(receiver.codes.pop(0) if receiver.codes else 204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/t0k3n-in-path"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class NotHttp:
    """A loopback server that answers garbage: http.client raises BadStatusLine."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"THIS IS NOT HTTP\r\n\r\n")
                self.accepted += 1

    def stop(self) -> None:
        self.sock.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.stop()


@pytest.fixture
def store(data_dir: Path) -> tuple[Client, str, Path]:
    """A fresh database on the session's chDB engine."""
    database = f"hooks_{uuid.uuid4().hex[:10]}"
    client = connect("", None, data_dir)
    apply_migrations(client, database)
    return client, database, data_dir


def _rules(**webhooks: dict[str, Any]) -> RuleSet:
    return RuleSet.parse(
        {
            "webhooks": {
                name: {"secret_env": "CRM_HOOK_SECRET", "allow_http": True, **hook}
                for name, hook in webhooks.items()
            },
            "rules": [
                {
                    "name": f"churn_{name}",
                    "kind": "churn_risk",
                    "severity": "critical",
                    "enter": 0.7,
                    "leave": 0.5,
                    "webhook": name,
                }
                for name in webhooks
            ],
        }
    )


def _alert(webhook: str, member: str = MEMBER) -> AlertRecord:
    rule = f"churn_{webhook}"
    return AlertRecord(
        alert_id=alert_id(rule, "member", member, T0, "fired"),
        rule=rule,
        severity="critical",
        status="fired",
        subject_type="member",
        subject_id=member,
        value=0.9,
        threshold=0.7,
        raised_at=T0,
        episode_start=T0,
        context={"annual_premium": 6000.0},
        webhook=webhook,
    )


def _write_outbox(store: tuple[Client, str, Path], rules: RuleSet, *alerts: AlertRecord) -> None:
    """As the core does: the outbox rows go through the real sink, with the alerts' batch."""
    client, database, _ = store
    sink = ClickHouseSink(client, database)
    rows = outbox_rows(list(alerts), rules, PSEUDONYM, lambda member: True)
    assert len(rows) == len(alerts)
    sink.add("webhook_outbox", rows)
    assert asyncio.run(sink.drain(10))


def _sender(store: tuple[Client, str, Path], rules: RuleSet, **kwargs: Any) -> WebhookSender:
    _, database, data_dir = store
    return WebhookSender(
        connect("", None, data_dir), database, rules, environ=ENV, poll_seconds=0.05, **kwargs
    )


def _outcomes(store: tuple[Client, str, Path], webhook: str) -> list[tuple[Any, ...]]:
    client, database, _ = store
    return [
        tuple(row)
        for row in client.query(
            f"SELECT attempt, outcome, status_code, error FROM {database}.webhook_deliveries "
            "WHERE webhook = {w:String} ORDER BY attempt",
            parameters={"w": webhook},
        ).result_rows
    ]


def test_a_delivery_is_signed_and_names_the_member_by_pseudonym(
    store: tuple[Client, str, Path], receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rules = _rules(crm={"url": receiver.url})
    alert = _alert("crm")
    _write_outbox(store, rules, alert)
    sender = _sender(store, rules).start()
    try:
        wait_for(lambda: _outcomes(store, "crm"), 30, "the delivery outcome")
    finally:
        sender.stop()
    assert _outcomes(store, "crm") == [(1, "delivered", 204, "")]
    [(headers, body)] = receiver.requests
    assert headers["Idempotency-Key"] == alert.alert_id
    assert verify_signature(
        SECRET.encode(), headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER]
    )
    assert not verify_signature(
        b"another secret", headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER]
    )
    assert MEMBER.encode() not in body
    payload = json.loads(body)
    assert payload["member_pseudonym"] == PSEUDONYM(MEMBER) and "member_id" not in payload
    assert payload["alert_id"] == alert.alert_id and payload["rule"] == "churn_crm"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert SECRET not in logged and "t0k3n-in-path" not in logged


def test_a_delivery_survives_a_restart_of_the_sender(
    store: tuple[Client, str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Outbox row written; the first sender's attempt fails (503) and it stops before
    delivering; a new sender delivers it once, with the same Idempotency-Key; a third
    sender finds nothing left to send."""
    caplog.set_level(logging.DEBUG)
    receiver = Receiver(codes=[503])
    try:
        rules = _rules(crm={"url": receiver.url, "max_attempts": 5})
        alert = _alert("crm")
        _write_outbox(store, rules, alert)
        first = _sender(store, rules).start()
        wait_for(lambda: _outcomes(store, "crm"), 30, "the first attempt")
        first.stop()
        assert _outcomes(store, "crm") == [(1, "retried", 503, "HTTP 503")]

        second = _sender(store, rules).start()
        wait_for(lambda: len(_outcomes(store, "crm")) == 2, 30, "the second attempt")
        second.stop()
        assert _outcomes(store, "crm")[1] == (2, "delivered", 204, "")
        third = _sender(store, rules)
        assert third.run_once() == 0  # nothing left: no resend after another restart
        keys = [headers["Idempotency-Key"] for headers, _ in receiver.requests]
        assert keys == [alert.alert_id, alert.alert_id]
        assert SECRET not in "\n".join(r.getMessage() for r in caplog.records)
    finally:
        receiver.stop()


def test_plain_http_is_never_used_unless_allowed(
    store: tuple[Client, str, Path], receiver: Receiver
) -> None:
    """The rules file refuses http:// without allow_http; the sender checks it again."""
    hook = Webhook.model_construct(
        url=receiver.url, secret_env="CRM_HOOK_SECRET", allow_http=False, timeout_seconds=5.0,
        max_attempts=1,
    )  # fmt: skip
    rules = _rules(crm={"url": receiver.url})
    _write_outbox(store, rules, _alert("crm"))
    forced = RuleSet.model_construct(rules=rules.rules, webhooks={"crm": hook})
    assert _sender(store, forced).run_once() == 1
    assert receiver.requests == []
    [(attempt, outcome, status, error)] = _outcomes(store, "crm")
    assert (attempt, outcome, status) == (1, "failed", 0) and "refused" in error


def test_an_http_exception_does_not_kill_the_sender(
    store: tuple[Client, str, Path], receiver: Receiver
) -> None:
    garbage = NotHttp()
    try:
        rules = _rules(broken={"url": garbage.url, "max_attempts": 2}, crm={"url": receiver.url})
        _write_outbox(store, rules, _alert("broken"), _alert("crm", member="m-2"))
        sender = _sender(store, rules).start()
        try:
            wait_for(lambda: len(_outcomes(store, "broken")) == 2, 30, "both broken attempts")
            wait_for(lambda: _outcomes(store, "crm"), 30, "the good delivery")
            assert sender.thread.is_alive()
        finally:
            sender.stop()
        assert [o[:2] for o in _outcomes(store, "broken")] == [(1, "retried"), (2, "failed")]
        assert _outcomes(store, "broken")[0][3] == "BadStatusLine"  # an http.client error
        assert _outcomes(store, "crm") == [(1, "delivered", 204, "")]
        assert garbage.accepted == 2
    finally:
        garbage.stop()


def test_the_sender_survives_clickhouse_errors(store: tuple[Client, str, Path]) -> None:
    _, _, data_dir = store
    rules = _rules(crm={"url": "https://crm.invalid/hook"})
    sender = WebhookSender(
        connect("", None, data_dir), "no_such_database", rules, environ=ENV, poll_seconds=0.05
    ).start()
    try:
        wait_for(lambda: sender.errors >= 3, 30, "three failed polls")
        assert sender.thread.is_alive()
    finally:
        sender.stop()
    assert not sender.thread.is_alive()


def test_a_missing_secret_stops_the_start(store: tuple[Client, str, Path]) -> None:
    from streams.webhooks import WebhookConfigError

    _, database, data_dir = store
    rules = _rules(crm={"url": "https://crm.invalid/hook", "secret_env": "UNSET_HOOK_SECRET"})
    with pytest.raises(WebhookConfigError, match="UNSET_HOOK_SECRET"):
        WebhookSender(connect("", None, data_dir), database, rules, environ=ENV)


def test_each_worker_sends_the_rows_of_its_partitions(
    store: tuple[Client, str, Path], receiver: Receiver
) -> None:
    """Workers sharing one ClickHouse server split the outbox by input partition."""
    client, database, _ = store
    rules = _rules(crm={"url": receiver.url})
    alerts = [_alert("crm", member=f"m-{i}") for i in range(3)]
    rows = outbox_rows(
        alerts, rules, PSEUDONYM, lambda m: True, partition_of={"m-0": 0, "m-1": 1, "m-2": 1}
    )
    sink = ClickHouseSink(client, database)
    sink.add("webhook_outbox", rows)
    assert asyncio.run(sink.drain(10))
    assert _sender(store, rules, owned=lambda: {1}).run_once() == 2
    assert sorted(h["Idempotency-Key"] for h, _ in receiver.requests) == sorted(
        a.alert_id for a in alerts[1:]
    )
    assert _sender(store, rules, owned=lambda: {0, -1}).run_once() == 1


def test_rows_waiting_for_their_back_off_do_not_hold_up_others(
    store: tuple[Client, str, Path],
) -> None:
    failing = Receiver(codes=[503])
    try:
        rules = _rules(crm={"url": failing.url, "max_attempts": 5})
        _write_outbox(store, rules, _alert("crm", member="m-first"))
        frozen = time.time()  # the sender's clock stands still: m-first is never due again
        sender = _sender(store, rules, batch=1, clock=lambda: frozen)
        assert sender.run_once() == 1  # 503: m-first waits 0.5 s before its next attempt
        _write_outbox(store, rules, _alert("crm", member="m-second"))
        assert sender.run_once() == 1  # the batch of one is m-second's, not m-first's
        keys = [h["Idempotency-Key"] for h, _ in failing.requests]
        assert keys == [_alert("crm", "m-first").alert_id, _alert("crm", "m-second").alert_id]
    finally:
        failing.stop()
