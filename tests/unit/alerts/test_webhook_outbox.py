"""Webhook configuration (https, signing secret by reference) and the outbox rows: which
alerts go out, and that a member id never reaches the outbox in clear."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from alerts_helpers import T0

from scoring.alerts import AlertRecord, AlertRuleError, RuleSet, alert_id
from sinks.privacy import Pseudonymizer
from sinks.sealing import Sealer
from streams.webhooks import WebhookConfigError, outbox_rows

pytestmark = pytest.mark.unit

KEY = b"outbox-test-key-0123456789abcdef"
PSEUDONYM = Pseudonymizer(KEY)
HOOK = {"url": "https://crm.example/hook", "secret_env": "CRM_HOOK_SECRET"}
MEMBER = "member-4711@example.com"


def _rules(send_member_id: bool = False, **hook: Any) -> RuleSet:
    return RuleSet.parse(
        {
            "webhooks": {"crm": {**HOOK, **hook}},
            "rules": [
                {
                    "name": "churn_vip",
                    "kind": "churn_risk",
                    "severity": "critical",
                    "enter": 0.7,
                    "leave": 0.5,
                    "webhook": "crm",
                    "send_member_id": send_member_id,
                },
                {
                    "name": "community_nps",
                    "kind": "community_nps_low",
                    "severity": "warning",
                    "enter": 0,
                    "leave": 10,
                    "webhook": "crm",
                },
            ],
        }
    )


def _alert(status: str = "fired", subject: str = MEMBER, **fields: Any) -> AlertRecord:
    member = not subject.startswith("community")
    rule = "churn_vip" if member else "community_nps"
    kind = "member" if member else "community"
    values: dict[str, Any] = {
        "alert_id": alert_id(rule, kind, subject, T0, status),
        "rule": rule,
        "severity": "critical",
        "status": status,
        "subject_type": kind,
        "subject_id": subject,
        "value": 0.83,
        "threshold": 0.7,
        "raised_at": T0,
        "episode_start": T0,
        "context": {"annual_premium": 6000.0},
        "webhook": "crm",
    }
    values.update(fields)
    return AlertRecord(**values)


def _everyone(member_id: str) -> bool:
    return True


def test_plain_http_is_refused_unless_allowed() -> None:
    with pytest.raises(AlertRuleError, match="crm.*https"):
        _rules(url="http://crm.example/hook")
    assert _rules(url="http://127.0.0.1:8080/hook", allow_http=True).webhooks["crm"].allow_http


def test_a_webhook_needs_a_secret_by_environment_reference() -> None:
    with pytest.raises(AlertRuleError, match="secret_env"):
        RuleSet.parse({"webhooks": {"crm": {"url": "https://crm.example/hook"}}})
    with pytest.raises(AlertRuleError, match="secret_env"):  # a name, not the secret itself
        _rules(secret_env="correct horse battery staple")


def test_a_fired_member_alert_names_the_member_by_pseudonym_only() -> None:
    rows = outbox_rows([_alert()], _rules(), PSEUDONYM, _everyone, partition_of={MEMBER: 3})
    assert len(rows) == 1
    row = rows[0]
    assert MEMBER not in json.dumps(row, default=str)  # nowhere in the row, payload included
    payload = json.loads(row["payload"])
    assert payload["member_pseudonym"] == payload["subject_id"] == PSEUDONYM(MEMBER)
    assert "member_id" not in payload and row["member_sealed"] == ""
    assert row["alert_id"] == payload["alert_id"] == _alert().alert_id  # Idempotency-Key
    assert (row["webhook"], row["source_partition"]) == ("crm", 3)
    assert payload["context"] == {"annual_premium": 6000.0} and payload["value"] == 0.83


def test_only_fired_alerts_with_a_webhook_go_out() -> None:
    alerts = [_alert("resolved"), _alert(webhook=None, alert_id="a-none")]
    assert outbox_rows(alerts, _rules(), PSEUDONYM, _everyone) == []


def test_marketing_consent_withdrawn_suppresses_the_webhook() -> None:
    def consent(member_id: str) -> bool:
        return member_id != MEMBER

    other = _alert(subject="m-2", alert_id="a-2")
    rows = outbox_rows([_alert(), other], _rules(), PSEUDONYM, consent)
    assert [r["alert_id"] for r in rows] == ["a-2"]


def test_a_rule_may_opt_in_to_the_member_id_which_is_stored_sealed() -> None:
    sealer = Sealer.from_key(KEY)
    rows = outbox_rows([_alert()], _rules(send_member_id=True), PSEUDONYM, _everyone, sealer=sealer)
    assert MEMBER not in json.dumps(rows, default=str)
    assert sealer.open(rows[0]["member_sealed"]).decode() == MEMBER
    with pytest.raises(WebhookConfigError, match="sealer"):
        outbox_rows([_alert()], _rules(send_member_id=True), PSEUDONYM, _everyone)


def test_community_alerts_keep_their_community_id() -> None:
    rows = outbox_rows(
        [_alert(subject="community-7")],
        _rules(),
        PSEUDONYM,
        lambda m: False,  # consent is about members
        now=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert rows[0]["subject_id"] == "community-7" and rows[0]["source_partition"] == -1
    assert json.loads(rows[0]["payload"])["member_pseudonym"] is None
    assert rows[0]["created_at"] == datetime(2026, 1, 1)  # naive UTC, as ClickHouse takes it
