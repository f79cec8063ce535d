"""Erasures and consent withdrawals reach every ClickHouse a deployment writes to.

A partition task deletes an erased member's rows (and a withdrawn member's latest
scores) from the ClickHouse its worker writes to (:mod:`streams.erasures`). When
every worker writes to the same server, that is every row. When each worker has a
ClickHouse of its own -- embedded dirs, a shard each, their union the record --
rows the member's earlier partition owners wrote stay in their shards. So once a
task has carried out a batch, it publishes it on ``<PULSE_APP_ID>-erasures`` (one
partition, kept without a time limit; key the pseudonym, no personal data), and
every worker follows that feed and carries out on its own ClickHouse what the
others published: at start, every few seconds while it runs, and when it stops.
A shard without a running worker catches up with ``pulse apply-erasures``.
Each ClickHouse keeps how far it carried the feed out (``erasure_feed``), so a
restart goes on from there rather than erasing again the rows of a member who came
back after their erasure.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Producer

from schemas.errors import PulseError
from sinks.erasure import erase_members, retract_scores
from streams.broker import read_to_end

__all__ = ["ErasureFeed", "FeedError", "FeedFollower", "ORIGIN_HEADER"]

log = logging.getLogger(__name__)

#: Header naming the worker that carried out (and published) a message's deletion.
ORIGIN_HEADER = "pulse.origin"
#: Members erased by one batch of statements while catching up.
_BATCH = 500


class FeedError(PulseError):
    """The broker did not take a batch of the erasure feed (the task retries it)."""


class ErasureFeed:
    """Publish this worker's deletions; carry out everyone else's on ``clickhouse``."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        clickhouse: Any,
        database: str,
        *,
        broker: str = "",
        kafka_config: dict[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.clickhouse = clickhouse
        self.database = database
        self.kafka_config = dict(kafka_config or {})
        self.origin = uuid.uuid4().hex  # this process: its own deletions are done already
        self.broker = broker  # the cluster id: a new embedded broker starts a new feed
        self.position = self._stored_position()  # the next feed offset to carry out
        self.applied = 0  # deletions carried out here that other workers published
        self.published = 0  # messages this process put on the feed
        self._producer: Producer | None = None
        self._lock = threading.Lock()  # one catch-up at a time (the follower, a stop)
        self._publishing = threading.Lock()  # one publish at a time
        self._unsent: list[tuple[str, dict[str, Any]]] = []

    # --- publishing (from the erasure thread of a task) -------------------------------
    def publish(self, erased: Iterable[str], retracted: dict[str, int]) -> None:
        """Tell the other workers what this one deleted. Never raises: what the broker
        does not take now is sent again by the follower's next round (the task's own
        deletion is done, and must not wait for the feed)."""
        messages: list[tuple[str, dict[str, Any]]] = [(p, {"erase": True}) for p in erased]
        messages += [(p, {"retract_through_ms": int(t)}) for p, t in retracted.items()]
        with self._publishing:  # tasks erase in threads of their own
            self._unsent.extend(messages)
            if not self._unsent:
                return
            try:
                self._publish(self._unsent)
            except Exception as exc:
                log.warning("the erasure feed did not take %d: %s", len(self._unsent), exc)
                return
            self._unsent = []

    def retry(self) -> None:
        """Send what an earlier :meth:`publish` could not."""
        self.publish([], {})

    def _publish(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        if self._producer is None:
            self._producer = Producer(
                {
                    "bootstrap.servers": self.bootstrap,
                    **self.kafka_config,
                    "enable.idempotence": True,
                    "acks": "all",
                    "logger": log,
                }
            )
        errors: list[str] = []

        def delivered(error: Any, _: Any) -> None:
            if error is not None:
                errors.append(str(error))

        headers: list[tuple[str, str | bytes | None]] = [(ORIGIN_HEADER, self.origin.encode())]
        for pseudonym, body in messages:
            self._producer.produce(
                self.topic,
                json.dumps(body).encode(),
                pseudonym.encode(),
                partition=0,
                headers=headers,
                on_delivery=delivered,
            )
        left = self._producer.flush(30)
        if errors or left:
            raise FeedError(f"the erasure feed took {len(messages) - left} of {len(messages)}")
        self.published += len(messages)

    def close(self) -> None:
        self.retry()
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None

    # --- following ---------------------------------------------------------------------
    def catch_up(self, timeout: float = 30.0) -> int:
        """Carry out what other workers published since the last call; the deletions
        done (members erased plus scores retracted)."""
        with self._lock:
            messages = read_to_end(
                self.bootstrap, {(self.topic, 0): self.position}, timeout, config=self.kafka_config
            )
            erase: list[str] = []
            retract: dict[str, int] = {}
            for message in messages:
                headers = dict(message.headers() or [])
                if headers.get(ORIGIN_HEADER) == self.origin.encode():
                    continue
                key, value = message.key(), message.value()
                if not key or not value:
                    continue
                pseudonym, body = key.decode(), json.loads(value)
                if body.get("erase"):
                    erase.append(pseudonym)
                elif "retract_through_ms" in body:
                    through = int(body["retract_through_ms"])
                    retract[pseudonym] = max(through, retract.get(pseudonym, through))
            for start in range(0, len(erase), _BATCH):
                erase_members(self.clickhouse, self.database, erase[start : start + _BATCH])
            withdrawn = list(retract.items())
            for start in range(0, len(withdrawn), _BATCH):
                retract_scores(
                    self.clickhouse, self.database, dict(withdrawn[start : start + _BATCH])
                )
            if messages:
                self.position = max(m.offset() or 0 for m in messages) + 1
                self._store_position()
            done = len(erase) + len(retract)
            self.applied += done
            return done

    def _stored_position(self) -> int:
        rows = self.clickhouse.query(
            f"SELECT max(position) FROM {self.database}.erasure_feed "
            "WHERE broker = {b:String} AND topic = {t:String}",
            parameters={"b": self.broker, "t": self.topic},
        ).result_rows
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def _store_position(self) -> None:
        self.clickhouse.insert(
            f"{self.database}.erasure_feed",
            [[self.broker, self.topic, self.position]],
            column_names=["broker", "topic", "position"],
        )


class FeedFollower(threading.Thread):
    """Calls :meth:`ErasureFeed.catch_up` every ``interval`` seconds until stopped."""

    def __init__(self, feed: ErasureFeed, interval: float) -> None:
        super().__init__(name="pulse-erasure-feed", daemon=True)
        self.feed = feed
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                self.feed.retry()
                self.feed.catch_up()
            except Exception as exc:  # the broker or ClickHouse away: the next round
                log.warning("following the erasure feed failed, will retry: %s", exc)

    def stop(self) -> None:
        self.stopping.set()
        self.join(self.interval + 35)
