"""The partition tasks' commit rules, driven message by message on the real pipeline.

The pipeline is built as a worker builds it (:func:`streams.runtime.build_pipeline`:
its sink writes to the real ClickHouse engine, its producer to the real broker),
and fed :class:`Inbound` messages directly, so a test decides which message comes
when and records every acknowledgement the pipeline gives Faust. Each test is a
problem found in the single-worker core (issue 8, problems 1-3):

1. a commit passed an event still held for event-time order;
2. the 1 s tick checkpointed events a concurrent batch had not applied yet;
3. an event held at a revocation was dropped as a duplicate when redelivered.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from factories import event
from prometheus_client import CollectorRegistry

from sinks.clickhouse import connect
from sinks.migrations import apply_migrations
from streams.app import COMMUNITY_TOPIC, INPUT_STREAMS, OUTPUT_TOPICS, PulseApp
from streams.broker import cluster_id, ensure_topics
from streams.config import Settings
from streams.metrics import PulseMetrics
from streams.pipeline import MAX_REWINDS, Inbound, Pipeline
from streams.runtime import build_pipeline

pytestmark = pytest.mark.integration

T = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


class Feed:
    """Builds the messages of one test and records the acknowledgements they get."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.acked: list[tuple[str, int, int]] = []

    def message(self, stream: str, partition: int, offset: int, doc: dict[str, Any]) -> Inbound:
        topic = self.settings.topic(stream)

        def ack() -> None:
            self.acked.append((stream, partition, offset))

        return Inbound(
            topic=topic,
            partition=partition,
            offset=offset,
            key=str(doc["member_id"]).encode(),
            value=json.dumps(doc).encode(),
            timestamp=None,
            ack=ack,
        )

    def acks(self, stream: str) -> list[int]:
        return [offset for s, _, offset in self.acked if s == stream]


@asynccontextmanager
async def _pipeline(settings: Settings) -> AsyncIterator[tuple[Pipeline, Feed]]:
    # held events are released by the horizon alone: no input falls idle during a test
    s = settings.with_(state_store="clickhouse", input_idle_seconds=3600, checkpoint_seconds=0)
    topics = [s.topic(n) for n in (*INPUT_STREAMS, *OUTPUT_TOPICS, COMMUNITY_TOPIC)]
    ensure_topics(s.kafka_bootstrap, topics, s.partitions)
    client = connect("", None, s.data_path)
    apply_migrations(client, s.clickhouse_database)
    built = build_pipeline(
        s,
        bootstrap=s.kafka_bootstrap,
        broker_id=cluster_id(s.kafka_bootstrap),
        clickhouse=client,
        pseudonym_key=s.pseudonym_key.encode(),
        faust_app=PulseApp(s, s.kafka_bootstrap),  # not started: no consumer, no highwater
        metrics=PulseMetrics(CollectorRegistry()),
    )
    await built.assign(range(s.partitions), lambda: True)
    sink = asyncio.create_task(built.sink.run())
    try:
        yield built, Feed(s)
    finally:
        sink.cancel()
        built.ctx.outputs.close()


def _run(settings: Settings, scenario: Callable[[tuple[Pipeline, Feed]], Awaitable[None]]) -> None:
    async def main() -> None:
        async with _pipeline(settings) as pipeline:
            await scenario(pipeline)

    asyncio.run(main())


async def _settle(pipeline: Pipeline) -> None:
    """Commit whatever is due and wait until it is stored and acknowledged."""
    await pipeline.tick()
    for task in pipeline.tasks.values():
        await task.committed()


def _rows(pipeline: Pipeline, sql: str) -> list[tuple[Any, ...]]:
    db = pipeline.ctx.database
    return list(pipeline.ctx.clickhouse.query(sql.format(db=db)).result_rows)


def _doc(kind: str, member: str, minutes: float) -> dict[str, Any]:
    """An event ``minutes`` after 10:00."""
    return event(kind, member, T + timedelta(minutes=minutes), event_id=str(uuid.uuid4()))


def test_a_commit_never_passes_an_event_still_held(settings: Settings) -> None:
    _run(settings, _never_passes_a_held_event)


