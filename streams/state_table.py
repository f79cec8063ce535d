"""Member state in a changelog-backed Faust table, next to the ClickHouse checkpoint.

Every checkpoint the scorer writes to ``member_state`` in ClickHouse is also
written to the Faust table ``member-state``: one record per changed member (key:
the member's pseudonym; partition: the input partition the member's events come
from) and one for the models (key ``~models``, partition 0). The value is the
same sealed state as in ClickHouse, with its checkpoint version, so neither the
changelog topic nor the local store ever holds personal data in clear.

Why both:

* ClickHouse is the durable record in embedded mode, where the broker keeps
  nothing across restarts (DESIGN.md, "Durability in embedded mode").
* With a real Kafka cluster the changelog topic
  (``<PULSE_APP_ID>-member-state-changelog``, compacted) is the durable record
  Faust recovers from: a worker on a new host, or with a lost data dir, resumes
  every member and the models from it. With ``PULSE_STORE=rocksdb`` the table
  also lives on local disk, so a restart reads only the changelog's tail.

On start the scorer merges the two into one consistent checkpoint
(:func:`consistent`): the newest models record, and per member the newest record
that goes with it.

Writes happen outside any stream event (checkpoints follow event-time releases
and timers), so the table is declared with ``use_partitioner`` and each record
goes to its partition explicitly; the local store is updated from the delivery
report, the way Faust applies a changelog during recovery, so the store never
holds what the changelog does not.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import faust
from faust.types import TP
from faust.types.stores import StoreT

__all__ = ["StateTable", "StateRecord", "TABLE_NAME", "COMMIT_KEY", "consistent"]

TABLE_NAME = "member-state"

#: Key of the commit markers that end each checkpoint on the partitions without the models.
COMMIT_KEY = "~commit"


@dataclass(frozen=True, slots=True)
class StateRecord:
    """One member's (or the models') sealed checkpoint, as both stores keep it.

    A changelog record also carries the member's record of the checkpoint before
    (``previous``): a crash while a checkpoint is being written can leave some of its
    member records in the changelog without its models record, and the restore then
    falls back to the record that goes with the models (:func:`consistent`).
    """

    key: str  # the member's pseudonym, or the models row
    partition: int  # the input partition of the member's events
    version: int
    sealed: str  # "" for an erased member (a tombstone that keeps its version)
    previous: tuple[int, str] | None = None  # (version, sealed) of the checkpoint before

    def encode(self) -> bytes:
        data: dict[str, Any] = {"p": self.partition, "v": self.version, "s": self.sealed}
        if self.previous is not None:
            data["pv"], data["ps"] = self.previous
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, key: bytes, value: bytes) -> StateRecord:
        data = json.loads(value)
        previous = (int(data["pv"]), str(data["ps"])) if "pv" in data else None
        return cls(key.decode(), int(data["p"]), int(data["v"]), str(data["s"]), previous)

    def as_of(self, version: int) -> StateRecord | None:
        """This record, or the one before it, if it is no newer than ``version``."""
        if self.version <= version:
            return self
        if self.previous is not None and self.previous[0] <= version:
            return StateRecord(self.key, self.partition, *self.previous)
        return None


def consistent(
    stored: dict[str, StateRecord], changelog: Iterator[StateRecord], models_key: str
) -> tuple[dict[str, StateRecord], int]:
    """Merge ClickHouse's records (``stored``: one insert per checkpoint, so always
    consistent) with the changelog's, into one consistent checkpoint.

    The newest models record decides the checkpoint; per member the newest record no
    newer than it wins. Also returns how many members came from the changelog.
    """
    table = {r.key: r for r in changelog}
    candidates = [r for r in (stored.get(models_key), table.pop(models_key, None)) if r]
    if not candidates:  # no models yet: the changelog holds at most a partial first checkpoint
        return dict(stored), 0
    models = max(candidates, key=lambda r: r.version)
    merged = {models_key: models}
    from_table = 0
    for key in stored.keys() | table.keys():
        if key == models_key:
            continue
        mine = stored.get(key)
        theirs = table[key].as_of(models.version) if key in table else None
        if theirs is not None and (mine is None or theirs.version > mine.version):
            merged[key] = theirs
            from_table += 1
        elif mine is not None:
            merged[key] = mine
    return merged, from_table


@dataclass(frozen=True, slots=True)
class _Message:  # the fields of a Faust message that a store's changelog batch reads
    tp: TP
    partition: int
    offset: int
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class _Change:
    key: bytes
    value: bytes
    message: _Message


def _same(x: Any) -> Any:
    return x


class StateTable:
    """The ``member-state`` Faust table of one app: write checkpoints, read them back."""

    def __init__(self, app: faust.App, partitions: int, max_record_bytes: int) -> None:
        self.app = app
        self.partitions = partitions
        self.table = app.Table(
            TABLE_NAME,
            partitions=partitions,
            key_type=bytes,
            value_type=bytes,
            use_partitioner=True,  # written from checkpoints, not from inside a stream
            # the models record grows with the community: let the topic take it
            extra_topic_configs={"max.message.bytes": str(max_record_bytes)},
            help="Sealed member states and models, as checkpointed (see streams.state_table).",
        )
        self.written = 0  # member and models records sent (commit markers not counted)
        # version of the newest checkpoint known complete in the changelog (set at restore)
        self.committed_through = 0

    @property
    def recovered(self) -> bool:
        """Whether Faust finished recovering the table for the current assignment."""
        return bool(self._recovery.completed.is_set())

    async def wait_recovered(self) -> None:
        await self._recovery.completed.wait()

    @property
    def _recovery(self) -> Any:
        return cast(Any, self.app.tables).recovery

    async def write(self, records: list[StateRecord], commit: StateRecord) -> None:
        """Send one checkpoint to the changelog: the member ``records``, then -- once the
        broker has all of them -- its commit: the ``commit`` record (the models) on its
        partition and a :data:`COMMIT_KEY` marker on every other one. A models record in
        the changelog therefore means its whole checkpoint is there.

        Each commit record is alone in its produce batch, so every partition ends with a
        one-record batch: Tansu's list-offsets answer (the base offset of the last batch,
        plus one) is then the true end, which Faust's recovery reads up to.

        Each member record carries the member's record of the last complete checkpoint
        (see :class:`StateRecord`). The local store takes the records, with the offsets
        the broker gave them, once the commit is delivered (as recovery would, so a
        RocksDB store never claims an offset past a commit). A failed delivery raises
        here, before any event of the checkpoint is acknowledged.
        """
        changes = await self._send([self._with_previous(r) for r in records])
        markers = [
            commit if p == commit.partition else StateRecord(COMMIT_KEY, p, commit.version, "")
            for p in range(self.partitions)
        ]
        changes += await self._send(markers)
        store = cast(StoreT[bytes, bytes], self.table.data)
        store.apply_changelog_batch(changes, to_key=_same, to_value=_same)  # type: ignore[arg-type]
        self.committed_through = commit.version
        self.written += len(records) + 1

    def _with_previous(self, record: StateRecord) -> StateRecord:
        raw = self.table.data.get(record.key.encode())
        if raw is None:
            return record
        before = StateRecord.decode(record.key.encode(), raw).as_of(self.committed_through)
        previous = None if before is None else (before.version, before.sealed)
        return StateRecord(record.key, record.partition, record.version, record.sealed, previous)

    async def _send(self, records: list[StateRecord]) -> list[_Change]:
        """Produce ``records`` and wait for all of them; return them as delivered."""
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
            changes.append(_Change(key, value, _Message(tp, tp.partition, meta.offset, key, value)))
        return changes

    def records(self) -> Iterator[StateRecord]:
        """Every member and models record the table holds (after recovery: the newest per
        key)."""
        for key, value in list(self.table.data.items()):
            if value is not None and key != COMMIT_KEY.encode():
                yield StateRecord.decode(key, value)
