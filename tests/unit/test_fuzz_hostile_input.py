"""Property-based fuzzing of everything a hostile message meets before it is stored or failed.

Over 10,000 generated inputs (malformed structures, wrong types, sizes around the
limit, encodings, BOMs, NUL bytes, invalid UTF-8, lone surrogates, duplicate keys,
deep nesting, huge numbers, dates from year 1 to 9999 with any offset) go through
the replay's routing, ``decode_event``, the ``events`` or ``failed_events`` row
and the dead-letter record. Every input must be accounted for: a valid event
whose row can be stored, or an ``EventRejected`` with a known reason whose
failure row and dead-letter copy can be stored and sent; never another exception.

``PULSE_FUZZ_EXAMPLES`` scales the run (default 10,000 in total, about 20 s here).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from factories import event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.envelope import EventBase
from schemas.errors import REJECT_REASONS, EventRejected
from schemas.registry import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_FUTURE_SKEW,
    DEFAULT_MIN_EVENT_TIME,
    EVENT_TYPES,
)
from schemas.registry import decode_event as decode
from sinks.privacy import Pseudonymizer
from sinks.rows import event_row, failed_row
from streams.dead_letter import dead_letter_record, record_bytes
from streams.replay import _route

pytestmark = pytest.mark.unit

TOTAL = int(os.environ.get("PULSE_FUZZ_EXAMPLES", "10000"))
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
PSEUDONYM = Pseudonymizer(b"fuzz-key-" + b"0" * 24)
MAX_BYTES = 4096  # small, so that generated inputs cross it often
DEAD_LETTER_BYTES = 4096  # the smallest limit the settings allow
FUZZ = settings(
    max_examples=1,  # each test sets its share of TOTAL
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- strategies -------------------------------------------------------------------
SURROGATES = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=3)
TEXT = st.one_of(
    st.text(max_size=20),
    SURROGATES,
    st.sampled_from(["", "\x00", "\ufeff", "m-1", "app", "é" * 200, "🙂" * 50, "\u202e"]),
)
NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 2**63, 2**64, -(2**63) - 1, 1e308, 5e-324]),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | NUMBERS | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=10,
)
OFFSETS = st.integers(min_value=-1439, max_value=1439).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
AWARE_TIMES = st.builds(
    lambda moment, tz: moment.replace(tzinfo=tz).isoformat(),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    OFFSETS,
)
TIMES = st.one_of(
    AWARE_TIMES,
    st.integers(-(10**6), 10**7).map(lambda s: (NOW + timedelta(seconds=s)).isoformat()),
    st.datetimes(min_value=datetime(1995, 1, 1), max_value=datetime(2027, 1, 1)).map(
        lambda moment: moment.replace(tzinfo=UTC).isoformat()  # around the floor and ceiling
    ),
    st.sampled_from(
        [
            "1969-12-31T23:59:59Z",
            "0001-01-01T00:00:00+05:00",
            "9999-12-31T23:59:59-05:00",
            "0000-01-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-01-01T00:00:00+24:00",
            "2026-01-01T25:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01",
            "+2026-01-01T00:00:00Z",
            "1e10",
            "2026-03-01T12:04:59Z",  # within the allowed skew of NOW
            "2026-03-01T12:05:01Z",  # just past it
            "2100-01-01T00:00:00+14:00",
        ]
    ),
    JSON_VALUES,
)
ENVELOPE = ["event_id", "event_type", "occurred_at", "member_id", "community_id", "channel"]
FIELDS = [*ENVELOPE, "schema_version", "properties"]


@st.composite
def hostile_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event of any type, then up to three mutations of its fields and properties."""
    doc = event(draw(st.sampled_from(EVENT_TYPES)), draw(st.sampled_from(["m-1", "m-x_9@a.b"])))
    for _ in range(draw(st.integers(0, 3))):
        action = draw(
            st.sampled_from(["set", "delete", "time", "time", "property", "junk", "type"])
        )
        if action == "set":
            doc[draw(st.sampled_from(FIELDS))] = draw(JSON_VALUES)
        elif action == "delete":
            doc.pop(draw(st.sampled_from(FIELDS)), None)
        elif action == "time":
            doc["occurred_at"] = draw(TIMES)
        elif action == "property" and isinstance(doc.get("properties"), dict):
            props = doc["properties"]
            name = draw(st.sampled_from([*props, "extra"])) if props else "extra"
            props[name] = draw(JSON_VALUES)
        elif action == "junk":
            doc[draw(TEXT)] = draw(JSON_VALUES)
        else:
            doc["event_type"] = draw(st.one_of(st.sampled_from(EVENT_TYPES), TEXT))
    return doc


