"""The sink contract: rows in, acknowledgements out.

A sink buffers rows and calls each acknowledgement only after every row added
with it, and every row added before it, is durably stored. The Faust agent
turns an acknowledgement into a Kafka ack, so:

* **a failed flush means no offset is committed**: the batch is kept, retried
  as a whole, and nothing after it is acknowledged meanwhile;
* a retried batch carries the same de-duplication token, so a retry that
  follows a half-successful attempt does not duplicate rows;
* acknowledgements fire in the order they were added;
* "stored" includes "recorded as failed": a row that ClickHouse refuses for what
  it holds (retrying cannot help) is isolated from its batch and recorded in
  ``failed_events`` instead (see :mod:`sinks.poison`), so it never holds the
  stream; failures of the moment are retried as above.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

__all__ = ["Ack", "Row", "SinkObserver", "NullObserver"]

Ack = Callable[[], None]
Row = Mapping[str, Any]


class SinkObserver(Protocol):
    """What a sink reports, so metrics stay outside the sink."""

    def flushed(self, table: str, rows: int) -> None: ...
    def flush_duration(self, seconds: float) -> None: ...
    def failed(self, table: str, error: BaseException) -> None: ...
    def retried(self) -> None: ...
    def backlog(self, rows: int) -> None: ...


class NullObserver:
    """Reports nowhere."""

    def flushed(self, table: str, rows: int) -> None:
        pass

    def flush_duration(self, seconds: float) -> None:
        pass

    def failed(self, table: str, error: BaseException) -> None:
        pass

    def retried(self) -> None:
        pass

    def backlog(self, rows: int) -> None:
        pass


def columns_of(rows: Sequence[Row]) -> list[str]:
    """Column names of a homogeneous list of rows."""
    return list(rows[0].keys())
