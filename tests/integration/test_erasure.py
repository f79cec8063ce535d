"""Erasure on the real ClickHouse engine (chDB): every row of the member goes, from every
table that holds member data, except the erasure request and the state tombstone,
which hold nothing but the pseudonym. Other members' rows stay."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from sinks.clickhouse import ClickHouseSink, connect
from sinks.erasure import MEMBER_TABLES, erase_member, erase_members, retract_scores
from sinks.errors import ErasureError
from sinks.migrations import TABLES, apply_migrations
from sinks.privacy import Pseudonymizer
from streams.broker import EmbeddedBroker, ensure_topics
from streams.erasure_feed import ErasureFeed
from streams.erasures import Erasures

pytestmark = pytest.mark.integration

PSEUDONYM = Pseudonymizer(b"erasure-test-key-0123456789abcdef")
T0 = datetime(2026, 3, 2, 9, 0)  # naive UTC, as the sink writes it
NOW = datetime.now(UTC).replace(tzinfo=None)  # the outbox tables expire rows (TTL)


@pytest.fixture
def store(data_dir: Path) -> tuple[Client, str]:
    database = f"erase_{uuid.uuid4().hex[:10]}"
    client = connect("", None, data_dir)
    apply_migrations(client, database)
    return client, database


def _member_rows(p: str, erased: bool) -> dict[str, list[dict[str, Any]]]:
    """Rows of one member (pseudonym ``p``) in every table Pulse writes."""
    events = [
        {
            "event_id": str(uuid.uuid4()),
            "event_type": kind,
            "occurred_at": T0 + timedelta(days=i),
            "member_id": p,
            "properties": "{}",
        }
        for i, kind in enumerate(["post_created", "policy_purchased", "consent_changed"])
    ]
    if erased:
        events.append(
            {
                "event_id": str(uuid.uuid4()),
                "event_type": "erasure_requested",
                "occurred_at": T0 + timedelta(days=5),
                "member_id": p,
                "properties": '{"request_id":"er-1"}',
            }
        )
    score = {"member_id": p, "scored_at": T0, "engagement_score": 50.0, "version": 1}
    alert = {
        "alert_id": f"{p[:8]}-fired",
        "rule": "churn_vip",
        "status": "fired",
        "subject_type": "member",
        "subject_id": p,
        "raised_at": T0,
        "emitted_at": T0,
    }
    rows: dict[str, list[dict[str, Any]]] = {
        "events": events,
        "failed_events": [
            {"failed_at": T0, "source_offset": i, "key_pseudonym": p, "payload_sha256": p}
            for i in range(2)
        ],
        "member_scores": [score],
        "score_history": [score, {**score, "scored_at": T0 + timedelta(days=1)}],
        "lifecycle_transitions": [{"member_id": p, "at": T0, "to_stage": "loyal"}],
        "alerts": [alert, {**alert, "alert_id": f"{p[:8]}-resolved", "status": "resolved"}],
        "webhook_outbox": [
            {
                "alert_id": alert["alert_id"],
                "webhook": "crm",
                "subject_type": "member",
                "subject_id": p,
                "payload": f'{{"member_pseudonym":"{p}"}}',
                "created_at": NOW,
            }
        ],
        "task_state": [{"task": 0, "key": p, "gen": 1, "seq": 1, "state": "c2VhbGVk"}],
    }
    return rows


def _fill(store: tuple[Client, str], *members: tuple[str, bool]) -> None:
    client, database = store
    sink = ClickHouseSink(client, database)
    for p, erased in members:
        for table, rows in _member_rows(p, erased).items():
            sink.add(table, rows)
    community = {**_member_rows("c-1", False)["alerts"][0], "subject_type": "community"}
    sink.add("alerts", [{**community, "alert_id": "community-alert"}])
    assert asyncio.run(sink.drain(30))
    for p, erased in members:  # the checkpoint after the erasure writes a tombstone
        if erased:
            sink.add("task_state", [{"task": 0, "key": p, "gen": 1, "seq": 2, "state": ""}])
    assert asyncio.run(sink.drain(30))
    for p, _ in members:
        client.insert(
            f"{database}.webhook_deliveries",
            [[f"{p[:8]}-fired", "crm", n, "retried", 503, "HTTP 503", NOW] for n in (1, 2)],
            column_names=[
                "alert_id",
                "webhook",
                "attempt",
                "outcome",
                "status_code",
                "error",
                "at",
            ],
        )


def _rows_naming(store: tuple[Client, str], p: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the database whose values mention ``p`` (or its
    alert ids): the whole database is read, so a new table is not overlooked."""
    client, database = store
    tables = [
        r[0]
        for r in client.query(
            "SELECT name FROM system.tables "
            "WHERE database = {d:String} AND engine NOT LIKE '%View'",
            parameters={"d": database},
        ).result_rows
    ]
    found: dict[str, list[tuple[Any, ...]]] = {}
    for table in tables:
        for row in client.query(f"SELECT * FROM {database}.{table}").result_rows:
            if any(p in str(v) or p[:8] in str(v) for v in row):
                found.setdefault(table, []).append(tuple(row))
    return found


