"""The Faust adapter of :mod:`streams.consumer`: no gaps, rewinds that never block.

These tests also pin the parts of Faust the adapter leans on (``_add_gap`` as
``_drain_messages`` calls it, ``_new_offset``, ``seek_wait``): when a Faust release
renames or re-signs one of them, a test here fails instead of a rebalance losing events.
"""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from faust.tables import TableManager
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams.app import PulseApp, PulseTableManager
from streams.config import Settings
from streams.consumer import (
    FETCH_MAX_WAIT_MS,
    PulseConsumer,
    PulseConsumerThread,
    PulseTransport,
    Rewinder,
)

pytestmark = pytest.mark.unit

TOPIC = TP("pulse.interactions", 0)


def _app(tmp_path: Path) -> PulseApp:
    settings = Settings(
        kafka_bootstrap="127.0.0.1:9",  # never connected: nothing here starts the app
        data_dir=str(tmp_path),
        pseudonym_key="test-key-" + "0" * 24,
    )
    return PulseApp(settings, settings.kafka_bootstrap)


def test_the_app_consumes_with_the_adapted_consumer(tmp_path: Path) -> None:
    app = _app(tmp_path).app
    assert isinstance(app.transport, PulseTransport)
    assert isinstance(app.consumer, PulseConsumer)


def test_the_broker_holds_an_empty_fetch_for_at_most_100_ms(tmp_path: Path) -> None:
    """Issue 9 (freshness): Faust asks aiokafka for 1,500 ms; on Tansu a live stream then
    reached the worker about 0.4 s late (p50). The consumer the worker runs waits 100 ms."""
    consumer = _app(tmp_path).app.consumer

    async def create() -> Any:  # aiokafka makes its consumer inside a running loop
        thread = consumer._new_consumer_thread()
        assert isinstance(thread, PulseConsumerThread)
        return thread._create_worker_consumer(consumer.transport)

    created = asyncio.run(create())
    assert created._fetch_max_wait_ms == FETCH_MAX_WAIT_MS == 100
    # the attribute aiokafka's start() hands to its fetcher, and Faust's own setting
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(AIOKafkaConsumer.start)
    assert "fetch_max_wait_ms=1500" in inspect.getsource(
        faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer
    )


def test_table_recovery_starts_without_faust_s_one_second_pause(tmp_path: Path) -> None:
    """Issue 9 (restore): Faust's table manager sleeps 1 s before its recovery starts, in
    case tables are declared late. Pulse declares its table before the worker starts."""
    tables = _app(tmp_path).app.tables
    assert isinstance(tables, PulseTableManager)
    assert "await self.sleep(1.0)" in inspect.getsource(TableManager.on_start)
    steps: list[str] = []

    async def record(name: str, *_: Any) -> None:
        steps.append(name)

    tables.sleep = lambda n: record(f"sleep {n}")  # type: ignore[method-assign]
    tables._update_channels = lambda: record("channels")  # type: ignore[method-assign]
    tables.recovery.start = lambda: record("recovery")  # type: ignore[method-assign]
    asyncio.run(tables.on_start())
    assert steps == ["channels", "recovery"]


def test_faust_still_records_gaps_where_the_adapter_expects() -> None:
    base = faust_consumer.Consumer
    ours, theirs = (inspect.signature(c._add_gap) for c in (PulseConsumer, base))
    assert list(ours.parameters) == list(theirs.parameters)
    assert "self._add_gap(tp, r_offset + 1, offset)" in inspect.getsource(base._drain_messages)
    seek_wait = inspect.signature(faust_aiokafka.Consumer.seek_wait)
    assert list(seek_wait.parameters) == ["self", "partitions"]


def _commit_after_a_hole(consumer: Any) -> list[int | None]:
    """Offsets 0-1 and 5 acknowledged, 2-4 fetched and dropped (a gap in Faust's
    view): the offsets Faust's next two commits would commit."""

    async def run() -> list[int | None]:
        await consumer._add_gap(TOPIC, 2, 4)
        consumer._acked[TOPIC] = [0, 1, 5]
        first = consumer._new_offset(TOPIC)
        consumer._committed_offset[TOPIC] = first  # as Faust's commit records it
        return [first, consumer._new_offset(TOPIC)]

    return asyncio.run(run())


