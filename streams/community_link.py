"""A task's part in the community alert rules: shares out, watermarks, and aggregation.

Community rules (``community_*``) judge a whole community over a period (an hour, a
day), but a community's members are spread over every partition task. So each task
sends its **share** of a period when its alert clock closes it, to the community
topic keyed by community, and a **watermark** to every partition of that topic saying
how far its shares are complete (or that it is quiet: nothing more is coming). The
task owning partition ``n`` of the community topic aggregates the communities keyed
there (:class:`~scoring.alerts.community.CommunityAggregator`) and closes a period
once every source passed it.

:class:`CommunityLink` is that part of one task. Shares are produced inside the
task's open checkpoint (exactly once, like its scores), and kept in the task record
until every aggregator has checkpointed them: after each of its commits an aggregator
tells each source (on the source's own partition of the community topic) the watermark
through which it holds that source's shares. A restored task sends what it kept again,
since an aggregator may have lost what it had not checkpointed (an embedded broker
starts empty); however far behind that aggregator's checkpoint is, nothing it lacks
was dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from scoring.alerts import AlertRecord, RuleSet
from scoring.alerts.community import CommunityAggregator, period_end
from sinks.rows import Tags, output_id
from streams.outputs import OutputProducer

__all__ = ["CommunityLink", "Message"]

log = logging.getLogger(__name__)


class Message(Protocol):
    """A consumed message of the community topic (a :class:`streams.task.Inbound`)."""

    @property
    def value(self) -> bytes: ...


class CommunityLink:
    """Task ``number``'s shares and watermarks, and the aggregator of its communities."""

    def __init__(
        self,
        number: int,
        rules: RuleSet,
        partitions: int,
        topic: str,
        outputs: OutputProducer,
    ) -> None:
        self.number = number
        self.rules = rules
        self.partitions = partitions
        self.topic = topic
        self.outputs = outputs
        # the community rules of the communities whose partition of the community topic
        # is this task's, over the shares of every task
        self.aggregator = CommunityAggregator(rules, partitions)
        self.recent_shares: list[dict[str, Any]] = []  # re-sent on restore
        self._reported: tuple[datetime | None, bool] | None = None
        # aggregator -> the watermark through which its checkpoint holds our shares
        self.held: dict[int, datetime | None] = {}
        self._told: dict[int, datetime | None] = {}  # source -> what we last told it

    # --- the task record -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "aggregator": self.aggregator.to_dict(),
            "shares": self.recent_shares,
            "held": {str(p): _iso(at) for p, at in self.held.items()},
        }

    def load(self, data: dict[str, Any]) -> None:
        """Take back what :meth:`to_dict` kept (records from before it lack the keys)."""
        if "aggregator" in data:
            self.aggregator = CommunityAggregator.from_dict(
                self.rules, self.partitions, data["aggregator"]
            )
        self.recent_shares = list(data.get("shares", []))
        self.held = {int(p): _dt(at) for p, at in data.get("held", {}).items()}

    def resend(self, watermark: datetime | None, quiet: bool, *, new_broker: bool) -> None:
        """After a restore: the recent shares and the watermark, again (marked restored:
        it may be behind what the aggregators heard before). ``new_broker``: the topics
        do not hold what the sources sent since their checkpoints, so this task's
        aggregator forgets their watermarks until each sends again."""
        if new_broker:
            self.aggregator.forget_sources()
        for share in self.recent_shares:
            self._send(share, None)
        self.send_watermark(watermark, quiet, restored=True)

    # --- outgoing --------------------------------------------------------------------
    def forward(
        self,
        closed: Sequence[tuple[str, str, str, list[float]]],
        watermark: datetime | None,
        tags: Tags,
    ) -> None:
        """Send this task's shares of the periods its alert clock closed."""
        for kind, period, community, values in closed:
            share = {
                "kind": kind,
                "period": period,
                "community": community,
                "source": self.number,
                "values": values,
            }
            self.recent_shares.append(share)
            self._send(share, tags)

    def _trim(self) -> None:
        """Drop the shares every aggregator's checkpoint holds already."""
        lines = [self.held.get(p) for p in range(self.partitions)]
        if not self.recent_shares or any(line is None for line in lines):
            return
        line = min(x for x in lines if x is not None)
        self.recent_shares = [
            s for s in self.recent_shares if period_end(s["kind"], s["period"]) > line
        ]

    def after_commit(
        self, received: dict[int, datetime | None]
    ) -> Callable[[asyncio.Future[None]], None]:
        """A callback for the commit of the checkpoint in which this task's aggregator
        held ``received`` (:meth:`CommunityAggregator.received`): once it succeeded, tell
        each source what changed."""

        def callback(commit: asyncio.Future[None]) -> None:
            if not commit.cancelled() and commit.exception() is None:
                self._tell(received)

        return callback

    def _tell(self, received: dict[int, datetime | None]) -> None:
        for source in range(self.partitions):
            at = received.get(source)
            if source in self._told and self._told[source] == at:
                continue
            self._told[source] = at
            message = {"kind": "held", "aggregator": self.number, "at": _iso(at)}
            value = json.dumps(message, separators=(",", ":")).encode()
            self.outputs.produce_plain(self.topic, None, value, [], partition=source)

    def _send(self, share: dict[str, Any], tags: Tags | None) -> None:
        """Produce a share in the checkpoint of ``tags``; None: committed already, sent
        again on purpose (the aggregator replaces what it has)."""
        value = json.dumps(share, separators=(",", ":")).encode()
        key = str(share["community"]).encode()
        if tags is None:
            self.outputs.produce_plain(self.topic, key, value, [])
            return
        identity = output_id(
            "share", str(share["source"]), share["kind"], share["period"], share["community"]
        )
        self.outputs.produce(self.topic, key, value, tags=tags, identity=identity)

    def report(self, watermark: datetime | None, quiet: bool) -> None:
        """Send the watermark again if it moved, or the task fell quiet or woke up."""
        if (watermark, quiet) != self._reported:
            self.send_watermark(watermark, quiet)

    def send_watermark(
        self, watermark: datetime | None, quiet: bool, *, restored: bool = False
    ) -> None:
        """Tell every aggregator how far this task closed its shares (or that it is quiet).

        Sent after the shares it covers, by the same producer: on each partition of the
        community topic a share comes before the watermark that says it is in."""
        self._reported = (watermark, quiet)
        message: dict[str, Any] = {
            "kind": "watermark",
            "source": self.number,
            "at": _iso(watermark),
            "quiet": quiet,
        }
        if restored:
            message["restored"] = True
        value = json.dumps(message, separators=(",", ":")).encode()
        for partition in range(self.partitions):
            self.outputs.produce_plain(self.topic, None, value, [], partition=partition)

    def reported(self, watermark: datetime | None) -> bool:
        """Whether the aggregators were told ``watermark``."""
        return self._reported is not None and self._reported[0] == watermark

    # --- incoming --------------------------------------------------------------------
    def receive(self, items: Sequence[Message]) -> list[AlertRecord]:
        """Shares and watermarks for the communities this task aggregates; the alerts of
        the periods every source has passed."""
        aggregator = self.aggregator
        for item in items:
            try:
                data = json.loads(item.value)
                if data["kind"] == "held":  # for this task as a source
                    self.held[int(data["aggregator"])] = _dt(data["at"])
                    self._trim()
                elif data["kind"] == "watermark":
                    aggregator.watermark(
                        int(data["source"]),
                        _dt(data["at"]),
                        quiet=bool(data["quiet"]),
                        restored=bool(data.get("restored", False)),
                    )
                else:
                    aggregator.share(
                        str(data["kind"]),
                        str(data["period"]),
                        str(data["community"]),
                        source=int(data["source"]),
                        values=[float(v) for v in data["values"]],
                    )
            except (ValueError, KeyError, TypeError) as exc:  # not ours: skip, loudly
                log.warning("task %d: unreadable community message (%s)", self.number, exc)
        return aggregator.close()


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _dt(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
