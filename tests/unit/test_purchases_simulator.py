"""The purchases-only generator: a valid, ordered, reproducible transaction log of retail shape."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from schemas import decode_event
from schemas.registry import stream_of
from streams.cli import main
from streams.simulator.purchases import PurchasesConfig, simulate_purchases, write_purchases_jsonl

pytestmark = pytest.mark.unit

START = datetime(2025, 3, 1, tzinfo=UTC)
DEFAULT = PurchasesConfig(start=START)


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    return list(simulate_purchases(DEFAULT))


def test_the_default_is_a_customer_base_of_at_least_20000_over_nine_months(
    events: list[dict[str, Any]],
) -> None:
    assert DEFAULT.members >= 20_000 and DEFAULT.days >= 270
    buyers = {e["member_id"] for e in events if e["event_type"] == "policy_purchased"}
    assert len(buyers) == DEFAULT.members  # every customer buys at least once
    times = [datetime.fromisoformat(e["occurred_at"]) for e in events]
    assert times == sorted(times)
    assert START <= times[0] and times[-1] < START + timedelta(days=DEFAULT.days)
    assert times[-1] - times[0] > timedelta(days=240)


def test_repeat_buying_has_the_shape_of_a_retail_log(events: list[dict[str, Any]]) -> None:
    purchases = Counter(e["member_id"] for e in events if e["event_type"] == "policy_purchased")
    per_member = sum(purchases.values()) / len(purchases)
    once = sum(1 for n in purchases.values() if n == 1) / len(purchases)
    # CDNOW-like: about two transactions per customer, most buy once, a long tail of loyal ones
    assert 1.8 < per_member < 2.3
    assert 0.5 < once < 0.7
    assert sum(1 for n in purchases.values() if n >= 10) > 100
    kinds = Counter(e["event_type"] for e in events)
    assert kinds["policy_purchased"] > 0.7 * len(events)
    assert {"quote_requested", "claim_filed", "claim_settled", "policy_cancelled"} <= set(kinds)


def test_every_event_is_a_valid_purchase_and_claims_settle_after_filing(
    events: list[dict[str, Any]],
) -> None:
    end = START + timedelta(days=DEFAULT.days)
    filed: dict[str, datetime] = {}
    policies: dict[str, datetime] = {}
    for raw in events[:20_000]:
        event = decode_event(json.dumps(raw).encode(), now=end)
        assert stream_of(event.event_type) == "purchases"
        props = raw["properties"]
        at = datetime.fromisoformat(raw["occurred_at"])
        if raw["event_type"] == "policy_purchased":
            policies[props["policy_id"]] = at
        elif raw["event_type"] == "claim_filed":
            assert policies[props["policy_id"]] < at
            filed[props["claim_id"]] = at
        elif raw["event_type"] == "claim_settled":
            assert filed[props["claim_id"]] < at
        elif raw["event_type"] == "policy_cancelled":
            assert policies[props["policy_id"]] < at
    assert len({e["event_id"] for e in events}) == len(events)


def test_same_seed_same_events_other_seed_differs() -> None:
    small = PurchasesConfig(members=300, days=270, seed=4, start=START)
    assert list(simulate_purchases(small)) == list(simulate_purchases(small))
    other = PurchasesConfig(members=300, days=270, seed=5, start=START)
    assert list(simulate_purchases(small)) != list(simulate_purchases(other))
    with pytest.raises(ValueError):
        PurchasesConfig(members=-1)


def test_pulse_simulate_purchases_only_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "purchases.jsonl"
    config = PurchasesConfig(members=400, days=270, seed=3)
    assert main(["simulate", "--purchases-only", "--members", "400", "--days", "270",
                 "--seed", "3", "--out", str(out)]) == 0  # fmt: skip
    lines = out.read_text().splitlines()
    assert not out.with_suffix(".truth.jsonl").exists()
    members = defaultdict(int)
    for line in lines:
        members[json.loads(line)["member_id"]] += 1
    assert len(members) == 400
    counts = write_purchases_jsonl(config, tmp_path / "again.jsonl")
    assert counts["events"] == len(lines) and counts["members"] == 400
