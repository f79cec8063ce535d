"""A purchases-only customer base: the shape of a retail or insurance transaction log.

Many real backfills hold no community interactions at all, only purchases: an insurer's
policy system or a retailer's order log. Such a log is dominated by one-time buyers with
a long tail of repeat customers. This generator draws it from the **BG/NBD** model of
repeat buying (Fader, Hardie and Lee, "Counting your customers the easy way", 2005) with
the parameters they fitted to the CDNOW transaction log (time in weeks): each customer
buys at a rate ``lambda ~ Gamma(r=0.243, alpha=4.414)`` while active and, after each
repeat purchase, becomes inactive for good with a probability ``p ~ Beta(a=0.793,
b=2.426)``. Customers make their first purchase during the first third of the span (the
CDNOW cohort was acquired over its first 12 weeks). Over nine months this gives about
two transactions per customer, 60% of customers buying once.

Each transaction is a ``policy_purchased`` (repeat customers mostly stay with their
product line: travel policies are bought trip after trip); 15% of them follow a
``quote_requested`` a few days earlier. Policies bring claims at a typical frequency per
policy-year of their line (``claim_filed``, then ``claim_settled``: 15% for health, 10%
for auto, 5% per travel trip), and 6% of yearly policies are cancelled
(``policy_cancelled``). Every event goes to the purchases topic; no member ever sends an
interaction, so a scorer sees long silences between a member's events.

Deterministic: the same config (with an explicit ``start``) gives the same events.

>>> import json
>>> from datetime import UTC, datetime, timedelta
>>> from schemas import decode_event
>>> from schemas.registry import stream_of
>>> start = datetime(2025, 1, 1, tzinfo=UTC)
>>> config = PurchasesConfig(members=200, days=270, seed=1, start=start)
>>> events = list(simulate_purchases(config))
>>> end = start + timedelta(days=config.days)
>>> all(stream_of(decode_event(json.dumps(e).encode(), now=end).event_type) == "purchases"
...     for e in events)
True
>>> events == list(simulate_purchases(config))
True
"""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streams.simulator.model import (
    CHANNEL_OFFSET,
    CLAIM_AMOUNT_RANGE,
    DAY,
    HOUR,
    PREMIUM_RANGE,
    SimulationConfig,
    resolve_start,
)

__all__ = ["PurchasesConfig", "BGNBD_CDNOW", "simulate_purchases", "write_purchases_jsonl"]

#: BG/NBD parameters fitted to CDNOW (r, alpha per week, a, b): Fader, Hardie, Lee 2005.
BGNBD_CDNOW = (0.243, 4.414, 0.793, 2.426)

_WEEK = 7 * DAY
_LINES = ("travel", "accident", "health", "auto", "property", "life")
_LINE_WEIGHTS = (0.35, 0.2, 0.15, 0.1, 0.1, 0.1)
_CHANNELS = ("agent", "app", "web", "partner", "mini_program")
_CHANNEL_WEIGHTS = (0.35, 0.3, 0.2, 0.1, 0.05)
_CANCEL_REASONS = ("price", "service", "switched_provider", "no_longer_needed", "other")
_OUTCOMES = ("paid", "partially_paid", "denied")
#: Claims per policy-year by product line (travel: per 30-day trip policy).
_CLAIM_FREQUENCY = {
    "health": 0.15,
    "auto": 0.1,
    "accident": 0.05,
    "property": 0.05,
    "travel": 0.05 * 365 / 30,
    "life": 0.0,
}

#: (ts, member index, seq, event_type, properties, channel)
_Item = tuple[int, int, int, str, dict[str, Any], str]


@dataclass(frozen=True)
class PurchasesConfig:
    """What to generate: ``members`` customers over ``days`` of event time."""

    members: int = 24_000
    days: int = 270
    seed: int = 0
    start: datetime | None = None
    """Event-time start (aware, UTC); default: ``now() - days``, truncated to midnight UTC."""

    def __post_init__(self) -> None:
        # the same checks as the community simulator's
        SimulationConfig(members=self.members, days=self.days, seed=self.seed, start=self.start)


