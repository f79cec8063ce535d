"""Alert engine: member and community rules evaluated in event time.

Every rule runs one episode state machine per subject (member or community):
*idle* -> (condition entered) *pending* -> (held ``dwell_minutes``) *fired* ->
(condition left) *resolved* -> idle, with no new episode before ``cooldown_hours``
after the resolve. While pending, only crossing the leave threshold cancels it
(hysteresis band). A fire is raised at ``episode start + dwell``; ids are
deterministic, so redelivery and restarts give the same ``alert_id``.

Member rules run on :meth:`AlertEngine.on_score`; a score not newer than the
member's last one is ignored. Community days (UTC) and ISO weeks (Monday, UTC)
close when :meth:`AlertEngine.advance` passes their end; pending dwells also fire
there. Checkpoint the whole engine with :meth:`AlertEngine.to_dict` /
:meth:`AlertEngine.from_dict` (JSON-able; rules are not stored), or incrementally:
``to_dict(members=False)`` for the engine's own share and
:meth:`AlertEngine.member_state` / :meth:`AlertEngine.load_member` for each member
that :meth:`AlertEngine.drain_touched` reports changed.

>>> from dataclasses import replace
>>> from datetime import UTC, datetime, timedelta
>>> from scoring.records import ScoreRecord
>>> rules = RuleSet.parse({"rules": [{"name": "churn", "kind": "churn_risk",
...     "severity": "critical", "enter": 0.7, "leave": 0.5}]})
>>> t0 = datetime(2024, 5, 1, tzinfo=UTC)
>>> rec = ScoreRecord("m1", t0, "event", 40.0, "medium", 0.8, "high", "model", None,
...     "loyal", [], "v1", t0, "c1", 3600.0, 1)
>>> engine = AlertEngine(rules)
>>> [(a.rule, a.status, a.subject_id) for a in engine.on_score(rec)]
[('churn', 'fired', 'm1')]
>>> engine.on_score(rec)  # the same record again: ignored
[]
>>> later = replace(rec, scored_at=t0 + timedelta(hours=1), churn_probability=0.4)
>>> [a.status for a in engine.on_score(later)], engine.active()
(['resolved'], {('churn', 'critical'): 0})
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

from scoring.alerts.rules import (
    ChurnRiskRule,
    CommunityEngagementDropRule,
    CommunityNpsLowRule,
    EngagementDropRule,
    LifecycleRegressionRule,
    MemberRule,
    RuleSet,
)
from scoring.records import ScoreRecord, shallow_dict

__all__ = ["AlertRecord", "AlertEngine", "alert_id"]

_FORMAT = 1
AnyRule = MemberRule | CommunityEngagementDropRule | CommunityNpsLowRule


def alert_id(
    rule: str, subject_type: str, subject_id: str, episode_start: datetime, status: str
) -> str:
    """sha256 hex[:32] of ``rule|subject_type|subject_id|episode_start_iso|status``."""
    key = f"{rule}|{subject_type}|{subject_id}|{_iso(episode_start)}|{status}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass(slots=True, frozen=True)
class AlertRecord:
    """One fire or resolve of one episode of a rule for one subject (ids in clear)."""

    alert_id: str
    rule: str
    severity: str
    status: Literal["fired", "resolved"]
    subject_type: Literal["member", "community"]
    subject_id: str
    value: float
    threshold: float
    raised_at: datetime
    episode_start: datetime
    context: dict[str, Any] = field(default_factory=dict)
    webhook: str | None = None

    def to_row(self) -> dict[str, Any]:
        """Flat columns: ``context`` as sorted-key JSON, ``webhook`` "" when None."""
        row = shallow_dict(self)
        row["context"] = json.dumps(self.context, sort_keys=True)
        row["webhook"] = self.webhook or ""
        return row


@dataclass(slots=True)
class _Episode:
    start: datetime | None = None  # condition first held (pending or fired)
    fired: bool = False
    cooldown_until: datetime | None = None
    value: float = 0.0
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Member:
    last_seen: datetime
    stage: str
    peaks: list[tuple[datetime, float]]  # monotonic: times up, scores strictly down


def _utc(at: datetime) -> datetime:
    if at.tzinfo is UTC:  # the engine's own times (scoring.clock): nothing to convert
        return at
    if at.tzinfo is None:
        raise ValueError("alert engine times must be timezone-aware")
    return at.astimezone(UTC)


def _iso(at: datetime) -> str:
    return _utc(at).isoformat()


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text)


@lru_cache(maxsize=4096)
def _day_end(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day) + timedelta(days=1), datetime.min.time(), UTC)


class AlertEngine:
    """Evaluates a :class:`RuleSet` over scores, surveys and watermarks (see module doc)."""

    def __init__(self, rules: RuleSet, *, forward_community: bool = False) -> None:
        self.rules = rules
        #: with ``forward_community`` closed days and weeks are not evaluated here: they
        #: wait in :attr:`closed` as partial aggregates for the community's aggregator
        #: (:mod:`scoring.alerts.community`), which sees the whole community
        self.forward_community = forward_community
        self.closed: list[tuple[str, str, str, list[float]]] = []
        self._members: dict[str, _Member] = {}
        self._episodes: dict[str, dict[str, _Episode]] = {r.name: {} for r in rules.rules}
        # per rule, the subjects whose episode the clock can change (pending or cooling
        # down): advance looks at these, not at every fired episode
        self._waiting: dict[str, set[str]] = {r.name: set() for r in rules.rules}
        self._fired: dict[str, int] = {r.name: 0 for r in rules.rules}  # for active()
        self._watermark: datetime | None = None
        self._days: dict[str, dict[str, dict[str, float]]] = {}  # day -> community -> member
        self._weeks: dict[str, dict[str, list[int]]] = {}  # monday -> community -> [p, pas, d]
        self._history: dict[str, list[tuple[str, float]]] = {}  # community -> (day, index)
        self._member_rules = {r.name for r in rules.rules if not r.name.startswith("community_")}
        self._touched: set[str] = set()  # members whose share changed since drain_touched
        drops = [r for r in rules.rules if isinstance(r, EngagementDropRule)]
        self._peak_days = max((r.days for r in drops), default=0.0)
        cdrops = [r for r in rules.rules if isinstance(r, CommunityEngagementDropRule)]
        self._baseline_days = max((r.baseline_days for r in cdrops), default=0)

    # -- inputs -------------------------------------------------------------------------

    def on_score(self, record: ScoreRecord) -> list[AlertRecord]:
        """Evaluate member rules; feed the community's daily engagement index."""
        at = _utc(record.scored_at)
        member = self._members.get(record.member_id)
        if member is not None and at <= member.last_seen:
            return []
        self._touched.add(record.member_id)
        previous = member.stage if member is not None else None
        if member is None:
            member = self._members[record.member_id] = _Member(at, record.lifecycle_stage, [])
        member.last_seen, member.stage = at, record.lifecycle_stage
        score = float(record.engagement_score)
        if self._peak_days:
            peaks = member.peaks
            while peaks and peaks[-1][1] <= score:
                peaks.pop()
            peaks.append((at, score))
            horizon = at - timedelta(days=self._peak_days)
            if peaks[0][0] < horizon:  # peaks are in time order: only then is one too old
                member.peaks = [(t, s) for t, s in peaks if t >= horizon]
        if record.community_id and self._open(_day_end(today := at.date().isoformat())):
            day = self._days.setdefault(today, {})
            day.setdefault(record.community_id, {})[record.member_id] = score

        def base() -> dict[str, Any]:  # the context every member rule's alert carries
            drivers = [[name, float(value)] for name, value in record.top_drivers]
            return {"annual_premium": float(record.annual_premium), "top_drivers": drivers}

        out: list[AlertRecord] = []
        subject = record.member_id
        for rule in self.rules.rules:
            if isinstance(rule, ChurnRiskRule):
                p = float(record.churn_probability)
                eligible = record.annual_premium >= rule.min_annual_premium
                entering = eligible and p >= rule.enter
                if not entering and self._no_episode(rule, subject):
                    continue  # nothing to start or to end: no context to build
                ctx = {
                    **base(),
                    "churn_risk": record.churn_risk,
                    "model_version": record.model_version,
                }
                out += self._step(
                    rule,
                    subject,
                    at,
                    entering,
                    not eligible or p <= rule.leave,
                    p,
                    ctx,
                )
            elif isinstance(rule, EngagementDropRule):
                horizon = at - timedelta(days=rule.days)
                peak = next(s for t, s in member.peaks if t >= horizon)
                drop = peak - score
                if drop < rule.points and self._no_episode(rule, subject):
                    continue
                ctx = {**base(), "window_max": peak, "current": score, "days": rule.days}
                out += self._step(
                    rule,
                    subject,
                    at,
                    drop >= rule.points,
                    drop < rule.resolve_points,
                    drop,
                    ctx,
                )
            elif isinstance(rule, LifecycleRegressionRule):
                stage = record.lifecycle_stage
                entering = previous in rule.from_stages and stage == rule.to_stage
                if not entering and self._no_episode(rule, subject):
                    continue
                ctx = {**base(), "previous_stage": previous or "", "current_stage": stage}
                out += self._step(
                    rule,
                    subject,
                    at,
                    entering,
                    stage != rule.to_stage,
                    1.0 if stage == rule.to_stage else 0.0,
                    ctx,
                )
        return out

    def on_survey(self, community_id: str, nps: int, at: datetime) -> list[AlertRecord]:
        """Count a 0-10 survey answer in its ISO week; alerts come when the week closes."""
        if not 0 <= nps <= 10:
            raise ValueError(f"nps answer must be 0..10, got {nps}")
        at = _utc(at)
        monday = (at.date() - timedelta(days=at.weekday())).isoformat()
        if self._open(_day_end(monday) + timedelta(days=6)):
            counts = self._weeks.setdefault(monday, {}).setdefault(community_id, [0, 0, 0])
            counts[0 if nps >= 9 else 1 if nps >= 7 else 2] += 1
        return []

    def advance(self, watermark: datetime) -> list[AlertRecord]:
        """Close days / weeks ending <= watermark, evaluate community rules, fire dwells."""
        watermark = _utc(watermark)
        if self._watermark is not None and watermark <= self._watermark:
            return []
        self._watermark = watermark
        out: list[AlertRecord] = []
        for day in sorted(d for d in self._days if _day_end(d) <= watermark):
            for community, scores in sorted(self._days.pop(day).items()):
                if self.forward_community:
                    # fsum: the same total whatever order the members were restored in
                    total = math.fsum(scores.values())
                    self.closed.append(("day", day, community, [total, float(len(scores))]))
                else:
                    out += self.close_day(
                        community, day, math.fsum(scores.values()) / len(scores), len(scores)
                    )
        for monday in sorted(
            m for m in self._weeks if _day_end(m) + timedelta(days=6) <= watermark
        ):
            for community, counts in sorted(self._weeks.pop(monday).items()):
                if self.forward_community:
                    self.closed.append(("week", monday, community, [float(c) for c in counts]))
                else:
                    out += self.close_week(community, monday, counts)
        for rule in self.rules.rules:
            episodes = self._episodes[rule.name]
            for subject in sorted(self._waiting[rule.name]):
                ep = episodes[subject]
                if ep.start is not None and not ep.fired:
                    if watermark >= ep.start + timedelta(minutes=rule.dwell_minutes):
                        out.append(self._fire(rule, subject, ep))
                elif ep.start is None and (ep.cooldown_until or watermark) <= watermark:
                    self._set(rule.name, subject, None)
                    if rule.name in self._member_rules:
                        self._touched.add(subject)
        return sorted(out, key=lambda a: (a.raised_at, a.rule, a.subject_id))

    # -- community rules ----------------------------------------------------------------

    def drain_closed(self) -> list[tuple[str, str, str, list[float]]]:
        """Days and weeks closed since the last call: (kind, period, community, values) --
        ``day``: [sum of the members' scores, members]; ``week``: NPS answer counts."""
        closed, self.closed = self.closed, []
        return closed

    @property
    def watermark(self) -> datetime | None:
        """Event time up to which days and weeks are closed."""
        return self._watermark

    def close_day(self, community: str, day: str, index: float, members: int) -> list[AlertRecord]:
        """Evaluate the community rules on one closed day's engagement index."""
        history = self._history.setdefault(community, [])
        at = _day_end(day)
        out: list[AlertRecord] = []
        for rule in self.rules.rules:
            if not isinstance(rule, CommunityEngagementDropRule):
                continue
            since = (date.fromisoformat(day) - timedelta(days=rule.baseline_days)).isoformat()
            window = [v for d, v in history if since <= d < day]
            if len(window) < rule.min_baseline_days:
                continue
            baseline = sum(window) / len(window)
            drop = 100.0 * (baseline - index) / baseline if baseline > 0 else 0.0
            ctx = {
                "day": day,
                "index": index,
                "baseline": baseline,
                "baseline_days_used": len(window),
                "members": members,
            }
            out += self._step(
                rule, community, at, drop >= rule.percent, drop < rule.resolve_percent, drop, ctx
            )
        history.append((day, index))
        first = (date.fromisoformat(day) - timedelta(days=self._baseline_days)).isoformat()
        self._history[community] = [(d, v) for d, v in history if d >= first]
        return out

    def close_week(self, community: str, monday: str, counts: list[int]) -> list[AlertRecord]:
        """Evaluate the community rules on one closed ISO week's NPS answer counts."""
        promoters, _, detractors = counts
        n = sum(counts)
        nps = 100.0 * (promoters - detractors) / n
        at = _day_end(monday) + timedelta(days=6)
        out: list[AlertRecord] = []
        for rule in self.rules.rules:
            if isinstance(rule, CommunityNpsLowRule) and n >= rule.min_responses:
                ctx = {
                    "week": monday,
                    "responses": n,
                    "promoters": promoters,
                    "detractors": detractors,
                }
                out += self._step(
                    rule, community, at, nps < rule.enter, nps >= rule.leave, nps, ctx
                )
        return out

    # -- episode state machine ----------------------------------------------------------

    def _open(self, period_end: datetime) -> bool:
        return self._watermark is None or period_end > self._watermark

    def _no_episode(self, rule: AnyRule, subject: str) -> bool:
        """No episode of ``rule`` is open for ``subject``: :meth:`_step` changes nothing
        unless it enters (the fast path of the scores that raise nothing)."""
        ep = self._episodes[rule.name].get(subject)
        return ep is None or ep.start is None

    def _step(
        self,
        rule: AnyRule,
        subject: str,
        at: datetime,
        entering: bool,
        leaving: bool,
        value: float,
        context: dict[str, Any],
    ) -> list[AlertRecord]:
        ep = self._episodes[rule.name].get(subject)
        if ep is not None and ep.start is not None:
            if leaving:
                if not ep.fired:  # a pending episode that never fired ends silently
                    self._set(rule.name, subject, None)
                    return []
                until = at + timedelta(hours=rule.cooldown_hours)
                self._set(rule.name, subject, _Episode(cooldown_until=until))
                return [self._record(rule, subject, ep.start, "resolved", at, value, context)]
            ep.value, ep.context = value, context
        elif entering and (ep is None or ep.cooldown_until is None or at >= ep.cooldown_until):
            ep = _Episode(start=at, value=value, context=context)
            self._set(rule.name, subject, ep)
        else:
            return []
        due = ep.start is not None and at >= ep.start + timedelta(minutes=rule.dwell_minutes)
        return [self._fire(rule, subject, ep)] if due and not ep.fired else []

    def _set(self, rule: str, subject: str, ep: _Episode | None) -> None:
        """Every change of an episode's phase goes through here (None: the episode ends)."""
        old = self._episodes[rule].pop(subject, None)
        self._fired[rule] -= old is not None and old.fired
        if ep is not None:
            self._episodes[rule][subject] = ep
            self._fired[rule] += ep.fired
        if ep is not None and not ep.fired:  # pending, or cooling down
            self._waiting[rule].add(subject)
        else:
            self._waiting[rule].discard(subject)

    def _fire(self, rule: AnyRule, subject: str, ep: _Episode) -> AlertRecord:
        assert ep.start is not None
        ep.fired = True
        self._waiting[rule.name].discard(subject)
        self._fired[rule.name] += 1
        if rule.name in self._member_rules:
            self._touched.add(subject)
        raised = ep.start + timedelta(minutes=rule.dwell_minutes)
        return self._record(rule, subject, ep.start, "fired", raised, ep.value, ep.context)

    def _record(
        self,
        rule: AnyRule,
        subject: str,
        start: datetime,
        status: Literal["fired", "resolved"],
        at: datetime,
        value: float,
        context: dict[str, Any],
    ) -> AlertRecord:
        kind: Literal["member", "community"] = (
            "community" if rule.name.startswith("community_") else "member"
        )
        fire, resolve = _thresholds(rule)
        return AlertRecord(
            alert_id=alert_id(rule.name, kind, subject, start, status),
            rule=rule.name,
            severity=rule.severity,
            status=status,
            subject_type=kind,
            subject_id=subject,
            value=value,
            threshold=fire if status == "fired" else resolve,
            raised_at=at,
            episode_start=start,
            context=dict(context),
            webhook=rule.webhook,
        )

    # -- observation and checkpoints ----------------------------------------------------

    def active(self) -> dict[tuple[str, str], int]:
        """Fired, unresolved episodes per (rule, severity); every rule listed, 0 included."""
        return {(r.name, r.severity): self._fired[r.name] for r in self.rules.rules}

    def to_dict(self, *, members: bool = True) -> dict[str, Any]:
        """The engine's state (not its rules) as JSON-able data; with ``members=False``
        only its own share (watermark, community episodes, weeks, history): each member's
        share then comes from :meth:`member_state`."""
        data: dict[str, Any] = {
            "format": _FORMAT,
            "watermark": self._watermark.isoformat() if self._watermark else None,
            "episodes": {
                name: {
                    s: _episode_list(ep)
                    for s, ep in eps.items()
                    if members or name not in self._member_rules
                }
                for name, eps in self._episodes.items()
            },
            "weeks": {m: {c: list(n) for c, n in w.items()} for m, w in self._weeks.items()},
            "history": {c: [[d, v] for d, v in h] for c, h in self._history.items()},
        }
        if members:
            data["members"] = {
                m: [s.last_seen.isoformat(), s.stage, [[t.isoformat(), v] for t, v in s.peaks]]
                for m, s in self._members.items()
            }
            data["days"] = {
                d: {c: dict(scores) for c, scores in cs.items()} for d, cs in self._days.items()
            }
        return data

    @classmethod
    def from_dict(
        cls, rules: RuleSet, data: dict[str, Any], *, forward_community: bool = False
    ) -> AlertEngine:
        """Restore :meth:`to_dict` output; episodes of rules no longer configured are dropped."""
        if data.get("format") != _FORMAT:
            raise ValueError(f"unknown alert engine checkpoint format {data.get('format')!r}")
        engine = cls(rules, forward_community=forward_community)
        engine._watermark = _dt(data["watermark"]) if data["watermark"] else None
        engine._members = {
            m: _Member(_dt(seen), stage, [(_dt(t), float(v)) for t, v in peaks])
            for m, (seen, stage, peaks) in data.get("members", {}).items()
        }
        for name, eps in data["episodes"].items():
            if name in engine._episodes:
                for subject, ep in eps.items():
                    engine._set(name, subject, _episode(ep))
        engine._days = {
            d: {c: {m: float(v) for m, v in scores.items()} for c, scores in cs.items()}
            for d, cs in data.get("days", {}).items()
        }
        engine._weeks = {
            m: {c: [int(n) for n in counts] for c, counts in w.items()}
            for m, w in data["weeks"].items()
        }
        engine._history = {c: [(d, float(v)) for d, v in h] for c, h in data["history"].items()}
        if "members" in data:  # a whole engine: every member's share is due in its own record
            engine._touched = set(engine._members).union(
                *(engine._episodes[name] for name in engine._member_rules)
            )
        return engine

    # -- one member's share ---------------------------------------------------------------

    def drain_touched(self) -> set[str]:
        """Members whose share (:meth:`member_state`) changed since the last call."""
        touched, self._touched = self._touched, set()
        return touched

    def member_state(self, member_id: str) -> dict[str, Any] | None:
        """The member's share of the engine as JSON-able data (None: nothing held): last
        score time, stage, engagement peaks, episodes of member rules, and the member's
        scores in community days still open."""
        member = self._members.get(member_id)
        episodes = {
            name: _episode_list(eps[member_id])
            for name, eps in self._episodes.items()
            if name in self._member_rules and member_id in eps
        }
        days = {
            d: {c: scores[member_id] for c, scores in cs.items() if member_id in scores}
            for d, cs in self._days.items()
        }
        data: dict[str, Any] = {}  # only what is held: most members have no episode
        if member is not None:
            data["member"] = [
                member.last_seen.isoformat(),
                member.stage,
                [[t.isoformat(), v] for t, v in member.peaks],
            ]
        if episodes:
            data["episodes"] = episodes
        if days := {d: cs for d, cs in days.items() if cs}:
            data["days"] = days
        return data or None

    def load_member(
        self, member_id: str, data: dict[str, Any] | None, *, fresh: bool = False
    ) -> None:
        """Put back a :meth:`member_state` share (after :meth:`from_dict` of the engine's
        own share: days the restored watermark has closed are dropped). ``fresh``: the
        engine holds nothing of the member yet (a restore), so nothing to forget first."""
        if not fresh:
            self.forget(member_id)
        if not data:
            return
        if "member" in data:
            seen, stage, peaks = data["member"]
            self._members[member_id] = _Member(
                _dt(seen), stage, [(_dt(t), float(v)) for t, v in peaks]
            )
        for name, ep in data.get("episodes", {}).items():
            if name in self._episodes:
                self._set(name, member_id, _episode(ep))
        for day, communities in data.get("days", {}).items():
            if self._open(_day_end(day)):
                for community, score in communities.items():
                    self._days.setdefault(day, {}).setdefault(community, {})[member_id] = float(
                        score
                    )
        self._touched.discard(member_id)

    def forget(self, member_id: str) -> None:
        """Drop everything held for the member (an erasure)."""
        self._members.pop(member_id, None)
        for name in self._member_rules:
            self._set(name, member_id, None)
        for day, communities in list(self._days.items()):
            for community, scores in list(communities.items()):
                if scores.pop(member_id, None) is not None and not scores:
                    del communities[community]  # a day closes over members it still has
            if not communities:
                del self._days[day]
        self._touched.add(member_id)


def _episode_list(ep: _Episode) -> list[Any]:
    return [
        ep.start.isoformat() if ep.start else None,
        ep.fired,
        ep.cooldown_until.isoformat() if ep.cooldown_until else None,
        ep.value,
        ep.context,
    ]


def _episode(data: list[Any]) -> _Episode:
    start, fired, cooldown, value, context = data
    return _Episode(
        _dt(start) if start else None,
        bool(fired),
        _dt(cooldown) if cooldown else None,
        float(value),
        context,
    )


def _thresholds(rule: AnyRule) -> tuple[float, float]:
    if isinstance(rule, ChurnRiskRule | CommunityNpsLowRule):
        return rule.enter, rule.leave
    if isinstance(rule, EngagementDropRule):
        return rule.points, rule.resolve_points
    if isinstance(rule, CommunityEngagementDropRule):
        return rule.percent, rule.resolve_percent
    return 1.0, 1.0
