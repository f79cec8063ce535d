"""Errors of the ClickHouse sink."""

from __future__ import annotations

from schemas.errors import PulseError

__all__ = ["SinkError", "MigrationError", "FlushFailed", "ErasureError"]


class SinkError(PulseError):
    """ClickHouse could not be reached or refused a statement."""


class MigrationError(SinkError):
    """A schema migration failed; Pulse does not start on a half-migrated database."""


class FlushFailed(SinkError):
    """A batch could not be inserted; it is kept and retried, and no offset is committed.

    ``retry_after`` is the back-off, in seconds, before the next attempt.
    """

    def __init__(self, table: str, cause: BaseException, retry_after: float) -> None:
        first_line = str(cause).splitlines()[0][:200] if str(cause) else ""
        super().__init__(f"insert into {table} failed ({type(cause).__name__}): {first_line}")
        self.table = table
        self.cause = cause
        self.retry_after = retry_after


class ErasureError(SinkError):
    """A member's rows could not be erased (bad pseudonym, or ClickHouse refused)."""
