"""Scoring through the real pipeline: purchases only still yield churn scores for every member."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from factories import event
from helpers import pulse_env, run_pulse

from sinks.privacy import Pseudonymizer
from streams.broker import EmbeddedBroker

pytestmark = pytest.mark.integration

START = datetime(2026, 1, 5, tzinfo=UTC)


def _purchase_history(members: int) -> list[dict[str, object]]:
    """Each member buys; a third later cancel, a third renew, a third do nothing more."""
    events: list[dict[str, object]] = []
    for i in range(members):
        member = f"p-{i:04d}"
        day = START + timedelta(days=i % 20)
        policy = {"policy_id": f"pol-{i}"}
        events.append(event("quote_requested", member, day, quote_id=f"q-{i}"))
        events.append(event("policy_purchased", member, day + timedelta(days=2), **policy))
        if i % 3 == 0:
            events.append(event("policy_cancelled", member, day + timedelta(days=40), **policy))
        elif i % 3 == 1:
            events.append(event("claim_filed", member, day + timedelta(days=30), **policy))
            events.append(event("policy_renewed", member, day + timedelta(days=45), **policy))
    events.sort(key=lambda e: str(e["occurred_at"]))
    return events


def test_purchases_only_still_score_every_member(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """`pulse replay` of a file with purchase events only, as the acceptance states it."""
    members = 60
    history = _purchase_history(members)
    path = tmp_path / "purchases.jsonl"
    path.write_text("".join(json.dumps(doc) + "\n" for doc in history))
    env = pulse_env(
        broker.bootstrap,
        f"po{tmp_path.name[-6:]}.",
        f"po-{tmp_path.name}",
        tmp_path / "data",
        PULSE_PSEUDONYM_KEY="purchases-only-key-0123456789ab",
    )
    replay = run_pulse(["replay", str(path)], env)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert f"{len(history):,} new events stored" in replay.stdout

    def rows(sql: str) -> list[dict[str, Any]]:
        result = run_pulse(["query", sql, "--format", "json"], env, timeout=120)
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]

    pseudonym = Pseudonymizer(env["PULSE_PSEUDONYM_KEY"].encode())
    by_member = {
        r["member_id"]: r
        for r in rows(
            "SELECT member_id, argMax(churn_probability, version) AS churn, "
            "argMax(active_policies, version) AS active FROM member_scores GROUP BY member_id"
        )
    }
    assert len(by_member) == members  # every member seen has a score
    churn = {m: float(r["churn"]) for m, r in by_member.items()}
    assert all(0.0 <= p <= 1.0 for p in churn.values())
    cancelled = [pseudonym(f"p-{i:04d}") for i in range(0, members, 3)]
    renewed = [pseudonym(f"p-{i:04d}") for i in range(1, members, 3)]
    mean = lambda ms: sum(churn[m] for m in ms) / len(ms)  # noqa: E731
    # A cancellation is a churn signal; a renewal and a claim handled are not.
    assert mean(cancelled) > mean(renewed) + 0.2, (mean(cancelled), mean(renewed))
    assert all(int(by_member[m]["active"]) == 0 for m in cancelled)
    assert all(int(by_member[m]["active"]) == 1 for m in renewed)
    loyal = rows("SELECT count() AS n FROM lifecycle_transitions WHERE to_stage = 'loyal'")
    assert int(loyal[0]["n"]) >= members  # every buyer went through to loyal at least once
