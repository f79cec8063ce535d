"""Kafka TLS and SASL settings reach every client: librdkafka (producers, admin, consumers)
and aiokafka through Faust's credentials. The clients are the real libraries, built with
the configuration (they validate it and load the certificate files when built)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import aiokafka
import faust
import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from tls_material import TlsFiles, write_tls_files

from streams import broker as broker_module
from streams import producer as producer_module
from streams.broker import free_port
from streams.config import Settings, SettingsError
from streams.kafka_config import faust_credentials, librdkafka_config, ssl_context
from streams.replay import Publisher

pytestmark = pytest.mark.unit

KEY = "deployment-key-0123456789abcdef"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return write_tls_files(tmp_path_factory.mktemp("tls"))


def _settings(protocol: str, tls: TlsFiles | None = None, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap": f"127.0.0.1:{free_port()}",  # nothing listens: no traffic
        "pseudonym_key": KEY,
        "kafka_security_protocol": protocol,
    }
    if protocol.startswith("SASL_"):
        values.update(
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username="pulse",
            kafka_sasl_password="sasl-pw",
        )
    if tls is not None:
        values.update(
            kafka_ssl_ca_file=str(tls.ca),
            kafka_ssl_cert_file=str(tls.cert),
            kafka_ssl_key_file=str(tls.key),
            kafka_ssl_key_password=tls.key_password,
        )
    values.update(extra)
    settings = Settings(**values)
    settings.validate()
    return settings


def _librdkafka_clients(settings: Settings) -> None:
    """Build a producer, an admin client and a consumer as Pulse does (raises if refused)."""
    config = {"bootstrap.servers": settings.kafka_bootstrap, **librdkafka_config(settings)}
    Producer(config)
    AdminClient(config)
    Consumer({**config, "group.id": "pulse-config-test"}).close()


def test_plaintext_adds_nothing() -> None:
    settings = _settings("PLAINTEXT")
    assert librdkafka_config(settings) == {} and faust_credentials(settings) is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_reaches_librdkafka(mechanism: str, tls: TlsFiles) -> None:
    settings = _settings("SASL_SSL", tls, kafka_sasl_mechanism=mechanism)
    config = librdkafka_config(settings)
    assert config["security.protocol"] == "sasl_ssl" and config["sasl.mechanism"] == mechanism
    assert (config["sasl.username"], config["sasl.password"]) == ("pulse", "sasl-pw")
    assert config["ssl.ca.location"] == str(tls.ca)
    assert config["ssl.endpoint.identification.algorithm"] == "https"
    _librdkafka_clients(settings)  # librdkafka accepts the mechanism and loads the files


def test_librdkafka_really_reads_the_tls_files(tls: TlsFiles, tmp_path: Path) -> None:
    """The files are not just names in a dict: a wrong key password or a CA that is not
    a certificate makes librdkafka refuse to build the client."""
    wrong_password = _settings("SSL", tls, kafka_ssl_key_password="not-the-password")
    with pytest.raises(KafkaException, match="ssl"):
        _librdkafka_clients(wrong_password)
    not_a_ca = tmp_path / "ca.pem"
    not_a_ca.write_text("not a certificate")
    with pytest.raises(KafkaException, match="ssl.ca.location"):
        _librdkafka_clients(_settings("SSL", kafka_ssl_ca_file=str(not_a_ca)))


@pytest.mark.parametrize(
    ("protocol", "with_tls", "kind"),
    [
        ("SSL", True, faust.SSLCredentials),
        ("SASL_SSL", True, faust.SASLCredentials),
        ("SASL_PLAINTEXT", False, faust.SASLCredentials),
    ],
)
def test_faust_credentials_reach_aiokafka(
    protocol: str, with_tls: bool, kind: type, tls: TlsFiles
) -> None:
    """What Faust's aiokafka driver passes to its consumer, producer and admin."""
    settings = _settings(protocol, tls if with_tls else None)
    credentials = faust_credentials(settings)
    assert isinstance(credentials, kind)
    app = faust.App("pulse-config-test", broker="kafka://x:9092", broker_credentials=credentials)
    assert app.conf.broker_credentials is credentials
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials)
    assert auth["security_protocol"] == protocol
    if protocol.startswith("SASL_"):
        assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
        assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("pulse", "sasl-pw")
    assert (auth["ssl_context"] is not None) == with_tls

    async def build() -> tuple[str, str]:
        producer = aiokafka.AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, **auth)
        return producer.client._security_protocol, producer.client._sasl_mechanism

    assert asyncio.run(build())[0] == protocol


