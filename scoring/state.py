"""Per-member state: everything scoring needs about one member, and nothing else.

A :class:`MemberState` is a plain slotted object, mutated in place by
:mod:`scoring.activity` and the engine, and stored by the caller (sealed, in
ClickHouse's ``member_state`` and the ``member-state`` Faust table) through
:meth:`MemberState.to_dict` / :meth:`MemberState.from_dict`, an exact JSON round
trip. Instants are float epoch seconds (event time).

Decayed activity is one flat list, ``len(KINDS) * 3`` long: for each kind its
short, engagement and long half-life sums, all referred to ``decay_ref``.

>>> s = MemberState("m-1", 1_700_000_000.0)
>>> s.remember(0x1234)
>>> s.seen(0x1234), s.seen(0x9999)
(True, False)
>>> MemberState.from_dict(s.to_dict()).to_dict() == s.to_dict()
True
"""

from __future__ import annotations

import base64
import sys
from array import array
from typing import Any

__all__ = [
    "KINDS",
    "HALF_LIVES",
    "FORMAT_VERSION",
    "Ticket",
    "Snapshot",
    "MemberState",
    "pack",
    "unpack",
]

#: Interaction kinds with their own decayed activity. ``intent`` is the purchase
#: funnel (quotes, applications), ``product`` the product-explaining content
#: (guides, calculators) that signals intent, ``dwell`` the minutes spent on
#: content (its ratio to views shows sessions getting shorter). The last two only
#: feed the features, not engagement.
KINDS: tuple[str, ...] = (
    "content",
    "social",
    "quiz_live",
    "points",
    "referrals",
    "reviews",
    "intent",
    "product",
    "dwell",
)
#: Number of half-lives per kind: short, engagement, long.
HALF_LIVES = 3
FORMAT_VERSION = 1

_MAX_COMMUNITIES = 16
_MAX_OPEN_CLAIMS = 16


class Ticket:
    """One open delayed label of a snapshot: until when it may arrive, and what was served.

    ``served`` is the probability published at snapshot time (prior or model),
    ``version`` what produced it; validation scores ``served`` once the label settles.
    What happened since the snapshot is recorded as it happens: ``active`` (the member
    was active again) and ``positive`` (a cancellation or lapse for a churn ticket, a
    purchase for a conversion ticket). The label settles when the window closes.
    """

    __slots__ = ("deadline", "served", "version", "active", "positive")

    def __init__(
        self,
        deadline: float,
        served: float,
        version: str,
        active: bool = False,
        positive: bool = False,
    ) -> None:
        self.deadline = deadline
        self.served = served
        self.version = version
        self.active = active
        self.positive = positive

    def to_list(self) -> list[Any]:
        return [self.deadline, self.served, self.version, self.active, self.positive]

    @classmethod
    def from_list(cls, data: list[Any]) -> Ticket:
        flags = [bool(v) for v in data[3:5]] + [False] * (5 - len(data))
        return cls(float(data[0]), float(data[1]), str(data[2]), flags[0], flags[1])


