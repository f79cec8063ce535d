"""How each event type changes a member's state.

Every event updates the bookkeeping (counts, policies, claims, surveys).
*Activity* events, the ones a member initiates, also feed the decayed activity
of their interaction kind with a weight for the effort they show, the
distinct-active-days ring and the recency that churn labels and silence timers
are measured from. Policy cancellations and lapses, settlements, consent
changes and leaving are recorded but are not activity.

================================  =============  ======
event type                        kind           weight
================================  =============  ======
content_viewed                    content        1.0
  (also, its dwell minutes)       dwell          minutes
  (guide or calculator, also)     product        1.0
content_shared                    social         2.0
post_created                      social         3.0
comment_created                   social         2.0
reaction_added                    social         0.5
member_joined                     social         1.0
quiz_answered                     quiz_live      2.0
live_session_attended             quiz_live      3.0
points_earned                     points         0.5
points_redeemed                   points         1.0
referral_sent                     referrals      2.0
referral_converted                referrals      4.0
review_posted                     reviews        3.0
survey_answered                   reviews        2.0
quote_requested                   intent         1.0
application_started               intent         2.0
policy_purchased, policy_renewed  (none)         --
claim_filed                       (none)         --
================================  =============  ======
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas.envelope import EventBase
from scoring.clock import DAY, to_ts
from scoring.decay import add_decayed
from scoring.state import HALF_LIVES, KINDS, MemberState

__all__ = [
    "ACTIVITY_TYPES",
    "CHURN_EVENT_TYPES",
    "PURCHASE_EVENT_TYPES",
    "EVENT_KIND_WEIGHT",
    "Applied",
    "event_type_of",
    "event_digest",
    "apply_event",
]

_K = {kind: i * HALF_LIVES for i, kind in enumerate(KINDS)}

#: event type -> (offset of its kind in ``MemberState.decayed``, weight).
EVENT_KIND_WEIGHT: dict[str, tuple[int, float]] = {
    "content_viewed": (_K["content"], 1.0),
    "content_shared": (_K["social"], 2.0),
    "post_created": (_K["social"], 3.0),
    "comment_created": (_K["social"], 2.0),
    "reaction_added": (_K["social"], 0.5),
    "member_joined": (_K["social"], 1.0),
    "quiz_answered": (_K["quiz_live"], 2.0),
    "live_session_attended": (_K["quiz_live"], 3.0),
    "points_earned": (_K["points"], 0.5),
    "points_redeemed": (_K["points"], 1.0),
    "referral_sent": (_K["referrals"], 2.0),
    "referral_converted": (_K["referrals"], 4.0),
    "review_posted": (_K["reviews"], 3.0),
    "survey_answered": (_K["reviews"], 2.0),
    "quote_requested": (_K["intent"], 1.0),
    "application_started": (_K["intent"], 2.0),
}
_PRODUCT_CONTENT = frozenset({"guide", "calculator"})

#: Events a member initiates: they reset silence and answer churn labels with "retained".
ACTIVITY_TYPES: frozenset[str] = frozenset(
    {*EVENT_KIND_WEIGHT, "policy_purchased", "policy_renewed", "claim_filed"}
)
#: Events that label a member's open churn snapshots "churned" at once.
CHURN_EVENT_TYPES: frozenset[str] = frozenset({"policy_cancelled", "policy_lapsed"})
#: Events that label a member's open conversion snapshots "converted".
PURCHASE_EVENT_TYPES: frozenset[str] = frozenset({"policy_purchased"})

_ACTIVE_DAYS_KEPT = 64
_MONTH = 30.4375 * DAY


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one event meant, for labels and the lifecycle."""

    event_type: str
    at: float
    is_activity: bool
    is_latest_activity: bool
    silence_before_days: float | None
    """Silence that this activity ended (None when not activity or no earlier activity)."""
    last_policy_ended: bool
    """A cancellation or lapse left the member without any active policy (the event
    itself proves a policy existed, even one bought before the events began)."""


def event_type_of(event: EventBase) -> str:
    """The ``event_type`` discriminator of a typed event."""
    return str(getattr(event, "event_type", ""))


