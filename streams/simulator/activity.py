"""Day-to-day behaviour and the event stream: sessions shaped by the member plans."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from math import exp
from operator import itemgetter
from typing import Any

from streams.simulator.model import (
    CHANNEL_OFFSET,
    CHANNELS,
    COMMUNITIES,
    CONTENT_TYPES,
    DAY,
    DWELL_SECONDS,
    HOUR,
    SimulationConfig,
)
from streams.simulator.plan import MemberPlan

__all__ = ["stream_events"]

#: (ts, member index, seq, event_type, properties, channel, community_id)
Item = tuple[int, int, int, str, dict[str, Any], str, str | None]

_REACTIONS = ("like", "like", "like", "love", "helpful", "helpful", "insightful", "celebrate")
_SHARE_CHANNELS = ("wechat", "wechat", "wechat", "whatsapp", "email", "sms", "link", "other")
_SORT_KEY = itemgetter(0, 1, 2)
_EPOCH = date(1970, 1, 1)


def _poisson(rand: Any, lam: float) -> int:
    if lam <= 0.0:
        return 0
    limit, k, p = exp(-min(lam, 30.0)), 0, rand()
    while p > limit:
        k += 1
        p *= rand()
    return k


class _Clock:
    """Fast RFC 3339 formatting of epoch seconds at a channel's offset."""

    def __init__(self) -> None:
        self._dates: dict[int, str] = {}

    def format(self, ts: int, offset: int) -> str:
        local = ts + offset
        day, second = divmod(local, DAY)
        text = self._dates.get(day)
        if text is None:
            text = self._dates[day] = (_EPOCH + timedelta(days=day)).isoformat()
        hour, rest = divmod(second, HOUR)
        minute, sec = divmod(rest, 60)
        sign, shift = ("-", -offset) if offset < 0 else ("+", offset)
        suffix = f"{sign}{shift // HOUR:02d}:{shift % HOUR // 60:02d}"
        return f"{text}T{hour:02d}:{minute:02d}:{sec:02d}{suffix}"


class _Member:
    """Per-member constants of the daily generator, precomputed from the plan."""

    __slots__ = (
        "plan", "index", "rate", "first", "stop", "back", "offset", "home", "topics",
        "checkin", "live", "live_weekday", "fresh_until", "seq", "posts", "tone",
    )  # fmt: skip

    def __init__(self, plan: MemberPlan, start: int, end: int) -> None:
        self.plan = plan
        self.index = plan.index
        self.rate = plan.archetype.sessions_per_day * plan.level
        self.first = max(plan.joined_ts + 60, start)
        self.stop = plan.churn_ts if plan.churn_ts is not None else end
        self.back = plan.reactivated_ts
        self.offset = CHANNEL_OFFSET[plan.channel]
        self.home = plan.community.community_id
        self.topics = plan.community.topics
        self.checkin = plan.archetype.checkin
        self.live = plan.archetype.live * min(1.5, plan.level)
        self.live_weekday = plan.community.live_weekday
        self.fresh_until = -1 if plan.pre_existing else plan.joined_ts + 14 * DAY
        self.seq = 1000
        self.posts = 0
        self.tone = min(2.0, exp(0.45 * plan.satisfaction))  # satisfied members speak up