def _serialize(draw: st.DrawFn, doc: dict[str, Any]) -> bytes:
    if draw(st.booleans()):
        return json.dumps(doc).encode()  # ASCII with \\u escapes (lone surrogates included)
    text = json.dumps(doc, ensure_ascii=False)
    return text.encode("utf-8", "surrogatepass")  # raw surrogates: invalid UTF-8 bytes


@st.composite
def hostile_messages(draw: st.DrawFn) -> bytes:
    """Serialized hostile documents, then byte-level damage."""
    raw = _serialize(draw, draw(hostile_documents()))
    damage = draw(
        st.sampled_from(
            ["none", "none", "none", "none", "bom", "nul", "cut", "dup", "pad", "byte", "utf16"]
        )
    )
    if damage == "bom":
        raw = b"\xef\xbb\xbf" * draw(st.integers(1, 2)) + raw
    elif damage == "nul":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + b"\x00" + raw[at:]
    elif damage == "cut":
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif damage == "dup":  # duplicate keys: a second event_type, member_id or occurred_at
        name = draw(st.sampled_from(["event_type", "member_id", "occurred_at", "properties"]))
        value = json.dumps(draw(st.one_of(st.sampled_from(EVENT_TYPES), TIMES, JSON_VALUES)))
        raw = raw[:-1] + f', "{name}": {value}}}'.encode() if raw.endswith(b"}") else raw
    elif damage == "pad":  # around the size limit
        target = MAX_BYTES + draw(st.integers(-40, 40))
        pad = max(0, target - len(raw) - 12)
        raw = raw[:-1] + b', "pad": "' + b"x" * pad + b'"}' if raw.endswith(b"}") else raw
    elif damage == "byte":
        at = draw(st.integers(0, max(0, len(raw) - 1)))
        raw = raw[:at] + bytes([draw(st.integers(0x80, 0xFF))]) + raw[at + 1 :]
    elif damage == "utf16":
        raw = raw.decode("utf-8", "replace").encode(draw(st.sampled_from(["utf-16", "utf-32"])))
    return raw


@st.composite
def parser_bombs(draw: st.DrawFn) -> bytes:
    """Deep nesting, huge integer literals and NaN, inside or instead of an event."""
    kind = draw(st.sampled_from(["arrays", "objects", "digits", "constant", "mixed"]))
    depth = draw(st.integers(1, 6000))
    if kind == "arrays":
        bomb = b"[" * depth + b"]" * depth
    elif kind == "objects":
        bomb = b'{"a":' * depth + b"1" + b"}" * depth
    elif kind == "digits":
        bomb = b"-" * draw(st.integers(0, 1)) + b"9" * draw(st.integers(1, 6000))
    elif kind == "constant":
        bomb = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-0"]))
    else:
        bomb = b"[" * depth + b'{"x": ' + b"7" * 4400 + b"}" + b"]" * depth
    if draw(st.booleans()):
        return bomb
    doc = json.dumps(event(draw(st.sampled_from(EVENT_TYPES)))).encode()
    return (
        doc[:-1] + b', "' + draw(st.sampled_from([b"extra", b"properties"])) + b'": ' + bomb + b"}"
    )


