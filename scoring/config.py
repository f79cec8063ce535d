"""Every tunable of the scoring package, with its meaning and unit, in one frozen object."""

from __future__ import annotations

from dataclasses import dataclass

from scoring.errors import ConfigError

__all__ = ["ScoringConfig"]


@dataclass(frozen=True)
class ScoringConfig:
    """Scoring configuration. Durations are in event-time days unless a name says otherwise.

    Windows and labels
        ``churn_window_days``: a member churns when no activity is seen for this long
        after a snapshot, or a policy is cancelled or lapses within it.
        ``conversion_window_days``: a member without an active policy converts when a
        policy is bought within this long after a snapshot.
        ``allowed_lateness_seconds``: a partition's watermark trails the largest event
        time it has seen by this much, so events this late still count before timers fire.
        ``snapshot_interval_days``: least time between two churn snapshots of a member
        (the snapshots that later receive a delayed label and train the models).
        ``conversion_snapshot_interval_days``: the same for conversion snapshots.
        ``max_pending_snapshots``: bound on a member's unlabelled snapshots (oldest dropped).

    Silence
        ``silence_boundaries_days``: days of silence at which a member is re-scored
        without an event. Members silent for less than ``churn_window_days`` also get a
        churn snapshot there, so the models see silent members, not only active ones.
        ``at_risk_silence_days``: silence that moves a policy holder or engaged member to
        the ``at_risk`` lifecycle stage.
        ``intent_content_views``: decayed views of product content (guides, calculators;
        short half-life) that count as purchase intent for the lifecycle.
        ``lapsed_label_windows``: silences, in churn windows, past the churn window at
        which a lapsed member is re-scored and gets a churn snapshot too (labelled 0 if
        the member comes back within the window): the models then learn who returns
        after a long silence instead of extrapolating to members they never saw
        (most of a retail base, whose purchase cycle is longer than any window). Empty:
        snapshots stop at the churn window.

    Decay
        ``short_half_life_days`` / ``engagement_half_life_days`` / ``long_half_life_days``:
        half-lives of the decayed activity sums kept per interaction kind. The ratio of
        short to long is the activity trend; engagement uses its own half-life.

    Engagement
        ``tier_casual_min`` / ``tier_engaged_min`` / ``tier_champion_min``: score (0-100)
        where each tier starts; below casual is ``dormant``.
        ``dormant_activity_floor``: decayed weighted activity below which a member is
        ``dormant`` whatever the population looks like.
        ``population_half_life_days``: forgetting of the population histogram used to
        turn raw engagement into a percentile.
        ``min_population``: members needed in the histogram before percentiles are used;
        before that a fixed saturating curve with scale ``engagement_scale`` serves.

    Models
        ``min_labels_for_model``: labels (and at least a tenth of it of each class) a
        model must have learned before it may replace the prior; it replaces it once it
        ranks the labels both were scored on at least as well (ROC AUC), and gives way
        to it again while it trails by more than ``fallback_auc_margin``.
        ``prior_auc_tolerance``: how far below the prior's AUC a champion may be and
        still replace it (0: never rank worse than the prior).
        ``reservoir_labels`` / ``reservoir_half_life_labels``: the champion's sample of
        labelled examples and its forgetting (weights double every half-life labels);
        ``challenger_reservoir_labels`` / ``challenger_reservoir_half_life_labels``: the
        same for the challenger (smaller, quicker to forget: it adapts to drift).
        ``refit_every_labels``: labels between two refits of the champion (a quarter of
        it for the smaller challenger).
        ``l2``: L2 penalty of the logistic regressions on standardised features.
        ``risk_medium_min`` / ``risk_high_min``: churn probability where the ``medium``
        and ``high`` risk bands start (low < 0.3 <= medium < 0.6 <= high by default).
        ``top_drivers``: number of signed contributions reported per score.
        ``seed``: seeds every random choice (reservoir sampling); equal seeds and equal
        event sequences give equal outputs.

    Live quality and drift
        ``metrics_half_life_labels``: forgetting (in labels) of the progressive
        validation metrics. ``drift_delta``: ADWIN confidence on the error stream.
        ``challenger_half_life_labels``: forgetting of the recent log losses compared for
        promotion; ``promotion_margin``: relative log-loss improvement a challenger needs.
        Labels arrive in settlement order, which clusters them by kind (a day's expired
        silences, a day's returns); a short window would reward a fast learner for
        tracking that mix rather than for being better.
        ``drift_patience_labels``: labels after a drift during which a promotion may happen.
        ``promote_challenger``: whether a drift may promote the challenger at all (off by
        default). Off, drifts are still detected and reported, no challenger is trained,
        and the champion adapts through its own refits. On a real purchase log the drifts
        were shifts of the label mix (a cohort ageing), and promoting the challenger
        fitted to the recent mix cost 0.004 to 0.020 churn AUC; on the simulator it was
        worth 0.001 conversion AUC (README, "How the models learn").

    Idempotency
        ``recent_event_ids``: size of the per-member ring of applied event ids.
    """

    churn_window_days: float = 30.0
    conversion_window_days: float = 90.0
    allowed_lateness_seconds: float = 3600.0
    silence_boundaries_days: tuple[float, ...] = (7.0, 14.0, 21.0, 30.0, 60.0)
    min_labels_for_model: int = 200
    seed: int = 0

    snapshot_interval_days: float = 7.0
    conversion_snapshot_interval_days: float = 28.0
    max_pending_snapshots: int = 8
    at_risk_silence_days: float = 14.0
    lapsed_label_windows: tuple[float, ...] = (1.5, 2.0, 3.0, 4.0)
    intent_content_views: float = 3.0

    short_half_life_days: float = 7.0
    engagement_half_life_days: float = 14.0
    long_half_life_days: float = 30.0

    tier_casual_min: float = 25.0
    tier_engaged_min: float = 60.0
    tier_champion_min: float = 90.0
    dormant_activity_floor: float = 0.5
    population_half_life_days: float = 90.0
    min_population: int = 100
    engagement_scale: float = 20.0

    reservoir_labels: int = 8000
    reservoir_half_life_labels: float = 50_000.0
    challenger_reservoir_labels: int = 1000
    challenger_reservoir_half_life_labels: float = 3_000.0
    refit_every_labels: int = 1000
    fallback_auc_margin: float = 0.01
    prior_auc_tolerance: float = 0.0
    l2: float = 1.0
    risk_medium_min: float = 0.3
    risk_high_min: float = 0.6
    top_drivers: int = 5

    metrics_half_life_labels: float = 5000.0
    drift_delta: float = 0.002
    challenger_half_life_labels: float = 5000.0
    promotion_margin: float = 0.02
    drift_patience_labels: int = 2000
    promote_challenger: bool = False

    recent_event_ids: int = 64

    def __post_init__(self) -> None:
        positive = {
            "churn_window_days": self.churn_window_days,
            "conversion_window_days": self.conversion_window_days,
            "snapshot_interval_days": self.snapshot_interval_days,
            "conversion_snapshot_interval_days": self.conversion_snapshot_interval_days,
            "at_risk_silence_days": self.at_risk_silence_days,
            "intent_content_views": self.intent_content_views,
            "short_half_life_days": self.short_half_life_days,
            "engagement_half_life_days": self.engagement_half_life_days,
            "long_half_life_days": self.long_half_life_days,
            "population_half_life_days": self.population_half_life_days,
            "engagement_scale": self.engagement_scale,
            "reservoir_half_life_labels": self.reservoir_half_life_labels,
            "challenger_reservoir_half_life_labels": self.challenger_reservoir_half_life_labels,
            "metrics_half_life_labels": self.metrics_half_life_labels,
            "challenger_half_life_labels": self.challenger_half_life_labels,
            "drift_delta": self.drift_delta,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value!r}")
        if self.allowed_lateness_seconds < 0:
            raise ConfigError("allowed_lateness_seconds must be >= 0")
        if not self.silence_boundaries_days or any(b <= 0 for b in self.silence_boundaries_days):
            raise ConfigError("silence_boundaries_days must be a non-empty tuple of days > 0")
        if list(self.silence_boundaries_days) != sorted(set(self.silence_boundaries_days)):
            raise ConfigError("silence_boundaries_days must be strictly increasing")
        lapsed = list(self.lapsed_label_windows)
        if lapsed != sorted(set(lapsed)) or any(k <= 1.0 for k in lapsed):
            raise ConfigError("lapsed_label_windows must be strictly increasing and > 1")
        if not self.short_half_life_days < self.long_half_life_days:
            raise ConfigError("short_half_life_days must be below long_half_life_days")
        if not 0 < self.risk_medium_min < self.risk_high_min < 1:
            raise ConfigError("need 0 < risk_medium_min < risk_high_min < 1")
        if not 0 < self.tier_casual_min < self.tier_engaged_min < self.tier_champion_min <= 100:
            raise ConfigError("need 0 < tier_casual_min < tier_engaged_min < tier_champion_min")
        for name, count in {
            "min_labels_for_model": self.min_labels_for_model,
            "max_pending_snapshots": self.max_pending_snapshots,
            "top_drivers": self.top_drivers,
            "recent_event_ids": self.recent_event_ids,
            "min_population": self.min_population,
            "drift_patience_labels": self.drift_patience_labels,
            "refit_every_labels": self.refit_every_labels,
        }.items():
            if count < 1:
                raise ConfigError(f"{name} must be >= 1, got {count!r}")
        if self.l2 < 0 or self.dormant_activity_floor < 0 or self.promotion_margin < 0:
            raise ConfigError("l2, dormant_activity_floor and promotion_margin must be >= 0")
        if self.reservoir_labels < 2 or self.challenger_reservoir_labels < 2:
            raise ConfigError("reservoir_labels and challenger_reservoir_labels must be >= 2")
        if self.fallback_auc_margin < 0 or self.prior_auc_tolerance < 0:
            raise ConfigError("fallback_auc_margin and prior_auc_tolerance must be >= 0")

    @property
    def half_lives_seconds(self) -> tuple[float, float, float]:
        """(short, engagement, long) half-lives in seconds, the layout of decayed sums."""
        return (
            self.short_half_life_days * 86_400.0,
            self.engagement_half_life_days * 86_400.0,
            self.long_half_life_days * 86_400.0,
        )

    @property
    def timer_boundaries_days(self) -> tuple[float, ...]:
        """Every silence length that needs a timer: re-scoring, at_risk, lapse, lapsed labels."""
        extra = {self.at_risk_silence_days, self.churn_window_days}
        extra.update(self.lapsed_label_days)
        return tuple(sorted(set(self.silence_boundaries_days) | extra))

    @property
    def lapsed_label_days(self) -> tuple[float, ...]:
        """Silences (days) past the churn window that take a churn snapshot."""
        return tuple(k * self.churn_window_days for k in self.lapsed_label_windows)

    @property
    def churn_label_max_silence_days(self) -> float:
        """Churn snapshots are taken of members silent for less than this (or exactly at
        a lapsed-label boundary)."""
        days = self.lapsed_label_days
        return days[-1] if days else self.churn_window_days