async def _never_passes_a_held_event(pipeline: tuple[Pipeline, Feed]) -> None:
    """Problem 1: offset 0 (10:10) is held while offset 1 (10:01) is applied and stored;
    nothing of the partition may be acknowledged before offset 0 is."""
    p, feed = pipeline
    late = feed.message("interactions", 0, 0, _doc("post_created", "m-a", 10))
    early = feed.message("interactions", 0, 1, _doc("post_created", "m-b", 1))
    # the purchases input is behind (10:05): the horizon stops there
    behind = feed.message("purchases", 0, 0, _doc("quote_requested", "m-c", 5))
    await p.handle([late, early, behind])
    await _settle(p)
    assert feed.acks("purchases") == [0]
    assert feed.acks("interactions") == []  # offset 1 is stored, but offset 0 is held
    stored = _rows(p, "SELECT count() FROM {db}.events")[0][0]
    assert stored == 2  # early and behind: applied, stored, committed

    ahead = feed.message("purchases", 0, 1, _doc("quote_requested", "m-c", 20))
    await p.handle([ahead])
    await _settle(p)
    assert feed.acks("interactions") == [0, 1]  # in offset order, once both are stored
    assert _rows(p, "SELECT count() FROM {db}.events")[0][0] == 3


def test_the_tick_waits_for_a_batch_in_progress(settings: Settings) -> None:
    _run(settings, _tick_waits_for_a_batch)


async def _tick_waits_for_a_batch(pipeline: tuple[Pipeline, Feed]) -> None:
    """Problem 2: a tick during a batch (here: the batch waits for the event-id lookup)
    must not checkpoint or acknowledge anything the batch has not applied."""
    p, feed = pipeline
    gate = asyncio.Event()
    lookup = p.ctx.index.seen

    async def slow_seen(ids: list[str]) -> set[str]:
        await gate.wait()
        return await lookup(ids)

    p.ctx.index.seen = slow_seen  # type: ignore[method-assign]
    docs = [_doc("post_created", f"m-{i}", i) for i in range(5)]
    batch = [feed.message("interactions", 1, i, d) for i, d in enumerate(docs)]
    batch.append(feed.message("purchases", 1, 0, _doc("quote_requested", "m-9", 60)))
    handling = asyncio.create_task(p.handle(batch))
    while not p.lock.locked():
        await asyncio.sleep(0.01)
    ticking = asyncio.create_task(p.tick())
    await asyncio.sleep(0.3)
    assert not ticking.done()  # the tick waits for the batch
    assert feed.acked == [] and _rows(p, "SELECT count() FROM {db}.events")[0][0] == 0
    gate.set()
    await asyncio.gather(handling, ticking)
    await _settle(p)
    states = p.tasks[1].engine.states
    assert {f"m-{i}" for i in range(5)} <= set(states)  # every acknowledged event applied
    assert feed.acks("interactions") == [0, 1, 2, 3, 4]
    assert feed.acks("purchases") == []  # 11:00: held until the interactions pass it
    assert _rows(p, "SELECT count() FROM {db}.events")[0][0] == 5


def test_the_tick_timer_does_not_wait_for_a_batch(settings: Settings) -> None:
    app = PulseApp(settings, settings.kafka_bootstrap)  # not started: its timer is called here
    _run(settings, partial(_timer_does_not_wait, app))


async def _timer_does_not_wait(app: PulseApp, pipeline: tuple[Pipeline, Feed]) -> None:
    """The 1 s timer starts the pipeline's tick as a task of its own and returns: a timer
    that waited behind a batch would count the batch's seconds as its own (Faust warns
    of every overlap). One tick at a time; it runs once the batch lets go."""
    p, feed = pipeline
    app.pipeline = p
    await p.handle([feed.message("interactions", 0, 0, _doc("post_created", "m-a", 1))])
    assert set(p.tasks) == {0}
    await p.lock.acquire()  # a batch in progress
    try:
        await asyncio.wait_for(app._tick(), 2.0)  # returns at once, the lock still taken
        ticking = app._ticking
        assert ticking is not None and not ticking.done()
        await app._tick()
        assert app._ticking is ticking  # not a second tick while one waits
        assert set(p.tasks) == {0}
    finally:
        p.lock.release()
    await asyncio.wait_for(ticking, 30.0)
    assert app.crashed is None
    assert set(p.tasks) == set(range(p.ctx.partitions))  # the tick made every assigned task