def event_digest(event: EventBase) -> int:
    """A 64-bit digest of the event id (both UUID halves folded) for the idempotency ring."""
    value = event.event_id.int
    return (value >> 64) ^ (value & 0xFFFF_FFFF_FFFF_FFFF)


def _expiry(at: float, term_months: int) -> float:
    """End of a term that starts at ``at``, plus a grace of a quarter of it (30 days at most)."""
    term = term_months * _MONTH
    return at + term + min(30.0 * DAY, 0.25 * term)


def _policy(state: MemberState, props: Any, at: float, renewal: bool) -> None:
    pid = str(props.policy_id)
    since = state.policies[pid][2] if renewal and pid in state.policies else at
    expires = _expiry(at, int(props.term_months))
    state.policies[pid] = (str(props.product_line), float(props.premium), since, expires)
    if renewal:
        state.renewals += 1
    else:
        state.purchases += 1
        if state.last_purchase_at is None or at > state.last_purchase_at:
            state.last_purchase_at = at


def _policy_end(state: MemberState, props: Any, at: float, lapse: bool) -> None:
    pid = str(props.policy_id)
    state.policies.pop(pid, None)
    state.end_policy(pid)
    if lapse:
        state.lapses += 1
    else:
        state.cancellations += 1
    if state.last_policy_end_at is None or at > state.last_policy_end_at:
        state.last_policy_end_at = at


def _later(current: float | None, at: float) -> float:
    return at if current is None or at > current else current


def _claim_settled(state: MemberState, props: Any, at: float) -> None:
    _known_policy(state, props, at)
    claim_id = str(props.claim_id)
    if claim_id in state.open_claims:
        state.open_claims.remove(claim_id)
    outcome = props.outcome
    if outcome == "paid":
        state.claims_paid += 1
    elif outcome == "partially_paid":
        state.claims_partial += 1
        state.last_bad_claim_at = _later(state.last_bad_claim_at, at)
    else:
        state.claims_denied += 1
        state.last_bad_claim_at = _later(state.last_bad_claim_at, at)


def _survey(state: MemberState, props: Any, at: float) -> None:
    if state.last_survey_at is None or at >= state.last_survey_at:
        if props.nps is not None:
            state.last_nps = int(props.nps)
        if props.csat is not None:
            state.last_csat = int(props.csat)
        state.last_survey_at = at


def _review(state: MemberState, props: Any, at: float) -> None:
    state.reviews += 1
    state.review_rating_sum += int(props.rating)
    state.last_review_rating = int(props.rating)


def _left(state: MemberState, props: Any, at: float, community: str | None) -> None:
    state.communities_left += 1
    if community is not None and community in state.communities:
        state.communities.remove(community)


def _noop(state: MemberState, props: Any, at: float) -> None:
    return None


_Handler = Callable[[MemberState, Any, float], None]


def _set(name: str, value_of: Callable[[Any], Any]) -> _Handler:
    def handler(state: MemberState, props: Any, at: float) -> None:
        setattr(state, name, value_of(props))

    return handler


def _inc(name: str, amount: Callable[[Any], float] | None = None) -> _Handler:
    def handler(state: MemberState, props: Any, at: float) -> None:
        setattr(state, name, getattr(state, name) + (1 if amount is None else amount(props)))

    return handler


def _redeem(state: MemberState, props: Any, at: float) -> None:
    state.points_redeemed += float(props.points)
    if state.last_redeem_at is None or at >= state.last_redeem_at:
        state.last_redeem_at = at
        state.last_redeem_points = float(props.points)


def _quote(state: MemberState, props: Any, at: float) -> None:
    state.quotes += 1
    state.last_quote_at = _later(state.last_quote_at, at)


def _application(state: MemberState, props: Any, at: float) -> None:
    state.applications += 1
    state.last_application_at = _later(state.last_application_at, at)


def _known_policy(state: MemberState, props: Any, at: float) -> None:
    """A claim proves a policy in force, even one bought before the events began."""
    pid = str(props.policy_id)
    if pid not in state.policies and pid not in state.ended_policies:
        state.policies[pid] = (str(props.product_line), 0.0, at, _expiry(at, 12))