class _Customers:
    def __init__(self, config: PurchasesConfig) -> None:
        self.rng = random.Random(f"community-pulse/purchases/{config.seed}")  # noqa: S311
        self.start = resolve_start(
            SimulationConfig(members=config.members, days=config.days, start=config.start)
        )
        self.end = self.start + config.days * DAY
        self.items: list[_Item] = []

    def _at(self, ts: float, channel: str) -> int:
        """A time on the day of ``ts`` between 08:00 and 22:00 local time."""
        day = int(ts) - int(ts) % DAY
        local = 8 * HOUR + self.rng.randrange(14 * HOUR)
        return day + (local - CHANNEL_OFFSET[channel]) % DAY

    def customer(self, index: int) -> None:
        r = self.rng
        r_shape, alpha, a, b = BGNBD_CDNOW
        rate = r.gammavariate(r_shape, 1.0 / alpha) / _WEEK  # purchases per second
        dropout = r.betavariate(a, b)
        channel = r.choices(_CHANNELS, _CHANNEL_WEIGHTS)[0]
        line = r.choices(_LINES, _LINE_WEIGHTS)[0]
        t = self.start + r.random() * (self.end - self.start) / 3
        seq = self._transaction(index, 0, t, line, channel)
        while rate > 0.0:
            t += r.expovariate(rate)
            if t >= self.end:
                break
            if r.random() < 0.4:
                line = r.choices(_LINES, _LINE_WEIGHTS)[0]
            seq = self._transaction(index, seq, t, line, channel)
            if r.random() < dropout:  # BG/NBD: may become inactive after each repeat purchase
                break

    def _add(self, ts: int, index: int, seq: int, kind: str, props: dict[str, Any], ch: str) -> int:
        if self.start <= ts < self.end:
            self.items.append((ts, index, seq, kind, props, ch))
        return seq + 1

    def _transaction(self, i: int, seq: int, t: float, line: str, channel: str) -> int:
        r = self.rng
        ts = self._at(t, channel)
        low, high = PREMIUM_RANGE[line]
        if r.random() < 0.15:
            quoted = self._at(ts - r.randrange(1, 11) * DAY, channel)
            props: dict[str, Any] = {"quote_id": f"q-{i:06d}-{seq}", "product_line": line}
            props |= {"estimated_premium": round(r.uniform(low, high), 2), "currency": "CNY"}
            seq = self._add(quoted, i, seq, "quote_requested", props, channel)
        pid = f"pol-{i:06d}-{seq}"
        months = 1 if line == "travel" else 12
        props = {"policy_id": pid, "product_line": line, "premium": round(r.uniform(low, high), 2)}
        props |= {"currency": "CNY", "term_months": months}
        seq = self._add(ts, i, seq, "policy_purchased", props, channel)
        until = min(ts + (30 * DAY if months == 1 else 365 * DAY), self.end)
        if months == 12 and r.random() < 0.06:
            cancelled = ts + r.randrange(30 * DAY, 240 * DAY)
            if cancelled < until:
                props = {"policy_id": pid, "product_line": line}
                props["reason"] = r.choice(_CANCEL_REASONS)
                seq = self._add(cancelled, i, seq, "policy_cancelled", props, "agent")
                until = cancelled
        claim_rate = _CLAIM_FREQUENCY[line] / (365 * DAY)
        filed = float(ts)
        for k in range(3):
            if claim_rate <= 0.0:
                break
            filed += r.expovariate(claim_rate)
            if filed >= until:
                break
            seq = self._claim(i, seq, int(filed), f"clm-{i:06d}-{seq}-{k}", pid, line, channel)
        return seq

    def _claim(self, i: int, seq: int, filed: int, cid: str, pid: str, line: str, ch: str) -> int:
        r = self.rng
        low, high = CLAIM_AMOUNT_RANGE[line]
        amount = round(r.uniform(low, high), 2)
        base: dict[str, Any] = {"claim_id": cid, "policy_id": pid, "product_line": line}
        seq = self._add(
            filed, i, seq, "claim_filed", base | {"amount": amount, "currency": "CNY"}, ch
        )
        outcome = r.choices(_OUTCOMES, weights=(0.7, 0.17, 0.13))[0]
        days = r.randrange(2, 12) if outcome == "denied" else r.randrange(3, 35)
        paid = {"paid": amount, "denied": 0.0}.get(outcome)
        if paid is None:
            paid = round(amount * r.uniform(0.3, 0.8), 2)
        props = base | {"amount_paid": paid, "currency": "CNY", "outcome": outcome}
        props["days_to_settle"] = days
        return self._add(filed + days * DAY, i, seq, "claim_settled", props, "agent")


def _occurred_at(ts: int, channel: str) -> str:
    offset = CHANNEL_OFFSET[channel]
    local = datetime.fromtimestamp(ts + offset, UTC).replace(tzinfo=None)
    sign = "+" if offset >= 0 else "-"
    shift = abs(offset)
    return f"{local.isoformat()}{sign}{shift // HOUR:02d}:{shift % HOUR // 60:02d}"


def simulate_purchases(config: PurchasesConfig) -> Iterator[dict[str, Any]]:
    """Purchase events as JSON-ready dicts, in event-time order."""
    customers = _Customers(config)
    for index in range(config.members):
        customers.customer(index)
    customers.items.sort(key=lambda item: item[:3])
    ids = random.Random(f"community-pulse/purchase-ids/{config.seed}")  # noqa: S311
    for ts, index, _, event_type, props, channel in customers.items:
        yield {
            "event_id": str(uuid.UUID(int=ids.getrandbits(128), version=4)),
            "event_type": event_type,
            "occurred_at": _occurred_at(ts, channel),
            "member_id": f"m-{index:06d}",
            "community_id": None,
            "channel": channel,
            "schema_version": "1.0",
            "properties": props,
        }


def write_purchases_jsonl(
    config: PurchasesConfig, path: Path, *, progress: Callable[[int], None] | None = None
) -> dict[str, int]:
    """Write the events (one JSON per line) to ``path``; counts as :func:`write_jsonl`'s."""
    encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    counts: Counter[str] = Counter()
    members: set[str] = set()
    written = 0
    with Path(path).open("w", encoding="utf-8", newline="\n") as out:
        for event in simulate_purchases(config):
            out.write(encode(event))
            out.write("\n")
            counts[event["event_type"]] += 1
            members.add(event["member_id"])
            written += 1
            if progress is not None and written % 10_000 == 0:
                progress(written)
    if progress is not None:
        progress(written)
    return {"events": written, "members": len(members), **dict(sorted(counts.items()))}
