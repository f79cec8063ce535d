"""Scoring through the real pipeline: purchases only still yield churn scores for every member."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from factories import event
from helpers import wait_for

from sinks.clickhouse import connect
from streams.config import Settings
from streams.producer import PulseProducer
from streams.runtime import Runtime
from streams.scoring import scorer_factory

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


def test_purchases_only_still_score_every_member(settings: Settings) -> None:
    members = 60
    history = _purchase_history(members)
    runtime = Runtime(settings, scorer=scorer_factory, serve_http=False, announce=False).start()
    try:
        producer = PulseProducer(settings.kafka_bootstrap, topic_prefix=settings.topic_prefix)
        for doc in history:
            producer.send(doc)
        producer.flush()
        wait_for(
            lambda: runtime.status()["processed"] == len(history) and runtime.settled(),
            90,
            "every purchase event scored and stored",
        )
    finally:
        runtime.stop()
    client = connect("", settings.clickhouse_database, settings.data_path)
    pseudonym = runtime.pseudonym
    rows = client.query(
        "SELECT member_id, argMax(churn_probability, version), argMax(churn_risk, version), "
        "argMax(lifecycle_stage, version), argMax(active_policies, version) "
        "FROM member_scores GROUP BY member_id"
    ).result_rows
    by_member = {r[0]: r[1:] for r in rows}
    assert len(by_member) == members  # every member seen has a score
    cancelled = [by_member[pseudonym(f"p-{i:04d}")] for i in range(0, members, 3)]
    renewed = [by_member[pseudonym(f"p-{i:04d}")] for i in range(1, members, 3)]
    assert all(0.0 <= r[0] <= 1.0 for r in by_member.values())
    mean = lambda rs: sum(r[0] for r in rs) / len(rs)  # noqa: E731
    # A cancellation is a churn signal; a renewal and a claim handled are not.
    assert mean(cancelled) > mean(renewed) + 0.2, (mean(cancelled), mean(renewed))
    assert all(r[3] == 0 for r in cancelled) and all(r[3] == 1 for r in renewed)
    stages = client.query(
        "SELECT count() FROM lifecycle_transitions WHERE to_stage = 'loyal'"
    ).result_rows[0][0]
    assert stages >= members  # every buyer went through to loyal at least once
