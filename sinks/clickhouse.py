"""The ClickHouse sink: batched, retried, de-duplicated inserts that never block the loop.

Implements the contract in :mod:`sinks.base`. Inserts run in a worker thread;
the asyncio loop keeps consuming while a batch is written, up to
``max_backlog_rows`` (then :meth:`ClickHouseSink.wait_capacity` applies
back-pressure).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from sinks.base import Ack, NullObserver, Row, SinkObserver, columns_of
from sinks.errors import FlushFailed, SinkError
from sinks.migrations import TABLES
from sinks.poison import SINK_REJECTED, InsertError, classify_insert_error, rejected_row
from sinks.rows import utc

__all__ = ["connect", "ClickHouseSink", "EventIdIndex"]

log = logging.getLogger(__name__)

#: Partitions one insert may touch (``events`` and ``score_history`` are partitioned by
#: month). ClickHouse refuses more than 100 by default, which one flush of a backfill
#: spanning nine years exceeds; the event-time floor (PULSE_MIN_EVENT_TIME, 2000 by
#: default) keeps a flush under about 320 months in 2026. Past this limit the batch is
#: split instead (the error counts as caused by the rows: see sinks.poison).
MAX_PARTITIONS_PER_INSERT = 1000


def _backoff(attempt: int, cap: float) -> float:
    """Exponential back-off from 0.4 s, doubling per attempt, at most ``cap`` seconds."""
    return min(cap, 0.2 * 2.0 ** min(attempt, 8))


def server_options(url: str, ca_file: str = "") -> dict[str, Any]:
    """clickhouse-connect options for a server ``url``: TLS comes with ``https://``
    (certificate verified, against ``ca_file`` if given, else the system's CAs).

    >>> server_options("https://u:p@ch:8443", "/etc/pulse/ca.pem")["ca_cert"]
    '/etc/pulse/ca.pem'
    >>> server_options("https://ch:8443")["verify"], "ca_cert" in server_options("http://ch")
    (True, False)
    """
    options: dict[str, Any] = {"dsn": url}
    if url.startswith("https://"):
        options["verify"] = True
        if ca_file:
            options["ca_cert"] = ca_file
    return options


def connect(
    url: str,
    database: str | None,
    data_dir: Path,
    *,
    readonly: bool = False,
    ca_file: str = "",
    limits: Mapping[str, Any] | None = None,
) -> Client:
    """A clickhouse-connect client: a server over HTTP(S) if ``url``, else chDB in ``data_dir``.

    chDB hosts one engine per process: clients on the same path share it (each
    client has its own connection and settings). ``ca_file``
    (``PULSE_CLICKHOUSE_CA_FILE``) verifies an https server's certificate. ``limits``
    are ClickHouse settings every query of this client runs with (``max_execution_time``...).
    """
    # `readonly` goes last: once it is set, ClickHouse refuses to change other settings.
    settings: dict[str, Any] = {**(limits or {}), **({"readonly": 1} if readonly else {})}
    try:
        if url:
            return clickhouse_connect.get_client(
                **server_options(url, ca_file), database=database, settings=settings
            )
        path = data_dir / "clickhouse"
        path.mkdir(parents=True, exist_ok=True)
        client = clickhouse_connect.get_client(dsn=f"chdb://{path}", settings=settings)
        if database:
            client.command(f"USE {database}")
        return client
    except Exception as exc:
        where = url.split("@")[-1].split("?")[0] if url else f"chDB at {data_dir / 'clickhouse'}"
        # the driver's message may quote the URL it was given: never its password
        detail = str(exc).replace(url, where) if url else str(exc)
        raise SinkError(f"cannot open ClickHouse ({where}): {detail}") from None


@dataclass
class _Isolation:
    """Progress of isolating the rows of one table that ClickHouse refuses."""

    pending: list[tuple[int, int]] = field(default_factory=list)  # row ranges, a stack
    poison: list[tuple[int, InsertError]] = field(default_factory=list)
    failures: list[Row] = field(default_factory=list)  # their failed_events rows
    recorded: bool = False

    def split(self, lo: int, hi: int, error: InsertError) -> None:
        """Rows ``lo:hi`` were refused: one row is poison, more are tried in halves."""
        if hi - lo == 1:
            self.poison.append((lo, error))
            return
        mid = (lo + hi) // 2
        self.pending.extend(((mid, hi), (lo, mid)))  # the first half is tried first


class RowRefused(Exception):
    """Reported to the observer for each row recorded as ``sink_rejected``."""


@dataclass
class _Batch:
    rows: dict[str, list[Row]] = field(default_factory=dict)
    acks: list[Ack] = field(default_factory=list)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: float = field(default_factory=time.monotonic)
    done_tables: set[str] = field(default_factory=set)
    isolating: dict[str, _Isolation] = field(default_factory=dict)
    attempts: int = 0
    hurried: bool = False  # a live checkpoint is in it: flush without waiting for age

    @property
    def size(self) -> int:
        return sum(len(r) for r in self.rows.values())


class ClickHouseSink:
    """Buffers rows per table and flushes them as one batch, in :data:`TABLES` order."""

    def __init__(
        self,
        client: Client,
        database: str,
        *,
        batch_rows: int = 5000,
        flush_seconds: float = 1.0,
        max_backlog_rows: int = 50_000,
        retry_max_seconds: float = 30.0,
        observer: SinkObserver | None = None,
    ) -> None:
        self.client = client
        self.database = database
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.max_backlog_rows = max_backlog_rows
        self.retry_max_seconds = retry_max_seconds
        self.observer: SinkObserver = observer or NullObserver()
        self._open = _Batch()
        self._inflight: _Batch | None = None
        self._lock = asyncio.Lock()
        self._capacity = asyncio.Event()
        self._capacity.set()
        self._wake = asyncio.Event()
        self.last_error: FlushFailed | None = None
        #: Wall-clock time of the first failure since the last successful flush (None: healthy).
        self.failing_since: float | None = None
        self.flushes = 0

    # --- adding ----------------------------------------------------------------
    def add(self, table: str, rows: Iterable[Row], ack: Ack | None = None) -> None:
        """Buffer ``rows`` for ``table``; ``ack`` fires once they (and all before) are stored."""
        if table not in TABLES:
            raise SinkError(f"unknown table {table!r}")
        batch = self._open
        batch.rows.setdefault(table, []).extend(rows)
        if ack is not None:
            batch.acks.append(ack)
        self._after_add()

    def add_ack(self, ack: Ack) -> None:
        """An acknowledgement with no rows: it still waits for every earlier row."""
        self._open.acks.append(ack)
        self._after_add()

    def _after_add(self) -> None:
        backlog = self.backlog_rows
        self.observer.backlog(backlog)
        if backlog >= self.max_backlog_rows:
            self._capacity.clear()
        if self._open.size >= self.batch_rows:
            self._wake.set()

    @property
    def backlog_rows(self) -> int:
        return self._open.size + (self._inflight.size if self._inflight else 0)

    @property
    def pending_acks(self) -> int:
        return len(self._open.acks) + (len(self._inflight.acks) if self._inflight else 0)

    async def wait_capacity(self) -> None:
        """Back-pressure: return once the backlog is below ``max_backlog_rows``."""
        await self._capacity.wait()

    def hurry(self) -> None:
        """Flush the open batch as soon as the one in flight is stored: it holds rows a
        reader waits for (a live task's checkpoint), not a backlog worth batching."""
        self._open.hurried = True
        self._wake.set()

    def due(self) -> bool:
        batch = self._open
        if not batch.acks and not batch.size:
            return False
        return (
            batch.hurried
            or batch.size >= self.batch_rows
            or (time.monotonic() - batch.created >= self.flush_seconds)
        )

    # --- flushing --------------------------------------------------------------
    async def flush(self) -> int:
        """Write the in-flight batch (cutting a new one if none); raise FlushFailed on error.

        Returns the number of acknowledgements fired.
        """
        async with self._lock:
            if self._inflight is None:
                if not self._open.size and not self._open.acks:
                    return 0
                self._inflight, self._open = self._open, _Batch()
            batch = self._inflight
            batch.attempts += 1
            if batch.attempts > 1:
                self.observer.retried()
            started = time.perf_counter()
            await asyncio.to_thread(self._write, batch)
            self.observer.flush_duration(time.perf_counter() - started)
            self._inflight = None
            self.flushes += 1
            self.last_error = None
            self.failing_since = None
            for ack in batch.acks:
                ack()
            self.observer.backlog(self.backlog_rows)
            if self.backlog_rows < self.max_backlog_rows:
                self._capacity.set()
            return len(batch.acks)

    def _write(self, batch: _Batch) -> None:
        """Insert each table's rows once; a retry skips tables already written.

        A failure of the moment raises :class:`FlushFailed` (the batch is retried as
        it is). A failure caused by the rows (see :mod:`sinks.poison`) splits them:
        each half is inserted on its own, halves that fail are split again, and a
        single row that still fails is recorded in ``failed_events`` as
        ``sink_rejected`` instead of being stored; the other rows are stored.
        """
        for table in TABLES:
            rows = batch.rows.get(table)
            if not rows or table in batch.done_tables:
                continue
            isolation = batch.isolating.get(table)
            if isolation is None:
                try:
                    self._insert(table, rows, f"{batch.token}-{table}")
                except Exception as exc:
                    error = self._refused(batch, table, exc)
                    log.warning(
                        "%s refused %d rows: isolating the rows that cause it",
                        error.describe(table),
                        len(rows),
                    )
                    isolation = batch.isolating[table] = _Isolation()
                    isolation.split(0, len(rows), error)
                else:
                    batch.done_tables.add(table)
                    self.observer.flushed(table, len(rows))
                    continue
            self._isolate(batch, table, rows, isolation)
            batch.done_tables.add(table)

    def _insert(self, table: str, rows: list[Row], token: str) -> None:
        columns = columns_of(rows)
        data = [[row.get(c) for row in rows] for c in columns]  # column-oriented: no transpose
        self.client.insert(
            f"{self.database}.{table}",
            data,
            column_names=columns,
            column_oriented=True,
            settings={
                "insert_deduplication_token": token,
                "max_partitions_per_insert_block": MAX_PARTITIONS_PER_INSERT,
            },
        )

    def _refused(self, batch: _Batch, table: str, exc: Exception) -> InsertError:
        """Classify a failed insert; raise FlushFailed (retry the batch) if it is transient."""
        self.observer.failed(table, exc)
        error = classify_insert_error(exc)
        if error.retriable:
            raise FlushFailed(table, exc, _backoff(batch.attempts, self.retry_max_seconds)) from exc
        return error

    def _isolate(self, batch: _Batch, table: str, rows: list[Row], isolation: _Isolation) -> None:
        """Store every row but the ones ClickHouse refuses; record those as failures.

        Progress is kept in ``isolation`` and each part has a deterministic token, so
        a transient failure half-way resumes where it stopped without duplicates.
        """
        pending = isolation.pending
        while pending:
            lo, hi = pending[-1]
            try:
                self._insert(table, rows[lo:hi], f"{batch.token}-{table}-{lo}-{hi}")
            except Exception as exc:
                error = classify_insert_error(exc)
                if error.retriable:
                    self._refused(batch, table, exc)  # raises FlushFailed
                pending.pop()
                isolation.split(lo, hi, error)
                continue
            pending.pop()
            self.observer.flushed(table, hi - lo)
        if isolation.poison and not isolation.recorded:
            if not isolation.failures:
                failed_at = utc(datetime.now(UTC))
                isolation.failures = [
                    rejected_row(table, rows[i], error, failed_at) for i, error in isolation.poison
                ]
                for _, error in isolation.poison:
                    self.observer.failed(table, RowRefused(error.name))
                log.warning(
                    "%d rows refused by %s recorded in failed_events as %s",
                    len(isolation.poison),
                    table,
                    SINK_REJECTED,
                )
            try:
                self._insert("failed_events", isolation.failures, f"{batch.token}-{table}-refused")
            except Exception as exc:  # these rows always fit: a failure here is of the moment
                self.observer.failed("failed_events", exc)
                delay = _backoff(batch.attempts, self.retry_max_seconds)
                raise FlushFailed("failed_events", exc, delay) from exc
            isolation.recorded = True
            self.observer.flushed("failed_events", len(isolation.failures))

    async def run(self) -> None:
        """Flush when a batch is due; on failure back off and retry the same batch forever."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.flush_seconds / 4)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._inflight is None and not self.due():
                continue
            try:
                await self.flush()
            except FlushFailed as exc:
                self._failed(exc)
                log.warning("%s; retrying in %.1fs", exc, exc.retry_after)
                await asyncio.sleep(exc.retry_after)

    def _failed(self, exc: FlushFailed) -> None:
        self.last_error = exc
        if self.failing_since is None:
            self.failing_since = time.time()

    async def drain(self, timeout: float = 30.0) -> bool:
        """Flush everything buffered, retrying until ``timeout``; True if nothing is left."""
        deadline = time.monotonic() + timeout
        while self._inflight is not None or self._open.size or self._open.acks:
            try:
                await self.flush()
            except FlushFailed as exc:
                self._failed(exc)
                if time.monotonic() + exc.retry_after > deadline:
                    return False
                await asyncio.sleep(exc.retry_after)
        return True


class EventIdIndex:
    """Which event ids are already stored: a bounded in-memory set backed by ``events``.

    Ids are remembered when their rows are buffered, so a duplicate inside the
    not-yet-flushed batch is caught too; older ids are found in ClickHouse
    (``events`` has a bloom-filter index on ``event_id``).
    """

    def __init__(
        self,
        client: Client,
        database: str,
        capacity: int = 500_000,
        retry_max_seconds: float = 5.0,
    ) -> None:
        self.client = client
        self.retry_max_seconds = retry_max_seconds
        self.database = database
        self.capacity = capacity
        self._recent: OrderedDict[str, None] = OrderedDict()

    def remember(self, event_ids: Iterable[str]) -> None:
        recent = self._recent
        for event_id in event_ids:
            recent[event_id] = None
        while len(recent) > self.capacity:
            recent.popitem(last=False)

    def _stored(self, event_ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(event_ids), 2000):
            chunk = event_ids[start : start + 2000]
            result = self.client.query(
                f"SELECT toString(event_id) FROM {self.database}.events "
                "WHERE event_id IN {ids:Array(UUID)}",
                parameters={"ids": chunk},
            )
            found.update(row[0] for row in result.result_rows)
        return found

    async def seen(self, event_ids: list[str]) -> set[str]:
        """The subset of ``event_ids`` already stored or buffered."""
        known = {e for e in event_ids if e in self._recent}
        unknown = [e for e in event_ids if e not in known]
        attempt = 0
        while unknown:
            try:
                return known | await asyncio.to_thread(self._stored, unknown)
            except Exception as exc:  # ClickHouse away: hold the stream, retry
                attempt += 1
                delay = _backoff(attempt, self.retry_max_seconds)
                log.warning(
                    "event-id lookup failed (%s: %s); retrying in %.1fs",
                    type(exc).__name__,
                    str(exc).splitlines()[0][:160],
                    delay,
                )
                await asyncio.sleep(delay)
        return known
