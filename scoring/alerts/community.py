"""Community rules over the whole community, assembled from every partition's share.

A community's members are spread over the input partitions (members are keyed by
``member_id``), so no partition task sees the whole community. Each task closes
its own share of a day -- the sum of its members' engagement scores that day and
how many they were -- or of an ISO week -- its NPS answer counts -- and sends it,
keyed by community, to the community's aggregator: the task that owns the
community's partition of the ``community`` topic. Each task also tells every
aggregator how far in event time it has closed its shares (its watermark).

:class:`CommunityAggregator` holds the shares of open periods and closes a period
once every source has passed its end: the index is the sum of the shares' sums
over the sum of their member counts, the same mean one engine over the whole
community would compute. The community rules then run on it, in the aggregator's
own :class:`~scoring.alerts.engine.AlertEngine` (hysteresis, dwell, cooldown and
alert ids as for any rule). A source that stays caught up with its input for a
while (a quiet partition, or one with no members at all) says so, and stops
holding periods back. Shares that come again (a task restored after a crash, or
re-sending its recent shares) replace the same share; shares of a period closed
already are ignored (counted in :attr:`CommunityAggregator.late`).

>>> from datetime import UTC, datetime
>>> from scoring.alerts.rules import RuleSet
>>> rules = RuleSet.parse({"rules": [{"name": "community_engagement_drop",
...     "kind": "community_engagement_drop", "severity": "warning", "percent": 30,
...     "leave_percent": 10, "baseline_days": 7, "min_baseline_days": 2}]})
>>> aggregator = CommunityAggregator(rules, sources=2)
>>> for day, (a, b) in enumerate([(60.0, 50.0), (58.0, 52.0), (20.0, 10.0)], start=1):
...     period = f"2026-03-0{day}"
...     aggregator.share("day", period, "c1", source=0, values=[a, 1.0])
...     aggregator.share("day", period, "c1", source=1, values=[b, 1.0])
>>> aggregator.watermark(0, datetime(2026, 3, 4, tzinfo=UTC), quiet=False)
>>> aggregator.close()  # source 1 has not said how far it is: nothing closes
[]
>>> aggregator.watermark(1, datetime(2026, 3, 4, tzinfo=UTC), quiet=False)
>>> [(a.rule, a.status, a.subject_id) for a in aggregator.close()]
[('community_engagement_drop', 'fired', 'c1')]
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from scoring.alerts.engine import AlertEngine, AlertRecord
from scoring.alerts.rules import RuleSet

__all__ = ["CommunityAggregator", "period_end"]

Kind = Literal["day", "week"]


def period_end(kind: str, period: str) -> datetime:
    """End of a day (``YYYY-MM-DD``) or of the ISO week starting on that Monday (UTC)."""
    start = datetime.combine(date.fromisoformat(period), datetime.min.time(), tzinfo=UTC)
    return start + timedelta(days=1 if kind == "day" else 7)


class CommunityAggregator:
    """Closes community periods once every source passed them; see the module docstring."""

    def __init__(self, rules: RuleSet, sources: int) -> None:
        self.rules = rules
        self.sources = sources
        self.engine = AlertEngine(rules)
        # source -> (watermark, quiet); a quiet source does not hold periods back
        self._watermarks: dict[int, tuple[datetime | None, bool]] = {}
        # (kind, period, community) -> source -> values
        self._open: dict[tuple[str, str, str], dict[int, list[float]]] = {}
        self._closed_through: datetime | None = None
        self.late = 0

    # -- inputs ---------------------------------------------------------------------
    def share(
        self, kind: str, period: str, community: str, *, source: int, values: list[float]
    ) -> None:
        """One source's share of a period (replaces an earlier copy of it)."""
        end = period_end(kind, period)
        if self._closed_through is not None and end <= self._closed_through:
            self.late += 1
            return
        self._open.setdefault((kind, period, community), {})[source] = [float(v) for v in values]

    def watermark(
        self, source: int, at: datetime | None, *, quiet: bool, restored: bool = False
    ) -> None:
        """How far a source has closed its shares (``at`` never moves back, except when
        ``restored``: the source restarted from its last checkpoint, and what it said
        after that checkpoint is void -- the shares it covered are being derived again)."""
        previous = self._watermarks.get(source, (None, False))[0]
        if not restored and previous is not None and (at is None or at < previous):
            at = previous
        self._watermarks[source] = (at, quiet)

    def forget_sources(self) -> None:
        """Forget every source's watermark: this aggregator was restored on a broker that
        does not hold what the sources sent since (an embedded broker starts empty), and
        what it kept of them may be ahead of what they checkpointed. Nothing closes until
        each source, restored too, has said again how far it is.

        >>> from scoring.alerts.rules import RuleSet
        >>> aggregator = CommunityAggregator(RuleSet.parse({"rules": []}), sources=1)
        >>> aggregator.watermark(0, None, quiet=True)
        >>> aggregator.horizon() is None, len(aggregator.to_dict()["watermarks"])
        (True, 1)
        >>> aggregator.forget_sources()
        >>> aggregator.to_dict()["watermarks"]
        {}
        """
        self._watermarks.clear()

    def received(self) -> dict[int, datetime | None]:
        """Per source, the watermark through which this aggregator holds its shares: once
        checkpointed, what the source no longer needs to keep for it."""
        return {s: at for s, (at, _) in self._watermarks.items()}

    # -- closing --------------------------------------------------------------------
    def horizon(self) -> datetime | None:
        """End time up to which every source's shares are in (None: not known yet)."""
        if len(self._watermarks) < self.sources:
            return None  # a source has not said anything yet
        holding = [at for at, quiet in self._watermarks.values() if not quiet]
        if any(at is None for at in holding):
            return None
        if holding:
            return min(at for at in holding if at is not None)
        ends = [period_end(k, p) for k, p, _ in self._open]
        return max(ends) if ends else None  # every source quiet: what is in is all

    def close(self) -> list[AlertRecord]:
        """Close the periods every source passed; return the community alerts they raise."""
        horizon = self.horizon()
        if horizon is None:
            return []
        due = sorted(
            (key for key in self._open if period_end(key[0], key[1]) <= horizon),
            key=lambda k: (period_end(k[0], k[1]), k[0], k[2]),
        )
        alerts: list[AlertRecord] = []
        for kind, period, community in due:
            shares = self._open.pop((kind, period, community))
            end = period_end(kind, period)
            alerts += self.engine.advance(end - timedelta(microseconds=1))
            if kind == "day":
                total = sum(v[0] for v in shares.values())
                members = int(sum(v[1] for v in shares.values()))
                if members:
                    alerts += self.engine.close_day(community, period, total / members, members)
            else:
                counts = [int(sum(v[i] for v in shares.values())) for i in range(3)]
                if sum(counts):
                    alerts += self.engine.close_week(community, period, counts)
            self._closed_through = max(self._closed_through or end, end)
        if self._closed_through is not None:
            alerts += self.engine.advance(self._closed_through)
        return alerts

    # -- checkpoints ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine.to_dict(),
            "watermarks": {
                str(s): [at.isoformat() if at else None, quiet]
                for s, (at, quiet) in self._watermarks.items()
            },
            "open": [
                [k, p, c, {str(s): v for s, v in shares.items()}]
                for (k, p, c), shares in self._open.items()
            ],
            "closed_through": self._closed_through.isoformat() if self._closed_through else None,
            "late": self.late,
        }

    @classmethod
    def from_dict(cls, rules: RuleSet, sources: int, data: dict[str, Any]) -> CommunityAggregator:
        aggregator = cls(rules, sources)
        aggregator.engine = AlertEngine.from_dict(rules, data["engine"])
        aggregator._watermarks = {
            int(s): (datetime.fromisoformat(at) if at else None, bool(quiet))
            for s, (at, quiet) in data["watermarks"].items()
        }
        aggregator._open = {
            (str(k), str(p), str(c)): {int(s): [float(x) for x in v] for s, v in shares.items()}
            for k, p, c, shares in data["open"]
        }
        closed = data.get("closed_through")
        aggregator._closed_through = datetime.fromisoformat(closed) if closed else None
        aggregator.late = int(data.get("late", 0))
        return aggregator
