"""Helpers for tests that talk to real components: offsets, topics, polling, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]

#: The pseudonym key of every test deployment on the fixture broker (not a real secret).
TEST_PSEUDONYM_KEY = "test-deployment-key-0123456789abcdef"


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The consumer group's committed offsets at the broker: the system of record."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


def consume_all(
    bootstrap: str, topic: str, expect: int, timeout: float = 30.0, settle: float = 2.0
) -> list[object]:
    """Read a topic from the start until ``expect`` messages arrived and ``settle``
    seconds passed without more (bounded; never trusts watermarks)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    # every partition assigned by hand: no group to join (a join on Tansu can take
    # as long as its rebalance delay)
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = sorted(metadata.topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    messages: list[object] = []
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                if len(messages) >= expect:
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since >= settle:
                        break
                continue
            quiet_since = None
            messages.append(message)
    finally:
        consumer.close()
    return messages


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Bounded polling for another component (never a sleep standing in for a window)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def pulse_env(
    bootstrap: str, prefix: str, app_id: str, data_dir: Path, **extra: str
) -> dict[str, str]:
    """Environment of a `pulse` subprocess against the test broker: its own topics,
    consumer group and data dir, 2 partitions and the short test timeouts, and the
    deployment's pseudonym key (an external broker needs one; ``extra`` may replace it)."""
    return {
        "PULSE_KAFKA_BOOTSTRAP": bootstrap,
        "PULSE_PSEUDONYM_KEY": TEST_PSEUDONYM_KEY,
        "PULSE_TOPIC_PREFIX": prefix,
        "PULSE_APP_ID": app_id,
        "PULSE_DATA_DIR": str(data_dir),
        "PULSE_PARTITIONS": "2",
        "PULSE_REBALANCE_TIMEOUT_SECONDS": "2",
        "PULSE_INPUT_IDLE_SECONDS": "1",
        **extra,
    }


def run_pulse(
    args: list[str], env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the real `pulse` command in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
