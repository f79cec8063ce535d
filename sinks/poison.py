"""Which insert failures retrying cannot fix, and the ``failed_events`` row of a rejected row.

A ClickHouse insert fails either because of the rows it carries (a value that
does not fit its column, text that does not parse, too many partitions in one
block) or because of the moment (network, timeouts, memory, a table detached or
read-only, too many parts waiting for merges). The first kind never succeeds on
retry: the sink splits the batch until it has isolated the rows that cause it
(see :class:`sinks.clickhouse.ClickHouseSink`) and records each as a
``sink_rejected`` failure. The second kind is retried, forever, with back-off.
Unknown failures count as transient: holding the stream is visible (metrics,
``/status``) and loses nothing, while isolating rows for a failure that is not
theirs would move good rows out of their table.

>>> classify_insert_error(ValueError("year 0 is out of range")).retriable
False
>>> classify_insert_error(ConnectionResetError("peer reset")).retriable
True
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from clickhouse_connect.driver.exceptions import DataError

from schemas.errors import clean_text

__all__ = ["InsertError", "classify_insert_error", "rejected_row", "SINK_REJECTED"]

#: ``failed_events.reason`` of a row ClickHouse refused.
SINK_REJECTED = "sink_rejected"

#: Server errors caused by the values of the rows (code: name, as ClickHouse reports them).
ROW_ERRORS: dict[int, str] = {
    6: "CANNOT_PARSE_TEXT",
    26: "CANNOT_PARSE_QUOTED_STRING",
    27: "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
    38: "CANNOT_PARSE_DATE",
    41: "CANNOT_PARSE_DATETIME",
    53: "TYPE_MISMATCH",
    69: "ARGUMENT_OUT_OF_BOUND",
    70: "CANNOT_CONVERT_TYPE",
    72: "CANNOT_PARSE_NUMBER",
    117: "INCORRECT_DATA",
    130: "CANNOT_READ_ARRAY_FROM_TEXT",
    131: "TOO_LARGE_STRING_SIZE",
    190: "SIZES_OF_ARRAYS_DONT_MATCH",
    321: "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
    349: "CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN",
    376: "CANNOT_PARSE_UUID",
    407: "DECIMAL_OVERFLOW",
    469: "VIOLATED_CONSTRAINT",
}
#: Server errors of the moment, retried (the list documents them; any unknown code is too).
TRANSIENT_ERRORS: dict[int, str] = {
    60: "UNKNOWN_TABLE",  # a detached table (chDB reports DETACH so)
    159: "TIMEOUT_EXCEEDED",
    164: "READONLY",
    202: "TOO_MANY_SIMULTANEOUS_QUERIES",
    203: "NO_FREE_CONNECTION",
    209: "SOCKET_TIMEOUT",
    210: "NETWORK_ERROR",
    236: "ABORTED",
    241: "MEMORY_LIMIT_EXCEEDED",
    242: "TABLE_IS_READ_ONLY",
    243: "NOT_ENOUGH_SPACE",
    252: "TOO_MANY_PARTS",  # merge pressure; "too many partitions" is a row error, below
    285: "TOO_FEW_LIVE_REPLICAS",
    319: "UNKNOWN_STATUS_OF_INSERT",
    394: "QUERY_WAS_CANCELLED",
    425: "SYSTEM_ERROR",
    999: "KEEPER_EXCEPTION",
}
TOO_MANY_PARTS = 252
#: Client-side conversion errors: a Python value that does not fit its column.
_CONVERSION_ERRORS = (DataError, ValueError, TypeError, OverflowError, struct.error)
_CODE = re.compile(r"\bCode:\s*(\d+)")
_COLUMN = re.compile(r"column[^`']{0,20}[`']([A-Za-z0-9_.]{1,64})[`']")


@dataclass(frozen=True, slots=True)
class InsertError:
    """What an insert failure is: retriable or not, its name and code, never its message."""

    retriable: bool
    name: str
    code: int | None = None
    column: str = ""

    def describe(self, table: str) -> str:
        """Table, error name, code and column: the failure without the values it saw."""
        text = f"{table}: {self.name}"
        if self.code is not None:
            text += f" (code {self.code})"
        if self.column:
            text += f", column {self.column}"
        return text


def classify_insert_error(exc: BaseException) -> InsertError:
    """Whether retrying ``exc`` can succeed, and the error's name for a failure row."""
    message = str(exc)
    column_match = _COLUMN.search(message)
    column = column_match.group(1) if column_match else ""
    code = getattr(exc, "code", None)
    if not isinstance(code, int):
        found = _CODE.search(message)
        code = int(found.group(1)) if found else None
    if code is not None:
        if code == TOO_MANY_PARTS and "too many partitions" in message.lower():
            # too many partitions for one INSERT block: a smaller block succeeds
            return InsertError(False, "TOO_MANY_PARTITIONS", code, column)
        if code in ROW_ERRORS:
            return InsertError(False, ROW_ERRORS[code], code, column)
        return InsertError(True, TRANSIENT_ERRORS.get(code, type(exc).__name__), code, column)
    if isinstance(exc, _CONVERSION_ERRORS):
        return InsertError(False, type(exc).__name__, None, column)
    return InsertError(True, type(exc).__name__, None, column)


def _int_in(value: Any, top: int) -> int:
    return value if isinstance(value, int) and 0 <= value <= top else 0


def _text(value: Any, limit: int) -> str:
    return clean_text(value, limit) if isinstance(value, str) else ""


def _fingerprint(row: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(row, default=str, sort_keys=True).encode()
    except Exception:  # keys of mixed types, cycles: the repr still identifies the row
        return repr(row).encode("utf-8", "replace")


def rejected_row(
    table: str, row: Mapping[str, Any], error: InsertError, failed_at: datetime
) -> dict[str, Any]:
    """The ``failed_events`` row of a row ClickHouse refused: its shape, never its values.

    Source fields and the member pseudonym come from the refused row when it has
    them (``events`` and ``failed_events`` rows do); a ``failed_events`` row keeps
    the hash of the original message; other rows are hashed as canonical JSON.
    Every field is checked, so this row itself always fits its table.
    """
    sha = row.get("payload_sha256")
    size = row.get("payload_bytes")
    if isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha) and isinstance(size, int):
        payload_sha256, payload_bytes = sha, _int_in(size, 2**32 - 1)
    else:
        fingerprint = _fingerprint(row)
        payload_sha256 = hashlib.sha256(fingerprint).hexdigest()
        payload_bytes = min(len(fingerprint), 2**32 - 1)
    key = row.get("key_pseudonym", row.get("member_id"))
    return {
        "failed_at": failed_at,
        "source_topic": _text(row.get("source_topic"), 255),
        "source_partition": _int_in(row.get("source_partition"), 2**16 - 1),
        "source_offset": _int_in(row.get("source_offset"), 2**64 - 1),
        "reason": SINK_REJECTED,
        "error_class": error.name,
        "detail": error.describe(table),
        "event_type": _text(row.get("event_type"), 40),
        "payload_bytes": payload_bytes,
        "payload_sha256": payload_sha256,
        "key_pseudonym": _text(key, 64),
    }
