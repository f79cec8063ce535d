"""Delayed labels: snapshots of a member wait for what happens next.

A *snapshot* is the member's feature vector at one instant, with one open
*ticket* per target (what was served, until when the label may arrive):

* **churn** (every snapshot of a member silent for less than the churn window):
  ``1`` if a policy was cancelled or lapsed within the window, or if the member
  was not active again within it; ``0`` otherwise -- the business definition (a
  member who keeps visiting while drifting away and then cancels is a churner).
* **conversion** (members without an active policy): ``1`` if a policy was bought
  within the conversion window, ``0`` if not.

Events after the snapshot are recorded on its tickets as they happen; every label
*settles* (is validated and learned) only once its window has closed, with
``label_at`` = the window's end. Settling positives early would skew what the
models learn by label delay: purchases come within days and non-purchases only
after 90, cancellations at once and retentions only after 30 -- a model would
spend its first months learning that everyone converts or churns, and its drift
detector would then fire on the correction.

A ticket needs a timer of its own only while its outcome still depends on time
passing -- a member silent since the snapshot (see :func:`next_deadline`); it then
settles exactly at its window's end. Any other ticket settles at the member's next
event or timer after the window's end (for active members, within days).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

from scoring.activity import CHURN_EVENT_TYPES, PURCHASE_EVENT_TYPES, Applied
from scoring.config import ScoringConfig
from scoring.state import MemberState, Snapshot, Ticket

__all__ = [
    "Resolution",
    "add_snapshot",
    "resolve_on_event",
    "resolve_expired",
    "next_deadline",
    "takes_churn_label",
]


@dataclass(frozen=True, slots=True)
class Resolution:
    """A ticket that received its label."""

    model: str
    snapshot_at: float
    features: array[float]
    ticket: Ticket
    label: int
    label_at: float


def takes_churn_label(recency_days: float, config: ScoringConfig) -> bool:
    """Whether a member silent for ``recency_days`` gets a churn snapshot when scored.

    Members silent for less than the churn window always qualify (every
    ``snapshot_interval_days``); lapsed members only at the lapsed-label boundaries
    (``lapsed_label_windows``), so the models also learn who comes back after a long
    silence.

    >>> config = ScoringConfig(churn_window_days=30.0)
    >>> [takes_churn_label(d, config) for d in (0.0, 29.9, 30.0, 45.0, 50.0, 120.0, 121.0)]
    [True, True, False, True, False, True, False]
    """
    if recency_days < config.churn_window_days:
        return True
    return any(abs(recency_days - d) < 1e-3 for d in config.lapsed_label_days)


def add_snapshot(
    state: MemberState,
    at: float,
    features: array[float],
    churn: Ticket | None,
    conversion: Ticket | None,
    max_pending: int,
) -> None:
    """Record a snapshot (features rounded to 4 decimals), unless ``max_pending`` are open.

    A full member takes no new snapshot until one settles. Dropping the oldest open
    snapshot instead would bias the labels: new snapshots come with activity, and an
    activity is exactly what labels an older churn snapshot "retained", so the dropped
    ones would be the retained ones (measured on a real purchase log: the churn model's
    ranking inverted, AUC 0.45).
    """
    if churn is None and conversion is None:
        return
    if len(state.pending) >= max_pending:
        return
    if churn is not None:
        state.last_snapshot_at = at
    if conversion is not None:
        state.last_conversion_snapshot_at = at
    # 4 decimals are plenty to learn from and halve the member's stored size; most
    # features are whole numbers (counts, zeros), which round() would return unchanged
    stored = array("d", [round(v, 4) if v % 1.0 else v for v in features])
    state.pending.append(Snapshot(at, stored, churn, conversion))


def _settle(snap: Snapshot, at: float, out: list[Resolution]) -> None:
    """Settle ``snap``'s tickets whose window closed by ``at``."""
    ticket = snap.churn
    if ticket is not None and ticket.deadline <= at:
        label = 1 if ticket.positive or not ticket.active else 0
        out.append(Resolution("churn", snap.at, snap.features, ticket, label, ticket.deadline))
        snap.churn = None
    ticket = snap.conversion
    if ticket is not None and ticket.deadline <= at:
        label = 1 if ticket.positive else 0
        out.append(Resolution("conversion", snap.at, snap.features, ticket, label, ticket.deadline))
        snap.conversion = None


def resolve_on_event(state: MemberState, applied: Applied) -> list[Resolution]:
    """Record what this event means for the member's open tickets; settle closed ones.

    Tickets whose window closed before the event settle first, unaffected by it.
    """
    at = applied.at
    event_type = applied.event_type
    churned = event_type in CHURN_EVENT_TYPES
    bought = event_type in PURCHASE_EVENT_TYPES
    out: list[Resolution] = []
    for snap in state.pending:
        _settle(snap, at - 1e-6, out)
        if snap.at >= at:
            continue
        churn, conversion = snap.churn, snap.conversion
        if churn is not None:
            churn.active = churn.active or applied.is_activity
            churn.positive = churn.positive or churned
        if conversion is not None and bought:
            conversion.positive = True
    if out:
        state.pending = [s for s in state.pending if s.is_open]
    return out


def resolve_expired(state: MemberState, at: float) -> list[Resolution]:
    """Settle the tickets whose window closed by ``at``."""
    out: list[Resolution] = []
    for snap in state.pending:
        _settle(snap, at, out)
    if out:
        state.pending = [s for s in state.pending if s.is_open]
    return out


def next_deadline(state: MemberState, horizon: float) -> float | None:
    """The earliest deadline that needs a timer of its own, or None.

    A churn ticket whose member was active again, or cancelled, has its outcome
    decided by events alone, so it settles at the member's next event or timer after
    its deadline: no timer. Neither needs a conversion ticket whose deadline falls
    before ``horizon``, the member's last silence boundary: that boundary's timer or
    an earlier event settles it. Members who stay active therefore cost no timer.
    """
    best: float | None = None
    for snap in state.pending:
        churn, conversion = snap.churn, snap.conversion
        if (
            churn is not None
            and not (churn.active or churn.positive)
            and (best is None or churn.deadline < best)
        ):
            best = churn.deadline
        if (
            conversion is not None
            and conversion.deadline > horizon
            and (best is None or conversion.deadline < best)
        ):
            best = conversion.deadline
    return best
