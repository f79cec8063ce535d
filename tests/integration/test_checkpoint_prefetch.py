"""Issue 9 (restore): checkpoints read and opened while the worker joins its group.

A restore takes what was read ahead only while its commit is still the newest in
``task_state``; a checkpoint committed in between (another worker on the same
ClickHouse) is read again. Real chDB, the production store and its rows.
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from sinks.clickhouse import connect
from sinks.migrations import apply_migrations
from streams.checkpoint_store import ClickHouseCheckpoints
from streams.commits import CommitRecord, Lineage

pytestmark = pytest.mark.integration


@pytest.fixture
def store(data_dir: Path) -> Iterator[tuple[ClickHouseCheckpoints, Client, str]]:
    client = connect("", None, data_dir)
    database = f"pulse_prefetch_{uuid.uuid4().hex[:10]}"
    apply_migrations(client, database)
    yield ClickHouseCheckpoints(client, database), client, database
    client.command(f"DROP DATABASE IF EXISTS {database}")


def _commit(client: Client, database: str, seq: int, members: dict[str, str]) -> CommitRecord:
    """Store checkpoint ``seq`` of task 0 as a worker does: member rows, task and commit."""
    record = CommitRecord(0, 1, seq, Lineage.start(1, seq), "broker-a")
    store = ClickHouseCheckpoints(client, database)
    rows = store.rows(0, 1, seq, members, "task-record", record)
    client.insert(
        f"{database}.task_state",
        [[r[c] for c in ("task", "key", "gen", "seq", "state")] for r in rows],
        column_names=["task", "key", "gen", "seq", "state"],
    )
    return record


def _opened(sealed: str) -> tuple[str, str]:
    return ("opened", sealed)


def test_a_restore_takes_the_members_opened_ahead_while_the_commit_is_newest(
    store: tuple[ClickHouseCheckpoints, Client, str], data_dir: Path
) -> None:
    checkpoints, client, database = store
    record = _commit(client, database, 1, {"p-a": "sealed-a", "p-b": "sealed-b", "p-c": ""})
    checkpoints.prefetch([0, 1], _opened, connect("", None, data_dir))
    restored = asyncio.run(checkpoints.load(0))
    assert restored is not None and restored.commit == record
    assert restored.opened == {"p-a": ("opened", "sealed-a"), "p-b": ("opened", "sealed-b")}
    assert restored.members == {"p-a": "sealed-a", "p-b": "sealed-b", "p-c": ""}
    assert asyncio.run(checkpoints.load(1)) is None  # nothing committed: nothing read ahead
    again = asyncio.run(checkpoints.load(0))  # read ahead once: the next load reads as before
    assert again is not None and again.opened is None and again.members == restored.members


def test_a_checkpoint_committed_after_the_read_ahead_is_read_again(
    store: tuple[ClickHouseCheckpoints, Client, str], data_dir: Path
) -> None:
    checkpoints, client, database = store
    _commit(client, database, 1, {"p-a": "old-a"})
    checkpoints.prefetch([0], _opened, connect("", None, data_dir))
    early = checkpoints._prefetched[0].result(timeout=60)  # the read ahead is done
    assert early is not None and early.opened == {"p-a": ("opened", "old-a")}
    newer = _commit(client, database, 2, {"p-a": "new-a"})  # another worker moved it on
    restored = asyncio.run(checkpoints.load(0))
    assert restored is not None and restored.commit == newer
    assert restored.members == {"p-a": "new-a"} and restored.opened is None


def test_read_ahead_for_tasks_given_to_another_worker_is_dropped(
    store: tuple[ClickHouseCheckpoints, Client, str], data_dir: Path
) -> None:
    checkpoints, client, database = store
    _commit(client, database, 1, {"p-a": "sealed-a"})
    checkpoints.prefetch([0, 1], _opened, connect("", None, data_dir))
    checkpoints.keep_prefetched([1])
    assert set(checkpoints._prefetched) == {1}
    restored = asyncio.run(checkpoints.load(0))
    assert restored is not None and restored.opened is None  # read at its restore


def test_members_are_opened_with_the_garbage_collector_paused(
    store: tuple[ClickHouseCheckpoints, Client, str], data_dir: Path
) -> None:
    """A restore keeps every object it builds: full collections on the way only re-walk
    them (twice the time to build 100,000 members' states, issue 9)."""
    checkpoints, client, database = store
    _commit(client, database, 1, {"p-a": "sealed-a", "p-b": "sealed-b"})
    collecting: list[bool] = []

    def opened(sealed: str) -> str:
        collecting.append(gc.isenabled())
        return sealed

    checkpoints.prefetch([0], opened, connect("", None, data_dir))
    restored = asyncio.run(checkpoints.load(0))
    assert restored is not None and restored.opened == {"p-a": "sealed-a", "p-b": "sealed-b"}
    assert collecting == [False, False]
    assert gc.isenabled()  # on again once the members are open
