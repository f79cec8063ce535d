"""Rules file validation and the shipped defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from schemas.errors import PulseError
from scoring.alerts import AlertRuleError, RuleSet, default_rules, load_rules
from scoring.alerts.rules import ChurnRiskRule, CommunityEngagementDropRule

pytestmark = pytest.mark.unit

CHURN = {"name": "churn_vip", "kind": "churn_risk", "severity": "critical"}


def parse_error(data: dict[str, Any]) -> str:
    with pytest.raises(AlertRuleError) as info:
        RuleSet.parse(data)
    assert isinstance(info.value, PulseError)
    return str(info.value)


def test_default_rules_load() -> None:
    rules = default_rules()
    kinds = [r.kind for r in rules.rules]
    assert kinds == [
        "churn_risk",
        "engagement_drop",
        "lifecycle_regression",
        "community_engagement_drop",
        "community_nps_low",
    ]
    churn = rules.rules[0]
    assert isinstance(churn, ChurnRiskRule)
    assert (churn.enter, churn.leave, churn.min_annual_premium) == (0.7, 0.5, 3000)
    community = rules.rules[3]
    assert isinstance(community, CommunityEngagementDropRule)
    assert (community.percent, community.baseline_days) == (30, 28)
    assert churn.webhook is None and rules.webhooks == {}  # opt-in: defaults send nowhere


def test_load_rules_from_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        '[webhooks.ops]\nurl = "https://x.invalid/h"\nsecret_env = "OPS_HOOK_SECRET"\n\n'
        '[[rules]]\nname = "churn_vip"\nkind = "churn_risk"\nseverity = "info"\n'
        'enter = 0.8\nleave = 0.6\nwebhook = "ops"\n'
    )
    rules = load_rules(path)
    assert rules.rules[0].name == "churn_vip"
    assert rules.webhooks["ops"].max_attempts == 3


def test_unreadable_file_is_a_rule_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rules]\n")
    with pytest.raises(AlertRuleError, match="cannot read"):
        load_rules(bad)
    with pytest.raises(AlertRuleError, match="cannot read"):
        load_rules(tmp_path / "missing.toml")


def test_leave_must_be_below_enter() -> None:
    message = parse_error({"rules": [{**CHURN, "enter": 0.7, "leave": 0.7}]})
    assert "churn_vip" in message and "leave" in message and "enter" in message


def test_unknown_webhook() -> None:
    message = parse_error({"rules": [{**CHURN, "enter": 0.7, "leave": 0.5, "webhook": "nope"}]})
    assert "churn_vip" in message and "webhook" in message and "nope" in message


def test_duplicate_names() -> None:
    rule = {**CHURN, "enter": 0.7, "leave": 0.5}
    message = parse_error({"rules": [rule, rule]})
    assert "churn_vip" in message and "duplicate" in message


def test_bad_severity_names_rule_and_field() -> None:
    message = parse_error({"rules": [{**CHURN, "severity": "fatal", "enter": 0.7, "leave": 0.5}]})
    assert "churn_vip" in message and "severity" in message


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"name": "drop", "kind": "community_engagement_drop", "percent": 30}, "community_"),
        ({"name": "community_x", "kind": "churn_risk", "enter": 0.7, "leave": 0.5}, "name"),
        ({"name": "Bad-Name", "kind": "churn_risk", "enter": 0.7, "leave": 0.5}, "name"),
        (
            {"name": "x", "kind": "engagement_drop", "points": 10, "days": 7, "leave_points": 20},
            "leave_points",
        ),
        (
            {
                "name": "x",
                "kind": "lifecycle_regression",
                "from_stages": ["loyal"],
                "to_stage": "loyal",
            },
            "to_stage",
        ),
        ({"name": "community_n", "kind": "community_nps_low", "enter": 0, "leave": -5}, "leave"),
        ({"name": "x", "kind": "teleport"}, "kind"),
        ({"name": "x", "kind": "churn_risk", "enter": 0.7, "leave": 0.5, "extra": 1}, "extra"),
    ],
)
def test_invalid_rules_name_rule_and_field(rule: dict[str, Any], field: str) -> None:
    message = parse_error({"rules": [{"severity": "info", **rule}]})
    assert repr(rule["name"]) in message and field in message


def test_bad_webhook_is_named() -> None:
    message = parse_error({"webhooks": {"ops": {"url": "ftp://nope"}}})
    assert "'ops'" in message and "url" in message