def _claim_filed(state: MemberState, props: Any, at: float) -> None:
    _known_policy(state, props, at)
    state.claims_filed += 1
    state.open_claim(str(props.claim_id))
    state.last_claim_at = _later(state.last_claim_at, at)


def _joined(state: MemberState, props: Any, at: float) -> None:
    if state.joined_at is None or at < state.joined_at:
        state.joined_at = at


_HANDLERS: dict[str, _Handler] = {
    "member_joined": _joined,
    "points_earned": _inc("points_earned", lambda p: float(p.points)),
    "points_redeemed": _redeem,
    "referral_sent": _inc("referrals_sent"),
    "referral_converted": _inc("referrals_converted"),
    "review_posted": _review,
    "survey_answered": _survey,
    "consent_changed": _set("consent_marketing", lambda p: bool(p.marketing)),
    "quote_requested": _quote,
    "application_started": _application,
    "policy_purchased": lambda s, p, at: _policy(s, p, at, renewal=False),
    "policy_renewed": lambda s, p, at: _policy(s, p, at, renewal=True),
    "policy_cancelled": lambda s, p, at: _policy_end(s, p, at, lapse=False),
    "policy_lapsed": lambda s, p, at: _policy_end(s, p, at, lapse=True),
    "claim_filed": _claim_filed,
    "claim_settled": _claim_settled,
}


def _mark_active_day(state: MemberState, at: float) -> None:
    day = int(at // DAY)
    days = state.active_days
    if days and day <= days[-1]:
        if day in days:
            return
        if day < days[-1] - _ACTIVE_DAYS_KEPT:
            return
        index = len(days)
        while index > 0 and days[index - 1] > day:
            index -= 1
        days.insert(index, day)
    else:
        days.append(day)
    cutoff = days[-1] - _ACTIVE_DAYS_KEPT
    while days and days[0] < cutoff:
        del days[0]


def apply_event(
    state: MemberState, event: EventBase, half_lives: tuple[float, float, float]
) -> Applied:
    """Apply one event to ``state`` (the caller has already checked idempotency)."""
    event_type = event_type_of(event)
    at = to_ts(event.occurred_at)
    props: Any = getattr(event, "properties", None)
    state.event_count += 1
    if at > state.last_event_at:
        state.last_event_at = at
    if at < state.first_seen_at:
        state.first_seen_at = at
    community = event.community_id
    if event_type == "member_left":
        _left(state, props, at, community)
    elif community is not None:
        state.add_community(community)
    channel = str(event.channel)
    state.channels[channel] = state.channels.get(channel, 0) + 1

    _HANDLERS.get(event_type, _noop)(state, props, at)
    state.expire_policies(state.last_event_at)

    is_activity = event_type in ACTIVITY_TYPES
    is_latest = False
    silence_before: float | None = None
    if is_activity:
        state.activity_count += 1
        previous = state.last_activity_at
        if previous is None or at > previous:
            is_latest = True
            if previous is not None:
                silence_before = (at - previous) / DAY
            state.last_activity_at = at
            state.silence_done_days = 0.0
        kind_weight = EVENT_KIND_WEIGHT.get(event_type)
        if kind_weight is not None:
            offset, weight = kind_weight
            state.decay_ref = add_decayed(
                state.decayed, offset, weight, state.decay_ref, at, half_lives
            )
            if event_type == "content_viewed":
                minutes = float(props.dwell_seconds) / 60.0
                state.decay_ref = add_decayed(
                    state.decayed, _K["dwell"], minutes, state.decay_ref, at, half_lives
                )
                if props.content_type in _PRODUCT_CONTENT:
                    state.decay_ref = add_decayed(
                        state.decayed, _K["product"], 1.0, state.decay_ref, at, half_lives
                    )
        _mark_active_day(state, at)
    return Applied(
        event_type=event_type,
        at=at,
        is_activity=is_activity,
        is_latest_activity=is_latest,
        silence_before_days=silence_before,
        last_policy_ended=event_type in CHURN_EVENT_TYPES and not state.policies,
    )
