"""Alerting end to end: worker /metrics -> real Prometheus -> real Alertmanager -> webhook.

An in-process Pulse worker (real Tansu broker, real chDB) serves /metrics on loopback.
A real Prometheus scrapes it every second (job `pulse`) and evaluates the deploy rules
(expr and labels as shipped, `for: 0s`, no `keep_firing_for`), sending to a real
Alertmanager whose config is deploy/alertmanager/alertmanager.yml with its webhook
URLs pointed at a local receiver and its group/repeat timings at 1s (routes and
inhibitions as shipped).

Two alerts are driven into firing and must reach the right webhook path with the
right team: the pipeline alert PulseDeadLetterRateHigh (team=ops, from real invalid
messages on Kafka) and the business alert PulseCommunityEngagementDropping
(team=marketing). Every process is stopped by PID in fixture teardown.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from factories import event
from prom_harness import (
    Server,
    WebhookReceiver,
    alertmanager,
    firing_in_prometheus,
    free_port,
    http_json,
    poll,
    prometheus,
)

from streams.config import Settings
from streams.producer import PulseProducer
from streams.runtime import Runtime

pytestmark = pytest.mark.e2e

TIMEOUT = 90.0
PIPELINE_ALERT = "PulseDeadLetterRateHigh"
BUSINESS_ALERT = "PulseCommunityEngagementDropping"
COMMUNITY_RULE = "community_engagement_drop"
# Alerts that would inhibit every marketing alert (deploy/alertmanager/alertmanager.yml).
INHIBITORS = ("PulseWorkerDown", "PulseSinkFailing")


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    s = settings.with_(metrics_port=free_port(), metrics_host="127.0.0.1")
    rt = Runtime(s, announce=False)
    try:
        rt.start()
        assert rt.http is not None
        # One stored event before Prometheus starts scraping: a sink that has never
        # flushed while rows wait (backlog > 0, last success 0) is what PulseSinkFailing
        # looks for, and with `for: 0s` it would briefly inhibit the marketing alerts.
        producer = PulseProducer(rt.bootstrap, topic_prefix=s.topic_prefix)
        producer.send(event("post_created", "m-warmup", datetime.now(UTC) - timedelta(days=30)))
        producer.flush()
        poll(
            lambda: (
                (
                    rt.metrics.registry.get_sample_value(
                        "pulse_sink_last_success_timestamp_seconds"
                    )
                    or 0
                )
                > 0
            ),
            TIMEOUT,
            "the worker's first successful ClickHouse flush",
        )
        yield rt
    finally:
        rt.stop()


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def am(tmp_path: Path, webhook: WebhookReceiver) -> Iterator[Server]:
    server = alertmanager(tmp_path / "alertmanager", webhook.url)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def prom(tmp_path: Path, runtime: Runtime, am: Server) -> Iterator[Server]:
    assert runtime.http is not None
    target = urllib.parse.urlsplit(runtime.http.url).netloc
    server = prometheus(tmp_path / "prometheus", target, am.address)
    try:
        yield server.start()
    finally:
        server.stop()


# --- driving the alerts --------------------------------------------------------------


def _dead_letter_burst(producer: PulseProducer, settings: Settings, n: int = 20) -> None:
    """``n`` undecodable messages and ``n`` valid events on the interactions topic."""
    now = datetime.now(UTC)
    for i in range(n):
        producer.send_raw(settings.topic("interactions"), f"bad-{i}".encode(), b"{not json")
        producer.send(event("post_created", f"m-{i:03d}", now))
    producer.flush()


def _drive_community_rule(runtime: Runtime, producer: PulseProducer) -> str:
    """Make the worker report an active community_* rule; returns how it was done."""
    assert runtime.pipeline is not None, "the worker runs without its pipeline"
    if True:  # noqa: SIM108
        # The worker's alert engine exists: a community with 14 days of steady
        # engagement (15 members posting daily), then days with ~10% of it (the default
        # rule fires at 30% below a >= 7-day baseline), published through Kafka like
        # real traffic; the later days move event time past the low day.
        start = datetime.now(UTC) - timedelta(days=20)
        for day in range(18):
            for member in range(15):
                when = start + timedelta(days=day, hours=8 + member % 8)
                if day < 14:  # two weeks of a lively community: 5 posts a member a day
                    for k in range(5):
                        doc = event(
                            "post_created",
                            f"cm-{member:02d}",
                            when + timedelta(minutes=k),
                            community_id="c-drop",
                        )
                        producer.send(doc)
                else:  # then only newcomers who glance at one article a day
                    doc = event("content_viewed", f"nc-{member:02d}", when, community_id="c-drop")
                    producer.send(doc)
        producer.flush()

        def community_rule_reported() -> bool:
            samples = [
                s
                for metric in runtime.metrics.registry.collect()
                if metric.name in ("pulse_alerts_active", "pulse_alerts_fired")
                for s in metric.samples
                if s.name in ("pulse_alerts_active", "pulse_alerts_fired_total")
                and s.labels.get("rule", "").startswith("community_")
                and s.value > 0
            ]
            return bool(samples)

        poll(community_rule_reported, TIMEOUT, "the alert engine to report a community_* rule")
        return "scenario through Kafka"


# --- the test ------------------------------------------------------------------------


def test_pipeline_and_business_alerts_reach_their_webhooks(
    runtime: Runtime, prom: Server, am: Server, webhook: WebhookReceiver
) -> None:
    settings = runtime.settings
    producer = PulseProducer(runtime.bootstrap, topic_prefix=settings.topic_prefix)

    # Prometheus scrapes the worker before anything is driven.
    poll(
        lambda: any(
            t["labels"].get("job") == "pulse" and t["health"] == "up" for t in _targets(prom)
        ),
        TIMEOUT,
        "Prometheus to scrape the worker (job pulse, health up)",
    )

    how = _drive_community_rule(runtime, producer)

    # Bursts of invalid + valid messages, at most one a second, until the rate rule
    # (which needs >= 2 scrapes inside its 5m window) fires in Prometheus.
    last_burst = [0.0]

    def dead_letter_alert_firing() -> list[dict[str, Any]]:
        if time.monotonic() - last_burst[0] >= 1.0:
            _dead_letter_burst(producer, settings)
            last_burst[0] = time.monotonic()
        return firing_in_prometheus(prom, PIPELINE_ALERT)

    fired = poll(dead_letter_alert_firing, TIMEOUT, f"{PIPELINE_ALERT} firing in Prometheus")
    assert {a["labels"]["team"] for a in fired} == {"ops"}
    assert {a["labels"]["topic"] for a in fired} == {settings.topic("interactions")}

    fired = poll(
        lambda: firing_in_prometheus(prom, BUSINESS_ALERT),
        TIMEOUT,
        f"{BUSINESS_ALERT} firing in Prometheus ({how})",
    )
    assert {a["labels"]["team"] for a in fired} == {"marketing"}
    assert {a["labels"]["rule"] for a in fired} == {COMMUNITY_RULE}

    # Alertmanager routes each to its team's webhook path (ops: /alerts,
    # marketing: /marketing, as in deploy/alertmanager/alertmanager.yml).
    ops = poll(
        lambda: webhook.firing(PIPELINE_ALERT),
        TIMEOUT,
        f"a webhook notification of {PIPELINE_ALERT}",
    )
    marketing = poll(
        lambda: webhook.firing(BUSINESS_ALERT),
        TIMEOUT,
        f"a webhook notification of {BUSINESS_ALERT} (not inhibited)",
    )
    assert {(path, a["labels"]["team"]) for path, a in ops} == {("/alerts", "ops")}
    assert {(path, a["labels"]["team"]) for path, a in marketing} == {("/marketing", "marketing")}
    assert all(a["labels"]["severity"] == "warning" for _, a in [*ops, *marketing])

    # The worker is up and its sink healthy: nothing that would inhibit marketing fires.
    for name in INHIBITORS:
        assert not firing_in_prometheus(prom, name), f"{name} is firing in Prometheus"
        assert not webhook.firing(name), f"{name} reached the webhook"


def _targets(prom: Server) -> list[dict[str, Any]]:
    doc = http_json(prom.url + "/api/v1/targets")
    targets: list[dict[str, Any]] = doc["data"]["activeTargets"]
    return targets
