"""Alert rules: pydantic models of the TOML rules file, validated with errors naming the rule.

File format (see ``default_rules.toml``)::

    [webhooks.ops]                      # optional, referenced by a rule's ``webhook``
    url = "https://alerts.example/hook"
    timeout_seconds = 5                 # > 0, default 5
    max_attempts = 3                    # >= 1, default 3

    [[rules]]
    name = "churn_premium"              # unique, [a-z0-9_]+; community rules start with community_
    kind = "churn_risk"                 # see the rule classes below
    severity = "critical"               # critical | warning | info
    description = "..."                 # optional
    dwell_minutes = 0                   # condition must hold this long (event time) to fire
    cooldown_hours = 24                 # after a resolve, no new fire before this has passed
    webhook = "ops"                     # optional
    enter = 0.7                         # ...then the kind's own fields
    leave = 0.5
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from scoring.errors import ScoringError

__all__ = [
    "AlertRuleError",
    "Severity",
    "Stage",
    "Webhook",
    "ChurnRiskRule",
    "EngagementDropRule",
    "LifecycleRegressionRule",
    "CommunityEngagementDropRule",
    "CommunityNpsLowRule",
    "Rule",
    "MemberRule",
    "CommunityRule",
    "RuleSet",
    "load_rules",
    "default_rules",
]

Severity = Literal["critical", "warning", "info"]
Stage = Literal["potential", "intent", "decision", "loyal", "at_risk", "lapsed", "reactivated"]


class AlertRuleError(ScoringError, ValueError):
    """The rules file is unreadable or a rule / webhook is invalid (the message names it)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Webhook(_Strict):
    """Where a rule's alerts are also posted (the delivery itself is the sink's job)."""

    url: Annotated[str, Field(pattern=r"^https?://\S+$")]
    timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 5.0
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 3


def _at_most(model: BaseModel, lower: str, upper: str) -> None:
    """Refuse ``model.<lower>`` above ``model.<upper>`` (an unset ``lower`` passes)."""
    low, high = getattr(model, lower), getattr(model, upper)
    if low is not None and low > high:
        raise ValueError(f"{lower} ({low}) must be <= {upper} ({high})")


class _RuleBase(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9_]+$", max_length=64)]
    severity: Severity
    description: str = ""
    dwell_minutes: Annotated[float, Field(ge=0)] = 0.0
    cooldown_hours: Annotated[float, Field(ge=0)] = 0.0
    webhook: str | None = None


class ChurnRiskRule(_RuleBase):
    """Fires when churn_probability >= enter (and premium >= min), resolves at <= leave."""

    kind: Literal["churn_risk"]
    enter: Annotated[float, Field(gt=0, le=1)]
    leave: Annotated[float, Field(ge=0, lt=1)]
    min_annual_premium: Annotated[float, Field(ge=0)] = 0.0

    @model_validator(mode="after")
    def _hysteresis(self) -> ChurnRiskRule:
        if self.leave >= self.enter:
            raise ValueError(f"leave ({self.leave}) must be below enter ({self.enter})")
        return self


class EngagementDropRule(_RuleBase):
    """Fires when engagement fell >= points below the member's max of the last ``days`` days.

    Resolves when the drop is < ``leave_points`` (default: ``points``).
    """

    kind: Literal["engagement_drop"]
    points: Annotated[float, Field(gt=0, le=100)]
    days: Annotated[float, Field(gt=0, le=365)]
    leave_points: Annotated[float, Field(gt=0, le=100)] | None = None

    @model_validator(mode="after")
    def _hysteresis(self) -> EngagementDropRule:
        _at_most(self, "leave_points", "points")
        return self

    @property
    def resolve_points(self) -> float:
        return self.points if self.leave_points is None else self.leave_points


class LifecycleRegressionRule(_RuleBase):
    """Fires on a move from one of ``from_stages`` to ``to_stage``; resolves on leaving it."""

    kind: Literal["lifecycle_regression"]
    from_stages: Annotated[tuple[Stage, ...], Field(min_length=1)]
    to_stage: Stage

    @model_validator(mode="after")
    def _distinct(self) -> LifecycleRegressionRule:
        if self.to_stage in self.from_stages:
            raise ValueError(f"to_stage ({self.to_stage}) must not be one of from_stages")
        return self


