"""Commit records: which checkpoints of a partition task are durable, and which are not.

A task's checkpoint ``seq`` is committed when its commit record is stored: in
ClickHouse (``task_state``, key ``~commit``) when ClickHouse is the record
(embedded Kafka), or on the ``<app>-task-commits`` topic when Kafka is
(:mod:`streams.checkpoint_store`). Everything a checkpoint writes before that --
derived rows, events rows, Kafka messages -- is tagged with the task, its
generation and the checkpoint's sequence (:class:`sinks.rows.Tags`).

Every restore of a task starts a new **generation**, which continues the
sequence from the checkpoint it restored. The commit record carries the
**lineage**: for each recent generation, the range of sequences it committed.
A tagged row is committed exactly when its (generation, sequence) falls in one
of those ranges; any other row with a sequence past the lineage's floor belongs
to a checkpoint that never committed (its writer crashed, or lost the partition
before the commit), and is rolled back before the restored task writes again.

>>> lineage = Lineage.start(gen=7, seq=0).committing(7, 1).committing(7, 2)
>>> lineage.committed(7, 2), lineage.committed(7, 3)
(True, False)
>>> after_crash = lineage.restored(gen=9)  # generation 7 wrote seq 3, then died
>>> after_crash = after_crash.committing(9, 3)
>>> after_crash.committed(9, 3), after_crash.committed(7, 3), after_crash.committed(7, 2)
(True, False, True)
>>> after_crash.orphan_condition()
'seq > 0 AND NOT ((gen = 7 AND seq BETWEEN 1 AND 2) OR (gen = 9 AND seq BETWEEN 3 AND 3))'
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from streams.offsets import AppliedOffsets

__all__ = ["Lineage", "CommitRecord", "MAX_LINEAGE"]

#: Generations a commit record remembers. Rows of older generations are never rolled
#: back (they lie below the lineage's floor).
MAX_LINEAGE = 64


@dataclass(frozen=True)
class Lineage:
    """Committed sequence ranges ``(gen, first, last)``, oldest first.

    ``floor`` is the sequence the oldest remembered generation restored from: rows
    at or below it are committed history.
    """

    ranges: tuple[tuple[int, int, int], ...]
    floor: int

    @classmethod
    def start(cls, gen: int, seq: int) -> Lineage:
        """The lineage of a generation that restored checkpoint ``seq`` and committed nothing."""
        return cls((), seq)

    def committed(self, gen: int, seq: int) -> bool:
        if seq <= self.floor:
            return True
        return any(g == gen and first <= seq <= last for g, first, last in self.ranges)

    def committing(self, gen: int, seq: int) -> Lineage:
        """This lineage after generation ``gen`` committed checkpoint ``seq``."""
        ranges = list(self.ranges)
        if ranges and ranges[-1][0] == gen:
            ranges[-1] = (gen, ranges[-1][1], seq)
        else:
            ranges.append((gen, seq, seq))
        floor = self.floor
        while len(ranges) > MAX_LINEAGE:
            dropped = ranges.pop(0)
            floor = max(floor, dropped[2])
        return Lineage(tuple(ranges), floor)

    def restored(self, gen: int) -> Lineage:
        """The lineage a new generation continues (nothing of its own committed yet)."""
        return self

    def orphan_condition(self) -> str:
        """SQL over columns ``gen`` and ``seq``: true for rows that never committed."""
        committed = " OR ".join(
            f"(gen = {g} AND seq BETWEEN {first} AND {last})" for g, first, last in self.ranges
        )
        return f"seq > {self.floor}" + (f" AND NOT ({committed})" if committed else "")

    def to_json(self) -> dict[str, Any]:
        return {"ranges": [list(r) for r in self.ranges], "floor": self.floor}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Lineage:
        ranges = tuple((int(g), int(a), int(b)) for g, a, b in data["ranges"])
        return cls(ranges, int(data["floor"]))


@dataclass(frozen=True)
class CommitRecord:
    """The record that makes checkpoint ``seq`` of task ``task`` durable.

    ``inputs``: per input topic, the offsets the checkpoint covers (valid only on the
    broker ``broker`` -- an embedded broker starts empty after every restart).
    ``outputs``: per output topic-partition, the offset after the last message the
    task's checkpoints had produced when this one committed; a new owner reads from
    there to find the messages of checkpoints that never committed.
    """

    task: int
    gen: int
    seq: int
    lineage: Lineage
    broker: str
    inputs: dict[str, AppliedOffsets] = field(default_factory=dict)
    outputs: dict[str, int] = field(default_factory=dict)  # "topic:partition" -> offset

    def encode(self) -> bytes:
        return json.dumps(
            {
                "task": self.task,
                "gen": self.gen,
                "seq": self.seq,
                "lineage": self.lineage.to_json(),
                "broker": self.broker,
                "inputs": {t: o.to_json() for t, o in self.inputs.items()},
                "outputs": self.outputs,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> CommitRecord:
        data = json.loads(raw)
        return cls(
            task=int(data["task"]),
            gen=int(data["gen"]),
            seq=int(data["seq"]),
            lineage=Lineage.from_json(data["lineage"]),
            broker=str(data["broker"]),
            inputs={t: AppliedOffsets.from_json(o) for t, o in data["inputs"].items()},
            outputs={str(k): int(v) for k, v in data["outputs"].items()},
        )
