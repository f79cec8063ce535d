"""Member plans: each member's latent traits and life-cycle milestones, drawn up front.

A plan holds everything that is not day-to-day chatter: joining, purchase journeys,
policies, claims, renewals, surveys, reviews, redemptions, referrals, consent changes,
the moment a member starts to disengage (``onset``), churn and reactivation. The daily
activity generator (``activity.py``) reads the plan to shape the everyday behaviour
around it. Ground truth is derived from plans alone, so it matches the events exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from math import exp, sqrt
from typing import Any

from streams.simulator.model import (
    ARCHETYPE_CUM,
    ARCHETYPES,
    CHANNEL_OFFSET,
    CHANNELS,
    CLAIM_AMOUNT_RANGE,
    CLAIM_RATE_PER_DAY,
    COMMUNITIES,
    DAY,
    HOUR,
    PREMIUM_RANGE,
    PRODUCT_LINES,
    Archetype,
    Community,
    SimulationConfig,
)

__all__ = ["Milestone", "Policy", "MemberPlan", "plan_members", "truth_of", "iso"]

#: (ts, order, event_type, properties, channel, community_id, policy tag)
Milestone = tuple[int, int, str, dict[str, Any], str, str | None, str | None]

_CANCEL_REASONS = ("price", "service", "switched_provider", "no_longer_needed", "other")
_LEFT_REASONS = ("not_relevant", "too_many_messages", "privacy", "other")
_REWARDS = ("coupon", "gift_card", "premium_discount", "health_checkup", "merchandise")
_CLAIM_OUTCOMES = ("paid", "partially_paid", "denied")


def iso(ts: int | None) -> str | None:
    """Epoch seconds as an RFC 3339 UTC string."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


@dataclass(frozen=True, slots=True)
class Policy:
    policy_id: str
    line: str
    premium: float
    start_ts: int
    pre_existing: bool

    @property
    def end_ts(self) -> int:
        """Travel covers one trip (30 days); other lines renew yearly until ended."""
        return self.start_ts + 30 * DAY if self.line == "travel" else 1 << 40


@dataclass(slots=True)
class MemberPlan:
    index: int
    member_id: str
    archetype: Archetype
    community: Community
    channel: str
    level: float
    satisfaction: float
    joined_ts: int
    pre_existing: bool
    via_referral: bool
    onset_ts: int | None = None
    churn_ts: int | None = None
    churn_kind: str | None = None
    reactivated_ts: int | None = None
    erased: bool = False
    purchase_ts: list[int] = field(default_factory=list)
    first_policy_ts: int | None = None
    policies: list[Policy] = field(default_factory=list)
    milestones: list[Milestone] = field(default_factory=list)
    claims: list[tuple[int, str]] = field(default_factory=list)  # (settled ts, outcome)
    intent: list[tuple[int, int, str]] = field(default_factory=list)  # view-boost windows
    breaks: list[tuple[int, int]] = field(default_factory=list)  # holidays: no activity

    def decay(self, ts: int) -> float:
        """1 while engaged, falling to 0 between onset and churn, 0 while churned."""
        if self.churn_ts is None or self.onset_ts is None or ts < self.onset_ts:
            return 1.0
        if self.reactivated_ts is not None and ts >= self.reactivated_ts:
            return 1.0
        if ts >= self.churn_ts:
            return 0.0
        return float(((self.churn_ts - ts) / (self.churn_ts - self.onset_ts)) ** 3.0)


