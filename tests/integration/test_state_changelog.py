"""The member-state Faust table on the real broker: what a checkpoint leaves in its changelog."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams.config import Settings
from streams.runtime import Runtime
from streams.state_table import StateRecord, task_key

pytestmark = pytest.mark.integration


def _read_changelog(bootstrap: str, topic: str, partitions: int) -> dict[int, list[Any]]:
    """Every message of the changelog, per partition, and Tansu's end offset for each."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "state-table-reader",
            "enable.auto.commit": False,
        }
    )
    try:
        out: dict[int, list[Any]] = {}
        for p in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            consumer.assign([TopicPartition(topic, p, low)])
            messages: list[Any] = []
            while not messages or messages[-1].offset() < high - 1:
                message = consumer.poll(10)
                assert message is not None, f"partition {p}: nothing after {len(messages)}"
                assert message.error() is None, message.error()
                messages.append(message)
            out[p] = [high, messages]
        return out
    finally:
        consumer.close()


def test_each_partition_ends_with_its_task_record_and_takes_a_large_one(
    settings: Settings,
) -> None:
    settings = settings.with_(state_store="kafka")
    runtime = Runtime(settings, serve_http=False, announce=False).start()
    table = runtime.faust.state
    assert table is not None
    loop = runtime.thread.loop  # type: ignore[union-attr]
    try:
        for partition in range(settings.partitions):
            members = [
                StateRecord(f"member{i:03d}", partition, 1, 5, f"sealed-{i}")
                for i in range(partition, 40, settings.partitions)
            ]
            # 3 MB: larger than Kafka's 1 MB default, as a large community's models are
            big = os.urandom(3 << 20).hex()[: 3 << 20] if partition == 0 else "small"
            last = StateRecord(task_key(partition), partition, 1, 5, big)
            changes = asyncio.run_coroutine_threadsafe(table.send(members, last), loop).result(60)
            table.apply(changes)
        assert table.written == 40 + settings.partitions
        restored = {r.key: r for r in table.records(0)}  # the local store, partition 0
    finally:
        runtime.stop()

    assert len(restored) == 21 and len(restored[task_key(0)].sealed) == 3 << 20
    topic = f"{settings.app_id}-member-state-changelog"
    changelog = _read_changelog(settings.kafka_bootstrap, topic, settings.partitions)
    for partition, (high, messages) in changelog.items():
        # every partition ends with its task record alone in a batch, so the broker's end
        # offset is the true end (Faust's recovery reads up to it)
        assert high == messages[-1].offset() + 1
        last = StateRecord.decode(messages[-1].key(), messages[-1].value())
        assert last.key == task_key(partition) and last.seq == 5
