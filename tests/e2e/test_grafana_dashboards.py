"""Every Grafana panel of deploy/grafana/dashboards/ shows data from a real worker.

A real Prometheus (the harness in prom_harness.py) scrapes an in-process worker
(Tansu, chDB, Faust, scorer) while the test drives what each panel watches: a
simulated community (scores, lifecycle, labels, model quality, alerts), rejects
and duplicates, a webhook delivery, a failing and recovering ClickHouse insert,
collector and API requests. Then every PromQL expression of every panel, with
Grafana's variables substituted, is run as a range query over the test: each must
return at least one series with a number. Every ClickHouse panel's SQL, with the
plugin's macros expanded, runs on the embedded engine.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from factories import event
from prom_harness import (
    ROOT,
    Server,
    WebhookReceiver,
    free_port,
    http_json,
    poll,
    prometheus,
)

from sinks.clickhouse import connect
from streams.config import Settings
from streams.producer import PulseProducer
from streams.replay import Publisher
from streams.runtime import Runtime
from streams.simulator import SimulationConfig, simulate

pytestmark = pytest.mark.e2e

DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
TIMEOUT = 120.0


# --- what the dashboards hold ------------------------------------------------------------
def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows


def targets(kind: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(dashboard file, panel title, target) for every target of a data-source kind."""
    found = []
    for path in DASHBOARDS:
        for panel in _panels(json.loads(path.read_text())):
            for target in panel.get("targets", []):
                source = target.get("datasource") or panel.get("datasource") or {}
                if kind in source.get("type", ""):
                    found.append((path.name, panel["title"], target))
    return found


def promql(expr: str) -> str:
    """A panel's expression as Prometheus runs it (Grafana's variables substituted)."""
    return (
        expr.replace("$__rate_interval", "15s")
        .replace("$__interval", "5s")
        .replace("$job", "pulse")
        .replace("$instance", ".*")
    )


def clickhouse_sql(sql: str, database: str) -> str:
    """A panel's SQL as the grafana-clickhouse-datasource plugin sends it (macros expanded
    for a wide time range), on the test's database."""
    frm, to = "toDateTime64('2000-01-01 00:00:00', 3)", "now64(3) + INTERVAL 3650 DAY"
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 >= {frm} AND \1 <= {to}", sql)
    sql = re.sub(
        r"\$__dateFilter\((\w+)\)", r"\1 >= toDate('2000-01-01') AND \1 <= today() + 3650", sql
    )
    sql = re.sub(
        r"\$__timeInterval\((\w+)\)",
        r"toStartOfInterval(toDateTime(\1), INTERVAL 3600 second)",
        sql,
    )
    sql = sql.replace("${severity:singlequote}", "'critical','warning','info'")
    assert "$" not in sql, f"an unexpanded macro in: {sql}"
    return re.sub(r"\bpulse\.", f"{database}.", sql)


def test_the_dashboards_have_targets() -> None:
    assert len(targets("prometheus")) >= 30 and len(targets("clickhouse")) >= 10


# --- the running system ------------------------------------------------------------------
def _rules_with_webhook(tmp_path: Path, url: str) -> Path:
    """The shipped rules, with community_engagement_drop posting to ``url`` (the
    community's alert: it is computed over every partition, whichever worker owns it)."""
    shipped = (ROOT / "scoring" / "alerts" / "default_rules.toml").read_text()
    rule = 'name = "community_engagement_drop"\n'
    text = shipped.replace(rule, rule + 'webhook = "test"\n')
    assert text != shipped
    path = tmp_path / "rules.toml"
    path.write_text(
        f'{text}\n[webhooks.test]\nurl = "{url}/crm"\n'
        'secret_env = "PULSE_TEST_GRAFANA_SECRET"\nallow_http = true  # a loopback receiver\n'
    )
    return path


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def worker(
    settings: Settings,
    tmp_path: Path,
    webhook: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Runtime]:
    monkeypatch.setenv("PULSE_TEST_GRAFANA_SECRET", "grafana-test-secret-0123456789")
    s = settings.with_(
        metrics_port=free_port(),
        alert_rules=str(_rules_with_webhook(tmp_path, webhook.url)),
        sink_retry_max_seconds=0.5,
        checkpoint_seconds=0.5,
    )
    runtime = Runtime(s, announce=False).start()
    try:
        yield runtime
    finally:
        runtime.stop()


