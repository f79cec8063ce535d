"""Insert failures: which ones retrying cannot fix, and what is recorded of a refused row."""

from __future__ import annotations

import struct
import uuid
from datetime import datetime

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError

from sinks.poison import SINK_REJECTED, classify_insert_error, rejected_row

pytestmark = pytest.mark.unit

AT = datetime(2026, 3, 1, 12)


def server(code: int, message: str) -> DatabaseError:
    return DatabaseError(f"Code: {code}. DB::Exception: {message}", code=code)


@pytest.mark.parametrize(
    ("exc", "name"),
    [
        (DataError("Unable to create native array for column `version`: error"), "DataError"),
        (ValueError("year 0 is out of range"), "ValueError"),
        (
            UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
            "UnicodeEncodeError",
        ),
        (OverflowError("int too large to convert to float"), "OverflowError"),
        (TypeError("must be real number, not str"), "TypeError"),
        (struct.error("argument out of range"), "error"),
        (server(53, "Type mismatch"), "TYPE_MISMATCH"),
        (server(6, "Cannot parse text"), "CANNOT_PARSE_TEXT"),
        (server(321, "Value out of range"), "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE"),
        (
            server(252, "Too many partitions for single INSERT block (more than 100)."),
            "TOO_MANY_PARTITIONS",
        ),
        (
            DatabaseError("Code: 27. DB::Exception: Cannot parse input"),
            "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
        ),
    ],
)
def test_errors_caused_by_the_rows_are_not_retried(exc: BaseException, name: str) -> None:
    error = classify_insert_error(exc)
    assert not error.retriable and error.name == name


@pytest.mark.parametrize(
    ("exc", "name"),
    [
        (server(60, "Table db.failed_events does not exist."), "UNKNOWN_TABLE"),  # detached
        (server(241, "Memory limit (total) exceeded"), "MEMORY_LIMIT_EXCEEDED"),
        (server(242, "Table is in readonly mode"), "TABLE_IS_READ_ONLY"),
        (server(252, "Too many parts (3001) in all partitions in total"), "TOO_MANY_PARTS"),
        (server(209, "Timeout exceeded while reading from socket"), "SOCKET_TIMEOUT"),
        (server(4242, "some error we do not know"), "DatabaseError"),
        (OperationalError("Error HTTPConnectionPool: connection refused"), "OperationalError"),
        (ConnectionResetError(), "ConnectionResetError"),
        (TimeoutError(), "TimeoutError"),
        (RuntimeError("anything else"), "RuntimeError"),
    ],
)
def test_errors_of_the_moment_are_retried(exc: BaseException, name: str) -> None:
    error = classify_insert_error(exc)
    assert error.retriable and error.name == name


def test_the_description_names_table_code_and_column_never_values() -> None:
    error = classify_insert_error(
        DataError("Failed to write column 'amount': could not convert string to float: 'alice'")
    )
    assert error.describe("events") == "events: DataError, column amount"
    error = classify_insert_error(server(53, "Cannot convert 'secret-member' to UInt64"))
    assert error.describe("score_history") == "score_history: TYPE_MISMATCH (code 53)"


def test_a_rejected_events_row_keeps_its_source_and_never_its_values() -> None:
    row = {
        "event_id": uuid.uuid4(),
        "event_type": "quiz_answered",
        "member_id": "0123456789abcdef0123456789abcdef",
        "source_topic": "pulse.interactions",
        "source_partition": 3,
        "source_offset": 77,
        "properties": '{"quiz_id": "q-secret"}',
        "occurred_at": datetime(1, 1, 1),
    }
    error = classify_insert_error(ValueError("year 0 is out of range"))
    failure = rejected_row("events", row, error, AT)
    assert failure["reason"] == SINK_REJECTED == "sink_rejected"
    assert (failure["source_topic"], failure["source_partition"], failure["source_offset"]) == (
        "pulse.interactions",
        3,
        77,
    )
    assert failure["key_pseudonym"] == row["member_id"]
    assert failure["error_class"] == "ValueError" and failure["detail"] == "events: ValueError"
    assert "q-secret" not in str(failure) and len(failure["payload_sha256"]) == 64


def test_a_rejected_row_always_fits_failed_events() -> None:
    hostile = {
        "source_topic": "t\ud800" * 500,
        "source_partition": -1,
        "source_offset": 2**70,
        "event_type": ["not", "a", "string"],
        "member_id": None,
        "payload_sha256": "not-a-hash",
        "payload_bytes": -5,
        object(): "a key that is not a string",
    }
    error = classify_insert_error(TypeError("x"))
    failure = rejected_row("failed_events", hostile, error, AT)  # type: ignore[arg-type]
    assert failure["source_topic"].encode("utf-8") and len(failure["source_topic"]) <= 255
    assert (failure["source_partition"], failure["source_offset"]) == (0, 0)
    assert failure["event_type"] == "" and failure["key_pseudonym"] == ""
    assert len(failure["payload_sha256"]) == 64 and failure["payload_bytes"] > 0


def test_a_rejected_failed_events_row_keeps_the_original_hash() -> None:
    sha = "ab" * 32
    failure = rejected_row(
        "failed_events",
        {"payload_sha256": sha, "payload_bytes": 1234, "key_pseudonym": "p" * 32},
        classify_insert_error(ValueError()),
        AT,
    )
    assert (failure["payload_sha256"], failure["payload_bytes"]) == (sha, 1234)
    assert failure["key_pseudonym"] == "p" * 32
