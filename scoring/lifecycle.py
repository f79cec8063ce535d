"""The customer lifecycle: potential, intent, decision, loyal, at_risk, lapsed, reactivated.

Pure transition rules; the engine records each change of stage once, as a
:class:`~scoring.records.LifecycleTransition` naming the event type that
caused it (``"silence"`` for a silence timer, ``"churn_risk"`` for a score).

Rules, in the order they are tried:

1. A cancellation or lapse that leaves no active policy: any stage -> ``lapsed``.
2. Activity from a ``lapsed`` member: -> ``reactivated`` (rules 3-5 may then move on).
3. ``policy_purchased`` / ``policy_renewed``: -> ``loyal``; so does any event of a
   potential / intent / decision member found to hold a policy bought before the
   events began (a claim names it).
4. ``application_started`` without a policy, from potential / intent / reactivated:
   -> ``decision``.
5. Intent without a policy (a quote, or heavy product content: guides and
   calculators), from potential / reactivated: -> ``intent``.
6. Activity from ``at_risk`` while churn risk is not high: back to the stage the
   facts support (loyal with a policy, else decision / intent / potential).
7. Churn risk becomes high, or silence reaches ``at_risk_silence_days`` (14), for a
   member worth keeping (a policy holder, an engaged member, or anyone past
   ``potential``): -> ``at_risk``.
8. Silence reaches the churn window (30 days): -> ``lapsed``.

A member's first event sets the initial stage (recorded from ``""``).

>>> facts = Facts(has_policy=False, engaged=False, intent=True, risk_high=False)
>>> on_event("potential", "quote_requested", True, False, facts)
['intent']
>>> on_event("intent", "application_started", True, False, facts)
['decision']
>>> holder = Facts(has_policy=True, engaged=False, intent=False, risk_high=False)
>>> on_event("decision", "policy_purchased", True, False, holder)
['loyal']
>>> on_silence("loyal", 14.0, holder, at_risk_days=14.0, churn_days=30.0)
['at_risk']
>>> on_silence("at_risk", 30.0, holder, at_risk_days=14.0, churn_days=30.0)
['lapsed']
>>> on_event("lapsed", "policy_renewed", True, False, holder)
['reactivated', 'loyal']
>>> gone = Facts(has_policy=False, engaged=False, intent=False, risk_high=False)
>>> on_event("loyal", "policy_lapsed", False, True, gone)
['lapsed']
>>> on_event("potential", "content_viewed", True, False, gone)
[]
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Stage", "Facts", "STAGES", "initial_stage", "on_event", "on_silence", "on_score"]


class Stage(StrEnum):
    """Lifecycle stages."""

    POTENTIAL = "potential"
    INTENT = "intent"
    DECISION = "decision"
    LOYAL = "loyal"
    AT_RISK = "at_risk"
    LAPSED = "lapsed"
    REACTIVATED = "reactivated"


STAGES: tuple[str, ...] = tuple(stage.value for stage in Stage)

_P, _I, _D, _L = Stage.POTENTIAL.value, Stage.INTENT.value, Stage.DECISION.value, Stage.LOYAL.value
_R, _X, _RE = Stage.AT_RISK.value, Stage.LAPSED.value, Stage.REACTIVATED.value
_PAST_POTENTIAL = frozenset({_I, _D, _L, _RE})


@dataclass(frozen=True, slots=True)
class Facts:
    """What the rules need to know about a member, read after the event was applied."""

    has_policy: bool
    engaged: bool
    """Engagement tier is engaged or champion."""
    intent: bool
    """A recent quote or application, or heavy product content."""
    risk_high: bool
    """Churn risk band is high."""


def _worth_keeping(stage: str, facts: Facts) -> bool:
    return facts.has_policy or facts.engaged or stage in _PAST_POTENTIAL


def _supported(facts: Facts, applying: bool) -> str:
    if facts.has_policy:
        return _L
    if applying:
        return _D
    return _I if facts.intent else _P


def initial_stage() -> str:
    """The stage a member starts from before their first event is applied."""
    return _P


def on_event(
    stage: str, event_type: str, is_activity: bool, last_policy_ended: bool, facts: Facts
) -> list[str]:
    """Stages ``stage`` passes through because of one applied event (empty: no change)."""
    path: list[str] = []
    current = stage
    if last_policy_ended:
        return [] if current == _X else [_X]
    if current == _X and is_activity:
        current = _RE
        path.append(current)
    target = current
    if event_type in ("policy_purchased", "policy_renewed"):
        target = _L
    elif facts.has_policy:
        if current in (_P, _I, _D):  # a policy bought before the events began (a claim)
            target = _L
    elif event_type == "application_started" and current in (_P, _I, _RE):
        target = _D
    elif (event_type == "quote_requested" or facts.intent) and current in (_P, _RE):
        target = _I
    if target == current and current == _R and is_activity and not facts.risk_high:
        target = _supported(facts, event_type == "application_started")
    if target != current:
        path.append(target)
        current = target
    path.extend(on_score(current, facts))
    return path


def on_silence(
    stage: str, silent_days: float, facts: Facts, *, at_risk_days: float, churn_days: float
) -> list[str]:
    """Stages ``stage`` passes through after ``silent_days`` without activity."""
    if stage == _X:
        return []
    if silent_days >= churn_days:
        return [_X]
    if stage != _R and silent_days >= at_risk_days and _worth_keeping(stage, facts):
        return [_R]
    return on_score(stage, facts)


def on_score(stage: str, facts: Facts) -> list[str]:
    """``[at_risk]`` when churn risk became high for a member worth keeping."""
    if facts.risk_high and stage not in (_R, _X) and _worth_keeping(stage, facts):
        return [_R]
    return []