def test_an_erasure_deletes_the_member_from_every_table(store: tuple[Client, str]) -> None:
    erased, kept = PSEUDONYM("m-erased"), PSEUDONYM("m-kept")
    _fill(store, (erased, True), (kept, False))
    before_kept = _rows_naming(store, kept)

    deleted = erase_member(*store, erased)

    assert deleted == {
        "webhook_deliveries": 2,
        "webhook_outbox": 1,
        "alerts": 2,
        "member_scores": 1,
        "score_history": 2,
        "lifecycle_transitions": 1,
        "failed_events": 2,
        "task_state": 1,  # the sealed state; the tombstone stays
        "events": 3,  # the behaviour; the erasure request stays
    }
    left = _rows_naming(store, erased)
    assert set(left) == {"events", "task_state"}, left
    [request] = left["events"]
    assert "erasure_requested" in request
    [tombstone] = left["task_state"]
    assert tombstone[-1] == ""  # no sealed state: only the pseudonym and a sequence
    assert _rows_naming(store, kept) == before_kept  # nobody else is touched
    client, database = store
    assert client.query(
        f"SELECT count() FROM {database}.alerts WHERE subject_id = 'c-1'"
    ).result_rows == [(1,)]
    assert set(erase_member(*store, erased).values()) == {0}  # idempotent


def test_every_table_with_member_data_is_covered(store: tuple[Client, str]) -> None:
    """A table that gains a member column must be added to MEMBER_TABLES."""
    client, database = store
    holding = {
        r[0]
        for r in client.query(
            "SELECT DISTINCT c.table FROM system.columns AS c "
            "INNER JOIN system.tables AS t ON t.database = c.database AND t.name = c.table "
            "WHERE c.database = {d:String} AND t.engine NOT LIKE '%View' "
            "AND c.name IN ('member_id', 'subject_id', 'key_pseudonym', 'alert_id', 'key')",
            parameters={"d": database},
        ).result_rows
    }
    assert holding == set(MEMBER_TABLES)
    assert set(TABLES) - {"model_metrics"} <= set(MEMBER_TABLES)


@pytest.mark.parametrize("value", ["m-erased", "", "'; DROP TABLE events; --", "A" * 32])
def test_only_a_pseudonym_is_accepted(store: tuple[Client, str], value: str) -> None:
    with pytest.raises(ErasureError, match="pseudonym"):
        erase_member(*store, value)


def test_nothing_is_deleted_before_its_checkpoint_committed(store: tuple[Client, str]) -> None:
    """A checkpoint's erasures and consent withdrawals wait for its own commit: until
    then the rows it stores for those members may not be in, and would survive a
    deletion started by the commit of the checkpoint before."""
    client, database = store
    erased, withdrawn = PSEUDONYM("m-erased"), PSEUDONYM("m-withdrawn")
    _fill(store, (erased, False), (withdrawn, False))
    before = {p: _rows_naming(store, p) for p in (erased, withdrawn)}
    withdrawn_at = int((T0 + timedelta(hours=1)).replace(tzinfo=UTC).timestamp() * 1000)

    async def main() -> list[int]:
        erasures = Erasures(0, client, database)
        batches: list[int] = []
        erasures.stage(7, [erased], {withdrawn: withdrawn_at})
        assert erased in erasures
        staged = {"erasures": [erased], "retractions": {withdrawn: withdrawn_at}}
        assert erasures.to_dict() == staged
        committed = asyncio.get_running_loop().create_future()
        committed.set_result(None)
        erasures.after(6, lambda: batches.append(6))(committed)  # the checkpoint before
        await erasures.wait()
        assert {p: _rows_naming(store, p) for p in (erased, withdrawn)} == before
        erasures.after(7, lambda: batches.append(7))(committed)
        await erasures.wait()
        assert erasures.to_dict() == {"erasures": [], "retractions": {}}
        return batches

    assert asyncio.run(main()) == [7]
    assert _rows_naming(store, erased) == {}  # no erasure request or tombstone here
    left = _rows_naming(store, withdrawn)
    assert "member_scores" not in left  # retracted
    assert left["score_history"] == before[withdrawn]["score_history"]  # kept


def test_a_batch_of_erasures_is_one_statement_per_table(store: tuple[Client, str]) -> None:
    first, second, kept = PSEUDONYM("m-first"), PSEUDONYM("m-second"), PSEUDONYM("m-kept")
    _fill(store, (first, True), (second, True), (kept, False))
    before_kept = _rows_naming(store, kept)
    deleted = erase_members(*store, [first, second])
    assert deleted["events"] == 6 and deleted["score_history"] == 4
    for erased in (first, second):
        assert set(_rows_naming(store, erased)) == {"events", "task_state"}
    assert _rows_naming(store, kept) == before_kept
    assert erase_members(*store, []) == dict.fromkeys(MEMBER_TABLES, 0)
    with pytest.raises(ErasureError, match="pseudonym"):
        erase_members(*store, [kept, "m-kept"])  # one bad value refuses the whole batch


