"""A task's erasures still to carry out: members whose rows are to leave ClickHouse.

An ``erasure_requested`` event drops the member's state at once (the engine), and
its pseudonym joins the task's list with the checkpoint applying it. The list is
part of the task record, so a crash does not forget one; once that checkpoint has
committed (its rows of the member are stored by then: an erasure started earlier
would miss them), and on restore, :class:`Erasures` deletes the listed members' rows
(:func:`sinks.erasure.erase_members`) in a thread, one batch at a time, and drops
each pseudonym once done, so the next checkpoint forgets it. What is done goes on
the erasure feed (:mod:`streams.erasure_feed`) for the ClickHouses of other workers.

Withdrawn analytics consent goes the same way, narrower: the member's latest scores
leave ``member_scores`` (:func:`sinks.erasure.retract_scores`, rows scored up to the
withdrawal's event time), so no reader ranks a member who is no longer scored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from sinks.erasure import erase_members, retract_scores
from streams.erasure_feed import ErasureFeed

__all__ = ["Erasures"]

log = logging.getLogger(__name__)

#: Members erased by one batch of statements (the rest wait for the next).
BATCH = 500


class Erasures:
    """Pseudonyms to erase for task ``number``, and the deletion running for them."""

    def __init__(
        self, number: int, clickhouse: Any, database: str, feed: ErasureFeed | None = None
    ) -> None:
        self.number = number
        self.feed = feed  # tells the other workers' ClickHouses (None: no other)
        self.clickhouse = clickhouse
        self.database = database
        self.pending: list[str] = []  # erasures whose checkpoint committed
        self.retractions: dict[str, int] = {}  # pseudonym -> consent withdrawn at (ms)
        # a checkpoint's erasures and withdrawals, from its seal until its commit: its
        # task record lists them, but the rows it stores for those members may not be
        # in yet, so nothing deletes them before the commit
        self._staged: list[tuple[int, list[str], dict[str, int]]] = []
        self.erased_events = 0  # events rows deleted
        self._running: asyncio.Future[None] | None = None

    def __contains__(self, pseudonym: str) -> bool:
        return pseudonym in self.pending or any(pseudonym in e for _, e, _ in self._staged)

    def stage(self, seq: int, erasures: list[str], retractions: dict[str, int]) -> None:
        """The erasures and consent withdrawals of checkpoint ``seq``, being committed."""
        if erasures or retractions:
            self._staged.append((seq, list(erasures), dict(retractions)))

    @property
    def due(self) -> bool:
        return bool(self.pending or self.retractions or self._staged)

    def to_dict(self) -> dict[str, Any]:
        """For the task record (see :meth:`load`): what is to do once it committed."""
        erasures, retractions = list(self.pending), dict(self.retractions)
        for _, staged, withdrawn in self._staged:
            erasures.extend(p for p in staged if p not in erasures)
            retractions.update(withdrawn)
        return {"erasures": erasures, "retractions": retractions}

    def load(self, data: dict[str, Any]) -> None:
        """From a committed task record: everything it lists may be carried out."""
        self.pending = list(data.get("erasures", []))
        self.retractions = dict(data.get("retractions", {}))
        self._staged = []

    def after(self, seq: int, done: Callable[[], None]) -> Callable[[asyncio.Future[None]], None]:
        """A callback for the commit of checkpoint ``seq``: once it succeeded, what it
        (and those before) staged may go, and erasing starts (``done`` when a batch is)."""

        def callback(commit: asyncio.Future[None]) -> None:
            if commit.cancelled() or commit.exception() is not None:
                return
            for staged in [s for s in self._staged if s[0] <= seq]:
                self._staged.remove(staged)
                self.pending.extend(p for p in staged[1] if p not in self.pending)
                self.retractions.update(staged[2])
            self.start(done)

        return callback

    def start(self, done: Callable[[], None]) -> None:
        """Delete the rows of the pending members, unless a batch runs already; ``done``
        is called once a batch is deleted (the task's record then changed)."""
        if not (self.pending or self.retractions):
            return
        if self._running is not None and not self._running.done():
            return
        batch = self.pending[:BATCH]
        retract = dict(self.retractions)

        def erase() -> None:
            if batch:
                deleted = erase_members(self.clickhouse, self.database, batch)
                self.erased_events += deleted.get("events", 0)
            # members an erasure deleted every row of already are left out
            withdrawn = {p: t for p, t in retract.items() if p not in batch}
            retract_scores(self.clickhouse, self.database, withdrawn)
            if self.feed is not None:  # done here: now everywhere else
                self.feed.publish(batch, withdrawn)

        async def run() -> None:
            try:
                await asyncio.to_thread(erase)
            except Exception as exc:  # retried after the next commit
                log.warning("task %d: erasure failed, will retry: %s", self.number, exc)
                return
            self.pending = [p for p in self.pending if p not in batch]
            for pseudonym, through_ms in retract.items():
                if self.retractions.get(pseudonym) == through_ms:
                    del self.retractions[pseudonym]
            done()

        self._running = asyncio.ensure_future(run())

    async def wait(self) -> None:
        """Until the batch running now (if any) ended."""
        if self._running is not None:
            await self._running
