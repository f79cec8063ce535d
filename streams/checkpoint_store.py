"""Where partition-task checkpoints become durable, and how a task comes back from them.

Two records, chosen by ``PULSE_STATE_STORE``:

* **clickhouse** (default with the embedded broker, which keeps nothing across
  restarts): a checkpoint's member states, its task record and its commit record
  are rows of ``task_state`` in one insert, the last of its sink batch. The
  checkpoint is committed exactly when that insert lands.
* **kafka** (default with an external cluster): member states and the task record
  go to the changelog of the ``member-state`` Faust table
  (:mod:`streams.state_table`), then the commit record to the compacted
  ``<PULSE_APP_ID>-task-commits`` topic. Any worker that is assigned the task
  restores from there, whatever ClickHouse it writes to.

Either way a checkpoint's derived rows, events rows and failures are written
before its commit record, tagged with (task, generation, sequence). Restoring a
task therefore (1) reads its newest commit record, (2) deletes from this
worker's ClickHouse the tagged rows the lineage says never committed
(:func:`roll_back`), (3) with Kafka as the record, collects the ids of messages
those checkpoints had already produced on the output topics, so they are not
produced again (:func:`produced_after`), and (4) loads the member states and the
task record that go with the commit.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from clickhouse_connect.driver.client import Client

from streams.broker import read_to_end
from streams.commits import CommitRecord
from streams.gc_pause import gc_paused
from streams.state_table import Change, StateRecord, StateTable, change, task_key

__all__ = [
    "Restored",
    "Checkpoints",
    "ClickHouseCheckpoints",
    "KafkaCheckpoints",
    "COMMIT_KEY",
    "TAGGED_TABLES",
    "roll_back",
    "generation",
    "produced_after",
    "read_commits",
]

log = logging.getLogger(__name__)

#: ``task_state`` key of a task's commit record (never a pseudonym: those are hex).
COMMIT_KEY = "~commit"
#: ``task_state`` key of a task's own record (models, alert engine, clock).
TASK_KEY = "~task"

#: Tables whose rows carry (task, gen, seq) and are rolled back when uncommitted.
TAGGED_TABLES = (
    "member_scores",
    "score_history",
    "lifecycle_transitions",
    "model_metrics",
    "alerts",
    "failed_events",
    "events",
)

#: Headers every output message carries (see :mod:`streams.outputs`).
ID_HEADER = "pulse.output.id"
TASK_HEADER = "pulse.task"


@dataclass
class Restored:
    """A task's committed checkpoint: its commit record, task record and member states."""

    commit: CommitRecord
    task_record: str  # sealed; "" if none
    members: dict[str, str] = field(default_factory=dict)  # pseudonym -> sealed ("" erased)
    #: members opened ahead of the restore (ClickHouseCheckpoints.prefetch):
    #: pseudonym -> what the prefetch's ``open_member`` made of the sealed record
    opened: dict[str, Any] | None = None

    def open_members(self, open_member: Callable[[str], Any]) -> dict[str, Any]:
        """Every member record opened by ``open_member`` (once; erased members' tombstones
        "" left out): pseudonym -> what it made of the record."""
        if self.opened is None:
            self.opened = {
                key: open_member(sealed) for key, sealed in self.members.items() if sealed
            }
        return self.opened


class Checkpoints(Protocol):
    """The record of partition-task checkpoints (see the module docstring)."""

    kind: str

    async def load(self, task: int) -> Restored | None: ...

    def keep_prefetched(self, tasks: Iterable[int]) -> None:
        """Forget checkpoints read ahead for tasks other than ``tasks`` (if any were)."""
        ...

    def rows(
        self,
        task: int,
        gen: int,
        seq: int,
        members: dict[str, str],
        task_record: str,
        commit: CommitRecord,
    ) -> list[dict[str, Any]]:
        """``task_state`` rows to store with the checkpoint's batch ([] if not the record)."""
        ...

    async def commit(
        self,
        task: int,
        gen: int,
        seq: int,
        members: dict[str, str],
        task_record: str,
        commit: CommitRecord,
    ) -> None:
        """Make the checkpoint durable once its batch is stored (no-op if the rows did)."""
        ...


