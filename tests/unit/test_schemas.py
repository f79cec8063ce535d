"""Event contracts: every type validates; each kind of bad input gets its typed reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from factories import PROPERTIES, event

from schemas import REJECT_REASONS, decode_event
from schemas.errors import (
    FutureTimestamp,
    InvalidJson,
    KeyMismatch,
    Oversize,
    SchemaViolation,
    UnknownEventType,
    WrongTopic,
)
from schemas.export import export_json_schemas
from schemas.registry import EVENT_TYPES, stream_of

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def raw(doc: dict[str, object]) -> bytes:
    return json.dumps(doc).encode()


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_type_validates_and_routes(event_type: str) -> None:
    parsed = decode_event(raw(event(event_type)), key=b"m-1", stream=stream_of(event_type), now=NOW)
    assert parsed.event_type == event_type  # type: ignore[attr-defined]
    assert parsed.occurred_at.tzinfo is not None


def test_twenty_five_types_in_two_streams() -> None:
    assert len(EVENT_TYPES) == 25 == len(PROPERTIES)
    assert sum(stream_of(t) == "purchases" for t in EVENT_TYPES) == 8


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"{not json", InvalidJson),
        (b"[1, 2]", InvalidJson),
        (b"\xff\xfe", InvalidJson),
        (raw({**event("post_created"), "event_type": "teleported"}), UnknownEventType),
        (
            raw({k: v for k, v in event("post_created").items() if k != "event_type"}),
            UnknownEventType,
        ),
        (
            raw({k: v for k, v in event("post_created").items() if k != "member_id"}),
            SchemaViolation,
        ),
        (raw({**event("post_created"), "event_id": "not-a-uuid"}), SchemaViolation),
        (raw({**event("post_created"), "occurred_at": "2026-03-01T09:00:00"}), SchemaViolation),
        (raw({**event("post_created"), "channel": "fax"}), SchemaViolation),
        (raw({**event("post_created"), "schema_version": "2.0"}), SchemaViolation),
        (raw(event("survey_answered", nps=11)), SchemaViolation),
        (raw(event("survey_answered", nps="9")), SchemaViolation),
        (raw({**event("survey_answered"), "properties": {}}), SchemaViolation),
        (raw(event("quiz_answered", questions=3, correct=4)), SchemaViolation),
        (raw(event("policy_purchased", premium=-1)), SchemaViolation),
        (raw(event("policy_purchased", currency="yuan")), SchemaViolation),
        (raw(event("content_viewed", occurred_at=NOW + timedelta(hours=1))), FutureTimestamp),
    ],
)
def test_bad_input_gets_a_typed_reason(payload: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_event(payload, now=NOW)


def test_small_clock_skew_is_allowed() -> None:
    decode_event(raw(event("content_viewed", occurred_at=NOW + timedelta(minutes=4))), now=NOW)


def test_oversize_key_and_topic_checks() -> None:
    big = raw({**event("post_created"), "pad": "x" * 70_000})
    with pytest.raises(Oversize):
        decode_event(big, now=NOW)
    with pytest.raises(KeyMismatch):
        decode_event(raw(event("post_created", "m-1")), key=b"m-2", now=NOW)
    with pytest.raises(WrongTopic):
        decode_event(raw(event("policy_lapsed")), stream="interactions", now=NOW)


def test_rejection_detail_never_repeats_values() -> None:
    doc = event("survey_answered", member_id="secret-member-42")
    doc["properties"] = {"nps": "alice@example.com"}
    with pytest.raises(SchemaViolation) as caught:
        decode_event(raw(doc), now=NOW)
    assert "alice" not in caught.value.detail and "secret-member" not in caught.value.detail
    assert "properties.nps" in caught.value.detail


def test_unknown_fields_of_a_newer_minor_version_are_ignored() -> None:
    doc = {**event("post_created"), "schema_version": "1.3", "new_field": 1}
    assert decode_event(raw(doc), now=NOW).schema_version == "1.3"


def test_reasons_are_bounded_and_stable() -> None:
    assert REJECT_REASONS == (
        "oversize",
        "invalid_json",
        "unknown_event_type",
        "schema_violation",
        "future_timestamp",
        "key_mismatch",
        "wrong_topic",
    )


def test_export_writes_a_schema_per_type(tmp_path: Path) -> None:
    files = export_json_schemas(tmp_path)
    assert len(files) == len(EVENT_TYPES) + 1
    index = json.loads((tmp_path / "index.json").read_text())
    assert set(index["event_types"]) == set(EVENT_TYPES)
    schema = json.loads((tmp_path / "survey_answered.schema.json").read_text())
    nps = schema["$defs"]["SurveyAnsweredProps"]["properties"]["nps"]["anyOf"][0]
    assert (nps["minimum"], nps["maximum"]) == (0, 10)
    assert schema["x-pulse-topic"] == "pulse.interactions"