def test_a_commit_never_passes_a_hole(tmp_path: Path) -> None:
    app = _app(tmp_path).app
    consumer = app.consumer
    assert _commit_after_a_hole(consumer) == [2, None]  # 2-4 were never acknowledged
    # Faust's own consumer, for contrast: its gap lets the commit pass the dropped 2-4
    stock = faust_aiokafka.Consumer(
        app.transport,
        callback=app.topics.on_message,
        on_partitions_revoked=app._on_partitions_revoked,
        on_partitions_assigned=app._on_partitions_assigned,
    )
    assert _commit_after_a_hole(stock) == [6, None]


class _Consumer:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.seeks: list[dict[TP, int]] = []

    async def seek_wait(self, partitions: dict[TP, int]) -> None:
        self.seeks.append(dict(partitions))
        if self.error is not None:
            raise self.error


def test_a_rewind_seeks_in_the_background_and_survives_failures() -> None:
    async def run() -> tuple[_Consumer, _Consumer]:
        ok, gone = _Consumer(), _Consumer(RuntimeError("No current assignment"))
        for consumer in (ok, gone):
            rewinder = Rewinder(lambda c=consumer: c)
            rewinder.rewind("pulse.interactions", 0, 2)  # returns at once
            assert consumer.seeks == []
            while rewinder._pending:
                await asyncio.sleep(0)
        return ok, gone

    ok, gone = asyncio.run(run())
    assert ok.seeks == [{TOPIC: 2}]
    assert gone.seeks == [{TOPIC: 2}]  # tried, failed, logged: nothing raised


def test_acknowledgements_faust_forgot_in_a_revocation_are_committed(tmp_path: Path) -> None:
    """Issue 8, seen in the scale-out test: two workers joined one after the other; in
    between, the revocation handler acknowledged offsets 10-14 of a partition the worker
    kept, and the second revocation made Faust forget them. Faust's list then starts at
    15 with 10 committed: it never commits again. The task's tracker knows 10-16 are
    acknowledged, one contiguous run from the committed offset: 17 is committed."""
    consumer = _app(tmp_path).app.consumer
    assert isinstance(consumer, PulseConsumer)

    def faust_state() -> None:
        consumer._committed_offset[TOPIC] = 10
        consumer._acked[TOPIC] = [15, 16]
        consumer._acked_index[TOPIC] = {15, 16}

    faust_state()
    assert consumer._new_offset(TOPIC) is None  # Faust alone: stuck at 10 for good
    runs: dict[TP, tuple[int, int]] = {TOPIC: (4, 16)}
    consumer.acknowledged = runs.get
    faust_state()
    assert consumer._new_offset(TOPIC) == 17
    assert consumer._acked[TOPIC] == [] and consumer._acked_index[TOPIC] == set()
    # a run that starts past the committed offset proves nothing about what is before it
    runs[TOPIC] = (12, 16)
    faust_state()
    assert consumer._new_offset(TOPIC) is None
    # nothing tracked here: Faust's own reckoning
    del runs[TOPIC]
    consumer._committed_offset[TOPIC] = 10
    consumer._acked[TOPIC], consumer._acked_index[TOPIC] = [10, 11], {10, 11}
    assert consumer._new_offset(TOPIC) == 12


def test_faust_still_forgets_acknowledgements_where_the_adapter_expects() -> None:
    source = inspect.getsource(faust_consumer.Consumer.on_partitions_revoked)
    assert "self._acked.pop(tp, None)" in source
    assert "offset = self._new_offset(tp)" in inspect.getsource(
        faust_consumer.Consumer._filter_committable_offsets
    )
    base = faust_consumer.Consumer
    ours, theirs = (inspect.signature(c._new_offset) for c in (PulseConsumer, base))
    assert list(ours.parameters) == list(theirs.parameters)