def _state_row(task: int, key: str, gen: int, seq: int, state: str) -> dict[str, Any]:
    return {"task": task, "key": key, "gen": gen, "seq": seq, "state": state}


class ClickHouseCheckpoints:
    """``task_state`` in ClickHouse is the record (one insert per checkpoint batch)."""

    kind = "clickhouse"

    def __init__(self, client: Client, database: str) -> None:
        self.client = client
        self.database = database
        self._prefetched: dict[int, Future[Restored | None]] = {}

    def prefetch(
        self,
        tasks: Iterable[int],
        open_member: Callable[[str], Any],
        client: Client | None = None,
    ) -> None:
        """Read and open the committed checkpoints of ``tasks`` in a background thread.

        A worker starts it before it joins its consumer group, which takes seconds
        of waiting (the broker's rebalance delay): the restore of a task that gets
        assigned then finds its members opened already, if its commit is still the
        newest (another worker sharing this ClickHouse may have moved it on).
        ``client``: a connection of its own (one client runs one query at a time)."""
        executor = ThreadPoolExecutor(1, thread_name_prefix="pulse-prefetch")
        for task in tasks:
            self._prefetched[task] = executor.submit(self._load, task, open_member, client)
        executor.shutdown(wait=False)

    def keep_prefetched(self, tasks: Iterable[int]) -> None:
        """Drop what was read ahead for tasks this worker was not given."""
        keep = set(tasks)
        for task in [t for t in self._prefetched if t not in keep]:
            self._prefetched.pop(task).cancel()

    async def load(self, task: int) -> Restored | None:
        early = self._prefetched.pop(task, None)
        if early is not None:
            try:
                restored = await asyncio.wrap_future(early)
            except Exception:  # read again below, and say why the early read failed
                log.exception("task %d: reading its checkpoint ahead failed", task)
            else:
                if await asyncio.to_thread(self._still_newest, task, restored):
                    return restored
        return await asyncio.to_thread(self._load, task)

    def _still_newest(self, task: int, restored: Restored | None) -> bool:
        rows = self.client.query(
            f"SELECT argMax(state, seq) FROM {self.database}.task_state "
            "WHERE task = {task:UInt16} AND key = {key:String} GROUP BY key",
            parameters={"task": task, "key": COMMIT_KEY},
        ).result_rows
        newest = CommitRecord.decode(str(rows[0][0])) if rows else None
        return newest == (restored.commit if restored is not None else None)

    def _load(
        self,
        task: int,
        open_member: Callable[[str], Any] | None = None,
        client: Client | None = None,
    ) -> Restored | None:
        rows = (
            (client or self.client)
            .query(
                f"SELECT key, argMax(state, seq) FROM {self.database}.task_state "
                "WHERE task = {task:UInt16} GROUP BY key",
                parameters={"task": task},
            )
            .result_rows
        )
        found = {str(key): str(state) for key, state in rows}
        commit = found.pop(COMMIT_KEY, None)
        if commit is None:
            return None
        task_record = found.pop(TASK_KEY, "")
        restored = Restored(CommitRecord.decode(commit), task_record, found)
        if open_member is not None:
            with gc_paused():
                restored.open_members(open_member)
        return restored

    def rows(
        self,
        task: int,
        gen: int,
        seq: int,
        members: dict[str, str],
        task_record: str,
        commit: CommitRecord,
    ) -> list[dict[str, Any]]:
        rows = [_state_row(task, key, gen, seq, sealed) for key, sealed in members.items()]
        rows.append(_state_row(task, TASK_KEY, gen, seq, task_record))
        rows.append(_state_row(task, COMMIT_KEY, gen, seq, commit.encode().decode()))
        return rows

    async def commit(
        self,
        task: int,
        gen: int,
        seq: int,
        members: dict[str, str],
        task_record: str,
        commit: CommitRecord,
    ) -> None:
        return None