KEYS = st.one_of(
    st.none(), st.sampled_from([b"m-1", b"m-x_9@a.b"]), st.just(b""), st.binary(max_size=40)
)
STREAMS = st.sampled_from([None, "interactions", "purchases"])


# --- the property -------------------------------------------------------------------
def _storable(row: dict[str, Any]) -> None:
    """What ClickHouse's client would refuse: text that is not UTF-8, non-finite floats."""
    for column, value in row.items():
        if isinstance(value, str):
            value.encode("utf-8")
        elif isinstance(value, float):
            assert math.isfinite(value), column


def account_for(
    raw: bytes, key: bytes | None, stream: Any, require_key: bool, max_bytes: int = MAX_BYTES
) -> str:
    """One message through everything it meets; returns 'event' or the rejection reason."""
    topic, routed_key = _route(raw, "p.")
    assert topic in {"p.interactions", "p.purchases"}
    assert routed_key is None or len(routed_key) <= 4 * 1024
    try:
        parsed: EventBase = decode(
            raw, key=key, stream=stream, now=NOW, max_bytes=max_bytes, require_key=require_key
        )
    except EventRejected as exc:
        assert exc.reason in REJECT_REASONS, exc.reason
        row = failed_row(
            raw,
            key=key,
            topic=topic,
            partition=0,
            offset=0,
            reason=exc.reason,
            error_class=type(exc).__name__,
            detail=exc.detail,
            pseudonym=PSEUDONYM,
            failed_at=NOW,
        )
        _storable(row)
        dl_key, value, headers = dead_letter_record(key, raw, topic, 0, 0, exc, DEAD_LETTER_BYTES)
        assert record_bytes(dl_key, value, headers) <= DEAD_LETTER_BYTES
        for _, header in headers:
            header.decode("utf-8")
        return exc.reason
    at = parsed.occurred_at.astimezone(UTC)
    assert DEFAULT_MIN_EVENT_TIME <= at <= NOW + DEFAULT_MAX_FUTURE_SKEW
    if require_key:
        assert key == parsed.member_id.encode()
    _storable(
        event_row(parsed, topic=topic, partition=0, offset=0, pseudonym=PSEUDONYM, ingested_at=NOW)
    )
    return "event"


def _run(
    strategy: st.SearchStrategy[bytes], examples: int, max_bytes: int = MAX_BYTES
) -> Counter[str]:
    outcomes: Counter[str] = Counter()

    @settings(FUZZ, max_examples=examples)
    @given(strategy, KEYS, STREAMS, st.booleans())
    def check(raw: bytes, key: bytes | None, stream: Any, require_key: bool) -> None:
        outcomes[account_for(raw, key, stream, require_key, max_bytes)] += 1

    check()
    return outcomes


def test_hostile_events_are_all_accounted_for() -> None:
    examples = TOTAL * 6 // 10
    outcomes = _run(hostile_messages(), examples)
    assert sum(outcomes.values()) >= examples  # every generated input ended somewhere known
    assert outcomes["event"] > 0  # the generator still makes valid events among the hostile
    assert set(outcomes) == {"event", *REJECT_REASONS}  # every reason, and valid events


def test_parser_bombs_are_all_rejected_as_invalid_json() -> None:
    examples = TOTAL * 2 // 10
    outcomes = _run(parser_bombs(), examples, max_bytes=DEFAULT_MAX_BYTES)  # they reach the parser
    assert sum(outcomes.values()) >= examples
    assert outcomes["invalid_json"] > examples // 3


def test_arbitrary_bytes_are_all_accounted_for() -> None:
    examples = TOTAL - TOTAL * 6 // 10 - TOTAL * 2 // 10
    outcomes = _run(st.binary(max_size=MAX_BYTES + 64), examples)
    assert sum(outcomes.values()) >= examples
    assert set(outcomes) <= {"invalid_json", "oversize", "unknown_event_type"}