class CommunityEngagementDropRule(_RuleBase):
    """Fires when a day's engagement index is >= percent % below the mean of previous days."""

    kind: Literal["community_engagement_drop"]
    percent: Annotated[float, Field(gt=0, le=100)]
    baseline_days: Annotated[int, Field(ge=1, le=366)] = 28
    min_baseline_days: Annotated[int, Field(ge=1)] = 7
    leave_percent: Annotated[float, Field(ge=0, le=100)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> CommunityEngagementDropRule:
        _at_most(self, "min_baseline_days", "baseline_days")
        _at_most(self, "leave_percent", "percent")
        return self

    @property
    def resolve_percent(self) -> float:
        return self.percent if self.leave_percent is None else self.leave_percent


class CommunityNpsLowRule(_RuleBase):
    """Fires when a community's weekly NPS (-100..100) is below enter; resolves at >= leave."""

    kind: Literal["community_nps_low"]
    enter: Annotated[float, Field(ge=-100, le=100)]
    leave: Annotated[float, Field(ge=-100, le=100)]
    min_responses: Annotated[int, Field(ge=1)] = 1

    @model_validator(mode="after")
    def _hysteresis(self) -> CommunityNpsLowRule:
        if self.leave <= self.enter:
            raise ValueError(f"leave ({self.leave}) must be above enter ({self.enter})")
        return self


MemberRule = ChurnRiskRule | EngagementDropRule | LifecycleRegressionRule
CommunityRule = CommunityEngagementDropRule | CommunityNpsLowRule
Rule = Annotated[MemberRule | CommunityRule, Field(discriminator="kind")]
_RULE: TypeAdapter[MemberRule | CommunityRule] = TypeAdapter(Rule)
_COMMUNITY_KINDS = ("community_engagement_drop", "community_nps_low")
_RULE_KIND_TAGS = {"churn_risk", "engagement_drop", "lifecycle_regression", *_COMMUNITY_KINDS}


def _explain(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"] if p not in _RULE_KIND_TAGS)
        parts.append(f"{loc or 'rule'}: {item['msg']}")
    return "; ".join(parts)


class RuleSet(_Strict):
    """Validated rules and webhooks; build with :meth:`parse`, :func:`load_rules`."""

    rules: tuple[MemberRule | CommunityRule, ...] = ()
    webhooks: dict[str, Webhook] = Field(default_factory=dict)

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> RuleSet:
        """Validate a decoded rules file; raise :class:`AlertRuleError` naming the culprit."""
        unknown = set(data) - {"rules", "webhooks"}
        if unknown:
            raise AlertRuleError(f"unknown top-level keys: {sorted(unknown)}")
        webhooks: dict[str, Webhook] = {}
        for name, raw in dict(data.get("webhooks", {})).items():
            try:
                webhooks[name] = Webhook.model_validate(raw)
            except ValidationError as exc:
                raise AlertRuleError(f"webhook {name!r}: {_explain(exc)}") from None
        rules: list[MemberRule | CommunityRule] = []
        for index, raw in enumerate(data.get("rules", [])):
            label = raw.get("name", f"#{index}") if isinstance(raw, Mapping) else f"#{index}"
            try:
                rule = _RULE.validate_python(raw)
            except ValidationError as exc:
                raise AlertRuleError(f"rule {label!r}: {_explain(exc)}") from None
            if rule.name in {r.name for r in rules}:
                raise AlertRuleError(f"rule {rule.name!r}: name: duplicate rule name")
            if (rule.kind in _COMMUNITY_KINDS) != rule.name.startswith("community_"):
                raise AlertRuleError(
                    f"rule {rule.name!r}: name: community rules, and only they, "
                    "must start with 'community_'"
                )
            if rule.webhook is not None and rule.webhook not in webhooks:
                raise AlertRuleError(
                    f"rule {rule.name!r}: webhook: unknown webhook {rule.webhook!r} "
                    f"(defined: {sorted(webhooks)})"
                )
            rules.append(rule)
        return cls(rules=tuple(rules), webhooks=webhooks)

    def of_kind(self, *kinds: str) -> list[MemberRule | CommunityRule]:
        """The rules of these kinds, in file order."""
        return [r for r in self.rules if r.kind in kinds]


def load_rules(path: str | Path) -> RuleSet:
    """Read and validate a TOML rules file."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise AlertRuleError(f"cannot read rules file {str(path)!r}: {exc}") from None
    return RuleSet.parse(data)


def default_rules() -> RuleSet:
    """The shipped ``default_rules.toml`` (package data)."""
    text = resources.files("scoring.alerts").joinpath("default_rules.toml").read_text("utf-8")
    return RuleSet.parse(tomllib.loads(text))