class Snapshot:
    """A member's feature vector at ``at``, waiting for its churn and conversion labels."""

    __slots__ = ("at", "features", "churn", "conversion")

    def __init__(
        self,
        at: float,
        features: array[float],
        churn: Ticket | None,
        conversion: Ticket | None,
    ) -> None:
        self.at = at
        self.features = features
        self.churn = churn
        self.conversion = conversion

    @property
    def is_open(self) -> bool:
        """Whether a label is still awaited."""
        return self.churn is not None or self.conversion is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "features": pack(self.features),
            "churn": None if self.churn is None else self.churn.to_list(),
            "conversion": None if self.conversion is None else self.conversion.to_list(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Snapshot:
        churn, conversion = data.get("churn"), data.get("conversion")
        return cls(
            float(data["at"]),
            unpack("d", data["features"]),
            None if churn is None else Ticket.from_list(churn),
            None if conversion is None else Ticket.from_list(conversion),
        )


def pack(values: array[Any]) -> str:
    """An array of numbers as base64 of their little-endian bytes: exact, a third of
    the JSON text of the same floats (or 64-bit ids), and read back at memory speed.

    >>> pack(array("d", [0.5, 1.0]))
    'AAAAAAAA4D8AAAAAAADwPw=='
    >>> unpack("d", pack(array("d", [0.1, 1e300]))), unpack("Q", [1, 2])
    (array('d', [0.1, 1e+300]), array('Q', [1, 2]))
    """
    if sys.byteorder != "little":  # pragma: no cover - the records are little-endian
        values = array(values.typecode, values)
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode("ascii")


def unpack(typecode: str, data: str | list[Any] | tuple[Any, ...]) -> array[Any]:
    """The array :func:`pack` wrote, or one from a JSON list (records written before)."""
    if not isinstance(data, str):
        return array(typecode, data)
    values = array(typecode)
    values.frombytes(base64.b64decode(data))
    if sys.byteorder != "little":  # pragma: no cover
        values.byteswap()
    return values


# Fields copied as they are by to_dict/from_dict (None, bool, int, float, str).
_PLAIN: tuple[str, ...] = (
    "member_id",
    "community_id",
    "communities_left",
    "first_seen_at",
    "joined_at",
    "last_event_at",
    "last_activity_at",
    "event_count",
    "activity_count",
    "decay_ref",
    "points_earned",
    "points_redeemed",
    "referrals_sent",
    "referrals_converted",
    "purchases",
    "renewals",
    "cancellations",
    "lapses",
    "last_purchase_at",
    "last_policy_end_at",
    "quotes",
    "applications",
    "last_quote_at",
    "last_application_at",
    "claims_filed",
    "claims_paid",
    "claims_partial",
    "claims_denied",
    "last_claim_at",
    "last_bad_claim_at",
    "last_redeem_at",
    "last_redeem_points",
    "last_nps",
    "last_csat",
    "last_survey_at",
    "reviews",
    "review_rating_sum",
    "last_review_rating",
    "consent_marketing",
    "stage",
    "stage_since",
    "silence_done_days",
    "last_snapshot_at",
    "last_conversion_snapshot_at",
    "engagement_bin",
    "engagement_binned_at",
    "last_scored_at",
    "last_churn",
    "last_risk",
)


class MemberState:
    """What the engine knows about one member; see the module docstring."""

    __slots__ = (
        *_PLAIN,
        "communities",
        "decayed",
        "active_days",
        "channels",
        "policies",
        "open_claims",
        "ended_policies",
        "pending",
        "recent_ids",
        "opted_out",
    )

    def __init__(self, member_id: str, first_seen_at: float) -> None:
        self.member_id = member_id
        self.community_id: str | None = None
        self.communities: list[str] = []
        self.communities_left = 0
        self.first_seen_at = first_seen_at
        self.joined_at: float | None = None
        self.last_event_at = first_seen_at
        self.last_activity_at: float | None = None
        self.event_count = 0
        self.activity_count = 0
        # Decayed activity: len(KINDS) x (short, engagement, long), referred to decay_ref.
        self.decay_ref = first_seen_at
        self.decayed: list[float] = [0.0] * (len(KINDS) * HALF_LIVES)
        # Distinct event-time days (epoch day numbers) with activity, recent ones only.
        self.active_days: array[int] = array("l")
        self.channels: dict[str, int] = {}
        self.points_earned = 0.0
        self.points_redeemed = 0.0
        self.referrals_sent = 0
        self.referrals_converted = 0
        # Active policies: policy_id -> (product_line, annual premium, since, expires).
        self.policies: dict[str, tuple[str, float, float, float]] = {}
        # Recently ended policy ids, so a late claim settlement does not revive one.
        self.ended_policies: list[str] = []
        self.purchases = 0
        self.renewals = 0
        self.cancellations = 0
        self.lapses = 0
        self.last_purchase_at: float | None = None
        self.last_policy_end_at: float | None = None
        self.quotes = 0
        self.applications = 0
        self.last_quote_at: float | None = None
        self.last_application_at: float | None = None
        self.claims_filed = 0
        self.claims_paid = 0
        self.claims_partial = 0
        self.claims_denied = 0
        self.open_claims: list[str] = []
        self.last_claim_at: float | None = None
        self.last_bad_claim_at: float | None = None  # denied or partially paid
        self.last_redeem_at: float | None = None
        self.last_redeem_points = 0.0
        self.last_nps: int | None = None
        self.last_csat: int | None = None
        self.last_survey_at: float | None = None
        self.reviews = 0
        self.review_rating_sum = 0
        self.last_review_rating: int | None = None
        self.consent_marketing = True
        # Lifecycle: "" until the first event has been applied.
        self.stage = ""
        self.stage_since = first_seen_at
        # Silence: the largest timer boundary (days) already handled since the last activity.
        self.silence_done_days = 0.0
        self.last_snapshot_at: float | None = None
        self.last_conversion_snapshot_at: float | None = None
        self.pending: list[Snapshot] = []
        # Population histogram bookkeeping (see scoring.engagement).
        self.engagement_bin = -1
        self.engagement_binned_at = first_seen_at
        self.last_scored_at: float | None = None
        self.last_churn: float | None = None
        self.last_risk = ""
        # Idempotency: 64-bit digests of the most recently applied event ids, oldest first.
        self.recent_ids: array[int] = array("Q")
        # Analytics consent withdrawn: the state is only a marker (see :meth:`marker`).
        self.opted_out = False

    @classmethod
    def marker(cls, member_id: str, at: float, consent_marketing: bool) -> MemberState:
        """What is kept of a member who withdrew analytics consent: who, since when, and
        the ids of the events that said so (nothing of their behaviour).

        >>> m = MemberState.marker("m-1", 1_700_000_000.0, False)
        >>> sorted(m.to_dict())
        ['consent_marketing', 'first_seen_at', 'member_id', 'opted_out', 'recent_ids', 'v']
        >>> MemberState.from_dict(m.to_dict()).opted_out
        True
        """
        state = cls(member_id, at)
        state.opted_out = True
        state.consent_marketing = consent_marketing
        return state

    # -- idempotency ------------------------------------------------------------------

    def seen(self, digest: int) -> bool:
        """Whether an event with this id digest was applied recently."""
        return digest in self.recent_ids

    def remember(self, digest: int, capacity: int = 64) -> None:
        """Record an applied event id digest in the bounded ring."""
        ids = self.recent_ids
        if len(ids) >= capacity:
            del ids[: len(ids) - capacity + 1]
        ids.append(digest)

    # -- derived ----------------------------------------------------------------------

    @property
    def active_policies(self) -> int:
        """Number of policies in force."""
        return len(self.policies)

    @property
    def annual_premium(self) -> float:
        """Sum of the annual premiums of the policies in force."""
        return sum(p[1] for p in self.policies.values())

    def add_community(self, community_id: str) -> None:
        """Remember a community the member takes part in (bounded, first seen first)."""
        self.community_id = community_id
        if community_id not in self.communities:
            self.communities.append(community_id)
            if len(self.communities) > _MAX_COMMUNITIES:
                del self.communities[0]

    def open_claim(self, claim_id: str) -> None:
        """Track an open claim (bounded)."""
        if claim_id not in self.open_claims:
            self.open_claims.append(claim_id)
            if len(self.open_claims) > _MAX_OPEN_CLAIMS:
                del self.open_claims[0]

    def expire_policies(self, at: float) -> None:
        """Drop policies whose term (plus grace) ended by ``at`` without a renewal."""
        if any(p[3] <= at for p in self.policies.values()):
            self.policies = {k: p for k, p in self.policies.items() if p[3] > at}

    def end_policy(self, policy_id: str) -> None:
        """Remember an ended policy (bounded)."""
        if policy_id not in self.ended_policies:
            self.ended_policies.append(policy_id)
            if len(self.ended_policies) > _MAX_OPEN_CLAIMS:
                del self.ended_policies[0]

    # -- serialisation ----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; :meth:`from_dict` restores an equal state.

        Fields that hold their default (a fresh member's value that does not depend
        on when they were first seen: ``None``, 0, an empty list) are left out, as
        :meth:`from_dict` has always read absent fields: a member record is about a
        third shorter, and faster to seal, store and open."""
        if self.opted_out:  # a marker: nothing else is kept
            return {
                "v": FORMAT_VERSION,
                "member_id": self.member_id,
                "first_seen_at": self.first_seen_at,
                "consent_marketing": self.consent_marketing,
                "recent_ids": pack(self.recent_ids),
                "opted_out": True,
            }
        data: dict[str, Any] = {}
        for name in _PLAIN:
            value = getattr(self, name)
            default = _DEFAULTS.get(name, _NO_DEFAULT)
            if value != default or type(value) is not type(default):
                data[name] = value
        data["v"] = FORMAT_VERSION
        data["decayed"] = pack(array("d", self.decayed))
        # empty containers are left out, as the fields above that hold their default
        if self.communities:
            data["communities"] = list(self.communities)
        if self.active_days:
            data["active_days"] = self.active_days.tolist()
        if self.channels:
            data["channels"] = dict(self.channels)
        if self.policies:
            data["policies"] = {k: list(v) for k, v in self.policies.items()}
        if self.open_claims:
            data["open_claims"] = list(self.open_claims)
        if self.ended_policies:
            data["ended_policies"] = list(self.ended_policies)
        if self.pending:
            data["pending"] = [s.to_dict() for s in self.pending]
        if self.recent_ids:
            data["recent_ids"] = pack(self.recent_ids)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemberState:
        """Rebuild a state from :meth:`to_dict` output; absent fields keep their defaults."""
        state = cls(str(data["member_id"]), float(data["first_seen_at"]))
        for name in _PLAIN:
            if name in data:
                setattr(state, name, data[name])
        state.communities = list(data.get("communities", ()))
        # Kinds are only ever appended: an older, shorter list fills the common prefix.
        decayed = unpack("d", data.get("decayed", ())).tolist()[: len(state.decayed)]
        state.decayed[: len(decayed)] = decayed
        state.active_days = array("l", data.get("active_days", ()))
        state.channels = {str(k): int(v) for k, v in data.get("channels", {}).items()}
        state.policies = {
            str(k): (str(v[0]), float(v[1]), float(v[2]), float(v[3]))
            for k, v in data.get("policies", {}).items()
        }
        state.open_claims = list(data.get("open_claims", ()))
        state.ended_policies = list(data.get("ended_policies", ()))
        state.pending = [Snapshot.from_dict(s) for s in data.get("pending", ())]
        state.recent_ids = unpack("Q", data.get("recent_ids", ()))
        state.opted_out = bool(data.get("opted_out", False))
        return state

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MemberState):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"MemberState({self.member_id!r}, stage={self.stage!r}, "
            f"events={self.event_count}, policies={len(self.policies)})"
        )


_NO_DEFAULT = object()


def _constant_defaults() -> dict[str, Any]:
    """The plain fields whose fresh value is the same for every member: not the id, nor
    the ones set from ``first_seen_at``. to_dict leaves them out while they hold it."""
    early, late = MemberState("", 0.0), MemberState("", 1.0)
    return {
        name: getattr(early, name)
        for name in _PLAIN
        if name != "member_id" and getattr(early, name) == getattr(late, name)
    }


_DEFAULTS = _constant_defaults()