class KafkaCheckpoints:
    """The member-state changelog and the task-commits topic are the record."""

    kind = "kafka"

    def __init__(
        self, table: StateTable, bootstrap: str, commits_topic: str, producer_config: dict[str, Any]
    ) -> None:
        from confluent_kafka import Producer

        self.table = table
        self.bootstrap = bootstrap
        self.commits_topic = commits_topic
        self.producer_config = dict(producer_config)
        self.producer = Producer(
            {
                **producer_config,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 0,
                "logger": log,
            }
        )
        self._lineages: dict[int, Any] = {}

    def keep_prefetched(self, tasks: Iterable[int]) -> None:
        return None  # the changelog is read at each restore: nothing is read ahead

    async def load(self, task: int) -> Restored | None:
        """The task's newest commit and the records that go with it.

        The local store is trusted only if it holds the commit's own task record
        (written last with every checkpoint, after its member records, on the same
        changelog partition). A store behind the changelog -- a worker that owned
        the partition before, whose recovery stopped short -- would otherwise give
        older member states with newer offsets. Then the changelog partition is
        read from the broker; a record still missing there is logged as an error,
        and the newest committed records are taken."""
        commit = (await asyncio.to_thread(self._read_commits)).get(task)
        if commit is None:
            return None
        restored = self._select(task, commit)
        if restored is None:
            log.warning(
                "task %d: the member-state store is behind commit %d; reading the "
                "changelog partition from the broker",
                task,
                commit.seq,
            )
            changes = await asyncio.to_thread(self._read_changelog, task)
            self.table.apply(changes)
            restored = self._select(task, commit)
            if restored is None:  # as before this check: the newest committed records
                log.error(
                    "task %d: the changelog holds no task record of commit %d; restoring "
                    "the newest committed records it holds",
                    task,
                    commit.seq,
                )
                restored = self._select(task, commit, exact=False)
        return restored

    def _config(self) -> dict[str, Any]:
        return {k: v for k, v in self.producer_config.items() if k != "bootstrap.servers"}

    def _read_commits(self) -> dict[int, CommitRecord]:
        return read_commits(self.bootstrap, self.commits_topic, config=self._config())

    def _read_changelog(self, task: int) -> list[Change]:
        topic = self.table.changelog_name
        messages = read_to_end(self.bootstrap, {(topic, task): 0}, config=self._config())
        return [change(m.key() or b"", m.value(), topic, task, m.offset() or 0) for m in messages]

    def _select(self, task: int, commit: CommitRecord, *, exact: bool = True) -> Restored | None:
        """The records of ``commit`` in the local store (None: it lacks the task record;
        ``exact=False``: whatever committed task record it holds)."""
        lineage = commit.lineage
        task_record: StateRecord | None = None
        members: dict[str, str] = {}
        for record in self.table.records(task):
            chosen = record.as_of(lineage)
            if chosen is None:
                continue
            if record.key == task_key(task):
                task_record = chosen
            elif not record.key.startswith("~"):
                members[record.key] = chosen.sealed
        if exact and (
            task_record is None or (task_record.gen, task_record.seq) != (commit.gen, commit.seq)
        ):
            return None
        return Restored(commit, "" if task_record is None else task_record.sealed, members)

    def rows(
        self,
        task: int,
        gen: int,
        seq: int,
        members: dict[str, str],
        task_record: str,
        commit: CommitRecord,
    ) -> list[dict[str, Any]]:
        return []

    async def commit(
        self,
        task: int,
        gen: int,
        seq: int,
        members: dict[str, str],
        task_record: str,
        commit: CommitRecord,
    ) -> None:
        lineage = commit.lineage
        table = self.table
        records = [
            StateRecord(key, task, gen, seq, sealed, table.previous_of(key, lineage))
            for key, sealed in members.items()
        ]
        key = task_key(task)
        last = StateRecord(key, task, gen, seq, task_record, table.previous_of(key, lineage))
        changes: list[Change] = await table.send(records, last)
        await asyncio.to_thread(self._produce_commit, commit)
        table.apply(changes)

    def close(self) -> None:
        self.producer.flush(10)
        self.producer = None  # type: ignore[assignment]

    def _produce_commit(self, commit: CommitRecord) -> None:
        errors: list[str] = []

        def delivered(error: Any, message: Any) -> None:
            if error is not None:
                errors.append(str(error))

        self.producer.produce(
            self.commits_topic, commit.encode(), str(commit.task).encode(), on_delivery=delivered
        )
        remaining = self.producer.flush(60)
        if remaining or errors:
            from schemas.errors import PulseError

            raise PulseError(f"commit of task {commit.task} not confirmed: {errors or remaining}")