def test_an_event_held_at_a_revocation_is_applied_when_redelivered(settings: Settings) -> None:
    _run(settings, _held_event_redelivered)


async def _held_event_redelivered(pipeline: tuple[Pipeline, Feed]) -> None:
    """Problem 3: an event held when its partition is revoked is dropped unacknowledged;
    redelivered (to this worker again), it is applied and stored, not taken for a
    duplicate of itself."""
    p, feed = pipeline
    held_doc = _doc("post_created", "m-held", 30)
    held = feed.message("interactions", 0, 0, held_doc)
    behind = feed.message("purchases", 0, 0, _doc("quote_requested", "m-x", 0))
    await p.handle([held, behind])
    await _settle(p)
    assert p.tasks[0].held == 1 and feed.acks("interactions") == []

    await p.revoke()  # commits what was applied; drops what is held
    await p.assign(range(p.ctx.partitions), lambda: True)  # the partition comes back here
    again = feed.message("interactions", 0, 0, held_doc)  # Faust seeks to the committed offset
    ahead = feed.message("purchases", 0, 1, _doc("quote_requested", "m-x", 60))
    await p.handle([again, ahead])
    await _settle(p)
    rows = _rows(
        p,
        "SELECT count() FROM {db}.events WHERE event_id = toUUID('" + held_doc["event_id"] + "')",
    )
    assert rows == [(1,)]
    assert p.duplicates == 0
    scores = _rows(p, "SELECT count() FROM {db}.score_history WHERE trigger = 'event'")
    assert scores == [(2,)]  # the first quote and the redelivered post (11:00 is held)
    assert feed.acks("interactions") == [0]


def test_a_partition_kept_through_a_rebalance_keeps_what_it_held(settings: Settings) -> None:
    _run(settings, _kept_partition)


async def _kept_partition(pipeline: tuple[Pipeline, Feed]) -> None:
    """Found by the scale-out test: offsets 0-1 were held at a revocation and dropped,
    the partition came back to the same worker, and Faust went on from its fetch
    position (offset 2), so 0-1 never came again: lost, and passed by the commit. A
    task that stays keeps what it holds."""
    p, feed = pipeline
    docs = [_doc("post_created", f"m-{i}", 30 + i) for i in range(3)]
    behind = feed.message("purchases", 0, 0, _doc("quote_requested", "m-x", 0))
    await p.handle([feed.message("interactions", 0, i, docs[i]) for i in range(2)] + [behind])
    await _settle(p)
    assert p.tasks[0].held == 2

    await p.revoke()
    await p.assign(range(p.ctx.partitions), lambda: True)
    ahead = feed.message("purchases", 0, 1, _doc("quote_requested", "m-x", 90))
    await p.handle([feed.message("interactions", 0, 2, docs[2]), ahead])
    await _settle(p)
    stored = _rows(p, "SELECT count() FROM {db}.events")
    assert stored == [(4,)]  # the first quote and the three posts
    assert feed.acks("interactions") == [0, 1, 2]


def test_a_hole_in_the_offsets_is_rewound_and_filled(settings: Settings) -> None:
    _run(settings, _hole_rewound)


