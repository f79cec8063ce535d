"""Hostile input: parser limits, impossible dates, missing keys and unreadable lines all end
as typed rejections (never an untyped exception), and what is recorded of them is safe to store.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from factories import event

from schemas.errors import REJECT_REASONS, EventRejected, InvalidJson, KeyMismatch, SchemaViolation
from schemas.registry import DEFAULT_MIN_EVENT_TIME, decode_event, read_object
from sinks.privacy import Pseudonymizer
from sinks.rows import failed_row

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
PSEUDONYM = Pseudonymizer(b"k" * 32)


def raw(doc: dict[str, object]) -> bytes:
    return json.dumps(doc).encode()


def with_time(occurred_at: str) -> bytes:
    return raw({**event("content_viewed"), "occurred_at": occurred_at})


def with_extra(value: bytes) -> bytes:
    """A valid event with one more (ignored) field holding ``value`` as raw JSON."""
    return raw(event("content_viewed"))[:-1] + b', "extra": ' + value + b"}"


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        (b"[" * 1000 + b"]" * 1000, "nested too deeply"),  # 2 KB: RecursionError in json
        (b'{"a": ' * 3000 + b"1" + b"}" * 3000, "nested too deeply"),
        (with_extra(b"[" * 300 + b"]" * 300), "recursion limit"),  # pydantic's parser limit
        (with_extra(b"9" * 5000), "number is too long"),  # ValueError: over 4,300 digits
        (with_extra(b"NaN"), "NaN or Infinity"),
        (b"\xff\xfe{\x00}\x00", "not UTF-8"),
        (raw(event("content_viewed")).replace(b"{", b"\x00{", 1), "JSONDecodeError"),
        (b"\xef\xbb\xbf\xef\xbb\xbf{}", "JSONDecodeError"),  # only one BOM is ignored
    ],
)
def test_parser_limits_are_invalid_json(payload: bytes, detail: str) -> None:
    with pytest.raises(InvalidJson) as caught:
        decode_event(payload, now=NOW)
    assert detail in caught.value.detail


def test_one_byte_order_mark_is_ignored() -> None:
    parsed = decode_event(b"\xef\xbb\xbf" + raw(event("content_viewed")), now=NOW)
    assert parsed.event_type == "content_viewed"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "occurred_at",
    [
        "1969-12-31T23:59:59Z",  # score versions are microseconds since 1970 (UInt64)
        "1999-12-31T23:59:59.999Z",  # before the default floor
        "0001-01-01T00:00:00+05:00",  # year 0 once converted to UTC
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59-05:00",  # year 10000 in UTC
        "0000-01-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-01-01T00:00:00+24:00",  # an offset that does not exist
        "2026-01-01T00:00:00+99:99",
    ],
)
def test_impossible_or_out_of_range_dates_are_schema_violations(occurred_at: str) -> None:
    with pytest.raises(SchemaViolation) as caught:
        decode_event(with_time(occurred_at), now=NOW)
    assert "occurred_at" in caught.value.detail


def test_the_floor_is_a_parameter_and_inclusive() -> None:
    assert DEFAULT_MIN_EVENT_TIME == datetime(2000, 1, 1, tzinfo=UTC)
    decode_event(with_time("2000-01-01T08:00:00+08:00"), now=NOW)  # exactly the floor
    floor = datetime(2020, 1, 1, tzinfo=UTC)
    with pytest.raises(SchemaViolation, match="earliest accepted event time 2020-01-01"):
        decode_event(with_time("2019-12-31T23:59:59Z"), now=NOW, min_event_time=floor)
    decode_event(with_time("2020-01-01T00:00:00Z"), now=NOW, min_event_time=floor)


def test_the_ceiling_is_the_future_skew() -> None:
    soon = (NOW + timedelta(minutes=4)).isoformat()
    decode_event(with_time(soon), now=NOW)
    with pytest.raises(EventRejected, match="future_timestamp"):
        decode_event(with_time((NOW + timedelta(hours=1)).isoformat()), now=NOW)


def test_a_missing_key_is_a_key_mismatch_when_a_key_is_required() -> None:
    payload = raw(event("content_viewed", "m-1"))
    assert decode_event(payload, now=NOW).member_id == "m-1"  # not required: passes
    for key in (None, b""):
        with pytest.raises(KeyMismatch) as caught:
            decode_event(payload, key=key, now=NOW, require_key=True)
        assert caught.value.detail == "missing key"
    assert decode_event(payload, key=b"m-1", now=NOW, require_key=True).member_id == "m-1"


def test_details_are_valid_utf8_and_bounded() -> None:
    rejected = SchemaViolation("field \ud800 " + "x" * 5000)
    assert len(rejected.detail) == 1000
    rejected.detail.encode("utf-8")  # no lone surrogate left: a header or a column takes it
    with pytest.raises(EventRejected) as caught:
        decode_event(b'{"event_type": "\\ud800\\udfff\\ud800"}', now=NOW)
    caught.value.detail.encode("utf-8")
    assert caught.value.reason in REJECT_REASONS


def test_read_object_raises_only_invalid_json() -> None:
    assert read_object(b'{"a": [1, 2]}') == {"a": [1, 2]}
    for payload in (b"[]", b"1", b'"x"', b"null", b"[" * 100_000, b"\x80"):
        with pytest.raises(InvalidJson):
            read_object(payload)


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 100_000,
        b'{"event_type": "\\ud800", "member_id": "\\udfff"}',
        b'{"event_type": ' + b"7" * 5000 + b"}",
        b"\xff" * 10,
        b'{"event_type": "' + "é".encode() * 100 + b'"}',
    ],
)
def test_failed_rows_of_hostile_messages_are_storable(payload: bytes) -> None:
    row = failed_row(
        payload,
        key=b"\xff\xfe-key",
        topic="pulse.interactions",
        partition=1,
        offset=7,
        reason="invalid_json",
        error_class="InvalidJson",
        detail="bad \ud800 detail",
        pseudonym=PSEUDONYM,
        failed_at=NOW,
    )
    for column in ("event_type", "detail", "key_pseudonym"):
        row[column].encode("utf-8")  # would fail ClickHouse's insert (and stall the sink)
    assert len(row["event_type"]) <= 40
    assert row["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert row["payload_bytes"] == len(payload)
