"""Delayed labels: snapshots of a member wait for what happens next.

A *snapshot* is the member's feature vector at one instant, with one open
*ticket* per target (what was served, until when the label may arrive):

* **churn** (every snapshot of a member silent for less than the churn window):
  ``1`` at once when a policy is cancelled or lapses within the window; otherwise,
  when the window ends (:func:`resolve_expired`, driven by the silence timers),
  ``0`` if the member was active again within it and ``1`` if not. Waiting for the
  window's end makes the label exactly the business definition (a member who keeps
  visiting while drifting away and then cancels is a churner), which is the signal
  a model needs to beat plain recency.
* **conversion** (members without an active policy): ``1`` if a policy was bought
  within the conversion window, ``0`` if not, settled as of the window's end. A
  purchase is known early but waits for the window too: purchases come within days
  and non-purchases only after 90, so learning positives at once would teach the
  model, for its first three months, that everyone converts.

Only events after the snapshot count. An event that arrives after a ticket's
deadline resolves it as the deadline would have (churned / not converted), so
the result does not depend on whether the timer or the event came first.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

from scoring.activity import CHURN_EVENT_TYPES, PURCHASE_EVENT_TYPES, Applied
from scoring.state import MemberState, Snapshot, Ticket

__all__ = ["Resolution", "add_snapshot", "resolve_on_event", "resolve_expired", "next_deadline"]


@dataclass(frozen=True, slots=True)
class Resolution:
    """A ticket that received its label."""

    model: str
    snapshot_at: float
    features: array[float]
    ticket: Ticket
    label: int
    label_at: float


def add_snapshot(
    state: MemberState,
    at: float,
    features: array[float],
    churn: Ticket | None,
    conversion: Ticket | None,
    max_pending: int,
) -> None:
    """Record a snapshot; beyond ``max_pending`` open snapshots the oldest is dropped."""
    if churn is None and conversion is None:
        return
    if churn is not None:
        state.last_snapshot_at = at
    if conversion is not None:
        state.last_conversion_snapshot_at = at
    state.pending.append(Snapshot(at, features, churn, conversion))
    if len(state.pending) > max_pending:
        del state.pending[0]


def resolve_on_event(state: MemberState, applied: Applied) -> list[Resolution]:
    """Labels that this applied event gives to the member's open tickets."""
    at = applied.at
    event_type = applied.event_type
    churned = event_type in CHURN_EVENT_TYPES
    bought = event_type in PURCHASE_EVENT_TYPES
    if not (applied.is_activity or churned):
        return resolve_expired(state, at)
    out: list[Resolution] = []
    for snap in state.pending:
        if snap.at >= at:
            continue
        ticket = snap.churn
        if ticket is not None:
            if at > ticket.deadline:
                label = 0 if ticket.active else 1
                out.append(
                    Resolution("churn", snap.at, snap.features, ticket, label, ticket.deadline)
                )
                snap.churn = None
            elif churned:
                out.append(Resolution("churn", snap.at, snap.features, ticket, 1, at))
                snap.churn = None
            else:
                ticket.active = True
        ticket = snap.conversion
        if ticket is not None:
            if at > ticket.deadline:
                label = 1 if ticket.active else 0
                out.append(
                    Resolution("conversion", snap.at, snap.features, ticket, label, ticket.deadline)
                )
                snap.conversion = None
            elif bought:
                ticket.active = True
    if out:
        state.pending = [s for s in state.pending if s.is_open]
    return out


def resolve_expired(state: MemberState, at: float) -> list[Resolution]:
    """Tickets whose window ended by ``at`` with nothing having answered them."""
    out: list[Resolution] = []
    for snap in state.pending:
        ticket = snap.churn
        if ticket is not None and ticket.deadline <= at:
            label = 0 if ticket.active else 1
            out.append(Resolution("churn", snap.at, snap.features, ticket, label, ticket.deadline))
            snap.churn = None
        ticket = snap.conversion
        if ticket is not None and ticket.deadline <= at:
            label = 1 if ticket.active else 0
            out.append(
                Resolution("conversion", snap.at, snap.features, ticket, label, ticket.deadline)
            )
            snap.conversion = None
    if out:
        state.pending = [s for s in state.pending if s.is_open]
    return out


def next_deadline(state: MemberState, horizon: float) -> float | None:
    """The earliest deadline that needs a timer of its own, or None.

    A churn ticket already marked active can only turn "churned" through an event,
    so it settles (as of its deadline) at the member's next event or timer, whichever
    comes first after it: no timer. Neither needs a conversion ticket whose deadline
    falls before ``horizon``, the member's last silence boundary: that boundary's timer
    or an earlier event settles it. Members who stay active therefore cost no timer.
    """
    best: float | None = None
    for snap in state.pending:
        churn, conversion = snap.churn, snap.conversion
        if churn is not None and not churn.active and (best is None or churn.deadline < best):
            best = churn.deadline
        if (
            conversion is not None
            and conversion.deadline > horizon
            and (best is None or conversion.deadline < best)
        ):
            best = conversion.deadline
    return best
