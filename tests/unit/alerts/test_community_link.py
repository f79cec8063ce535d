"""A source keeps its community shares until every aggregator's checkpoint holds them."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from scoring.alerts.rules import RuleSet
from sinks.rows import Tags
from streams.community_link import CommunityLink

pytestmark = pytest.mark.unit

DAY0 = date(2026, 3, 1)


class Outputs:
    """Records what the link produces (the link's only collaborator)."""

    def __init__(self) -> None:
        self.sent: list[tuple[int | None, dict[str, Any]]] = []

    def produce(self, topic: str, key: bytes, value: bytes, **_: Any) -> bool:
        self.sent.append((None, json.loads(value)))
        return True

    def produce_plain(
        self, topic: str, key: bytes | None, value: bytes, headers: Any, *, partition: int = -1
    ) -> None:
        self.sent.append((partition, json.loads(value)))


class Item:
    def __init__(self, message: dict[str, Any]) -> None:
        self.value = json.dumps(message).encode()


def _link(number: int) -> tuple[CommunityLink, Outputs]:
    outputs = Outputs()
    link = CommunityLink(number, RuleSet.parse({"rules": []}), 2, "community", outputs)  # type: ignore[arg-type]
    return link, outputs


def _end(day: int) -> datetime:
    return datetime.combine(DAY0 + timedelta(days=day + 1), datetime.min.time(), UTC)


def _forward_days(link: CommunityLink, days: range) -> None:
    for day in days:
        closed = [("day", (DAY0 + timedelta(days=day)).isoformat(), "c1", [50.0, 1.0])]
        link.forward(closed, _end(day), Tags(1, 1, day + 1))


def _held(aggregator: int, day: int | None) -> Item:
    at = None if day is None else _end(day).isoformat()
    return Item({"kind": "held", "aggregator": aggregator, "at": at})


def test_shares_stay_until_every_aggregator_holds_them_however_old() -> None:
    link, _ = _link(1)
    _forward_days(link, range(40))  # far more than any fixed window of event time
    assert len(link.recent_shares) == 40
    link.receive([_held(0, 30)])
    assert len(link.recent_shares) == 40  # aggregator 1 has not said what it holds
    link.receive([_held(1, 20)])
    assert [s["period"] for s in link.recent_shares][0] == (DAY0 + timedelta(days=21)).isoformat()
    assert len(link.recent_shares) == 19
    link.receive([_held(1, None)])  # restored on an empty broker: it forgot the sources
    _forward_days(link, range(40, 42))
    assert len(link.recent_shares) == 21  # nothing more is dropped until it says again
    restored, outputs = _link(1)
    restored.load(json.loads(json.dumps(link.to_dict())))
    restored.resend(_end(41), False, new_broker=True)
    assert [m["period"] for _, m in outputs.sent if m["kind"] == "day"] == [
        s["period"] for s in link.recent_shares
    ]


def test_an_aggregator_tells_each_source_what_its_committed_checkpoint_holds() -> None:
    link, outputs = _link(0)
    received = {0: _end(5), 1: _end(3)}
    loop = asyncio.new_event_loop()
    try:
        failed: asyncio.Future[None] = loop.create_future()
        failed.set_exception(RuntimeError("insert failed"))
        link.after_commit(received)(failed)
        assert outputs.sent == []  # a checkpoint that did not commit holds nothing
        for _ in range(2):  # the second commit changed nothing: nothing is sent again
            done: asyncio.Future[None] = loop.create_future()
            done.set_result(None)
            link.after_commit(received)(done)
    finally:
        loop.close()
    assert outputs.sent == [
        (0, {"kind": "held", "aggregator": 0, "at": _end(5).isoformat()}),
        (1, {"kind": "held", "aggregator": 0, "at": _end(3).isoformat()}),
    ]
