"""Settings come from the environment, with clear errors for values that cannot work."""

from __future__ import annotations

import pytest

from streams.config import SETTINGS_DOC, Settings, SettingsError

pytestmark = pytest.mark.unit


def test_defaults_are_embedded() -> None:
    settings = Settings.from_env({})
    assert settings.embedded_kafka and settings.embedded_clickhouse
    assert settings.partitions == 4 and settings.topic("scores") == "pulse.scores"
    assert settings.churn_window_days == 30 and settings.conversion_window_days == 90


def test_environment_overrides_and_types() -> None:
    settings = Settings.from_env(
        {"PULSE_PARTITIONS": "8", "PULSE_SINK_FLUSH_SECONDS": "0.5", "PULSE_TOPIC_PREFIX": "x."}
    )
    assert (settings.partitions, settings.sink_flush_seconds) == (8, 0.5)
    assert settings.topic("interactions") == "x.interactions"


@pytest.mark.parametrize(
    "env",
    [
        {"PULSE_PARTITIONS": "four"},
        {"PULSE_PARTITIONS": "0"},
        {"PULSE_CLICKHOUSE_URL": "tcp://host:9000"},
        {"PULSE_INPUT_IDLE_SECONDS": "0"},
        {"PULSE_CLICKHOUSE_DATABASE": "drop table;"},
        {"PULSE_STORE": "rocksdb://"},
        {"PULSE_MIN_EVENT_TIME": "1969-12-31T23:59:59Z"},
        {"PULSE_MIN_EVENT_TIME": "0001-01-01T00:00:00+05:00"},
        {"PULSE_MIN_EVENT_TIME": "2000-01-01T00:00:00"},
        {"PULSE_MIN_EVENT_TIME": "last year"},
        {"PULSE_MAX_FUTURE_SKEW_SECONDS": "-1"},
        {"PULSE_MAX_FUTURE_SKEW_SECONDS": "100000000000"},
        {"PULSE_DEAD_LETTER_MAX_BYTES": "1000"},
    ],
)
def test_bad_values_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        Settings.from_env(env)


def test_event_time_floor_and_dead_letter_limit() -> None:
    from datetime import UTC, datetime

    defaults = Settings.from_env({})
    assert defaults.min_event_time_utc == datetime(2000, 1, 1, tzinfo=UTC)
    assert defaults.dead_letter_max_bytes == 1_000_000
    moved = Settings.from_env({"PULSE_MIN_EVENT_TIME": "2015-06-01T08:00:00+08:00"})
    assert moved.min_event_time_utc == datetime(2015, 6, 1, tzinfo=UTC)


def test_every_setting_is_documented_in_the_readme() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name, _default, doc in SETTINGS_DOC:
        assert doc and f"`{name}`" in readme, name