def read_commits(
    bootstrap: str, topic: str, *, config: dict[str, Any] | None = None
) -> dict[int, CommitRecord]:
    """The newest commit record of every task on the commits topic (one partition)."""
    latest: dict[int, CommitRecord] = {}
    for message in read_to_end(bootstrap, {(topic, 0): 0}, config=config):
        value = message.value()
        if value is None:
            continue
        record = CommitRecord.decode(value)
        current = latest.get(record.task)
        if current is None or record.seq >= current.seq:
            latest[record.task] = record
    return latest


def generation(kind: str) -> int:
    """A new generation id: random, its lowest bit naming the record (1: kafka), so a
    roll-back judges only rows written under the same record (see :func:`roll_back`)."""
    return (secrets.randbits(61) << 1) | (1 if kind == "kafka" else 0)


def roll_back(
    client: Client, database: str, task: int, commit: CommitRecord | None, kind: str
) -> dict[str, int]:
    """Delete this ClickHouse's rows of ``task`` that belong to checkpoints that never
    committed; returns the rows deleted per table (tables with none left out).

    Only rows of generations of the same record (``kind``) are judged: after a switch
    of ``PULSE_STATE_STORE`` the other record's rows are history, not orphans."""
    condition = "seq > 0" if commit is None else commit.lineage.orphan_condition()
    same_record = f"gen % 2 = {1 if kind == 'kafka' else 0}"
    deleted: dict[str, int] = {}
    for table in TAGGED_TABLES:
        where = f"task = {int(task)} AND {same_record} AND {condition}"
        count = int(
            client.query(f"SELECT count() FROM {database}.{table} WHERE {where}").result_rows[0][0]
        )
        if count:
            client.command(
                f"DELETE FROM {database}.{table} WHERE {where}",
                settings={"mutations_sync": 2},
            )
            deleted[table] = count
    if deleted:
        log.warning("task %d: rolled back rows of uncommitted checkpoints: %s", task, deleted)
    return deleted


def produced_after(
    bootstrap: str,
    task: int,
    starts: dict[str, int],
    config: dict[str, Any] | None = None,
) -> set[str]:
    """Ids of the messages task ``task`` produced from ``starts`` ("topic:partition" ->
    offset; the ends its last commit recorded, 0 where it recorded none) to the end:
    those of checkpoints that never committed, which the new owner does not produce
    again."""
    positions: dict[tuple[str, int], int] = {}
    for key, offset in starts.items():
        topic, _, partition = key.rpartition(":")
        positions[(topic, int(partition))] = offset
    ids: set[str] = set()
    mine = str(task).encode()
    for message in read_to_end(bootstrap, positions, config=config):
        headers = dict(message.headers() or [])
        identity = headers.get(ID_HEADER)
        if headers.get(TASK_HEADER) == mine and isinstance(identity, bytes):
            ids.add(identity.decode())
    return ids
