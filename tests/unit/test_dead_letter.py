"""Dead-letter records never exceed the dead-letter limit; what they cut is identified by hash."""

from __future__ import annotations

import hashlib

import pytest

from schemas.errors import Oversize, SchemaViolation
from streams.dead_letter import MAX_KEY_BYTES, dead_letter_record, record_bytes

pytestmark = pytest.mark.unit

LIMIT = 1_000_000


def test_a_small_reject_is_copied_whole_with_its_origin_and_reason() -> None:
    value = b'{"event_type": "survey_answered"}'
    key, copy, headers = dead_letter_record(
        b"m-1", value, "pulse.interactions", 2, 41, SchemaViolation("properties.nps: bad"), LIMIT
    )
    h = dict(headers)
    assert (key, copy) == (b"m-1", value)
    assert h["pulse.source.topic"] == b"pulse.interactions"
    assert (h["pulse.source.partition"], h["pulse.source.offset"]) == (b"2", b"41")
    assert h["pulse.error.class"] == b"SchemaViolation"
    assert h["pulse.error.reason"] == b"schema_violation"
    assert h["pulse.error.detail"] == b"properties.nps: bad"
    assert h["pulse.payload.sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert h["pulse.payload.bytes"] == str(len(value)).encode()
    assert "pulse.payload.truncated" not in h


@pytest.mark.parametrize("size", [LIMIT - 2000, LIMIT - 400, LIMIT - 300, LIMIT, 5 * LIMIT])
def test_a_copy_near_or_over_the_limit_fits_and_says_what_it_cut(size: int) -> None:
    value = b"x" * size
    key, copy, headers = dead_letter_record(
        b"m-1", value, "pulse.interactions", 0, 9, Oversize("too big"), LIMIT
    )
    assert record_bytes(key, copy, headers) <= LIMIT
    h = dict(headers)
    if copy == value:  # it fits with its headers
        assert "pulse.payload.truncated" not in h
    else:  # the start of the payload, as much as fits
        assert h["pulse.payload.truncated"] == b"true"
        assert copy == value[: len(copy)] and len(copy) > LIMIT - 1000
    assert h["pulse.payload.sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert h["pulse.payload.bytes"] == str(size).encode()


def test_a_copy_that_would_not_fit_is_cut() -> None:
    value = b"x" * (LIMIT - 300)
    assert record_bytes(b"m-1", value, []) < LIMIT  # fits alone, not with its headers
    _, copy, headers = dead_letter_record(b"m-1", value, "t", 0, 0, Oversize("big"), LIMIT)
    assert dict(headers)["pulse.payload.truncated"] == b"true" and len(copy) < len(value)


def test_the_record_bound_counts_key_value_and_headers() -> None:
    headers = [("a", b"12345")]
    assert record_bytes(b"k", b"vv", headers) == 100 + 1 + 2 + 10 + 1 + 5


def test_a_huge_key_is_replaced_by_its_hash() -> None:
    big_key = b"k" * (MAX_KEY_BYTES + 1)
    key, _, headers = dead_letter_record(
        big_key, b"{}", "t", 0, 0, SchemaViolation("member_id: too long"), LIMIT
    )
    digest = hashlib.sha256(big_key).hexdigest().encode()
    assert key == digest and dict(headers)["pulse.key.sha256"] == digest


def test_header_values_are_bounded_valid_utf8() -> None:
    detail = "é" * 3000 + "\ud800"
    _, _, headers = dead_letter_record(None, b"", "t" * 5000, 0, 0, SchemaViolation(detail), 4096)
    for name, value in headers:
        value.decode("utf-8")  # a consumer can read every header as text
        assert len(value) <= 1000, name
    assert len(dict(headers)["pulse.source.topic"]) <= 255


@pytest.mark.parametrize("limit", [4096, 10_000, 65_536])
def test_the_smallest_allowed_limit_holds_the_worst_headers(limit: int) -> None:
    key, copy, headers = dead_letter_record(
        b"k" * 5000, b"v" * 100_000, "t" * 300, 2**31, 2**62, SchemaViolation("d" * 5000), limit
    )
    assert record_bytes(key, copy, headers) <= limit


def test_an_unexpected_exception_keeps_only_its_class() -> None:
    _, _, headers = dead_letter_record(
        None, b"{}", "t", 0, 0, RuntimeError("member m-42 broke it"), LIMIT
    )
    h = dict(headers)
    assert (h["pulse.error.reason"], h["pulse.error.detail"]) == (b"error", b"RuntimeError")
    assert b"m-42" not in b"".join(h.values())
