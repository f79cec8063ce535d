"""The member-state Faust table on the real broker: what a checkpoint leaves in its changelog."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams.config import Settings
from streams.runtime import Runtime
from streams.state_table import COMMIT_KEY, StateRecord

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


def test_a_checkpoint_ends_with_its_commit_and_takes_a_large_models_record(
    settings: Settings,
) -> None:
    runtime = Runtime(settings, serve_http=False, announce=False).start()
    table = runtime.faust.state
    try:
        members = [StateRecord(f"member{i:03d}", i % 2, 5, f"sealed-{i}") for i in range(40)]
        # 3 MB: larger than Kafka's 1 MB default, as a 20,000-member models record is
        models = StateRecord("~models", 0, 5, os.urandom(3 << 20).hex()[: 3 << 20])
        future = asyncio.run_coroutine_threadsafe(
            table.write(members, commit=models),
            runtime.thread.loop,  # type: ignore[union-attr]
        )
        future.result(60)
        again = [StateRecord("member000", 0, 6, "sealed-again")]
        asyncio.run_coroutine_threadsafe(
            table.write(again, commit=StateRecord("~models", 0, 6, "small")),
            runtime.thread.loop,  # type: ignore[union-attr]
        ).result(60)
        assert table.written == 43
        restored = {r.key: r for r in table.records()}  # the local store, markers left out
    finally:
        runtime.stop()

    assert len(restored) == 41 and COMMIT_KEY not in restored
    assert restored["~models"].sealed == "small"
    # the member's record carries its record of the last complete checkpoint
    assert restored["member000"].previous == (5, "sealed-0")

    topic = f"{settings.app_id}-member-state-changelog"
    changelog = _read_changelog(settings.kafka_bootstrap, topic, settings.partitions)
    for partition, (high, messages) in changelog.items():
        # every partition ends with a one-record commit batch, so the broker's end
        # offset is the true end (Faust's recovery reads up to it)
        assert high == messages[-1].offset() + 1
        last = StateRecord.decode(messages[-1].key(), messages[-1].value())
        assert last.version == 6 and last.key == ("~models" if partition == 0 else COMMIT_KEY)
    big = [m for m in changelog[0][1] if m.key() == b"~models" and len(m.value()) > 3_000_000]
    assert len(big) == 1  # the 3 MB record went through whole