class _Planner:
    def __init__(self, config: SimulationConfig, start: int) -> None:
        self.rng = random.Random(config.seed)  # noqa: S311 - simulation, not security
        self.start = start
        self.end = start + config.days * DAY
        self.days = config.days
        self.communities = COMMUNITIES[: config.communities]
        weights = [1.0 / (i + 1) ** 0.6 for i in range(len(self.communities))]
        self.community_cum = [sum(weights[: i + 1]) for i in range(len(weights))]
        self.order = 0

    def _when(self, ts: int, plan: MemberPlan) -> int:
        """A time on the UTC day of ``ts`` at an hour the member is typically active."""
        hour = self.rng.choices(range(24), cum_weights=plan.archetype.hour_cum)[0]
        local = hour * HOUR + self.rng.randrange(HOUR)
        return ts - ts % DAY + (local - CHANNEL_OFFSET[plan.channel]) % DAY

    def _add(
        self,
        plan: MemberPlan,
        ts: int,
        event_type: str,
        props: dict[str, Any],
        *,
        channel: str | None = None,
        tag: str | None = None,
    ) -> None:
        self.order += 1
        channel = channel or plan.channel
        where = plan.community.community_id if channel != "agent" else None
        plan.milestones.append((ts, self.order, event_type, props, channel, where, tag))

    def plan(self, index: int) -> MemberPlan:
        r = self.rng
        arch = r.choices(ARCHETYPES, cum_weights=ARCHETYPE_CUM)[0]
        community = r.choices(self.communities, cum_weights=self.community_cum)[0]
        channel = r.choices(CHANNELS, weights=arch.channel_weights)[0]
        level = r.lognormvariate(-0.1, 0.45)
        satisfaction = r.gauss(arch.satisfaction, 1.0)
        pre_existing = r.random() < 0.3
        if pre_existing:
            joined = self.start - r.randrange(14 * DAY, 720 * DAY)
        else:
            joined = self.start + r.randrange(max(1, int(0.7 * self.days))) * DAY
        plan = MemberPlan(
            index=index,
            member_id=f"m-{index:06d}",
            archetype=arch,
            community=community,
            channel=channel,
            level=level,
            satisfaction=satisfaction,
            joined_ts=joined,
            pre_existing=pre_existing,
            via_referral=not pre_existing and r.random() < 0.12,
        )
        if not pre_existing:
            plan.joined_ts = self._when(joined, plan)
            self._add(plan, plan.joined_ts, "member_joined", {"via_referral": plan.via_referral})
        self._policies(plan)
        self._claims(plan)
        self._churn(plan)
        self._extras(plan)
        self._finalize(plan)
        return plan

    # -- purchases -----------------------------------------------------------------

    def _line(self, plan: MemberPlan, *, travel: bool = True) -> str:
        line = plan.community.product_line
        if self.rng.random() < 0.35 or (line == "travel" and not travel):
            lines = PRODUCT_LINES if travel else tuple(x for x in PRODUCT_LINES if x != "travel")
            line = self.rng.choice(lines)
        return line

    def _premium(self, line: str) -> float:
        low, high = PREMIUM_RANGE[line]
        return round(self.rng.uniform(low, high), 2)

    def _policies(self, plan: MemberPlan) -> None:
        r, arch = self.rng, plan.archetype
        holder = plan.pre_existing and r.random() < arch.holder
        if holder:
            line = self._line(plan, travel=False)
            bought = self.start - r.randrange(DAY, 364 * DAY)
            policy = Policy(f"pol-{plan.index:06d}-0", line, self._premium(line), bought, True)
            plan.policies.append(policy)
        p = arch.convert * min(2.0, sqrt(plan.level)) * (1.0 + 0.25 * plan.satisfaction)
        p *= (0.3 if holder else 1.0) * (1.5 if plan.via_referral else 1.0)
        convert = r.random() < min(0.9, max(0.0, p))
        if convert or r.random() < 0.3:
            self._journey(plan, convert)
        for policy in plan.policies:  # yearly renewals that fall inside the span
            renewal = policy.start_ts + 365 * DAY
            if policy.line != "travel" and self.start <= renewal < self.end:
                premium = round(policy.premium * r.uniform(0.97, 1.12), 2)
                props: dict[str, Any] = {"policy_id": policy.policy_id}
                props |= {
                    "product_line": policy.line,
                    "premium": premium,
                    "currency": "CNY",
                    "term_months": 12,
                }
                self._add(plan, renewal, "policy_renewed", props, tag=policy.policy_id)

    def _journey(self, plan: MemberPlan, convert: bool) -> None:
        """Intent (quotes) -> decision (application) -> purchase, days to weeks apart."""
        r, i = self.rng, plan.index
        line = self._line(plan)
        t = max(plan.joined_ts, self.start) + int(r.expovariate(1 / (25 * DAY))) + DAY
        channel = "agent" if r.random() < 0.25 else plan.channel
        low, high = PREMIUM_RANGE[line]
        ts = begin = t
        for k in range(1 + (r.random() < 0.5) + (r.random() < 0.2)):
            ts = self._when(t, plan)
            estimate = round(r.uniform(low, high), 2)
            props: dict[str, Any] = {"quote_id": f"q-{i:06d}-{k}", "product_line": line}
            props |= {"estimated_premium": estimate, "currency": "CNY"}
            self._add(plan, ts, "quote_requested", props, channel=channel)
            t += r.randrange(DAY, 8 * DAY)
        last = ts
        if convert or r.random() < 0.25:
            last = self._when(ts + r.randrange(2 * DAY, 15 * DAY), plan)
            props = {"application_id": f"app-{i:06d}-0", "product_line": line}
            self._add(plan, last, "application_started", props, channel=channel)
            if convert:
                last += r.randrange(HOUR, 6 * DAY)
                pid = f"pol-{i:06d}-{len(plan.policies) + 1}"
                policy = Policy(pid, line, self._premium(line), last, False)
                plan.policies.append(policy)
                props = {"policy_id": pid, "product_line": line, "premium": policy.premium}
                props |= {"currency": "CNY", "term_months": 1 if line == "travel" else 12}
                self._add(plan, last, "policy_purchased", props, channel=channel, tag=pid)
                points = {"points": 500, "reason": "policy_purchase"}
                self._add(plan, last + 5, "points_earned", points, tag=pid)
                if r.random() < 0.35:
                    csat = _clamp(round(4 + 0.6 * plan.satisfaction + r.gauss(0, 0.7)), 1, 5)
                    self._add(
                        plan,
                        last + r.randrange(DAY, 5 * DAY),
                        "survey_answered",
                        {"csat": csat},
                        tag=pid,
                    )
                if r.random() < 0.15:
                    rating = _clamp(round(3.8 + 0.8 * plan.satisfaction + r.gauss(0, 0.8)), 1, 5)
                    props = {"rating": rating, "subject": "product"}
                    props["length_chars"] = r.randrange(20, 800)
                    when = self._when(last + r.randrange(10 * DAY, 50 * DAY), plan)
                    self._add(plan, when, "review_posted", props, tag=pid)
        plan.intent.append((begin - 14 * DAY, last, line))

    def _claims(self, plan: MemberPlan) -> None:
        r = self.rng
        for policy in plan.policies:
            rate = CLAIM_RATE_PER_DAY[policy.line]
            if rate <= 0:
                continue
            t = float(max(policy.start_ts, self.start))
            until = min(policy.end_ts, self.end)
            for k in range(3):
                t += r.expovariate(rate) * DAY
                if t >= until:
                    break
                filed = max(self._when(int(t), plan), policy.start_ts + HOUR)
                low, high = CLAIM_AMOUNT_RANGE[policy.line]
                amount = round(r.uniform(low, high), 2)
                cid = f"clm-{plan.index:06d}-{policy.policy_id[-1]}{k}"
                base = {"claim_id": cid, "policy_id": policy.policy_id}
                base |= {"product_line": policy.line}
                self._add(
                    plan,
                    filed,
                    "claim_filed",
                    base | {"amount": amount, "currency": "CNY"},
                    tag=policy.policy_id,
                )
                outcome = r.choices(_CLAIM_OUTCOMES, weights=(0.7, 0.17, 0.13))[0]
                days = r.randrange(2, 12) if outcome == "denied" else r.randrange(3, 35)
                settled = filed + days * DAY + r.randrange(-3 * HOUR, 3 * HOUR)
                paid = {"paid": amount, "denied": 0.0}.get(outcome)
                if paid is None:
                    paid = round(amount * r.uniform(0.3, 0.8), 2)
                props = base | {"amount_paid": paid, "currency": "CNY", "outcome": outcome}
                props["days_to_settle"] = days
                self._add(
                    plan, settled, "claim_settled", props, channel="agent", tag=policy.policy_id
                )
                plan.claims.append((settled, outcome))
                shift = {"paid": 0.5, "partially_paid": -1.2, "denied": -2.8}[outcome]
                if r.random() < 0.6:
                    csat = _clamp(
                        round(3.8 + shift + 0.5 * plan.satisfaction + r.gauss(0, 0.6)), 1, 5
                    )
                    self._add(
                        plan,
                        settled + r.randrange(HOUR, 3 * DAY),
                        "survey_answered",
                        {"csat": csat},
                        tag=policy.policy_id,
                    )
                if r.random() < (0.45 if outcome == "denied" else 0.2):
                    rating = _clamp(round(3.8 + shift + 0.4 * plan.satisfaction), 1, 5)
                    props = {"rating": rating, "subject": "claim_service"}
                    props["length_chars"] = r.randrange(30, 1500)
                    when = self._when(settled + r.randrange(DAY, 6 * DAY), plan)
                    self._add(plan, when, "review_posted", props, tag=policy.policy_id)

    # -- churn ---------------------------------------------------------------------

    def _hazard(self, plan: MemberPlan, t: int) -> float:
        h = plan.archetype.hazard * exp(-1.0 * plan.satisfaction) * plan.level**-0.8
        if t - plan.joined_ts < 21 * DAY:
            h *= 1.6
        if any(p.start_ts <= t < p.end_ts for p in plan.policies):
            h *= 0.7
        for settled, outcome in plan.claims:
            if settled <= t and outcome != "paid":
                if outcome == "denied" and t - settled < 60 * DAY:
                    h *= 7.0
                elif t - settled < 30 * DAY:
                    h *= 2.0
        return float(h)

    def _churn(self, plan: MemberPlan) -> None:
        r = self.rng
        first = max(plan.joined_ts, self.start)
        budget, spent = r.expovariate(1.0), 0.0
        for day in range((first - self.start) // DAY, self.days):
            spent += self._hazard(plan, self.start + day * DAY + DAY // 2)
            if spent >= budget:
                plan.onset_ts = max(first + HOUR, self.start + day * DAY + r.randrange(DAY))
                break
        else:
            return
        onset = plan.onset_ts
        churn = onset + r.randrange(21 * DAY, 36 * DAY)
        plan.churn_ts = churn
        active = [p for p in plan.policies if p.line != "travel" and p.start_ts < onset]
        denied = any(o == "denied" and s <= onset for s, o in plan.claims)
        if active:
            cancel = r.random() < (0.7 if plan.archetype.name == "deal_seeker" else 0.55)
            plan.churn_kind = "cancelled" if cancel else "lapsed"
            for policy in active:
                props: dict[str, Any] = {"policy_id": policy.policy_id}
                props["product_line"] = policy.line
                if cancel:
                    if denied and r.random() < 0.7:
                        reason = "service"
                    elif plan.archetype.name == "deal_seeker" and r.random() < 0.6:
                        reason = "price"
                    else:
                        reason = r.choice(_CANCEL_REASONS)
                    props["reason"] = reason
                kind = "policy_cancelled" if cancel else "policy_lapsed"
                self._add(plan, churn, kind, props, channel="agent" if cancel else plan.channel)
        else:
            plan.churn_kind = "silent"
        if r.random() < (0.15 if active else 0.3):
            reason = r.choice(_LEFT_REASONS)
            self._add(plan, churn, "member_left", {"reason": reason})
        if r.random() < 0.015:
            plan.erased = True
            # a minute after leaving and cancelling: the member's last event (one in the
            # same second could be applied after it, and would start them again)
            request = {"request_id": f"er-{plan.index:06d}"}
            self._add(plan, churn + 60, "erasure_requested", request)
        elif plan.churn_kind == "silent" and r.random() < 0.25:
            back = churn + r.randrange(30 * DAY, 80 * DAY)
            if back < self.end:
                plan.reactivated_ts = self._when(back, plan)
                if plan.reactivated_ts <= churn + 30 * DAY:
                    plan.reactivated_ts += DAY
                if any(m[2] == "member_left" for m in plan.milestones):
                    self._add(plan, plan.reactivated_ts, "member_joined", {"via_referral": False})
        cash_out = 0.65 if plan.archetype.name == "deal_seeker" else 0.2
        if r.random() < cash_out:  # points redeemed, then nothing
            when = max(onset, churn - r.randrange(DAY, 10 * DAY))
            props = {"points": r.randrange(2000, 12000), "reward": r.choice(_REWARDS[:3])}
            self._add(plan, when, "points_redeemed", props)
        if r.random() < 0.2:  # marketing opt-out while drifting away
            props = {"marketing": False, "analytics": r.random() < 0.7}
            self._add(plan, onset + r.randrange(churn - onset), "consent_changed", props)
        if r.random() < 0.2:  # a complaint on the way out
            subject = "claim_service" if denied else r.choice(("product", "community", "agent"))
            props = {"rating": r.choice((1, 1, 2, 2, 3)), "subject": subject}
            when = self._when(onset + r.randrange(churn - onset), plan)
            self._add(plan, when, "review_posted", props | {"length_chars": r.randrange(20, 900)})

    # -- everything else -----------------------------------------------------------

    def _every(self, plan: MemberPlan, mean_days: float) -> list[int]:
        if mean_days <= 0:
            return []
        times: list[int] = []
        t = max(plan.joined_ts, self.start)
        while True:
            t += int(self.rng.expovariate(1 / mean_days) * DAY) + HOUR
            if t >= self.end:
                return times
            times.append(self._when(t, plan))

    def _nps(self, plan: MemberPlan, t: int) -> int:
        score = 7.0 + 1.5 * plan.satisfaction + self.rng.gauss(0, 1.2)
        for settled, outcome in plan.claims:
            if settled <= t and t - settled < 60 * DAY and outcome != "paid":
                score -= 3.5 if outcome == "denied" else 1.5
        if plan.onset_ts is not None and plan.onset_ts <= t:
            score -= 1.5 + 2.0 * (1.0 - plan.decay(t))
        return _clamp(round(score), 0, 10)

    def _extras(self, plan: MemberPlan) -> None:
        r, arch = self.rng, plan.archetype
        for t in self._every(plan, 30.0):  # NPS invitations
            if r.random() < arch.survey * (0.6 if plan.decay(t) < 1 else 1.0):
                self._add(plan, t, "survey_answered", {"nps": self._nps(plan, t)})
        for t in self._every(plan, arch.redeem_days):
            high = 3000 if arch.name == "deal_seeker" else 1000
            props = {"points": r.randrange(100, high), "reward": r.choice(_REWARDS)}
            self._add(plan, t, "points_redeemed", props)
        for k, t in enumerate(self._every(plan, arch.referral_days)):
            rid = f"ref-{plan.index:06d}-{k}"
            self._add(plan, t, "referral_sent", {"referral_id": rid})
            if r.random() < 0.3:
                done = t + r.randrange(3 * DAY, 25 * DAY)
                self._add(plan, done, "referral_converted", {"referral_id": rid})
                self._add(plan, done + 2, "points_earned", {"points": 200, "reason": "referral"})
        if arch.name == "champion":
            for t in self._every(plan, 45.0):
                rating = _clamp(round(4.2 + 0.6 * plan.satisfaction + r.gauss(0, 0.5)), 1, 5)
                props = {"rating": rating, "subject": "community"}
                self._add(plan, t, "review_posted", props | {"length_chars": r.randrange(50, 900)})
        if plan.channel == "agent" and r.random() < 0.3:
            t = self._when(max(plan.joined_ts, self.start) + r.randrange(self.days * DAY), plan)
            rating = _clamp(round(4.0 + 0.7 * plan.satisfaction), 1, 5)
            self._add(plan, t, "review_posted", {"rating": rating, "subject": "agent"})
        if r.random() < 0.025:
            t = self._when(max(plan.joined_ts, self.start) + r.randrange(self.days * DAY), plan)
            self._add(plan, t, "consent_changed", {"marketing": False, "analytics": True})
            if r.random() < 0.4:
                back = self._when(t + r.randrange(5 * DAY, 40 * DAY), plan)
                self._add(plan, back, "consent_changed", {"marketing": True, "analytics": True})
        if r.random() < 0.15:  # holidays: loyal members fall silent for a while too
            t = max(plan.joined_ts, self.start) + r.randrange(self.days * DAY)
            plan.breaks.append((t, t + r.randrange(5 * DAY, 16 * DAY)))

    def _finalize(self, plan: MemberPlan) -> None:
        """Drop what cannot happen (after churn, outside the span) and sort by time."""
        first = max(plan.joined_ts, self.start)
        onset, churn, back = plan.onset_ts, plan.churn_ts, plan.reactivated_ts
        dropped: set[str] = set()
        if onset is not None:  # nobody buys while drifting away
            dropped = {
                p.policy_id
                for p in plan.policies
                if not p.pre_existing
                and p.start_ts >= onset
                and (back is None or p.start_ts < back)
            }
        kept = []
        for m in plan.milestones:
            ts, event_type, tag = m[0], m[2], m[6]
            if ts < first or ts >= self.end or (tag is not None and tag in dropped):
                continue
            if churn is not None and onset is not None:
                if ts > churn and (back is None or ts < back) and event_type != "erasure_requested":
                    continue
                if event_type == "policy_renewed" and onset <= ts and (back is None or ts < back):
                    continue
            kept.append(m)
        kept.sort(key=lambda m: (m[0], m[1]))
        plan.milestones = kept
        plan.policies = [p for p in plan.policies if p.policy_id not in dropped]
        plan.purchase_ts = [m[0] for m in kept if m[2] == "policy_purchased"]
        starts = [p.start_ts for p in plan.policies if p.pre_existing] + plan.purchase_ts
        plan.first_policy_ts = min(starts) if starts else None


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def plan_members(config: SimulationConfig, start: int) -> list[MemberPlan]:
    """Every member's plan, from the config's seed (one stream of draws, member order)."""
    planner = _Planner(config, start)
    return [planner.plan(index) for index in range(config.members)]


def truth_of(plan: MemberPlan) -> dict[str, Any]:
    """The ground-truth record of one member."""
    return {
        "member_id": plan.member_id,
        "archetype": plan.archetype.name,
        "community_id": plan.community.community_id,
        "joined_at": iso(plan.joined_ts),
        "churn_at": iso(plan.churn_ts),
        "churn_kind": plan.churn_kind,
        "decline_started_at": iso(plan.onset_ts),
        "reactivated_at": iso(plan.reactivated_ts),
        "erased": plan.erased,
        "via_referral": plan.via_referral,
        "purchase_times": [iso(t) for t in plan.purchase_ts],
        "first_policy_at": iso(plan.first_policy_ts),
    }