class _Generator:
    def __init__(self, config: SimulationConfig, start: int, plans: list[MemberPlan]) -> None:
        self.rng = random.Random(f"community-pulse/activity/{config.seed}")  # noqa: S311
        self.start, self.days = start, config.days
        self.end = start + config.days * DAY
        self.members = [_Member(p, start, self.end) for p in plans]
        self.others = [c.community_id for c in COMMUNITIES[: config.communities]]
        self.population = max(1, len(plans))

    def _session(
        self, m: _Member, ts: int, limit: int, decay: float, intent: str | None, out: list[Item]
    ) -> None:
        r = self.rng
        rand = r.random
        arch = m.plan.archetype
        channel = m.plan.channel if rand() < 0.8 else r.choices(CHANNELS, arch.channel_weights)[0]
        community: str | None = m.home
        if rand() < 0.12:
            community = r.choice(self.others) if rand() < 0.7 else None
        length = 0.35 + 0.65 * decay  # shorter sessions when drifting away
        active = length * decay * m.tone  # contributions fade faster than reading
        idx = m.index

        def emit(event_type: str, props: dict[str, Any]) -> None:
            nonlocal ts
            if ts < m.stop or (m.back is not None and ts >= m.back):
                if ts < limit:
                    m.seq += 1
                    out.append((ts, idx, m.seq, event_type, props, channel, community))
            ts += r.randrange(15, 240)

        topic = m.topics[int(rand() * len(m.topics))]
        for _ in range(1 + _poisson(rand, arch.views * length)):
            if intent is not None and rand() < 0.5:
                kind = "calculator" if rand() < 0.5 else "guide"
                content = f"prd-{intent}-{r.randrange(40):03d}"
            else:
                kind = CONTENT_TYPES[int(rand() * 5)]
                content = f"{kind[:3]}-{topic}-{r.randrange(400):04d}"
            dwell = DWELL_SECONDS[kind] * r.lognormvariate(0.0, 0.45) * (0.2 + 0.8 * decay)
            emit("content_viewed", {"content_id": content, "content_type": kind,
                                    "dwell_seconds": round(dwell, 1)})  # fmt: skip
        for _ in range(_poisson(rand, arch.reactions * active)):
            target = f"p-{r.randrange(self.population):06d}-{r.randrange(60)}"
            emit("reaction_added", {"target_id": target, "reaction": r.choice(_REACTIONS)})
        for _ in range(_poisson(rand, arch.comments * active)):
            post = f"p-{r.randrange(self.population):06d}-{r.randrange(60)}"
            m.posts += 1
            emit("comment_created", {"post_id": post, "comment_id": f"cm-{idx:06d}-{m.posts}",
                                     "length_chars": r.randrange(5, 600)})  # fmt: skip
        earned = 0
        for _ in range(_poisson(rand, arch.posts * active)):
            m.posts += 1
            emit("post_created", {"post_id": f"p-{idx:06d}-{m.posts}", "topic": topic,
                                  "length_chars": r.randrange(40, 3000)})  # fmt: skip
            earned += 10
        if rand() < arch.quizzes * active:
            questions = 5 if rand() < 0.6 else 10
            correct = min(questions, max(0, round(questions * r.uniform(0.3, 1.05))))
            quiz = f"quiz-{topic}-{r.randrange(50):02d}"
            emit("quiz_answered", {"quiz_id": quiz, "questions": questions, "correct": correct})
            earned += 2 * correct
        if rand() < arch.shares * active:
            content = f"art-{topic}-{r.randrange(400):04d}"
            emit(
                "content_shared",
                {"content_id": content, "share_channel": r.choice(_SHARE_CHANNELS)},
            )
        if earned and rand() < 0.8:
            emit("points_earned", {"points": earned, "reason": "contribution"})

    def _day(self, m: _Member, day: int, weekday: int, out: list[Item]) -> None:
        r = self.rng
        rand = r.random
        day_start = self.start + day * DAY
        mid = day_start + DAY // 2
        plan = m.plan
        for since, until in plan.breaks:
            if since <= mid < until:
                return
        decay = plan.decay(mid)
        lam = m.rate * plan.archetype.weekday[weekday] * decay
        if mid < m.fresh_until:
            lam *= 1.3
        if m.back is not None and mid >= m.back:
            lam *= 0.6
        intent = None
        for since, until, line in plan.intent:
            if since <= mid < until:
                intent, lam = line, lam * 1.3
                break
        low = max(day_start, m.first)
        if m.back is not None and day_start <= m.back < day_start + DAY:
            low = max(low, m.back)
        hours = plan.archetype.hour_cum
        for _ in range(_poisson(rand, lam)):
            hour = r.choices(range(24), cum_weights=hours)[0]
            ts = day_start + (hour * HOUR + r.randrange(HOUR) - m.offset) % DAY
            if ts >= low:
                self._session(m, ts, day_start + DAY, decay, intent, out)
        if decay > 0 and rand() < m.checkin * decay:
            ts = day_start + (7 * HOUR + r.randrange(15 * HOUR) - m.offset) % DAY
            if low <= ts < m.stop or (m.back is not None and ts >= max(low, m.back)):
                m.seq += 1
                props = {"points": r.randrange(5, 25), "reason": "daily_checkin"}
                out.append((ts, m.index, m.seq, "points_earned", props, plan.channel, m.home))
        if weekday == m.live_weekday and decay > 0 and rand() < m.live * decay:
            ts = day_start + (20 * HOUR - 8 * HOUR) % DAY + r.randrange(900)
            if low <= ts < m.stop or (m.back is not None and ts >= max(low, m.back)):
                minutes = round(r.uniform(5.0, 60.0) * (0.35 + 0.65 * decay), 1)
                props = {"session_id": f"live-{m.home}-{day:03d}", "minutes_attended": minutes}
                m.seq += 1
                out.append((ts, m.index, m.seq, "live_session_attended", props, "app", m.home))

    def days_of_events(self, plans: list[MemberPlan]) -> Iterator[list[Item]]:
        by_day: list[list[Item]] = [[] for _ in range(self.days)]
        for plan in plans:
            for ts, order, event_type, props, channel, community, _ in plan.milestones:
                item = (ts, plan.index, order - (1 << 40), event_type, props, channel, community)
                by_day[(ts - self.start) // DAY].append(item)
        for day in range(self.days):
            day_start = self.start + day * DAY
            day_end = day_start + DAY
            weekday = (day_start // DAY + 3) % 7  # 1970-01-01 was a Thursday
            out = by_day[day]
            by_day[day] = []
            for m in self.members:
                if m.first >= day_end:
                    continue
                if m.stop <= day_start and (m.back is None or m.back >= day_end):
                    continue
                self._day(m, day, weekday, out)
            out.sort(key=_SORT_KEY)
            yield out


def stream_events(
    config: SimulationConfig, start: int, plans: list[MemberPlan]
) -> Iterator[dict[str, Any]]:
    """Render the day buckets as JSON-ready event dicts, in event-time order."""
    generator = _Generator(config, start, plans)
    ids = random.Random(f"community-pulse/ids/{config.seed}")  # noqa: S311
    bits = ids.getrandbits
    clock = _Clock()
    names = [p.member_id for p in plans]
    for items in generator.days_of_events(plans):
        for ts, idx, _, event_type, props, channel, community in items:
            yield {
                "event_id": str(uuid.UUID(int=bits(128), version=4)),
                "event_type": event_type,
                "occurred_at": clock.format(ts, CHANNEL_OFFSET[channel]),
                "member_id": names[idx],
                "community_id": community,
                "channel": channel,
                "schema_version": "1.0",
                "properties": props,
            }
