"""The feature vector both models see: a member's state read at one event-time instant.

Features are a fixed, named vector (:data:`FEATURE_NAMES`) so snapshots store
plain floats; :func:`as_dict` gives river the ``{name: value}`` it learns from.
Missing answers (no survey yet) read as neutral with a ``*_missing`` indicator.

Groups:

* recency: ``recency_days``, ``log_recency``, ``silent_7/14/21`` (step indicators let a
  linear model bend the recency curve);
* activity level and trend: ``activity_short`` / ``activity_long`` (log of decayed weighted
  activity, half-lives 7 and 30 days) and ``activity_trend`` = log of the short sum scaled to
  the long half-life over the long sum: 0 for a steady member, negative for one who is
  slowing down -- the signal that separates gradual churners from quiet-but-steady members;
  the same level and trend per interaction kind (``lvl_*``, ``trend_*``);
  ``trend_at_last`` / ``social_trend_at_last``: the trend as it stood at the last
  activity, which tells a member who slowed down before falling silent from one who
  stopped at once (a holiday);
* session depth: ``dwell_per_view`` (minutes per content view) and ``dwell_trend``
  (recent against long-run minutes per view: sessions getting shorter);
* rhythm: ``typical_gap_days`` between active days and ``log_silence_ratio``, the
  current silence measured in the member's own gaps -- five silent days mean little for
  a weekly reader and much for a daily poster;
* frequency: distinct active days in the last 7 and 30 days and their rate difference;
* relationship: tenure, policies, premium (log), purchases, renewals, cancellations/lapses;
* experience: claims (filed, denied, denied or partially paid in the last 90 days, open),
  NPS, CSAT, reviews;
* incentives and word of mouth: points redeemed/earned ratio, a recent redemption (cashing
  out points before leaving), referrals;
* channel mix, communities, consent, purchase intent (quotes, applications, product content).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence

from scoring.clock import DAY
from scoring.decay import decay_factors
from scoring.state import HALF_LIVES, KINDS, MemberState

__all__ = ["FEATURE_NAMES", "FEATURE_INDEX", "TREND_KINDS", "compute_features", "as_dict"]

#: Kinds with their own level and trend features (``product`` only has a level,
#: ``dwell`` is read per view).
TREND_KINDS: tuple[str, ...] = KINDS[:7]

FEATURE_NAMES: tuple[str, ...] = (
    "recency_days",
    "log_recency",
    "silent_7",
    "silent_14",
    "silent_21",
    "activity_short",
    "activity_long",
    "activity_trend",
    "trend_at_last",
    "social_trend_at_last",
    "typical_gap_days",
    "log_silence_ratio",
    *(f"lvl_{k}" for k in TREND_KINDS),
    *(f"trend_{k}" for k in TREND_KINDS),
    "lvl_product",
    "dwell_per_view",
    "dwell_trend",
    "active_days_7",
    "active_days_30",
    "frequency_trend",
    "log_activity_count",
    "activity_per_day",
    "log_tenure_days",
    "has_policy",
    "active_policies",
    "log_premium",
    "log_purchases",
    "log_renewals",
    "policy_ends",
    "policy_end_recent",
    "log_claims",
    "claims_denied",
    "bad_claim_recent",
    "open_claims",
    "nps",
    "nps_missing",
    "nps_detractor",
    "csat",
    "csat_missing",
    "review_rating",
    "points_redeem_ratio",
    "log_points_earned",
    "log_recent_redeem",
    "log_referrals_sent",
    "log_referrals_converted",
    "share_app",
    "share_agent",
    "communities",
    "communities_left",
    "consent_marketing",
    "log_quotes",
    "quote_recent",
    "log_applications",
    "application_recent",
    "recency_share",
    "log_gap_silence",
    "one_time",
    "repeat_silence",
)
FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}

_SHORT, _ENG, _LONG = 0, 1, 2
_SOCIAL = KINDS.index("social")
_CONTENT = KINDS.index("content") * HALF_LIVES
_PRODUCT = KINDS.index("product") * HALF_LIVES
_DWELL = KINDS.index("dwell") * HALF_LIVES
_TOTAL_KINDS = len(TREND_KINDS)


def _recent(when: float | None, at: float, window_days: float) -> float:
    return 1.0 if when is not None and 0.0 <= at - when <= window_days * DAY else 0.0


def compute_features(
    state: MemberState, at: float, half_lives: tuple[float, float, float]
) -> array[float]:
    """The feature vector of ``state`` read at event time ``at`` (order of FEATURE_NAMES)."""
    last = state.last_activity_at if state.last_activity_at is not None else state.first_seen_at
    recency = max(0.0, (at - last) / DAY)
    factors = decay_factors(max(0.0, at - state.decay_ref), half_lives)
    fs, fl = factors[_SHORT], factors[_LONG]
    ratio = half_lives[_LONG] / half_lives[_SHORT]
    decayed = state.decayed

    levels: list[float] = []
    trends: list[float] = []
    short_total = long_total = short_ref = long_ref = 0.0
    for i in range(_TOTAL_KINDS):
        base = i * HALF_LIVES
        short_ref += decayed[base + _SHORT]
        long_ref += decayed[base + _LONG]
        short = decayed[base + _SHORT] * fs
        long = decayed[base + _LONG] * fl
        short_total += short
        long_total += long
        levels.append(math.log1p(long))
        trends.append(math.log((short * ratio + 1.0) / (long + 1.0)))
    social = _SOCIAL * HALF_LIVES
    social_at_last = math.log(
        (decayed[social + _SHORT] * ratio + 1.0) / (decayed[social + _LONG] + 1.0)
    )
    product = decayed[_PRODUCT + _SHORT] * fs
    # minutes per view: both sums decay alike, so the ratios hold at any reading time
    per_view_short = decayed[_DWELL + _SHORT] / (decayed[_CONTENT + _SHORT] + 0.5)
    per_view_long = decayed[_DWELL + _LONG] / (decayed[_CONTENT + _LONG] + 0.5)

    active_days = state.active_days
    if len(active_days) >= 2:
        gap = (active_days[-1] - active_days[0]) / (len(active_days) - 1)
    else:
        gap = 30.0
    today = int(at // DAY)
    days_7 = days_30 = 0
    for day in reversed(state.active_days):
        age = today - day
        if age >= 30:
            break
        if age >= 0:
            days_30 += 1
            if age < 7:
                days_7 += 1

    started = state.joined_at if state.joined_at is not None else state.first_seen_at
    tenure = max(0.0, (at - started) / DAY)
    channels = state.channels
    total_channel = sum(channels.values()) or 1
    nps, csat = state.last_nps, state.last_csat
    premium = state.annual_premium
    policies = len(state.policies)

    return array(
        "d",
        (
            recency,
            math.log1p(recency),
            1.0 if recency >= 7.0 else 0.0,
            1.0 if recency >= 14.0 else 0.0,
            1.0 if recency >= 21.0 else 0.0,
            math.log1p(short_total),
            math.log1p(long_total),
            math.log((short_total * ratio + 1.0) / (long_total + 1.0)),
            math.log((short_ref * ratio + 1.0) / (long_ref + 1.0)),
            social_at_last,
            gap,
            math.log1p(recency / max(1.0, gap)),
            *levels,
            *trends,
            math.log1p(product),
            math.log1p(per_view_long),
            math.log((per_view_short + 0.1) / (per_view_long + 0.1)),
            float(days_7),
            float(days_30),
            days_7 / 7.0 - days_30 / 30.0,
            math.log1p(state.activity_count),
            state.activity_count / (tenure + 1.0),
            math.log1p(tenure),
            1.0 if policies else 0.0,
            float(policies),
            math.log1p(premium),
            math.log1p(state.purchases),
            math.log1p(state.renewals),
            float(state.cancellations + state.lapses),
            _recent(state.last_policy_end_at, at, 30.0),
            math.log1p(state.claims_filed),
            float(state.claims_denied),
            _recent(state.last_bad_claim_at, at, 90.0),
            float(len(state.open_claims)),
            0.0 if nps is None else (nps - 7.0) / 3.0,
            1.0 if nps is None else 0.0,
            1.0 if nps is not None and nps <= 6 else 0.0,
            0.0 if csat is None else (csat - 3.0) / 2.0,
            1.0 if csat is None else 0.0,
            0.0 if not state.reviews else (state.review_rating_sum / state.reviews - 3.0) / 2.0,
            state.points_redeemed / (state.points_earned + 1.0),
            math.log1p(state.points_earned),
            _recent(state.last_redeem_at, at, 30.0) * math.log1p(state.last_redeem_points),
            math.log1p(state.referrals_sent),
            math.log1p(state.referrals_converted),
            (channels.get("app", 0) + channels.get("mini_program", 0)) / total_channel,
            channels.get("agent", 0) / total_channel,
            float(len(state.communities)),
            float(state.communities_left),
            1.0 if state.consent_marketing else 0.0,
            math.log1p(state.quotes),
            _recent(state.last_quote_at, at, 30.0),
            math.log1p(state.applications),
            _recent(state.last_application_at, at, 30.0),
            *_history(state, at, recency),
        ),
    )


def _history(state: MemberState, at: float, recency: float) -> tuple[float, float, float, float]:
    """Scale-free reading of the whole activity history (BG/NBD's ``x``, ``t_x``, ``T``).

    ``recency_share``: the silence as a share of the member's age (``1 - t_x / T``);
    ``log_gap_silence``: the silence in the member's own mean gap between activities
    over its whole history (a monthly buyer silent for a month is not a yearly buyer
    silent for a month); ``one_time``: no repeat activity yet; ``repeat_silence``:
    ``x * log((T + 1) / (t_x + 1))`` (days), the evidence of a drop-out in BG/NBD's
    P(alive), large for a frequent member who stopped long ago.
    """
    first = state.first_seen_at
    age = max(0.0, (at - first) / DAY)
    repeats = max(0, state.activity_count - 1)
    share = recency / age if age > 0.0 else 0.0
    if repeats == 0 or state.last_activity_at is None:
        return share, 0.0, 1.0, 0.0
    span = max(0.0, (state.last_activity_at - first) / DAY)
    gap = max(1.0, span / repeats)
    return (
        share,
        math.log1p(recency / gap),
        0.0,
        repeats * math.log((age + 1.0) / (span + 1.0)),
    )


def as_dict(vector: Sequence[float]) -> dict[str, float]:
    """``{name: value}`` for river; a shorter vector (older snapshot) gives fewer features."""
    return dict(zip(FEATURE_NAMES, vector, strict=False))
