"""The simulated world: configuration, archetypes, communities, products and channels."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate

__all__ = [
    "DAY",
    "HOUR",
    "SimulationConfig",
    "Archetype",
    "Community",
    "ARCHETYPES",
    "ARCHETYPE_CUM",
    "COMMUNITIES",
    "CHANNELS",
    "CHANNEL_OFFSET",
    "PRODUCT_LINES",
    "PREMIUM_RANGE",
    "CLAIM_RATE_PER_DAY",
    "CLAIM_AMOUNT_RANGE",
    "CONTENT_TYPES",
    "DWELL_SECONDS",
    "resolve_start",
]

DAY = 86_400
HOUR = 3_600


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate. Same config (with an explicit ``start``) => same bytes."""

    members: int = 2000
    days: int = 120
    seed: int = 0
    communities: int = 6
    start: datetime | None = None
    """Event-time start (aware, UTC); default: ``now() - days``, truncated to midnight UTC."""

    def __post_init__(self) -> None:
        if self.members < 0:
            raise ValueError("members must be >= 0")
        if self.days < 1:
            raise ValueError("days must be >= 1")
        if not 1 <= self.communities <= len(COMMUNITIES):
            raise ValueError(f"communities must be between 1 and {len(COMMUNITIES)}")
        if self.start is not None and self.start.utcoffset() is None:
            raise ValueError("start must be timezone-aware")


def resolve_start(config: SimulationConfig) -> int:
    """The simulation's start as epoch seconds, aligned to midnight UTC."""
    start = config.start
    if start is None:
        start = datetime.now(UTC) - timedelta(days=config.days)
    seconds = int(start.timestamp())
    return seconds - seconds % DAY


def _hours(peaks: dict[int, float], base: float = 0.15) -> tuple[float, ...]:
    """Cumulative weights of the local hour of day: a night-time floor plus peaks."""
    weights = [base * (0.2 if h < 7 else 1.0) for h in range(24)]
    for hour, weight in peaks.items():
        weights[hour] += weight
    return tuple(accumulate(weights))


@dataclass(frozen=True)
class Archetype:
    """How one kind of member behaves; rates are per day, counts per session."""

    name: str
    share: float
    sessions_per_day: float
    channel_weights: tuple[float, float, float, float, float]  # order of CHANNELS
    hour_cum: tuple[float, ...]  # cumulative weights of the local hour (UTC+08:00)
    weekday: tuple[float, ...]  # Monday..Sunday multipliers
    views: float
    reactions: float
    comments: float
    posts: float
    quizzes: float
    shares: float
    live: float  # probability to attend the home community's weekly live session
    checkin: float  # probability of a daily check-in for points on an active day
    hazard: float  # base daily hazard of starting to disengage
    satisfaction: float  # mean of the latent satisfaction (standard normal scale)
    convert: float  # base probability to buy a policy during the simulation
    survey: float  # probability to answer a survey invitation
    redeem_days: float  # mean days between point redemptions (0: never)
    referral_days: float  # mean days between referrals sent (0: never)
    holder: float  # probability that a pre-existing member already holds a policy