async def _hole_rewound(pipeline: tuple[Pipeline, Feed]) -> None:
    """Found by the scale-out test: after a rebalance Faust went on from offset 5 of a
    partition whose offsets 2-4 it had fetched and dropped, and its commit passed them.
    Now offset 5 is set aside unacknowledged, the partition is rewound to offset 2, and
    the redelivered 2-5 are stored and acknowledged in order: nothing is lost."""
    p, feed = pipeline
    rewinds: list[tuple[str, int, int]] = []
    p.rewinder = lambda topic, partition, offset: rewinds.append((topic, partition, offset))
    docs = [_doc("post_created", f"m-{i}", i) for i in range(6)]
    post = [feed.message("interactions", 0, i, docs[i]) for i in range(6)]
    ahead = feed.message("purchases", 0, 0, _doc("quote_requested", "m-x", 90))
    await p.handle([post[0], post[1], ahead])
    await _settle(p)
    held = p.tasks[0].held
    await p.handle([post[5]])  # the hole: 2-4 never came
    await _settle(p)
    topic = feed.settings.topic("interactions")
    assert rewinds == [(topic, 0, 2)]
    assert p.tasks[0].held == held  # offset 5 was not taken: it comes again after the rewind
    assert 5 not in feed.acks("interactions")

    await p.handle(post[2:6])  # the consumer, rewound, delivers from offset 2
    await _settle(p)
    assert feed.acks("interactions") == [0, 1, 2, 3, 4, 5]
    # the six posts (the quote at 11:30 is held: the posts end at 10:05)
    assert _rows(p, "SELECT count() FROM {db}.events")[0][0] == 6
    scores = _rows(p, "SELECT count() FROM {db}.score_history WHERE trigger = 'event'")
    assert scores == [(6,)]
    registry = p.metrics.registry
    assert registry.get_sample_value("pulse_input_rewinds_total", {"topic": topic}) == 1
    assert registry.get_sample_value("pulse_offset_holes_total", {"topic": topic}) is None
    assert p.holes == 0


def test_a_hole_that_rewinds_cannot_fill_is_counted(settings: Settings) -> None:
    _run(settings, _hole_counted)


async def _hole_counted(pipeline: tuple[Pipeline, Feed]) -> None:
    """Offsets 2-4 are gone from the broker (retention): every rewind delivers offset 5
    again. After MAX_REWINDS the hole is taken as lost: counted, and offset 5 is applied."""
    p, feed = pipeline
    p.rewinder = lambda topic, partition, offset: None
    docs = [_doc("post_created", f"m-{i}", i) for i in range(6)]
    post = [feed.message("interactions", 0, i, docs[i]) for i in range(6)]
    ahead = feed.message("purchases", 0, 0, _doc("quote_requested", "m-x", 90))
    await p.handle([post[0], post[1], ahead])
    for _ in range(MAX_REWINDS):
        await p.handle([post[5]])
    assert p.holes == 0 and p.rewinds == MAX_REWINDS
    await p.handle([post[5]])
    assert p.holes == 3
    registry = p.metrics.registry
    topic = feed.settings.topic("interactions")
    assert registry.get_sample_value("pulse_offset_holes_total", {"topic": topic}) == 3
    await p.handle([post[5]])  # a redelivery is no hole
    assert p.holes == 3
    await _settle(p)
    assert feed.acks("interactions") == [0, 1, 5]


def test_timers_fired_by_a_withheld_event_are_kept(settings: Settings) -> None:
    _run(settings, _withheld_event_fires_timers)


async def _withheld_event_fires_timers(pipeline: tuple[Pipeline, Feed]) -> None:
    """An event of a member without analytics consent is not stored, but its event time
    moves the clock: the silence timers it fires belong to other members and are stored
    (they were dropped with the withheld event, and the engine had moved on)."""
    p, feed = pipeline
    docs = [
        _doc("post_created", "m-silent", 0),
        event(
            "consent_changed",
            "m-out",
            T + timedelta(minutes=1),
            event_id=str(uuid.uuid4()),
            analytics=False,
        ),
        # eight days on: past m-silent's 7-day boundary and the hour of allowed lateness
        _doc("post_created", "m-out", 8 * 24 * 60 + 120),
    ]
    ahead = feed.message("purchases", 0, 0, _doc("quote_requested", "m-x", 30 * 24 * 60))
    await p.handle([feed.message("interactions", 0, i, d) for i, d in enumerate(docs)] + [ahead])
    await _settle(p)
    assert p.tasks[0].withheld == 1
    silence = _rows(p, "SELECT count() FROM {db}.score_history WHERE trigger = 'silence'")
    assert silence == [(1,)]
    assert feed.acks("interactions") == [0, 1, 2]


