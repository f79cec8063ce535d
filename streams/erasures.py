"""A task's erasures still to carry out: members whose rows are to leave ClickHouse.

An ``erasure_requested`` event drops the member's state at once (the engine), and
its pseudonym joins the task's list when the checkpoint applying it commits. The
list is part of the task record, so a crash does not forget one: after each commit
(and on restore) :class:`Erasures` deletes the listed members' rows
(:func:`sinks.erasure.erase_member`) in a thread, one batch at a time, and drops
each pseudonym once done, so the next checkpoint forgets it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from sinks.erasure import erase_member

__all__ = ["Erasures"]

log = logging.getLogger(__name__)


class Erasures:
    """Pseudonyms to erase for task ``number``, and the deletion running for them."""

    def __init__(self, number: int, clickhouse: Any, database: str) -> None:
        self.number = number
        self.clickhouse = clickhouse
        self.database = database
        self.pending: list[str] = []
        self.erased_events = 0  # events rows deleted
        self._running: asyncio.Future[None] | None = None

    def __contains__(self, pseudonym: str) -> bool:
        return pseudonym in self.pending

    def after(self, done: Callable[[], None]) -> Callable[[asyncio.Future[None]], None]:
        """A callback for a commit: once it succeeded, erase (``done`` when a batch is)."""

        def callback(commit: asyncio.Future[None]) -> None:
            if not commit.cancelled() and commit.exception() is None:
                self.start(done)

        return callback

    def start(self, done: Callable[[], None]) -> None:
        """Delete the rows of the pending members, unless a batch runs already; ``done``
        is called once a batch is deleted (the task's record then changed)."""
        if not self.pending or (self._running is not None and not self._running.done()):
            return
        batch = list(self.pending)

        def erase() -> None:
            for pseudonym in batch:
                deleted = erase_member(self.clickhouse, self.database, pseudonym)
                self.erased_events += deleted.get("events", 0)

        async def run() -> None:
            try:
                await asyncio.to_thread(erase)
            except Exception as exc:  # retried after the next commit
                log.warning("task %d: erasure failed, will retry: %s", self.number, exc)
                return
            self.pending = [p for p in self.pending if p not in batch]
            done()

        self._running = asyncio.ensure_future(run())

    async def wait(self) -> None:
        """Until the batch running now (if any) ended."""
        if self._running is not None:
            await self._running
