"""A realistic, reproducible simulated insurance community (events + ground truth).

**Members.** Each member belongs to one of four archetypes: *lurkers* mostly read,
*contributors* post, comment, react and take quizzes, *champions* do everything (live
sessions, referrals, community reviews), and *deal seekers* chase points (daily check-ins,
frequent redemptions, quotes) and cancel over price. A member has a home community
(``c-health-tips``, ``c-car-owners``, ...; each with topics, an affine product line and a
weekly live-session slot), a preferred channel, a log-normal activity level and a latent
satisfaction. About 30% are present from day 0 (some already hold a policy); the others
join (``member_joined``) over the first 70% of the span, some via a referral.

**Behaviour.** Every active day a member opens a Poisson number of sessions, at hours
typical for the archetype (in UTC+08:00) and with archetype-specific weekday rhythms;
a session views content, and may react, comment, post, answer a quiz, share, and earn
points. Purchases follow the funnel *potential -> intent -> decision -> loyal*: product
content views and ``quote_requested`` come days to weeks before ``application_started``,
which precedes ``policy_purchased``; the chance to convert grows with engagement,
satisfaction and referral. Policy holders file claims settled as paid, partially paid or
denied, answer CSAT surveys and write reviews; yearly renewals fall inside the span for
older policies. NPS invitations go out every few weeks; answers follow satisfaction.

**Churn.** A latent daily hazard (archetype, low satisfaction, low engagement, the first
weeks after joining, and above all a recent denied or partially paid claim) decides when
a member starts to drift away (``decline_started_at``). Over the next 2-5 weeks sessions
become rarer and shorter, posts and reactions fade faster than reading, NPS answers drop,
some opt out of marketing and many deal seekers cash their points out; then, at
``churn_at``, the member goes silent, or cancels (``policy_cancelled`` with a reason) or
lets the policy lapse (``policy_lapsed``) and then goes silent, sometimes with
``member_left`` or, rarely, ``erasure_requested``. A few silent churners come back after
more than a month (``reactivated_at``). Loyal members take holidays too, so silence
alone is not proof of churn.

All randomness comes from ``random.Random`` seeded by the config: the same config (with
an explicit ``start``) gives byte-identical output. Member plans are drawn first from one
stream (they also give :func:`ground_truth`), day-to-day activity from another, and events
are produced day by day, so memory holds the plans and one day of events.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from streams.simulator.activity import stream_events
from streams.simulator.model import SimulationConfig, resolve_start
from streams.simulator.plan import plan_members, truth_of

__all__ = ["SimulationConfig", "simulate", "ground_truth", "write_jsonl"]


def simulate(config: SimulationConfig) -> Iterator[dict[str, Any]]:
    """Events as JSON-ready dicts (envelope + ``properties``), in event-time order.

    Every event is valid for ``schemas.decode_event`` with ``now`` = the end of the
    simulation (``start + days``).

    >>> import json
    >>> from datetime import UTC, datetime, timedelta
    >>> from schemas import decode_event
    >>> start = datetime(2025, 1, 1, tzinfo=UTC)
    >>> config = SimulationConfig(members=30, days=21, seed=7, start=start)
    >>> events = list(simulate(config))
    >>> end = config.start + timedelta(days=config.days)
    >>> all(decode_event(json.dumps(e).encode(), now=end) for e in events)
    True
    >>> list(events[0])  # doctest: +NORMALIZE_WHITESPACE
    ['event_id', 'event_type', 'occurred_at', 'member_id', 'community_id', 'channel',
     'schema_version', 'properties']
    >>> events == list(simulate(config))
    True
    """
    start = resolve_start(config)
    return stream_events(config, start, plan_members(config, start))


def ground_truth(config: SimulationConfig) -> list[dict[str, Any]]:
    """One record per member, from the same seeded member plans as :func:`simulate`.

    Keys: ``member_id``, ``archetype``, ``community_id``, ``joined_at``, ``churn_at``
    (may lie after the end when the member was still declining), ``churn_kind``
    (``silent``, ``cancelled``, ``lapsed`` or None), ``decline_started_at``,
    ``reactivated_at``, ``erased``, ``via_referral``, ``purchase_times`` (purchases inside
    the span) and ``first_policy_at`` (may precede the start for existing policy holders).
    """
    start = resolve_start(config)
    return [truth_of(plan) for plan in plan_members(config, start)]


def write_jsonl(
    config: SimulationConfig,
    path: Path,
    *,
    progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Write events (one JSON per line) to ``path`` and the truth to ``*.truth.jsonl``.

    ``progress`` is called with the number of events written so far, every 10,000
    events and at the end. Returns counts: ``events``, ``members`` and one per event type.
    """
    start = resolve_start(config)
    plans = plan_members(config, start)
    encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    counts: Counter[str] = Counter()
    written = 0
    path = Path(path)
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for event in stream_events(config, start, plans):
            out.write(encode(event))
            out.write("\n")
            counts[event["event_type"]] += 1
            written += 1
            if progress is not None and written % 10_000 == 0:
                progress(written)
    with path.with_suffix(".truth.jsonl").open("w", encoding="utf-8", newline="\n") as out:
        for plan in plans:
            out.write(encode(truth_of(plan)))
            out.write("\n")
    if progress is not None:
        progress(written)
    return {"events": written, "members": len(plans), **dict(sorted(counts.items()))}
