"""Acceptance: `pulse replay` of 5,000 valid events and 200 broken lines, twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from factories import replay_lines
from helpers import consume_all, pulse_env, run_pulse

from schemas.registry import EVENT_TYPES
from streams.broker import EmbeddedBroker

pytestmark = pytest.mark.integration


def _count(env: dict[str, str], sql: str) -> list[dict[str, object]]:
    result = run_pulse(["query", sql, "--format", "json"], env, timeout=120)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def test_replay_stores_valid_rejects_broken_and_is_idempotent(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    lines = replay_lines(5000, 200)
    path = tmp_path / "backfill.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    env = pulse_env(
        broker.bootstrap,
        f"replay{tmp_path.name[-6:]}.",
        f"replay-{tmp_path.name}",
        tmp_path / "data",
    )
    first = run_pulse(["replay", str(path)], env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "5,000 new events stored" in first.stdout
    assert "200 rejected" in first.stdout
    # a log, not a terminal: no cursor escapes or backspaces (Faust's start-up spinner)
    assert not {"\x1b", "\b"} & set(first.stdout + first.stderr), repr(first.stdout[:400])

    counts = _count(env, "SELECT count() AS n, uniqExact(event_id) AS u FROM events")
    assert counts == [{"n": "5000", "u": "5000"}] or counts == [{"n": 5000, "u": 5000}]
    types = _count(env, "SELECT count(DISTINCT event_type) AS t FROM events")
    assert int(types[0]["t"]) == len(EVENT_TYPES)  # type: ignore[call-overload]
    reasons = {
        r["reason"]: int(r["n"])  # type: ignore[call-overload]
        for r in _count(env, "SELECT reason, count() AS n FROM failed_events GROUP BY reason")
    }
    assert reasons == {
        "invalid_json": 40,
        "unknown_event_type": 40,
        "schema_violation": 40,
        "future_timestamp": 40,
        "oversize": 40,
    }
    dead = consume_all(broker.bootstrap, env["PULSE_TOPIC_PREFIX"] + "dead-letter", expect=200)
    assert len(dead) == 200
    assert {dict(m.headers())["pulse.error.reason"] for m in dead} == {  # type: ignore[attr-defined]
        r.encode() for r in reasons
    }
    # Personal data never reaches ClickHouse in clear.
    clear = _count(env, "SELECT count() AS n FROM events WHERE member_id LIKE 'm-%'")
    assert int(clear[0]["n"]) == 0  # type: ignore[call-overload]

    # The same file again: every valid event is a duplicate and is dropped before storage.
    second = run_pulse(["replay", str(path)], env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "0 new events stored, 5,000 duplicates dropped" in second.stdout
    again = _count(env, "SELECT count() AS n FROM events")
    assert int(again[0]["n"]) == 5000  # type: ignore[call-overload]

    # `pulse query` is read-only: ClickHouse itself refuses writes.
    write = run_pulse(["query", "TRUNCATE TABLE events"], env, timeout=120)
    assert write.returncode == 1 and "readonly" in write.stderr.lower()
    assert int(_count(env, "SELECT count() AS n FROM events")[0]["n"]) == 5000  # type: ignore[call-overload]


def test_query_without_data_says_what_to_do(tmp_path: Path) -> None:
    result = run_pulse(["query", "SELECT 1"], {"PULSE_DATA_DIR": str(tmp_path / "empty")}, 120)
    assert result.returncode == 1
    assert "pulse up" in result.stderr and "pulse replay" in result.stderr
