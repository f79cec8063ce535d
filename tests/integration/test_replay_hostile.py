"""Acceptance: `pulse replay` of valid events mixed with every hostile case finishes (exit 0),
every line is stored or failed, dead-letter copies fit their limit, and a second replay of the
same file adds nothing.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from factories import event, replay_lines
from helpers import consume_all, pulse_env, run_pulse

from streams.broker import EmbeddedBroker
from streams.dead_letter import record_bytes

pytestmark = pytest.mark.integration

DEAD_LETTER_LIMIT = 1_000_000  # PULSE_DEAD_LETTER_MAX_BYTES' default


def _query(env: dict[str, str], sql: str) -> list[dict[str, Any]]:
    result = run_pulse(["query", sql, "--format", "json"], env, timeout=120)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def _count(env: dict[str, str], sql: str) -> int:
    return int(_query(env, sql)[0]["n"])


def _line(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def _padded(size: int, member: str) -> bytes:
    """A valid-looking event padded to exactly ``size`` bytes."""
    head = _line({**event("post_created", member), "pad": ""})
    return head[:-2] + b"x" * (size - len(head)) + b'"}'


def hostile_lines() -> dict[str, bytes]:
    """One line per hostile case, by name."""

    def at(text: str) -> bytes:
        return _line({**event("content_viewed", "m-dates"), "occurred_at": text})

    quiz = _line(event("quiz_answered", "m-quiz"))
    return {
        "over 1 MB": _padded(1_200_000, "m-big"),  # the broker refuses it: MSG_SIZE_TOO_LARGE
        "near the dead-letter limit": _padded(999_800, "m-near"),  # stored by the broker
        "1,000 nested arrays": b"[" * 1000 + b"]" * 1000,
        "5,000-digit integer": quiz.replace(b'"questions": 5', b'"questions": ' + b"9" * 5000),
        "NaN": quiz.replace(b'"questions": 5', b'"questions": NaN'),
        "before 1970": at("1969-07-20T20:17:40Z"),
        "before the floor": at("1999-12-31T23:59:59Z"),
        "year 1 with an offset": at("0001-01-01T00:00:00+05:00"),
        "year 9999 with an offset": at("9999-12-31T23:59:59-05:00"),
        "invalid UTF-8": _line(event("content_viewed", "m-utf")).replace(b"app", b"a\xffp"),
        "NUL byte": b"\x00" + _line(event("content_viewed", "m-nul")),
        "UTF-16": _line(event("content_viewed", "m-u16")).decode().encode("utf-16"),
        "lone surrogate": _line(event("content_viewed", "m-\ud800")),
        "duplicate event_type": _line(event("content_viewed", "m-dup"))[:-1]
        + b', "event_type": "teleported"}',
    }


def spanning_lines() -> list[bytes]:
    """150 valid events, one a month from January 2012: a backfill over 150 partitions."""
    start = datetime(2012, 1, 10, 12, tzinfo=UTC)
    return [
        _line(
            event(
                "content_viewed",
                f"m-span-{i % 5}",
                start + timedelta(days=30.5 * i),
                event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"span-{i}")),
            )
        )
        for i in range(150)
    ]


def test_a_hostile_replay_stores_or_fails_every_line_and_is_idempotent(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    hostile = hostile_lines()
    valid = replay_lines(300, 0) + spanning_lines()
    bom = b"\xef\xbb\xbf" + _line(event("quiz_answered", "m-bom"))  # valid: one BOM is ignored
    lines = valid[:100] + list(hostile.values()) + valid[100:] + [bom]
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    prefix = f"hostile{tmp_path.name[-6:]}."
    env = pulse_env(broker.bootstrap, prefix, f"hostile-{tmp_path.name}", tmp_path / "data")

    first = run_pulse(["replay", str(path)], env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Traceback" not in first.stderr
    assert "451 new events stored" in first.stdout
    assert "13 rejected" in first.stdout and "1 refused by the broker" in first.stdout

    # Every line is stored or failed.
    stored = _count(env, "SELECT count() AS n FROM events")
    failed = _count(env, "SELECT count() AS n FROM failed_events")
    assert (stored, failed) == (len(valid) + 1, len(hostile))
    assert stored + failed == len(lines)
    reasons = {
        r["reason"]: int(r["n"])
        for r in _query(env, "SELECT reason, count() AS n FROM failed_events GROUP BY reason")
    }
    assert reasons == {
        "oversize": 2,
        "invalid_json": 7,
        "schema_violation": 4,
        "unknown_event_type": 1,
    }
    refused = _query(
        env,
        "SELECT source_offset, payload_bytes, payload_sha256 FROM failed_events "
        "WHERE error_class = 'MSG_SIZE_TOO_LARGE'",
    )
    big = hostile["over 1 MB"]
    assert [
        tuple(int(v) if k != "payload_sha256" else v for k, v in r.items()) for r in refused
    ] == [
        (lines.index(big) + 1, len(big), hashlib.sha256(big).hexdigest())  # its line number
    ]
    # The backfill over 150 months is stored, and scored, whatever partitions it spans.
    months = "SELECT uniqExact(toYYYYMM(occurred_at)) AS n FROM events"
    assert _count(env, months + " WHERE occurred_at < '2025-01-01'") == 150
    assert _count(env, "SELECT uniqExact(toYYYYMM(scored_at)) AS n FROM score_history") > 100

    # Dead-letter copies fit the dead-letter limit; the near-limit one is cut and identified.
    dead = consume_all(broker.bootstrap, prefix + "dead-letter", expect=13)
    assert len(dead) == 13
    near = hostile["near the dead-letter limit"]
    cut = [m for m in dead if dict(m.headers()).get("pulse.payload.truncated") == b"true"]  # type: ignore[attr-defined]
    assert len(cut) == 1
    headers = dict(cut[0].headers())  # type: ignore[attr-defined]
    assert headers["pulse.payload.sha256"] == hashlib.sha256(near).hexdigest().encode()
    assert headers["pulse.payload.bytes"] == str(len(near)).encode()
    assert near.startswith(cut[0].value())  # type: ignore[attr-defined]
    for message in dead:
        size = record_bytes(message.key(), message.value(), message.headers())  # type: ignore[attr-defined]
        assert size <= DEAD_LETTER_LIMIT

    # The same file again, as a fresh embedded broker sees it (new topics, same offsets):
    # nothing is added, neither events nor failures.
    fresh = {k: v for k, v in env.items() if k != "PULSE_KAFKA_BOOTSTRAP"}
    second = run_pulse(["replay", str(path)], fresh)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "0 new events stored, 451 duplicates dropped" in second.stdout
    assert "1 refused by the broker (0 new in failed_events)" in second.stdout
    assert _count(env, "SELECT count() AS n FROM events") == stored
    assert _count(env, "SELECT count() AS n FROM failed_events FINAL") == failed
    assert (
        _count(
            env, "SELECT count() AS n FROM failed_events WHERE error_class = 'MSG_SIZE_TOO_LARGE'"
        )
        == 1
    )
