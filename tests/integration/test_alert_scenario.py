"""Acceptance: a high-premium member goes silent, then returns; replaying it adds nothing.

The churn alert goes to a webhook through the outbox: signed, once, naming the member
by pseudonym; a member who withdrew marketing consent fires the same alert, which is
stored but not sent."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from factories import event
from helpers import consume_all, wait_for

from scoring.alerts import default_rules
from sinks.clickhouse import connect
from streams.config import Settings
from streams.producer import PulseProducer
from streams.runtime import Runtime
from streams.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature

pytestmark = pytest.mark.integration

START = datetime(2026, 1, 5, tzinfo=UTC)
VIPS = ("vip", "quiet")
SECRET = "crm-hook-SECRET-31415"


def _scenario() -> list[dict[str, object]]:
    """20 regular members keep every partition's clock moving; `vip` (6,000 CNY a year)
    is active for 30 days, silent for 45, then comes back; `quiet` does the same but
    withdrew marketing consent on day 2 (analytics consent stays)."""
    events: list[dict[str, object]] = []
    for d in range(90):
        day = START + timedelta(days=d)
        for j in range(20):
            events.append(event("content_viewed", f"f-{j}", day + timedelta(hours=j % 10)))
        if d < 30 or d >= 75:
            for vip in VIPS:
                events.append(event("post_created", vip, day + timedelta(hours=11)))
    for vip in VIPS:
        events.append(event("policy_purchased", vip, START + timedelta(hours=12), premium=6000.0))
    no_marketing = {"marketing": False, "analytics": True}
    events.append(event("consent_changed", "quiet", START + timedelta(days=2), **no_marketing))
    events.sort(key=lambda e: str(e["occurred_at"]))
    return events


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, object]]] = []
    signed: list[bool] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.headers["Idempotency-Key"], json.loads(body)))
        self.signed.append(
            verify_signature(
                SECRET.encode(),
                self.headers[TIMESTAMP_HEADER],
                body,
                self.headers[SIGNATURE_HEADER],
            )
            and b"vip" not in body
            and b"quiet" not in body
        )
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_silent_premium_member_fires_once_and_resolves_once(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PULSE_TEST_CRM_SECRET", SECRET)
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    defaults = (Path(default_rules.__code__.co_filename).parent / "default_rules.toml").read_text()
    rules = tmp_path / "rules.toml"
    rules.write_text(
        f'[webhooks.crm]\nurl = "http://127.0.0.1:{receiver.server_address[1]}/alerts"\n'
        'secret_env = "PULSE_TEST_CRM_SECRET"\nallow_http = true  # a loopback receiver\n\n'
        + defaults.replace(
            'name = "churn_risk_premium"', 'name = "churn_risk_premium"\nwebhook = "crm"'
        )
    )
    settings = settings.with_(alert_rules=str(rules))
    scenario = _scenario()
    runtime = Runtime(settings, serve_http=False, announce=False).start()
    try:
        producer = PulseProducer(settings.kafka_bootstrap, topic_prefix=settings.topic_prefix)
        registry = runtime.metrics.registry
        labels = {"rule": "churn_risk_premium", "severity": "critical"}

        def alert_counts() -> tuple[float | None, float | None]:
            return (
                registry.get_sample_value("pulse_alerts_fired_total", labels),
                registry.get_sample_value("pulse_alerts_resolved_total", labels),
            )

        for replay in (1, 2):
            for doc in scenario:
                producer.send(doc)
            producer.flush()
            wait_for(
                lambda n=replay: (
                    runtime.status()["processed"] == n * len(scenario) and runtime.settled()
                ),
                120,
                f"replay {replay} stored",
            )
            # The lone purchase holds its partition's event-time clock back until that input
            # is idle; the worker's clock tick then moves it on and the silence is seen.
            wait_for(lambda: alert_counts() == (2.0, 2.0), 60, "one fire and resolve each")
        assert runtime.status()["duplicates"] == len(scenario)
        wait_for(lambda: len(_Receiver.received) >= 1, 30, "the webhook delivery")
    finally:
        runtime.stop()
        receiver.shutdown()

    vip = runtime.pseudonym("vip")
    client = connect("", settings.clickhouse_database, settings.data_path)
    rows = client.query(
        "SELECT status, count(), uniqExact(alert_id), min(raised_at) FROM alerts "
        "WHERE rule = 'churn_risk_premium' AND subject_id = {s:String} GROUP BY status",
        parameters={"s": vip},
    ).result_rows
    by_status = {r[0]: r[1:] for r in rows}
    assert by_status["fired"][:2] == (1, 1) and by_status["resolved"][:2] == (1, 1)
    assert by_status["fired"][2] < by_status["resolved"][2]  # event time: fired, then resolved
    assert (
        START + timedelta(days=30)
        < by_status["fired"][2].replace(tzinfo=UTC)
        < START + timedelta(days=75)
    )
    assert (
        client.query("SELECT count() FROM alerts WHERE subject_id = 'vip'").result_rows[0][0] == 0
    )

    on_topic = consume_all(settings.kafka_bootstrap, settings.topic("alerts"), expect=1)
    mine = [json.loads(m.value()) for m in on_topic if m.key() == b"vip"]  # type: ignore[attr-defined]
    churn = [a for a in mine if a["rule"] == "churn_risk_premium"]
    assert sorted(a["status"] for a in churn) == ["fired", "resolved"]

    assert len(_Receiver.received) == 1  # only fires are delivered, once
    key, payload = _Receiver.received[0]
    assert (
        key == payload["alert_id"] == next(a["alert_id"] for a in churn if a["status"] == "fired")
    )
    assert payload["member_pseudonym"] == vip
    assert _Receiver.signed == [True]  # signature verifies; no member id in the body

    # the system of record: the outbox holds vip's fire only, delivered once; `quiet`
    # (marketing consent withdrawn) fired the same alert, stored but never queued
    quiet = runtime.pseudonym("quiet")
    fired = dict(
        client.query(
            "SELECT subject_id, count() FROM alerts WHERE rule = 'churn_risk_premium' "
            "AND status = 'fired' GROUP BY subject_id"
        ).result_rows
    )
    assert fired == {vip: 1, quiet: 1}
    outbox = client.query("SELECT subject_id, alert_id FROM webhook_outbox FINAL").result_rows
    assert outbox == [(vip, key)]
    deliveries = client.query("SELECT alert_id, outcome FROM webhook_deliveries").result_rows
    assert deliveries == [(key, "delivered")]