def test_ssl_context_verifies_and_presents_the_client_certificate(tls: TlsFiles) -> None:
    context = ssl_context(_settings("SSL", tls))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "pulse-test-ca"),),)]
    with pytest.raises(ssl.SSLError):
        ssl_context(_settings("SSL", tls, kafka_ssl_key_password="wrong"))


def test_the_credentials_repr_shows_no_password(tls: TlsFiles) -> None:
    for protocol in ("SASL_SSL", "SASL_PLAINTEXT"):
        credentials = faust_credentials(_settings(protocol, tls if "SSL" in protocol else None))
        assert "sasl-pw" not in repr(credentials)


class _Captured(Exception):
    """Raised by a stand-in client constructor once it has recorded its configuration."""


def _capture(into: list[dict[str, Any]]) -> Any:
    def constructor(config: dict[str, Any], *args: object, **kwargs: object) -> Any:
        into.append(dict(config))
        raise _Captured

    return constructor


def test_the_producer_helper_publisher_and_admin_get_the_config(
    monkeypatch: pytest.MonkeyPatch, tls: TlsFiles
) -> None:
    """Pulse's own code passes the configuration through to each librdkafka client."""
    settings = _settings("SASL_SSL", tls)
    expected = librdkafka_config(settings)
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(producer_module, "Producer", _capture(seen))
    monkeypatch.setattr(broker_module, "AdminClient", _capture(seen))
    with pytest.raises(_Captured):
        Publisher(settings.kafka_bootstrap, "pulse.", config=expected)  # replay, simulate
    with pytest.raises(_Captured):
        broker_module.ensure_topics(
            settings.kafka_bootstrap, ["t"], 1, replication_factor=3, config=expected
        )
    with pytest.raises(_Captured):
        broker_module.wait_for_broker(settings.kafka_bootstrap, 1, config=expected)
    assert len(seen) == 3
    for config in seen:
        assert {k: config[k] for k in expected} == expected


@pytest.mark.parametrize(
    "env",
    [
        {"PULSE_KAFKA_SECURITY_PROTOCOL": "TLS"},
        {"PULSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},  # no user, no password
        {"PULSE_KAFKA_SECURITY_PROTOCOL": "SSL", "PULSE_KAFKA_SSL_CERT_FILE": "c.pem"},  # no key
        {
            "PULSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "PULSE_KAFKA_SASL_MECHANISM": "GSSAPI",
            "PULSE_KAFKA_SASL_USERNAME": "u",
            "PULSE_KAFKA_SASL_PASSWORD": "p",
        },
        {"PULSE_KAFKA_SASL_USERNAME": "u", "PULSE_KAFKA_SASL_PASSWORD": "p"},  # PLAINTEXT
        {"PULSE_KAFKA_SSL_CA_FILE": "ca.pem"},  # TLS file without TLS
        {"PULSE_REPLICATION_FACTOR": "0"},
        {"PULSE_CLICKHOUSE_URL": "http://ch:8123", "PULSE_CLICKHOUSE_CA_FILE": "ca.pem"},
    ],
)
def test_transport_settings_that_cannot_work_are_refused(env: dict[str, str]) -> None:
    base = {"PULSE_KAFKA_BOOTSTRAP": "kafka:9093", "PULSE_PSEUDONYM_KEY": KEY}
    with pytest.raises(SettingsError):
        Settings.from_env({**base, **env})


def test_the_embedded_broker_speaks_plaintext_only() -> None:
    with pytest.raises(SettingsError, match="embedded broker"):
        Settings.from_env({"PULSE_KAFKA_SECURITY_PROTOCOL": "SSL"})