def test_what_one_shard_erased_the_feed_carries_out_on_the_others(
    store: tuple[Client, str], broker: EmbeddedBroker
) -> None:
    """Shards (each worker a ClickHouse of its own) hold rows of a member from each
    partition owner: a task's erasure and withdrawal, once done on its own shard, go on
    the feed, and every other shard carries them out -- its own are not done twice."""
    client, here = store
    there = f"{here}_b"
    apply_migrations(client, there)
    erased, withdrawn, kept = PSEUDONYM("f-erased"), PSEUDONYM("f-withdrawn"), PSEUDONYM("f-kept")
    _fill(store, (erased, False), (withdrawn, False), (kept, False))
    _fill((client, there), (erased, False), (withdrawn, False), (kept, False))
    before = _rows_naming((client, there), kept)
    topic = f"feed{uuid.uuid4().hex[:8]}.erasures"
    ensure_topics(broker.bootstrap, [topic], 1)
    own = ErasureFeed(broker.bootstrap, topic, client, here)
    other = ErasureFeed(broker.bootstrap, topic, client, there)
    withdrawn_at = int((T0 + timedelta(hours=1)).replace(tzinfo=UTC).timestamp() * 1000)

    async def erase_here() -> None:
        erasures = Erasures(0, client, here, own)
        erasures.stage(1, [erased], {withdrawn: withdrawn_at})
        committed = asyncio.get_running_loop().create_future()
        committed.set_result(None)
        erasures.after(1, lambda: None)(committed)
        await erasures.wait()

    asyncio.run(erase_here())
    own.close()
    assert _rows_naming((client, there), erased) != {}  # the other shard: not yet
    assert own.catch_up() == 0  # what this shard did itself
    assert other.catch_up() == 2
    assert _rows_naming((client, there), erased) == {}
    left = _rows_naming((client, there), withdrawn)
    assert "member_scores" not in left and "score_history" in left
    assert _rows_naming((client, there), kept) == before
    assert other.catch_up() == 0 and other.position == 2  # read on from where it stopped
    # a restart goes on from where this ClickHouse stopped; a new shard reads it all
    assert ErasureFeed(broker.bootstrap, topic, client, there).catch_up() == 0
    fresh = f"{here}_c"
    apply_migrations(client, fresh)
    _fill((client, fresh), (erased, False))
    assert ErasureFeed(broker.bootstrap, topic, client, fresh).catch_up() == 2
    assert _rows_naming((client, fresh), erased) == {}


class _Counting:
    """The real client, counting the statements that change data."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.commands: list[str] = []

    def query(self, query: str, parameters: dict[str, Any] | None = None) -> Any:
        return self.client.query(query, parameters=parameters)

    def command(self, cmd: str, parameters: Any = None, settings: Any = None) -> Any:
        self.commands.append(cmd)
        return self.client.command(cmd, parameters=parameters, settings=settings)


def test_withdrawals_retract_each_members_scores_up_to_their_own_time_at_once(
    store: tuple[Client, str],
) -> None:
    """Retractions of many members are one DELETE (a mutation of the whole table, like
    one member's), and each row is held against its own member's withdrawal time."""
    client, database = store
    early, late, other = (PSEUDONYM(m) for m in ("r-early", "r-late", "r-other"))
    scored = {early: T0 + timedelta(hours=2), late: T0, other: T0}
    sink = ClickHouseSink(client, database)
    sink.add(
        "member_scores",
        [{"member_id": p, "scored_at": at, "version": 1} for p, at in scored.items()],
    )
    assert asyncio.run(sink.drain(30))

    def ms(at: datetime) -> int:
        return int(at.replace(tzinfo=UTC).timestamp() * 1000)

    counting = _Counting(client)
    # early withdrew after its score (it goes); late before its score (it stays)
    withdrawn = {early: ms(T0 + timedelta(hours=3)), late: ms(T0 - timedelta(hours=1))}
    assert retract_scores(counting, database, withdrawn) == 1
    assert len(counting.commands) == 1
    left = client.query(f"SELECT member_id FROM {database}.member_scores").result_rows
    assert sorted(r[0] for r in left) == sorted([late, other])
    assert retract_scores(counting, database, withdrawn) == 0  # idempotent
    assert retract_scores(counting, database, {}) == 0
    assert len(counting.commands) == 1
    with pytest.raises(ErasureError):
        retract_scores(counting, database, {"m-1": 0})  # a member id, not a pseudonym
