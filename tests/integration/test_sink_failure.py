"""A failed ClickHouse insert must not move the committed offset; recovery stores every row once."""

from __future__ import annotations

import json
import uuid

import pytest
from factories import event
from helpers import committed_offsets, wait_for

from sinks.clickhouse import connect
from streams.config import Settings
from streams.producer import PulseProducer
from streams.runtime import Runtime

pytestmark = pytest.mark.integration


def _publish(settings: Settings, events: list[dict[str, object]]) -> dict[tuple[str, int], int]:
    last: dict[tuple[str, int], int] = {}

    def delivered(topic: str, partition: int, offset: int) -> None:
        last[(topic, partition)] = max(offset, last.get((topic, partition), -1))

    producer = PulseProducer(
        settings.kafka_bootstrap, topic_prefix=settings.topic_prefix, on_delivery=delivered
    )
    for doc in events:
        producer.send(doc)
    producer.flush()
    return last


def _batch(n: int, tag: str) -> list[dict[str, object]]:
    return [
        event(
            "content_viewed",
            f"m-{i % 37}",
            event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tag}-{i}")),
        )
        for i in range(n)
    ]


def test_failed_insert_holds_commit_then_recovers_exactly_once(settings: Settings) -> None:
    settings = settings.with_(sink_retry_max_seconds=0.5)
    topic = settings.topic("interactions")
    runtime = Runtime(settings, serve_http=False, announce=False).start()
    admin = connect("", None, settings.data_path)
    db = settings.clickhouse_database
    try:
        first = _publish(settings, _batch(300, "first"))
        wait_for(
            lambda: all(runtime.acked_offsets().get(tp, -1) >= o for tp, o in first.items()),
            60,
            "the first batch to be stored",
        )
        expected_first = {p: o + 1 for (_, p), o in first.items()}
        wait_for(
            lambda: all(
                committed_offsets(settings.kafka_bootstrap, settings.app_id, topic, 2).get(p) == o
                for p, o in expected_first.items()
            ),
            30,
            "the first batch's offsets to be committed",
        )

        # ClickHouse loses a table the next batch writes to: its insert fails for real.
        # The rejects come first, so the failing batch holds back everything after it.
        admin.command(f"DETACH TABLE {db}.failed_events")
        producer = PulseProducer(settings.kafka_bootstrap, topic_prefix=settings.topic_prefix)
        for i in range(10):
            producer.send_raw(topic, f"m-{i}".encode(), b"{not json")
        producer.flush()
        _publish(settings, _batch(200, "second"))
        sink = runtime.pipeline.sink  # type: ignore[union-attr]
        wait_for(lambda: sink.last_error is not None, 30, "the insert to fail")
        errors = runtime.metrics.registry.get_sample_value(
            "pulse_sink_errors_total", {"table": "failed_events", "error": "DatabaseError"}
        )
        assert errors and errors >= 1
        # Several retries fail while we watch the broker: the committed offsets stay put.
        retries_before = runtime.metrics.registry.get_sample_value("pulse_sink_retries_total") or 0
        wait_for(
            lambda: (
                (runtime.metrics.registry.get_sample_value("pulse_sink_retries_total") or 0)
                >= retries_before + 3
            ),
            30,
            "three more failed retries",
        )
        assert (
            committed_offsets(settings.kafka_bootstrap, settings.app_id, topic, 2) == expected_first
        )
        assert all(runtime.acked_offsets()[tp] == o for tp, o in first.items())

        # ClickHouse comes back: the same batch is retried and everything lands once.
        admin.command(f"ATTACH TABLE {db}.failed_events")
        wait_for(
            lambda: runtime.status()["processed"] == 510 and runtime.settled(),
            60,
            "the second batch to be stored after recovery",
        )
        wait_for(
            lambda: (
                sum(committed_offsets(settings.kafka_bootstrap, settings.app_id, topic, 2).values())
                == 510
            ),
            30,
            "the offsets to advance after recovery",
        )
    finally:
        runtime.stop()
    count, unique = admin.query(
        f"SELECT count(), uniqExact(event_id) FROM {db}.events"
    ).result_rows[0]
    assert (count, unique) == (500, 500)
    failed = admin.query(
        f"SELECT count(), uniqExact(source_partition, source_offset) FROM {db}.failed_events"
    ).result_rows[0]
    assert failed == (10, 10)


def test_rejects_go_to_dead_letter_and_failed_events(settings: Settings) -> None:
    from helpers import consume_all

    runtime = Runtime(settings, serve_http=False, announce=False).start()
    try:
        producer = PulseProducer(settings.kafka_bootstrap, topic_prefix=settings.topic_prefix)
        good = event("quiz_answered", "m-9")
        producer.send(good)
        producer.send_raw(settings.topic("interactions"), b"m-9", b"{oops")
        producer.send_raw(
            settings.topic("interactions"),
            b"m-9",
            json.dumps(event("policy_purchased", "m-9")).encode(),
        )  # wrong topic
        producer.flush()
        wait_for(
            lambda: runtime.status()["processed"] >= 3 and runtime.settled(),
            60,
            "three messages processed and stored",
        )
    finally:
        runtime.stop()
    dead = consume_all(settings.kafka_bootstrap, settings.topic("dead-letter"), expect=2)
    assert len(dead) == 2
    headers = [dict(m.headers()) for m in dead]  # type: ignore[attr-defined]
    assert sorted(h["pulse.error.reason"] for h in headers) == [b"invalid_json", b"wrong_topic"]
    assert all(h["pulse.source.topic"] == settings.topic("interactions").encode() for h in headers)
    assert b"{oops" in {m.value() for m in dead}  # type: ignore[attr-defined]
    client = connect("", None, settings.data_path)
    db = settings.clickhouse_database
    rows = client.query(
        f"SELECT reason, error_class, key_pseudonym FROM {db}.failed_events ORDER BY reason"
    ).result_rows
    assert [r[0] for r in rows] == ["invalid_json", "wrong_topic"]
    assert all(r[2] and r[2] != "m-9" for r in rows)  # pseudonymised, never in clear
    stored = client.query(f"SELECT member_id FROM {db}.events").result_rows
    assert len(stored) == 1 and stored[0][0] != "m-9" and len(stored[0][0]) == 32
