"""The community simulator: valid, ordered, reproducible events that match the truth."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas import EVENT_MODELS, decode_event
from streams.simulator import SimulationConfig, ground_truth, simulate, write_jsonl

pytestmark = pytest.mark.unit

START = datetime(2025, 1, 6, tzinfo=UTC)
FULL = SimulationConfig(members=2000, days=120, seed=0, start=START)


def _end(config: SimulationConfig) -> datetime:
    assert config.start is not None
    return config.start + timedelta(days=config.days)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.fixture(scope="module")
def full() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return list(simulate(FULL)), ground_truth(FULL)


@pytest.fixture(scope="module")
def by_member(
    full: tuple[list[dict[str, Any]], list[dict[str, Any]]],
) -> dict[str, list[tuple[datetime, str]]]:
    events: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for event in full[0]:
        events[event["member_id"]].append((_at(event["occurred_at"]), event["event_type"]))
    return events


def test_same_seed_gives_the_same_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    config = SimulationConfig(members=150, days=30, seed=3, start=START)
    first, second, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    seen: list[int] = []
    counts = write_jsonl(config, first, progress=seen.append)
    assert seen and seen[-1] == counts["events"]
    assert write_jsonl(config, second) == counts
    write_jsonl(SimulationConfig(members=150, days=30, seed=4, start=START), other)
    assert first.read_bytes() == second.read_bytes()
    assert first.with_suffix(".truth.jsonl").read_bytes() == (
        second.with_suffix(".truth.jsonl").read_bytes()
    )
    assert first.read_bytes() != other.read_bytes()
    lines = first.read_text().splitlines()
    assert counts["events"] == len(lines) and counts["members"] == 150
    assert sum(v for k, v in counts.items() if k in EVENT_MODELS) == len(lines)
    truth = [json.loads(x) for x in first.with_suffix(".truth.jsonl").read_text().splitlines()]
    assert truth == ground_truth(config)


def test_every_event_of_a_small_simulation_validates() -> None:
    config = SimulationConfig(members=200, days=60, seed=11, start=START)
    end = _end(config)
    events = list(simulate(config))
    assert len(events) > 2000
    for event in events:
        decoded = decode_event(json.dumps(event).encode(), key=event["member_id"].encode(), now=end)
        assert decoded.occurred_at < end
    assert len({e["event_id"] for e in events}) == len(events)


def test_a_sample_of_the_full_simulation_validates(
    full: tuple[list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    end = _end(FULL)
    for event in full[0][::37]:
        decode_event(json.dumps(event).encode(), now=end)


def test_all_event_types_appear_with_plausible_volumes(
    full: tuple[list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    events, truth = full
    counts = Counter(e["event_type"] for e in events)
    assert set(counts) == set(EVENT_MODELS)
    assert 30 <= len(events) / FULL.members <= 80
    assert counts["content_viewed"] == max(counts.values())
    assert {e["channel"] for e in events} == {"app", "mini_program", "web", "agent", "partner"}
    assert {e["occurred_at"][-6:] for e in events} == {"+00:00", "+08:00"}
    assert len({e["community_id"] for e in events}) == FULL.communities + 1  # and None
    assert {t["archetype"] for t in truth} == {"lurker", "contributor", "champion", "deal_seeker"}


def test_events_are_in_event_time_order(
    full: tuple[list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    times = [_at(e["occurred_at"]) for e in full[0]]
    assert all(a <= b for a, b in zip(times, times[1:], strict=False))
    assert times[0] >= START and times[-1] < _end(FULL)


def test_truth_matches_the_events(
    full: tuple[list[dict[str, Any]], list[dict[str, Any]]],
    by_member: dict[str, list[tuple[datetime, str]]],
) -> None:
    _, truth = full
    end = _end(FULL)
    kinds = Counter(t["churn_kind"] for t in truth)
    assert kinds["silent"] > 0 and kinds["cancelled"] > 0 and kinds["lapsed"] > 0
    assert 0.15 < sum(kinds[k] for k in ("silent", "cancelled", "lapsed")) / len(truth) < 0.6
    assert 0 < sum(t["reactivated_at"] is not None for t in truth) < 0.06 * len(truth)
    for record in truth:
        events = by_member.get(record["member_id"], [])
        bought = [t for t, kind in events if kind == "policy_purchased"]
        assert bought == [_at(x) for x in record["purchase_times"]]
        if record["purchase_times"]:
            assert _at(record["first_policy_at"]) <= _at(record["purchase_times"][0])
        joined = [t for t, kind in events if kind == "member_joined"]
        if _at(record["joined_at"]) >= START:
            assert joined and joined[0] == _at(record["joined_at"])
            assert all(t >= joined[0] for t, _ in events)
        if record["churn_at"] is None:
            continue
        churn = _at(record["churn_at"])
        back = record["reactivated_at"] and _at(record["reactivated_at"])
        # nothing after churn but the erasure request, a minute later, or a comeback
        active = [(t, kind) for t, kind in events if kind != "erasure_requested"]
        assert all(t <= churn or (back and t >= back) for t, _ in active)
        erasures = [t for t, kind in events if kind == "erasure_requested"]
        requested = churn + timedelta(minutes=1)
        assert erasures == ([requested] if record["erased"] and requested < end else [])
        if churn < end:
            terminal = {"cancelled": "policy_cancelled", "lapsed": "policy_lapsed"}
            if record["churn_kind"] in terminal:
                wanted = terminal[record["churn_kind"]]
                assert any(
                    kind == wanted and abs(t - churn) < timedelta(minutes=1) for t, kind in events
                )
            if record["erased"]:
                assert events[-1][1] == "erasure_requested"


def test_churners_fade_before_they_leave(
    full: tuple[list[dict[str, Any]], list[dict[str, Any]]],
    by_member: dict[str, list[tuple[datetime, str]]],
) -> None:
    _, truth = full
    four_weeks = timedelta(weeks=4)
    recent = earlier = churners = 0
    for record in truth:
        if record["churn_at"] is None or _at(record["churn_at"]) >= _end(FULL):
            continue
        churn = _at(record["churn_at"])
        if churn - 2 * four_weeks < max(_at(record["joined_at"]), START):
            continue
        times = [t for t, _ in by_member.get(record["member_id"], [])]
        recent += sum(churn - four_weeks <= t < churn for t in times)
        earlier += sum(churn - 2 * four_weeks <= t < churn - four_weeks for t in times)
        churners += 1
    assert churners > 100
    assert recent < 0.7 * earlier
