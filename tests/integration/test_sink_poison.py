"""Poison never stalls the sink: on the real ClickHouse engine (chDB), rows that ClickHouse
refuses for what they hold are isolated and recorded, the rest is stored, acks fire in order;
a backfill spanning 150 months is stored in one flush.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from factories import event

from schemas.registry import decode_event
from sinks.clickhouse import ClickHouseSink, connect
from sinks.errors import FlushFailed
from sinks.migrations import apply_migrations
from sinks.privacy import Pseudonymizer
from sinks.rows import event_row, utc

pytestmark = pytest.mark.integration

PSEUDONYM = Pseudonymizer(b"k" * 32)
START = datetime(2012, 1, 15, 9, tzinfo=UTC)


@pytest.fixture
def clickhouse(data_dir: Path) -> Iterator[tuple[Client, str]]:
    client = connect("", None, data_dir)
    database = f"poison_{uuid.uuid4().hex[:10]}"
    apply_migrations(client, database)
    yield client, database
    client.command(f"DROP DATABASE IF EXISTS {database}")


def events(n: int, *, months_apart: bool = False, tag: str = "e") -> list[dict[str, Any]]:
    """``events`` rows of real validated events (one per month with ``months_apart``)."""
    rows = []
    for i in range(n):
        when = START + timedelta(days=31 * i if months_apart else i / 24)
        doc = event(
            "content_viewed",
            f"m-{i % 17}",
            when,
            event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tag}{i}")),
        )
        parsed = decode_event(json.dumps(doc).encode(), now=datetime.now(UTC))
        rows.append(
            event_row(
                parsed,
                topic="pulse.interactions",
                partition=i % 2,
                offset=i,
                pseudonym=PSEUDONYM,
                ingested_at=datetime.now(UTC),
            )
        )
    return rows


def scores(n: int, *, months_apart: bool = False) -> list[dict[str, Any]]:
    """``score_history`` rows as the scorer builds them (version: event time in µs)."""
    rows = []
    for i in range(n):
        at = START + timedelta(days=31 * i if months_apart else i / 24)
        rows.append(
            {
                "member_id": PSEUDONYM(f"m-{i % 17}"),
                "scored_at": utc(at),
                "trigger": "event",
                "engagement_score": 50.0,
                "engagement_tier": "engaged",
                "churn_probability": 0.2,
                "churn_risk": "low",
                "churn_model": "champion",
                "conversion_probability": None,
                "lifecycle_stage": "potential",
                "top_drivers": [("recency", 0.1)],
                "model_version": "v1",
                "last_event_at": utc(at),
                "community_id": "c-1",
                "annual_premium": 0.0,
                "active_policies": 0,
                "version": int(at.timestamp() * 1_000_000),
            }
        )
    return rows


def count(client: Client, sql: str) -> int:
    return int(client.query(sql).result_rows[0][0])


def test_poison_rows_are_recorded_and_every_other_row_is_stored(
    clickhouse: tuple[Client, str],
) -> None:
    client, db = clickhouse
    good_events, good_scores = events(300), scores(120)
    poison_events = events(3, tag="poison")
    poison_events[0]["source_offset"] = -1  # a UInt64 column
    poison_events[1]["occurred_at"] = datetime(1, 1, 1)  # year 0 once in UTC
    poison_events[2]["member_id"] = "m\ud800"  # a lone surrogate: not UTF-8
    poison_score = scores(1)[0]
    poison_score["version"] = -86_400_000_000  # a score of 1969: negative UInt64 version
    mixed_events = good_events[:100] + [poison_events[0]] + good_events[100:250]
    mixed_events += [poison_events[1]] + good_events[250:] + [poison_events[2]]
    fired: list[str] = []

    async def run() -> int:
        sink = ClickHouseSink(client, db, retry_max_seconds=0.1)
        sink.add("events", mixed_events, ack=lambda: fired.append("first"))
        sink.add("score_history", good_scores[:60] + [poison_score] + good_scores[60:])
        sink.add_ack(lambda: fired.append("second"))
        acks = await sink.flush()
        assert sink.last_error is None and sink.pending_acks == 0
        return acks

    assert asyncio.run(run()) == 2
    assert fired == ["first", "second"]
    assert count(client, f"SELECT count() FROM {db}.events") == 300
    assert count(client, f"SELECT uniqExact(event_id) FROM {db}.events") == 300
    assert count(client, f"SELECT count() FROM {db}.score_history") == 120
    failures = client.query(
        f"SELECT source_offset, reason, error_class, detail, key_pseudonym, length(payload_sha256)"
        f" FROM {db}.failed_events ORDER BY detail, source_offset"
    ).result_rows
    assert [(r[1], r[5]) for r in failures] == [("sink_rejected", 64)] * 4
    details = sorted(r[3] for r in failures)
    assert details[:3] == [
        "events: DataError, column source_offset",
        "events: UnicodeEncodeError",
        "events: ValueError",
    ]
    assert details[3].startswith("score_history: DataError")
    assert {r[0] for r in failures if r[3].startswith("events")} == {0, 1, 2}  # their offsets
    assert all("\ud800" not in r[4] and "m-" not in r[3] for r in failures)


def test_a_backfill_spanning_150_months_is_stored_in_one_flush(
    clickhouse: tuple[Client, str],
) -> None:
    client, db = clickhouse

    async def run() -> None:
        sink = ClickHouseSink(client, db)
        sink.add("events", events(150, months_apart=True))
        sink.add("score_history", scores(150, months_apart=True))
        await sink.flush()  # raised TOO_MANY_PARTS (over 100 partitions) and retried forever

    asyncio.run(run())
    for table in ("events", "score_history"):
        assert count(client, f"SELECT count() FROM {db}.{table}") == 150
        assert count(client, f"SELECT uniqExact(_partition_id) FROM {db}.{table}") == 150
    assert count(client, f"SELECT count() FROM {db}.failed_events") == 0


def test_isolation_interrupted_by_an_outage_resumes_without_duplicates(
    clickhouse: tuple[Client, str],
) -> None:
    client, db = clickhouse
    rows = events(200)
    rows[150]["source_partition"] = 70_000  # a UInt16 column
    fired: list[int] = []

    async def run() -> None:
        sink = ClickHouseSink(client, db, retry_max_seconds=0.1)
        sink.add("events", rows, ack=lambda: fired.append(1))
        client.command(f"DETACH TABLE {db}.failed_events")  # recording the poison row fails
        try:
            with pytest.raises(FlushFailed):
                await sink.flush()
            assert fired == [] and sink.pending_acks == 1  # nothing acknowledged meanwhile
        finally:
            client.command(f"ATTACH TABLE {db}.failed_events")
        await sink.flush()  # the same batch, resumed

    asyncio.run(run())
    assert fired == [1]
    assert count(client, f"SELECT count() FROM {db}.events") == 199
    assert count(client, f"SELECT count() FROM {db}.failed_events") == 1
    detail = client.query(f"SELECT detail FROM {db}.failed_events").result_rows[0][0]
    assert detail == "events: DataError, column source_partition"


def test_a_hurried_batch_is_flushed_by_the_running_sink_before_its_age(
    clickhouse: tuple[Client, str],
) -> None:
    """Issue 9 (freshness): a live task's checkpoint does not wait for the batch's age."""
    client, db = clickhouse

    async def run() -> tuple[int, int]:
        sink = ClickHouseSink(client, db, flush_seconds=3600)  # age alone: an hour
        runner = asyncio.ensure_future(sink.run())
        try:
            sink.add("events", events(5))
            assert not sink.due()
            await asyncio.sleep(0.05)
            before = count(client, f"SELECT count() FROM {db}.events")
            sink.hurry()
            deadline = asyncio.get_running_loop().time() + 30
            while sink.backlog_rows and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
            return before, count(client, f"SELECT count() FROM {db}.events")
        finally:
            runner.cancel()

    assert asyncio.run(run()) == (0, 5)
