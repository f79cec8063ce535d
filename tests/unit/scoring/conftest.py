"""Fixtures shared by the scoring tests."""

from __future__ import annotations

import pytest
from scoring_fixtures import MakeEvent, event_factory


@pytest.fixture
def make_event() -> MakeEvent:
    """``make_event(event_type, member_id, at_days_or_datetime, **properties)``: fresh ids."""
    return event_factory()