@pytest.fixture
def prom(tmp_path: Path, worker: Runtime) -> Iterator[Server]:
    assert worker.http is not None
    target = urllib.parse.urlsplit(worker.http.url).netloc
    server = prometheus(tmp_path / "prometheus", target, f"127.0.0.1:{free_port()}")
    try:
        yield server.start()
    finally:
        server.stop()


def _drive(worker: Runtime, webhook: WebhookReceiver) -> None:
    s = worker.settings
    db = s.clickhouse_database
    start = datetime.now(UTC) - timedelta(days=75)
    community = list(simulate(SimulationConfig(members=150, days=70, seed=11, start=start)))
    publisher = Publisher(worker.bootstrap, s.topic_prefix)
    report = publisher.publish_events(community)
    producer = PulseProducer(worker.bootstrap, topic_prefix=s.topic_prefix)
    for doc in community[:50]:  # duplicates: same event ids again
        producer.send(doc)
    for i in range(20):  # rejects
        producer.send_raw(s.topic("interactions"), f"bad-{i}".encode(), b"{not json")
    producer.flush()
    targets = dict(report.last_offsets)
    poll(lambda: worker.stored_through(targets), TIMEOUT, "the community to be stored")
    poll(lambda: webhook.notifications(), TIMEOUT, "a webhook delivery")

    # ClickHouse refuses inserts for a while, then recovers: errors and retries.
    admin = connect("", None, s.data_path)
    admin.command(f"DETACH TABLE {db}.failed_events")
    try:
        producer.send_raw(s.topic("interactions"), b"bad-x", b"{still not json")
        producer.flush()
        registry = worker.metrics.registry
        poll(
            lambda: (registry.get_sample_value("pulse_sink_retries_total") or 0) >= 3,
            TIMEOUT,
            "failed inserts retried",
        )
    finally:
        admin.command(f"ATTACH TABLE {db}.failed_events")
    poll(worker.settled, TIMEOUT, "the worker to store everything after recovery")

    # The HTTP endpoint: collector and member API traffic.
    assert worker.http is not None
    base = worker.http.url
    body = json.dumps(event("post_created", "m-http", datetime.now(UTC))).encode()
    request = urllib.request.Request(
        base + "/v1/events", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        assert response.status == 200
    member = community[0]["member_id"]
    with urllib.request.urlopen(f"{base}/v1/members/{member}", timeout=30) as response:  # noqa: S310
        assert response.status == 200


def test_every_panel_returns_data(worker: Runtime, prom: Server, webhook: WebhookReceiver) -> None:
    started = time.time()
    poll(
        lambda: http_json(prom.url + "/api/v1/query?query=up")["data"]["result"],
        TIMEOUT,
        "Prometheus to scrape the worker",
    )
    _drive(worker, webhook)
    driven = time.time()

    def scraped_since_drive() -> bool:
        result = http_json(prom.url + "/api/v1/query?query=timestamp(up)")["data"]["result"]
        return bool(result) and float(result[0]["value"][1]) > driven + 2

    poll(scraped_since_drive, TIMEOUT, "Prometheus to scrape the final counters")

    # Template variables resolve.
    jobs = http_json(prom.url + "/api/v1/label/job/values?match[]=pulse_events_received_total")[
        "data"
    ]
    assert jobs == ["pulse"]

    empty: list[str] = []
    for name, title, target in targets("prometheus"):
        query = urllib.parse.urlencode(
            {
                "query": promql(target["expr"]),
                "start": f"{started:.3f}",
                "end": f"{time.time():.3f}",
                "step": "1",
            }
        )
        answer = http_json(f"{prom.url}/api/v1/query_range?{query}")
        assert answer["status"] == "success", (name, title, answer)
        values = [
            float(v)
            for series in answer["data"]["result"]
            for _, v in series["values"]
            if v not in ("NaN", "+Inf", "-Inf")
        ]
        if not values:
            empty.append(f"{name} / {title} / {target['refId']}: {target['expr']}")
    assert not empty, "panels without data:\n" + "\n".join(empty)

    reader = connect(
        "", worker.settings.clickhouse_database, worker.settings.data_path, readonly=True
    )
    for name, title, target in targets("clickhouse"):
        sql = clickhouse_sql(target["rawSql"], worker.settings.clickhouse_database)
        try:
            reader.query(sql)
        except Exception as exc:
            raise AssertionError(f"{name} / {title}: {exc}\n{sql}") from None
