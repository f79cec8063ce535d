"""Partition-task state in a changelog-backed Faust table, the record when Kafka is durable.

With an external Kafka cluster, each checkpoint of a partition task writes the
members it changed and its task record (models, alert engine, clock) to the
Faust table ``member-state``: key the member's pseudonym (or ``~task/<n>``),
partition the task's own number, value the sealed state with the checkpoint's
generation and sequence. Neither the changelog topic
(``<PULSE_APP_ID>-member-state-changelog``) nor the local store ever holds
personal data in clear. The checkpoint is committed afterwards, by its record on
the commits topic (:mod:`streams.checkpoint_store`); Faust recovers the table for
the partitions a worker is assigned, and the task restores from it.

A record can outlive a checkpoint that never committed (its writer crashed
between the two), so each one carries the member's record of the checkpoint
before (``previous``): a restore takes the record if the commit lineage says it
committed, else its previous (:meth:`StateRecord.as_of`).

Writes happen outside any stream event (checkpoints follow event-time releases
and timers), so the table is declared with ``use_partitioner`` and each record
goes to its partition explicitly; the local store is updated only once the
checkpoint committed, the way Faust applies a changelog during recovery. The task
record is sent alone after the member records: every partition then ends with a
one-record batch, and Tansu's list-offsets answer (the base offset of the last
batch, plus one -- see :mod:`streams.broker`), which Faust's recovery reads up
to, is the true end.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import faust
from faust.types import TP
from faust.types.stores import StoreT

from streams.commits import Lineage

__all__ = ["StateTable", "StateRecord", "TABLE_NAME", "task_key", "Change", "change"]

TABLE_NAME = "member-state"


def task_key(task: int) -> str:
    """Key of a task's own record (models, alert engine, clock): never a pseudonym (hex)."""
    return f"~task/{task}"


@dataclass(frozen=True, slots=True)
class StateRecord:
    """One member's (or a task's) sealed state as of checkpoint (``gen``, ``seq``)."""

    key: str
    partition: int
    gen: int
    seq: int
    sealed: str  # "" for an erased member (a tombstone that keeps its place)
    previous: tuple[int, int, str] | None = None  # (gen, seq, sealed) committed before

    def encode(self) -> bytes:
        data: dict[str, Any] = {"p": self.partition, "g": self.gen, "s": self.seq, "v": self.sealed}
        if self.previous is not None:
            data["b"] = list(self.previous)
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, key: bytes, value: bytes) -> StateRecord:
        data = json.loads(value)
        previous = None
        if "b" in data:
            g, s, v = data["b"]
            previous = (int(g), int(s), str(v))
        return cls(
            key.decode(), int(data["p"]), int(data["g"]), int(data["s"]), str(data["v"]), previous
        )

    def as_of(self, lineage: Lineage) -> StateRecord | None:
        """This record if its checkpoint committed, else the committed one before it.

        >>> lineage = Lineage.start(1, 0).committing(1, 1)
        >>> r = StateRecord("m", 0, gen=1, seq=2, sealed="s2", previous=(1, 1, "s1"))
        >>> r.as_of(lineage).seq, StateRecord("m", 0, 1, 1, "s1").as_of(lineage).seq
        (1, 1)
        """
        if lineage.committed(self.gen, self.seq):
            return self
        if self.previous is not None and lineage.committed(self.previous[0], self.previous[1]):
            return StateRecord(self.key, self.partition, *self.previous)
        return None


@dataclass(frozen=True, slots=True)
class _Message:  # the fields of a Faust message that a store's changelog batch reads
    tp: TP
    partition: int
    offset: int
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class Change:
    """A record as the broker stored it (what :meth:`StateTable.apply` takes)."""

    key: bytes
    value: bytes
    message: _Message


def change(key: bytes, value: bytes | None, topic: str, partition: int, offset: int) -> Change:
    """A changelog message as :meth:`StateTable.apply` takes it (``value`` None deletes)."""
    raw = cast(bytes, value)
    return Change(key, raw, _Message(TP(topic, partition), partition, offset, key, raw))


def _same(x: Any) -> Any:
    return x


class StateTable:
    """The ``member-state`` Faust table of one app: send checkpoints, read them back."""

    def __init__(self, app: faust.App, partitions: int, max_record_bytes: int) -> None:
        self.app = app
        self.partitions = partitions
        self.table = app.Table(
            TABLE_NAME,
            partitions=partitions,
            key_type=bytes,
            value_type=bytes,
            use_partitioner=True,  # written from checkpoints, not from inside a stream
            # the task record grows with the community: let the topic take it
            extra_topic_configs={"max.message.bytes": str(max_record_bytes)},
            help="Sealed member and task states, as checkpointed (see streams.state_table).",
        )
        self.written = 0  # records sent

    @property
    def changelog_name(self) -> str:
        return str(self.table.changelog_topic.get_topic_name())

    def previous_of(self, key: str, lineage: Lineage) -> tuple[int, int, str] | None:
        """The committed record the store holds for ``key``, as a ``previous`` triple."""
        raw = self.table.data.get(key.encode())
        if raw is None:
            return None
        before = StateRecord.decode(key.encode(), raw).as_of(lineage)
        return None if before is None else (before.gen, before.seq, before.sealed)

    async def send(self, records: list[StateRecord], last: StateRecord) -> list[Change]:
        """Produce ``records``, then -- once the broker has them -- ``last`` alone."""
        changes = await self._send(records)
        changes += await self._send([last])
        self.written += len(records) + 1
        return changes

    def apply(self, changes: list[Change]) -> None:
        """Take committed records into the local store (as recovery would)."""
        store = cast(StoreT[bytes, bytes], self.table.data)
        store.apply_changelog_batch(changes, to_key=_same, to_value=_same)  # type: ignore[arg-type]

    async def _send(self, records: list[StateRecord]) -> list[Change]:
        topic = self.table.changelog_topic
        encoded = [(r.key.encode(), r.encode(), r.partition) for r in records]
        sent = [
            await topic.send(
                key=key,
                value=value,
                partition=partition,
                key_serializer="raw",
                value_serializer="raw",
                force=True,  # now, not attached to the stream event being processed
            )
            for key, value, partition in encoded
        ]
        changes = []
        for (key, value, _), future in zip(encoded, sent, strict=True):
            meta = await future
            tp = meta.topic_partition
            changes.append(Change(key, value, _Message(tp, tp.partition, meta.offset, key, value)))
        return changes

    def records(self, partition: int) -> Iterator[StateRecord]:
        """Every record the store holds for ``partition`` (after recovery: the newest per key)."""
        for key, value in list(self.table.data.items()):
            if value is None:
                continue
            record = StateRecord.decode(key, value)
            if record.partition == partition:
                yield record
