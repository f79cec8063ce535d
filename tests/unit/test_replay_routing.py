"""The replay's routing reads any line: a topic and a key (or none), never an exception."""

from __future__ import annotations

import json

import pytest

from streams.replay import _route

pytestmark = pytest.mark.unit


def test_replay_routing_survives_anything() -> None:
    assert _route(b"[" * 5000, "p.") == ("p.interactions", None)
    assert _route(b'{"event_type": ' + b"1" * 5000 + b"}", "p.") == ("p.interactions", None)
    assert _route(b'{"event_type": ["x"], "member_id": "m"}', "p.") == ("p.interactions", b"m")
    topic, key = _route(b'{"event_type": "policy_lapsed", "member_id": "\\ud800"}', "p.")
    assert topic == "p.purchases" and key == b"?"
    assert _route(json.dumps({"member_id": "m" * 5000}).encode(), "p.") == ("p.interactions", None)
