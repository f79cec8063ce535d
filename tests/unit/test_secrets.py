"""Secrets never show: not in the settings' repr, not in /status, and one key per deployment."""

from __future__ import annotations

import logging

import pytest

from streams.config import Settings, SettingsError, redact_url
from streams.runtime import Runtime

pytestmark = pytest.mark.unit

KEY = "pseudonym-key-SECRET-0123456789abcdef"
CH_PASSWORD = "ch-pass-SECRET-42"


def test_repr_hides_the_pseudonym_key_and_the_clickhouse_password() -> None:
    settings = Settings(
        pseudonym_key=KEY, clickhouse_url=f"https://pulse:{CH_PASSWORD}@ch.internal:8443"
    )
    logged = logging.makeLogRecord({"msg": "settings: %s", "args": (settings,)}).getMessage()
    for text in (repr(settings), str(settings), f"{settings}", logged):
        assert KEY not in text and CH_PASSWORD not in text, text
        assert "ch.internal:8443" in text and "pulse:***@" in text  # the rest stays readable


def test_repr_hides_kafka_credentials() -> None:
    settings = Settings(
        kafka_bootstrap="kafka:9093",
        pseudonym_key=KEY,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="pulse",
        kafka_sasl_password="sasl-SECRET-pw",
        kafka_ssl_key_password="tls-key-SECRET-pw",
    )
    text = repr(settings)
    assert "sasl-SECRET-pw" not in text and "tls-key-SECRET-pw" not in text
    assert "kafka_sasl_username='pulse'" in text and "kafka_sasl_password='***'" in text


def test_an_empty_secret_shows_as_empty() -> None:
    """Masking says whether a secret is set, never what it is."""
    assert "pseudonym_key=''" in repr(Settings())


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://u:p4ss@h:8443/db", "https://u:***@h:8443/db"),
        ("http://h:8123?user=u&password=p4ss", "http://h:8123?user=u&password=***"),
        ("http://h:8123", "http://h:8123"),
        ("", ""),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_status_shows_no_secret() -> None:
    settings = Settings(
        kafka_bootstrap="kafka:9093",
        pseudonym_key=KEY,
        clickhouse_url=f"https://pulse:{CH_PASSWORD}@ch.internal:8443",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="pulse",
        kafka_sasl_password="sasl-SECRET-pw",
    )
    status = repr(Runtime(settings, serve_http=False, announce=False).status())
    assert KEY not in status and CH_PASSWORD not in status and "sasl-SECRET-pw" not in status
    assert "ch.internal:8443" in status


def test_an_external_broker_needs_the_deployment_key() -> None:
    with pytest.raises(SettingsError, match="PULSE_PSEUDONYM_KEY"):
        Settings.from_env({"PULSE_KAFKA_BOOTSTRAP": "kafka:9092"})
    with pytest.raises(SettingsError, match="PULSE_PSEUDONYM_KEY"):
        Settings(kafka_bootstrap="kafka:9092").validate()
    ok = Settings.from_env({"PULSE_KAFKA_BOOTSTRAP": "kafka:9092", "PULSE_PSEUDONYM_KEY": KEY})
    assert ok.pseudonym_key == KEY


def test_the_embedded_default_still_generates_a_key() -> None:
    assert Settings.from_env({}).pseudonym_key == ""


def test_a_short_key_is_refused_without_showing_it() -> None:
    with pytest.raises(SettingsError, match="PULSE_PSEUDONYM_KEY") as raised:
        Settings.from_env({"PULSE_PSEUDONYM_KEY": "short-secret"})
    assert "short-secret" not in str(raised.value)
