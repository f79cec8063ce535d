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
    ],
)
def test_bad_values_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        Settings.from_env(env)


def test_every_setting_is_documented_in_the_readme() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name, _default, doc in SETTINGS_DOC:
        assert doc and f"`{name}`" in readme, name