def test_a_withdrawal_of_consent_retracts_the_latest_scores(settings: Settings) -> None:
    _run(settings, _withdrawal_retracts_scores)


async def _withdrawal_retracts_scores(pipeline: tuple[Pipeline, Feed]) -> None:
    """A member who withdraws analytics consent is no longer scored, so their latest row
    leaves ``member_scores`` (no reader ranks them on a stale score); ``score_history``
    keeps what was scored with consent. Given again, consent brings a new score."""
    p, feed = pipeline
    day = 24 * 60

    def consent(minutes: float, analytics: bool) -> dict[str, Any]:
        when = T + timedelta(minutes=minutes)
        return event("consent_changed", "m-out", when, analytics=analytics)

    async def send(step: int, docs: list[dict[str, Any]], ahead: float) -> None:
        """Two interactions (offsets 2 * step on), and a purchase that releases them."""
        messages = [feed.message("interactions", 0, 2 * step + i, d) for i, d in enumerate(docs)]
        later = _doc("quote_requested", "m-x", ahead)
        await p.handle([*messages, feed.message("purchases", 0, step, later)])
        await _settle(p)
        await p.tasks[0].erasures.wait()

    def latest(member: str) -> list[tuple[Any, ...]]:
        pseudonym = p.ctx.pseudonym(member)
        return _rows(
            p,
            "SELECT count(), countIf(scored_at > '2026-03-02 10:05:00') "
            f"FROM {{db}}.member_scores FINAL WHERE member_id = '{pseudonym}'",
        )

    history = "SELECT count() FROM {db}.score_history WHERE member_id = '%s'"
    out = p.ctx.pseudonym("m-out")
    await send(0, [_doc("post_created", "m-out", 0), _doc("post_created", "m-in", 1)], 2 * day)
    assert latest("m-out") == [(1, 0)]
    scored = _rows(p, history % out)[0][0]

    await send(1, [consent(5, False), _doc("post_created", "m-out", 6)], 4 * day)
    assert latest("m-out") == [(0, 0)]  # retracted
    assert _rows(p, history % out) == [(scored,)]  # kept; nothing scored while withdrawn
    assert latest("m-in")[0][0] == 1  # nobody else is touched
    assert p.tasks[0].erasures.retractions == {}  # done, and the task record forgets it

    await send(2, [consent(5 * day, True), _doc("post_created", "m-out", 5 * day + 1)], 7 * day)
    assert latest("m-out") == [(1, 1)]  # scored again, after consent came back
    assert feed.acks("interactions") == list(range(6))


def test_nothing_is_applied_after_the_final_checkpoint_of_a_stop(settings: Settings) -> None:
    _run(settings, _nothing_after_the_final_checkpoint)


async def _nothing_after_the_final_checkpoint(pipeline: tuple[Pipeline, Feed]) -> None:
    """A stop takes one last checkpoint (:meth:`Pipeline.finish`) and waits for its
    commit; the consumer still delivers until Faust stops. A batch or a tick applied
    then would start a checkpoint that the stop cuts short: rows stored on this
    worker's ClickHouse with no commit, which only a restart on the same data dir rolls
    back (seen in the scale-out test: 34 events of a stopped worker's shard stored twice
    in the union). So after it nothing is applied, stored or acknowledged."""
    p, feed = pipeline
    first = [feed.message("interactions", 1, 0, _doc("post_created", "m-a", 0))]
    first.append(feed.message("interactions", 1, 1, _doc("post_created", "m-a", 2)))
    first.append(feed.message("purchases", 1, 0, _doc("quote_requested", "m-b", 1)))
    await p.handle(first)
    await p.finish()  # the horizon (10:01) releases two; the third stays held
    assert sorted(feed.acked) == [("interactions", 1, 0), ("purchases", 1, 0)]
    seq = p.tasks[1].seq

    late = [feed.message("interactions", 1, 2, _doc("post_created", "m-c", 3))]
    late.append(feed.message("purchases", 1, 1, _doc("quote_requested", "m-d", 4)))
    await p.handle(late)
    await _settle(p)
    assert len(feed.acked) == 2  # the next owner reads them from the committed offset
    assert p.tasks[1].seq == seq and p.tasks[1].open.empty()
    assert _rows(p, "SELECT count() FROM {db}.events")[0][0] == 2


