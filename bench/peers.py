"""The peers Pulse is measured against, each run as its own process on the same broker and topics.

``python -m bench.peers faust ...``: a stock Faust agent that ``json.loads`` every value and
counts. ``python -m bench.peers raw ...``: a confluent-kafka consumer doing the same.
Both read every partition of the given topics from the beginning, stop counting at
``--expect`` messages and write one JSON object to ``--out``: wall time of the first and
the last message and the process CPU time between them. The driver then stops the process
by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

__all__ = ["main"]


class _Counter:
    def __init__(self, expect: int, out: Path) -> None:
        self.expect = expect
        self.out = out
        self.count = 0
        self.first_wall = self.first_cpu = 0.0

    def seen(self, n: int) -> bool:
        """Count ``n`` decoded messages; write the result and return True at ``expect``."""
        if self.count == 0 and n:
            self.first_wall, self.first_cpu = time.time(), time.process_time()
        self.count += n
        if self.count < self.expect:
            return False
        result = {
            "count": self.count,
            "first_wall": self.first_wall,
            "last_wall": time.time(),
            "cpu_s": time.process_time() - self.first_cpu,
            "pid": os.getpid(),
        }
        partial = self.out.with_suffix(".partial")
        partial.write_text(json.dumps(result))
        partial.replace(self.out)
        return True


def run_faust(bootstrap: str, topics: list[str], partitions: int, counter: _Counter) -> None:
    import faust

    app = faust.App(
        f"bench-faust-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{bootstrap}",
        datadir=tempfile.mkdtemp(prefix="bench-faust-"),
        web_enabled=False,
        topic_partitions=partitions,
        topic_disable_leader=True,
        # Tansu completes a group join after about half the rebalance timeout (default 60 s)
        broker_rebalance_timeout=4.0,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
    )
    source = app.topic(*topics, key_type=bytes, value_type=bytes)
    done = False

    async def count(stream: Any) -> None:
        nonlocal done
        async for value in stream:
            json.loads(value)
            if not done:
                done = counter.seen(1)

    app.agent(source, name="bench.count")(count)
    worker = faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


def run_raw(bootstrap: str, topics: list[str], partitions: int, counter: _Counter) -> None:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-raw-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "log_level": 3,
        }
    )
    consumer.assign(
        [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(partitions)]
    )
    try:
        while True:
            # a short timeout: the last, partial batch must not wait for a full one
            messages = consumer.consume(num_messages=1000, timeout=0.05)
            decoded = 0
            for message in messages:
                if message.error() is None:
                    json.loads(message.value() or b"null")
                    decoded += 1
            if decoded and counter.seen(decoded):
                return
    finally:
        consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers")
    parser.add_argument("kind", choices=["faust", "raw"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topics", required=True, help="comma-separated")
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    counter = _Counter(args.expect, Path(args.out))
    run = run_faust if args.kind == "faust" else run_raw
    run(args.bootstrap, args.topics.split(","), args.partitions, counter)


if __name__ == "__main__":
    main()
