"""The HTTP endpoint of a real worker: Tansu broker, chDB, Faust, uvicorn on loopback.

Every check reads the system of record: messages on the broker (keys, bytes,
dead-letter headers), rows in ClickHouse, samples of the worker's registry.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from factories import event
from helpers import consume_all, wait_for
from prometheus_client import CollectorRegistry

from sinks.clickhouse import connect
from streams.config import Settings
from streams.producer import PulseProducer
from streams.runtime import Runtime
from streams.task import PartitionTask
from streams.web import WebServer, create_app
from streams.web.models import MemberScore
from streams.web.wiring import web_deps

pytestmark = pytest.mark.integration

TOKEN = "integration-token-5b1f"
KEY = "pseudonym-key-for-web-tests-0000"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def call(
    base: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(base + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, _lower(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, _lower(exc.headers), exc.read()


def post_events(base: str, body: bytes, content_type: str = "application/json") -> Any:
    return call(base, "POST", "/v1/events", body, {"Content-Type": content_type, **AUTH})


def recent(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


@pytest.fixture
def worker(settings: Settings) -> Iterator[Runtime]:
    s = settings.with_(
        api_token=TOKEN,
        pseudonym_key=KEY,
        query_max_execution_seconds=1.0,
        query_max_result_rows=5,
        http_max_body_bytes=4096,
        http_max_events=4,
        checkpoint_seconds=0.5,
    )
    runtime = Runtime(s, announce=False).start()
    try:
        yield runtime
    finally:
        runtime.stop()


def test_collector_validates_produces_and_dead_letters(worker: Runtime) -> None:
    s = worker.settings
    assert worker.http is not None
    base = worker.http.url
    post = event("post_created", "m-web-a", recent(2))
    purchase = event("policy_purchased", "m-web-b", recent(1))
    elements = [
        json.dumps(post).encode(),
        json.dumps(purchase).encode(),
        json.dumps({**event("post_created", "m-web-c", recent(1)), "channel": "fax"}).encode(),
        b"[1]",
    ]
    code, _, raw = post_events(base, b"[" + b",\n ".join(elements) + b"]")
    assert code == 207, raw
    answer = json.loads(raw)
    assert (answer["accepted"], answer["rejected"]) == (2, 2)
    results = answer["results"]
    assert [r["status"] for r in results] == ["accepted", "accepted", "rejected", "rejected"]
    assert results[0]["topic"] == s.topic("interactions")
    assert results[1]["topic"] == s.topic("purchases")
    assert results[2]["reason"] == "schema_violation" and "channel" in results[2]["detail"]
    assert results[3]["reason"] == "invalid_json"

    # On the broker: each accepted event, byte for byte, keyed by its member id.
    for element, result, member in zip(elements, results, ("m-web-a", "m-web-b"), strict=False):
        messages = consume_all(s.kafka_bootstrap, result["topic"], expect=1, settle=1.0)
        assert [(m.key(), m.value()) for m in messages] == [(member.encode(), element)]  # type: ignore[attr-defined]
        assert messages[0].partition() == result["partition"]  # type: ignore[attr-defined]
        assert messages[0].offset() == result["offset"]  # type: ignore[attr-defined]
    # The rejects on the dead-letter topic, with the pipeline's headers.
    dead = consume_all(s.kafka_bootstrap, s.topic("dead-letter"), expect=2, settle=1.0)
    # on two partitions of the topic: no order between them
    assert sorted(m.value() for m in dead) == sorted(elements[2:])  # type: ignore[attr-defined]
    first = next(m for m in dead if m.value() == elements[2])  # type: ignore[attr-defined]
    headers = dict(first.headers())
    assert headers == {
        "pulse.source.topic": b"http",
        "pulse.source.partition": b"-1",
        "pulse.source.offset": b"-1",
        "pulse.error.class": b"SchemaViolation",
        "pulse.error.reason": b"schema_violation",
        "pulse.error.detail": results[2]["detail"].encode(),
    }
    # NDJSON, all accepted: 200.
    line = event("quiz_answered", "m-web-a", recent(0.5))
    code, _, raw = post_events(base, json.dumps(line).encode() + b"\n", "application/x-ndjson")
    assert code == 200 and json.loads(raw)["accepted"] == 1

    # The worker consumed them: three events stored in ClickHouse.
    reader = connect("", s.clickhouse_database, s.data_path)
    ids = [post["event_id"], purchase["event_id"], line["event_id"]]
    stored = "SELECT count() FROM events WHERE event_id IN {ids:Array(UUID)}"
    wait_for(
        lambda: reader.query(stored, parameters={"ids": ids}).result_rows[0][0] == 3,
        60,
        "the collected events to be stored",
    )
    registry = worker.metrics.registry
    assert (
        registry.get_sample_value(
            "pulse_collector_events_total", {"outcome": "accepted", "reason": "none"}
        )
        == 3
    )
    assert (
        registry.get_sample_value(
            "pulse_collector_events_total", {"outcome": "rejected", "reason": "invalid_json"}
        )
        == 1
    )

    # Bad requests: a clear 4xx each, and nothing produced.
    one = json.dumps(event("post_created", "m-web-z", recent(1))).encode()
    refused = [
        (post_events(base, one, "text/plain"), 415, "unsupported content type"),
        (post_events(base, b"  \n"), 400, "empty body"),
        (post_events(base, b"{not json"), 400, "not JSON"),
        (post_events(base, b"[]"), 400, "no events"),
        (post_events(base, b'"hello"'), 400, "expected an event object"),
        (post_events(base, b"[" + b",".join([one] * 5) + b"]"), 413, "5 events exceed"),
        (post_events(base, b"[" + b" " * 5000 + one + b"]"), 413, "exceeds the limit"),
        (call(base, "POST", "/v1/events", one, {"Content-Type": "application/json"}), 401, "token"),
    ]
    for (code, _, raw), expected, words in refused:
        assert code == expected and words in json.loads(raw)["detail"], (expected, raw)
    assert len(consume_all(s.kafka_bootstrap, s.topic("dead-letter"), expect=2, settle=1.0)) == 2


def test_member_api_serves_latest_scores_never_ids_in_clear(
    worker: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="streams.web")
    s = worker.settings
    assert worker.http is not None
    base = worker.http.url
    members = [f"m-api-{i}" for i in range(6)]
    producer = PulseProducer(s.kafka_bootstrap, topic_prefix=s.topic_prefix)
    for i, member in enumerate(members):
        producer.send(event("member_joined", member, recent(20)))
        for day in range(i):
            producer.send(event("post_created", member, recent(10 - day)))
        if i % 2:
            producer.send(event("policy_purchased", member, recent(5), premium=1000.0 * i))
    producer.flush()
    reader = connect("", s.clickhouse_database, s.data_path)
    wait_for(
        lambda: (
            reader.query("SELECT uniqExact(member_id) FROM member_scores").result_rows[0][0]
            == len(members)
        ),
        60,
        "every member scored",
    )

    code, _, raw = call(base, "GET", "/v1/members/m-api-3", headers=AUTH)
    assert code == 200, raw
    served = json.loads(raw)
    pseudonym = worker.pseudonym("m-api-3")
    row = reader.query(
        "SELECT churn_probability, engagement_tier, lifecycle_stage, model_version, "
        "toUnixTimestamp64Milli(scored_at) "
        "FROM member_scores WHERE member_id = {p:String} ORDER BY version DESC LIMIT 1",
        parameters={"p": pseudonym},
    ).result_rows[0]
    assert served["member_id"] == "m-api-3" and served["pseudonym"] == pseudonym
    # the worker owns every partition here: its own state answers, as ClickHouse has it
    assert served["source"] == "worker"
    assert served["churn_probability"] == pytest.approx(row[0], abs=1e-6)
    assert (served["engagement_tier"], served["lifecycle_stage"], served["model_version"]) == row[
        1:4
    ]
    assert served["annual_premium"] == 3000.0 and served["active_policies"] == 1
    as_of = datetime.fromisoformat(served["as_of"])
    assert round(as_of.timestamp() * 1000) == row[4]  # the latest version's event time

    code, _, raw = call(base, "GET", "/v1/members/m-never-seen", headers=AUTH)
    assert code == 404 and json.loads(raw)["detail"] == "no scores for this member"
    assert call(base, "GET", "/v1/members/m-api-3")[0] == 401

    # The call list: by churn probability, then premium; filtered by band; by pseudonym.
    code, _, raw = call(base, "GET", "/v1/members?limit=100", headers=AUTH)
    listed = json.loads(raw)["members"]
    assert code == 200 and len(listed) == len(members)
    order = [(-m["churn_probability"], -m["annual_premium"]) for m in listed]
    assert order == sorted(order)
    assert {m["pseudonym"] for m in listed} == {worker.pseudonym(m) for m in members}
    low = json.loads(call(base, "GET", "/v1/members?churn_risk=low&limit=2", headers=AUTH)[2])
    assert len(low["members"]) <= 2 and all(m["churn_risk"] == "low" for m in low["members"])
    assert call(base, "GET", "/v1/members?churn_risk=extreme", headers=AUTH)[0] == 422

    # The injected callables: the worker's own state first; suppressed members never.
    local = {
        **reader.query(
            "SELECT * FROM member_scores WHERE member_id = {p:String} LIMIT 1",
            parameters={"p": pseudonym},
        )
        .named_results()
        .__next__(),
        "model_version": "from-worker-state",
    }
    deps = web_deps(
        worker,
        local_member=lambda member_id: local if member_id == "m-api-3" else None,
        suppressed=lambda p: p == worker.pseudonym("m-api-1"),
    )
    # a second app on the same worker: its own registry (metric families register once)
    second = WebServer(
        create_app(dataclasses.replace(deps, registry=CollectorRegistry())), "127.0.0.1", 0
    ).start()
    try:
        code, _, raw = call(second.url, "GET", "/v1/members/m-api-3", headers=AUTH)
        assert code == 200 and json.loads(raw)["source"] == "worker"
        assert json.loads(raw)["model_version"] == "from-worker-state"
        assert call(second.url, "GET", "/v1/members/m-api-1", headers=AUTH)[0] == 404
        listed = json.loads(call(second.url, "GET", "/v1/members", headers=AUTH)[2])["members"]
        assert worker.pseudonym("m-api-1") not in {m["pseudonym"] for m in listed}
        assert len(listed) == len(members) - 1
    finally:
        second.stop()

    # Member ids stay out of metric labels and log lines.
    metrics = call(base, "GET", "/metrics")[2].decode()
    assert 'route="/v1/members/{member_id}"' in metrics and "m-api-3" not in metrics
    assert "m-api-" not in caplog.text and "/v1/members/{member_id}" in caplog.text


def _scored(worker: Runtime, members: list[str]) -> None:
    """Publish a few events per member and wait until ClickHouse holds their scores."""
    s = worker.settings
    producer = PulseProducer(s.kafka_bootstrap, topic_prefix=s.topic_prefix)
    for i, member in enumerate(members):
        producer.send(event("member_joined", member, recent(20)))
        for day in range(i + 1):
            producer.send(event("post_created", member, recent(10 - day)))
        producer.send(event("policy_purchased", member, recent(5), premium=500.0 * (i + 1)))
    producer.flush()
    reader = connect("", s.clickhouse_database, s.data_path)
    pseudonyms = [worker.pseudonym(m) for m in members]
    wait_for(
        lambda: (
            reader.query(
                "SELECT uniqExact(member_id) FROM member_scores WHERE has({p:Array(String)}, "
                "member_id)",
                parameters={"p": pseudonyms},
            ).result_rows[0][0]
            == len(members)
        ),
        60,
        "every member scored",
    )


def _clickhouse_only(worker: Runtime) -> WebServer:
    """A second app on the worker that does not own any member: ClickHouse answers."""
    assert worker.pipeline is not None
    deps = web_deps(worker, suppressed=worker.pipeline.suppressed)
    app = create_app(dataclasses.replace(deps, registry=CollectorRegistry()))
    return WebServer(app, "127.0.0.1", 0).start()


def test_member_api_answers_alike_from_worker_state_and_from_clickhouse(worker: Runtime) -> None:
    assert worker.http is not None
    members = [f"m-both-{i}" for i in range(4)]
    _scored(worker, members)
    # the worker's state and member_scores agree once the last score is stored
    wait_for(worker.settled, 60, "the worker to settle")
    elsewhere = _clickhouse_only(worker)
    try:
        for member in members:
            code, headers, raw = call(worker.http.url, "GET", f"/v1/members/{member}", None, AUTH)
            assert code == 200 and headers["content-type"] == "application/json", raw
            own = json.loads(raw)
            code, _, raw = call(elsewhere.url, "GET", f"/v1/members/{member}", None, AUTH)
            assert code == 200, raw
            stored = json.loads(raw)
            assert (own["source"], stored["source"]) == ("worker", "clickhouse")
            assert {k: v for k, v in own.items() if k != "source"} == {
                k: v for k, v in stored.items() if k != "source"
            }
            assert stored["member_id"] == member and stored["pseudonym"] == worker.pseudonym(member)
        # the response shape is the documented one, whichever source answers
        assert set(stored) == set(MemberScore.model_fields)
        code, _, raw = call(elsewhere.url, "GET", "/v1/members/m-both-never", None, AUTH)
        assert code == 404 and json.loads(raw)["detail"] == "no scores for this member"
        assert call(elsewhere.url, "GET", f"/v1/members/{members[0]}")[0] == 401
        assert call(elsewhere.url, "GET", "/v1/members/" + "x" * 257, None, AUTH)[0] == 422
    finally:
        elsewhere.stop()


def test_member_api_never_serves_a_member_who_withdrew_analytics_consent(
    worker: Runtime,
) -> None:
    assert worker.http is not None
    s = worker.settings
    _scored(worker, ["m-quiet", "m-loud"])
    for member in ("m-quiet", "m-loud"):
        assert call(worker.http.url, "GET", f"/v1/members/{member}", None, AUTH)[0] == 200
    producer = PulseProducer(s.kafka_bootstrap, topic_prefix=s.topic_prefix)
    producer.send(event("consent_changed", "m-quiet", recent(1), marketing=False, analytics=False))
    producer.flush()
    wait_for(
        lambda: call(worker.http.url, "GET", "/v1/members/m-quiet", None, AUTH)[0] == 404,
        60,
        "the opted-out member to be withheld",
    )
    # ClickHouse still holds the member's earlier scores: they are not served either
    reader = connect("", s.clickhouse_database, s.data_path)
    stored = reader.query(
        "SELECT count() FROM member_scores WHERE member_id = {p:String}",
        parameters={"p": worker.pseudonym("m-quiet")},
    ).result_rows[0][0]
    elsewhere = _clickhouse_only(worker)
    try:
        code, _, raw = call(elsewhere.url, "GET", "/v1/members/m-quiet", None, AUTH)
        assert code == 404 and json.loads(raw)["detail"] == "no scores for this member", stored
        code, _, raw = call(elsewhere.url, "GET", "/v1/members/m-loud", None, AUTH)
        assert code == 200 and json.loads(raw)["source"] == "clickhouse"
    finally:
        elsewhere.stop()
    assert call(worker.http.url, "GET", "/v1/members/m-loud", None, AUTH)[0] == 200


def test_status_query_limits_and_secrets(worker: Runtime) -> None:
    assert worker.http is not None
    base = worker.http.url
    code, _, raw = call(base, "GET", "/status", headers=AUTH)
    assert code == 200 and json.loads(raw)["pid"] == os.getpid()
    assert TOKEN.encode() not in raw and KEY.encode() not in raw
    assert call(base, "GET", "/status")[0] == 401
    assert call(base, "GET", "/healthz")[0] == 200 and call(base, "GET", "/metrics")[0] == 200

    def query(sql: str) -> tuple[int, str]:
        code, _, raw = call(
            base, "POST", "/query?format=csv", sql.encode(), {"Content-Type": "text/plain", **AUTH}
        )
        return code, raw.decode()

    assert query("SELECT 1 + 1") == (200, '"plus(1, 1)"\n2\n')
    code, text = query("SELECT count() FROM system.numbers")
    assert code == 422 and "TIMEOUT_EXCEEDED" in text and "maximum: 1000.000 ms" in text
    assert "PULSE_QUERY_MAX_EXECUTION_SECONDS" in text
    code, text = query("SELECT number FROM numbers(10)")
    assert code == 422 and "TOO_MANY_ROWS_OR_BYTES" in text
    code, text = query("SELECT 1 SETTINGS max_execution_time = 1000")
    assert code == 400 and "READONLY" in text
    code, text = query(f"DROP TABLE {worker.settings.clickhouse_database}.events")
    assert code == 400 and "READONLY" in text
    reader = connect("", worker.settings.clickhouse_database, worker.settings.data_path)
    assert reader.query("EXISTS TABLE events").result_rows[0][0] == 1


def _health(base: str) -> tuple[int, dict[str, Any]]:
    code, _, raw = call(base, "GET", "/healthz")
    return code, json.loads(raw)


def test_healthz_reports_a_failing_sink_then_a_stopped_consumer(settings: Settings) -> None:
    s = settings.with_(health_sink_failure_seconds=1.0, sink_retry_max_seconds=0.3)
    runtime = Runtime(s, announce=False).start()
    admin = connect("", None, s.data_path)
    try:
        assert runtime.http is not None
        base = runtime.http.url
        assert _health(base) == (
            200,
            {
                "status": "ok",
                "reasons": [],
                "checks": {
                    "ingest_agent": "ok",
                    "sink_failing_seconds": 0.0,
                    "consumer": "running",
                },
            },
        )
        producer = PulseProducer(s.kafka_bootstrap, topic_prefix=s.topic_prefix)
        producer.send(event("post_created", "m-1", recent(1)))  # its partition's task restores
        producer.flush()
        wait_for(
            lambda: (
                runtime.status()["processed"] == 1
                and len(runtime.status()["partitions"]) == s.partitions
            ),
            60,
            "the first event, every partition's task restored",
        )
        admin.command(f"DETACH TABLE {s.clickhouse_database}.failed_events")
        producer.send_raw(s.topic("interactions"), b"m-1", b"{broken")
        producer.flush()
        wait_for(lambda: _health(base)[0] == 503, 60, "/healthz to report the failing sink")
        reasons = _health(base)[1]["reasons"]
        assert len(reasons) == 1 and reasons[0].startswith("ClickHouse inserts failing for")
        admin.command(f"ATTACH TABLE {s.clickhouse_database}.failed_events")
        wait_for(lambda: _health(base)[0] == 200, 60, "/healthz to recover with the sink")

        assert runtime.thread is not None
        runtime.thread.shutdown(None, timeout=30)  # the consumer stops; the endpoint stays
        code, document = _health(base)
        assert code == 503
        assert document["reasons"] == ["consumer stopped: the Faust worker is not running"]
    finally:
        runtime.stop()


def _crashing_apply(self: PartitionTask, items: Any) -> None:
    """A bug in scoring: the ingest agent crashes on the first valid event."""
    raise RuntimeError("a bug in scoring")


def test_healthz_reports_a_crashed_agent(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(PartitionTask, "apply", _crashing_apply)
    runtime = Runtime(settings, announce=False).start()
    try:
        assert runtime.http is not None
        base = runtime.http.url
        assert _health(base)[0] == 200
        producer = PulseProducer(settings.kafka_bootstrap, topic_prefix=settings.topic_prefix)
        producer.send(event("post_created", "m-1", recent(1)))
        producer.flush()
        wait_for(lambda: _health(base)[0] == 503, 60, "/healthz to report the crash")
        reasons = _health(base)[1]["reasons"]
        assert "ingest agent crashed (RuntimeError); its batch stays uncommitted" in reasons
        assert "a bug in scoring" not in json.dumps(_health(base)[1])
    finally:
        runtime.stop()


def test_collector_answers_503_while_the_broker_is_unavailable(settings: Settings) -> None:
    s = settings.with_(kafka_bootstrap="", http_produce_timeout_seconds=2.0)
    runtime = Runtime(s, announce=False).start()  # with its own embedded broker
    assert runtime.broker is not None and runtime.broker.pid is not None and runtime.http
    pid, base = runtime.broker.pid, runtime.http.url
    body = json.dumps(event("post_created", "m-1", recent(1))).encode()
    try:
        os.kill(pid, signal.SIGSTOP)  # the broker stops answering
        started = time.monotonic()
        code, headers, raw = post_events(base, body)
        waited = time.monotonic() - started
        assert code == 503, raw
        assert headers["retry-after"] == "2" and "retry later" in json.loads(raw)["detail"]
        assert waited < 30  # bounded: the produce timeout, not librdkafka's five minutes
        assert runtime.metrics.registry.get_sample_value("pulse_collector_unavailable_total") == 1
    finally:
        os.kill(pid, signal.SIGCONT)
    try:
        wait_for(lambda: post_events(base, body)[0] == 200, 60, "the collector to recover")
    finally:
        runtime.stop()