def test_counters_count_every_message_once(settings: Settings) -> None:
    _run(settings, _counters_count_every_message)


async def _counters_count_every_message(pipeline: tuple[Pipeline, Feed]) -> None:
    """The per-topic counters are added up per batch (not per message): the samples
    must still say what each message became."""
    p, feed = pipeline
    docs = [_doc("post_created", f"m-{i}", i) for i in range(3)]
    batch = [feed.message("interactions", 0, i, d) for i, d in enumerate(docs)]
    batch.append(feed.message("interactions", 0, 3, {"event_type": "nonsense", "member_id": "m-0"}))
    batch.append(feed.message("purchases", 0, 0, _doc("quote_requested", "m-9", 60)))
    batch.append(feed.message("purchases", 0, 1, _doc("quote_requested", "m-9", 61)))
    await p.handle(batch)
    await _settle(p)
    interactions, purchases = feed.settings.topic("interactions"), feed.settings.topic("purchases")
    sample = p.metrics.registry.get_sample_value
    assert sample("pulse_events_received_total", {"topic": interactions}) == 4
    assert sample("pulse_events_received_total", {"topic": purchases}) == 2
    valid = {"topic": interactions, "event_type": "post_created"}
    assert sample("pulse_events_valid_total", valid) == 3
    assert sample("pulse_events_valid_total", {**valid, "topic": purchases}) is None
    quotes = {"topic": purchases, "event_type": "quote_requested"}
    assert sample("pulse_events_valid_total", quotes) == 2
    assert sample("pulse_scores_emitted_total", {"trigger": "event"}) == 3  # quotes held
    assert sample("pulse_acked_messages_total", {"topic": interactions}) == 4
    assert feed.acks("interactions") == [0, 1, 2, 3] and feed.acks("purchases") == []


def test_an_erasure_in_progress_does_not_hold_the_sinks_inserts(settings: Settings) -> None:
    _run(settings, _erasure_does_not_hold_inserts)


async def _erasure_does_not_hold_inserts(pipeline: tuple[Pipeline, Feed]) -> None:
    """Erasures delete through a client of their own. A clickhouse-connect client runs
    one call at a time: on the sink's client, an erasure's counts and DELETEs (up to a
    second in a live run) held every insert behind them, the freshness bench's tail."""
    p, feed = pipeline
    first = feed.message("interactions", 0, 0, _doc("post_created", "m-a", 1))
    ahead = feed.message("purchases", 0, 0, _doc("quote_requested", "m-9", 60))  # the horizon
    await p.handle([first, ahead])
    await _settle(p)
    erasing = p.tasks[0].erasures.clickhouse  # what the task's erasures run on
    marker = f"erasure-stand-in-{uuid.uuid4().hex[:8]}"
    # stands for an erasure's statements: a call that lasts ~6 s on that client
    slow = threading.Thread(
        target=erasing.query,
        args=(
            f"SELECT '{marker}', sleepEachRow(0.5) FROM numbers(12) SETTINGS max_block_size = 1",
        ),
    )
    slow.start()
    try:
        observer = connect("", None, feed.settings.data_path)
        running = f"SELECT count() FROM system.processes WHERE query LIKE '%{marker}%' "
        running += "AND query NOT LIKE '%system.processes%'"
        for _ in range(500):  # bounded: until the call is under way
            if observer.query(running).result_rows[0][0]:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the stand-in erasure never started")
        later = feed.message("interactions", 0, 1, _doc("post_created", "m-b", 2))
        await p.handle([later])
        await _settle(p)  # stored and acknowledged ...
        assert slow.is_alive()  # ... while the erasure's call still runs
        assert feed.acks("interactions") == [0, 1]
        assert _rows(p, "SELECT count() FROM {db}.events WHERE event_type = 'post_created'") == [
            (2,)
        ]
    finally:
        slow.join(30)
