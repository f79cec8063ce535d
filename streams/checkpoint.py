"""A partition task's checkpoint: what it covers, and the steps that make it durable.

This module is the one place that says when an input message is acknowledged.
A :class:`Checkpoint` collects, between two commits of one task, every message
the task finished (applied events, rejects, duplicates, redeliveries), the rows
they produced (derived tables, ``events``, ``failed_events``) and the members
they changed. :meth:`Checkpoint.commit` then runs, in order:

1. **Outputs confirmed.** The shared producer is flushed: every score, alert and
   dead-letter message of the checkpoint is on the broker (each with its
   identity and checkpoint tags).
2. **Rows stored.** The checkpoint's rows, all tagged (task, generation,
   sequence), and -- when ClickHouse is the record -- its ``task_state`` rows
   (member states, task record, commit record, in one insert, the last of the
   batch) are handed to the sink as one unit. The sink stores a batch table by
   table and retries a failed insert forever; a crash in between leaves tagged
   rows without a commit, which the next restore rolls back.
3. **Committed.** With Kafka as the record, once the batch is stored: member
   states and the task record to the changelog, then the commit record to the
   commits topic (:mod:`streams.checkpoint_store`). Commits of one task happen in
   order: each waits for the one before.
4. **Acknowledged.** Only now is each covered message marked done on its
   topic-partition's :class:`~streams.offsets.OffsetTracker`, which tells Faust
   about the contiguous prefix; Faust then commits those offsets.

Nothing after step 4 matters for correctness: a crash anywhere before it means
the checkpoint never happened (its rows are rolled back, its messages skipped
when produced again, its inputs redelivered).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sinks.clickhouse import ClickHouseSink
from sinks.rows import Tags
from streams.checkpoint_store import Checkpoints
from streams.commits import CommitRecord
from streams.outputs import OutputProducer

__all__ = ["Checkpoint", "Sealed"]


@dataclass
class Sealed:
    """The state a checkpoint commits: members (pseudonym -> sealed) and the task record."""

    members: dict[str, str]
    task_record: str


@dataclass
class Checkpoint:
    """What one task finished since its previous checkpoint (see the module docstring)."""

    tags: Tags
    started: float = field(default_factory=time.monotonic)
    messages: list[Any] = field(default_factory=list)  # Inbound, acknowledged at commit
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    members: set[str] = field(default_factory=set)  # member ids changed (in clear, in memory)
    event_ids: list[str] = field(default_factory=list)  # ids of the events rows
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    erasures: list[str] = field(default_factory=list)  # pseudonyms of erased members
    retractions: dict[str, int] = field(default_factory=dict)  # consent withdrawn: at (ms)

    def add_rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.rows.setdefault(table, []).extend(rows)

    def empty(self) -> bool:
        return not self.messages and not self.members and not self.rows

    def expired(self, now: float, interval: float) -> bool:
        return now - self.started >= interval

    @property
    def row_count(self) -> int:
        return sum(len(rows) for rows in self.rows.values())

    async def commit(
        self,
        *,
        sealed: Sealed,
        record: CommitRecord,
        outputs: OutputProducer,
        sink: ClickHouseSink,
        store: Checkpoints,
        remember: Callable[[list[str]], None],
        acknowledge: Callable[[list[Any]], None],
        after: Awaitable[None] | None,
    ) -> asyncio.Future[None]:
        """Steps 1 and 2 now; returns a future that completes after steps 3 and 4.

        ``record`` is completed here with the producer's end offsets (step 1 must
        have confirmed the messages first). ``after`` is the previous commit of the
        same task, which step 3 waits for.
        """
        tags = self.tags
        await outputs.flush()  # 1
        record = CommitRecord(
            record.task,
            record.gen,
            record.seq,
            record.lineage,
            record.broker,
            record.inputs,
            dict(outputs.ends.get(tags.task, {})),
        )
        loop = asyncio.get_running_loop()
        stored: asyncio.Future[None] = loop.create_future()
        # 2: one unit, added without awaiting in between, so one sink batch holds it
        for table, rows in self.rows.items():
            sink.add(table, rows)
        state_rows = store.rows(
            tags.task, tags.gen, tags.seq, sealed.members, sealed.task_record, record
        )
        if state_rows:
            sink.add("task_state", state_rows)
        remember(self.event_ids)  # ids are "seen" once their rows are buffered for storage

        def on_stored() -> None:
            if not stored.done():
                stored.set_result(None)

        sink.add_ack(on_stored)

        async def finish() -> None:
            await stored
            if after is not None:
                await after
            await store.commit(  # 3
                tags.task, tags.gen, tags.seq, sealed.members, sealed.task_record, record
            )
            acknowledge(self.messages)  # 4
            for hook in self.after_commit:
                hook()

        return asyncio.ensure_future(finish())