ARCHETYPES: tuple[Archetype, ...] = (
    Archetype(
        name="lurker",
        share=0.45,
        sessions_per_day=0.32,
        channel_weights=(0.33, 0.45, 0.16, 0.02, 0.04),
        hour_cum=_hours({12: 0.8, 13: 0.6, 21: 1.2, 22: 1.4, 23: 0.8}),
        weekday=(0.9, 0.9, 0.9, 0.95, 1.0, 1.2, 1.25),
        views=0.3,
        reactions=0.12,
        comments=0.03,
        posts=0.01,
        quizzes=0.03,
        shares=0.03,
        live=0.02,
        checkin=0.05,
        hazard=0.0038,
        satisfaction=-0.1,
        convert=0.07,
        survey=0.2,
        redeem_days=300.0,
        referral_days=0.0,
        holder=0.30,
    ),
    Archetype(
        name="contributor",
        share=0.25,
        sessions_per_day=0.18,
        channel_weights=(0.55, 0.28, 0.12, 0.02, 0.03),
        hour_cum=_hours({8: 0.6, 12: 0.5, 19: 1.0, 20: 1.3, 21: 1.2}),
        weekday=(1.1, 1.1, 1.1, 1.1, 1.0, 0.8, 0.8),
        views=0.5,
        reactions=0.5,
        comments=0.35,
        posts=0.18,
        quizzes=0.12,
        shares=0.08,
        live=0.18,
        checkin=0.1,
        hazard=0.0019,
        satisfaction=0.2,
        convert=0.14,
        survey=0.45,
        redeem_days=60.0,
        referral_days=150.0,
        holder=0.40,
    ),
    Archetype(
        name="champion",
        share=0.08,
        sessions_per_day=0.2,
        channel_weights=(0.6, 0.22, 0.1, 0.05, 0.03),
        hour_cum=_hours({7: 0.5, 9: 0.5, 12: 0.7, 18: 0.7, 20: 1.2, 21: 1.2}, base=0.3),
        weekday=(1.0, 1.0, 1.0, 1.0, 1.0, 1.15, 1.15),
        views=0.8,
        reactions=0.9,
        comments=0.5,
        posts=0.35,
        quizzes=0.2,
        shares=0.25,
        live=0.5,
        checkin=0.2,
        hazard=0.0008,
        satisfaction=0.7,
        convert=0.28,
        survey=0.6,
        redeem_days=40.0,
        referral_days=30.0,
        holder=0.6,
    ),
    Archetype(
        name="deal_seeker",
        share=0.22,
        sessions_per_day=0.18,
        channel_weights=(0.3, 0.4, 0.1, 0.05, 0.15),
        hour_cum=_hours({7: 0.9, 8: 0.9, 12: 0.6, 20: 1.0, 21: 0.9}),
        weekday=(0.85, 0.85, 0.85, 0.9, 1.05, 1.35, 1.35),
        views=0.4,
        reactions=0.15,
        comments=0.05,
        posts=0.02,
        quizzes=0.15,
        shares=0.12,
        live=0.06,
        checkin=0.22,
        hazard=0.0042,
        satisfaction=-0.25,
        convert=0.2,
        survey=0.3,
        redeem_days=30.0,
        referral_days=300.0,
        holder=0.45,
    ),
)
ARCHETYPE_CUM: tuple[float, ...] = tuple(accumulate(a.share for a in ARCHETYPES))


@dataclass(frozen=True)
class Community:
    """A named community with a topic, an affine product line and a weekly live slot."""

    community_id: str
    product_line: str
    topics: tuple[str, ...]
    live_weekday: int  # 0 = Monday


COMMUNITIES: tuple[Community, ...] = (
    Community("c-health-tips", "health", ("wellness", "checkups", "nutrition", "claims"), 2),
    Community("c-car-owners", "auto", ("driving", "repairs", "ev", "accidents"), 3),
    Community("c-family-protection", "life", ("kids", "savings", "education", "wills"), 1),
    Community("c-travel-club", "travel", ("destinations", "visas", "delays", "deals"), 4),
    Community("c-home-safety", "property", ("renovation", "storms", "security", "moving"), 5),
    Community("c-active-living", "accident", ("running", "cycling", "injuries", "gear"), 6),
    Community("c-retirement-planning", "life", ("pensions", "annuities", "health", "tax"), 0),
    Community("c-new-parents", "health", ("pregnancy", "vaccines", "sleep", "schools"), 2),
)

CHANNELS: tuple[str, ...] = ("app", "mini_program", "web", "agent", "partner")
#: UTC offset (seconds) each channel's clients write ``occurred_at`` with.
CHANNEL_OFFSET: dict[str, int] = {
    "app": 8 * HOUR,
    "mini_program": 8 * HOUR,
    "agent": 8 * HOUR,
    "web": 0,
    "partner": 0,
}

PRODUCT_LINES: tuple[str, ...] = ("health", "accident", "auto", "travel", "life", "property")
#: Annual premium range in CNY (travel: per trip).
PREMIUM_RANGE: dict[str, tuple[float, float]] = {
    "health": (2000.0, 8000.0),
    "accident": (100.0, 600.0),
    "auto": (3000.0, 9000.0),
    "travel": (50.0, 300.0),
    "life": (3000.0, 20000.0),
    "property": (500.0, 3000.0),
}
CLAIM_RATE_PER_DAY: dict[str, float] = {
    "health": 0.004,
    "accident": 0.0015,
    "auto": 0.0025,
    "travel": 0.012,
    "life": 0.0,
    "property": 0.0012,
}
CLAIM_AMOUNT_RANGE: dict[str, tuple[float, float]] = {
    "health": (300.0, 20000.0),
    "accident": (500.0, 30000.0),
    "auto": (1000.0, 40000.0),
    "travel": (100.0, 5000.0),
    "life": (10000.0, 100000.0),
    "property": (800.0, 50000.0),
}
CONTENT_TYPES: tuple[str, ...] = ("article", "video", "guide", "calculator", "podcast")
DWELL_SECONDS: dict[str, float] = {
    "article": 80.0,
    "video": 170.0,
    "guide": 140.0,
    "calculator": 60.0,
    "podcast": 280.0,
}
