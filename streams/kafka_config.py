"""Kafka transport security: one place turns the settings into each client's configuration.

Pulse talks to Kafka through two client libraries: librdkafka (confluent-kafka:
the producer helper, the scores producer, the admin client, the test and replay
consumers) and aiokafka (Faust's consumer, producer and topic creation). Both get
their TLS and SASL configuration from here, so that every client of a worker
speaks to the brokers the same way:

* :func:`librdkafka_config` -- properties to merge into any confluent-kafka
  ``Producer`` / ``Consumer`` / ``AdminClient`` configuration;
* :func:`faust_credentials` -- the ``broker_credentials`` of ``faust.App``
  (``faust.SASLCredentials`` or ``faust.SSLCredentials`` with an SSL context).

The embedded broker speaks PLAINTEXT (``Settings.validate`` refuses anything else
with it), for which both return "nothing to add".

>>> from streams.config import Settings
>>> librdkafka_config(Settings())
{}
>>> s = Settings(kafka_bootstrap="kafka:9093", pseudonym_key="k" * 32,
...     kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-256",
...     kafka_sasl_username="pulse", kafka_sasl_password="pw")
>>> config = librdkafka_config(s)
>>> config["security.protocol"], config["sasl.mechanism"], config["sasl.username"]
('sasl_ssl', 'SCRAM-SHA-256', 'pulse')
>>> faust_credentials(s)
<SASLCredentials: username=pulse>
"""

from __future__ import annotations

import ssl
from typing import Any

import faust

from streams.config import Settings

__all__ = ["librdkafka_config", "faust_credentials", "ssl_context"]


def librdkafka_config(settings: Settings) -> dict[str, Any]:
    """librdkafka properties for TLS and SASL (empty for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    config: dict[str, Any] = {"security.protocol": protocol.lower()}
    if protocol.startswith("SASL_"):
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = settings.kafka_sasl_username
        config["sasl.password"] = settings.kafka_sasl_password
    if protocol.endswith("SSL"):
        if settings.kafka_ssl_ca_file:
            config["ssl.ca.location"] = settings.kafka_ssl_ca_file
        if settings.kafka_ssl_cert_file:
            config["ssl.certificate.location"] = settings.kafka_ssl_cert_file
            config["ssl.key.location"] = settings.kafka_ssl_key_file
        if settings.kafka_ssl_key_password:
            config["ssl.key.password"] = settings.kafka_ssl_key_password
        # librdkafka verifies the broker's certificate and host name by default; say so
        # explicitly so that no merged default can turn it off
        config["enable.ssl.certificate.verification"] = True
        config["ssl.endpoint.identification.algorithm"] = "https"
    return config


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """A client SSL context: verifies the brokers (CA file or system CAs) and host names,
    presents the client certificate if one is configured."""
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=settings.kafka_ssl_ca_file or None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.kafka_ssl_cert_file:
        context.load_cert_chain(
            settings.kafka_ssl_cert_file,
            settings.kafka_ssl_key_file,
            password=settings.kafka_ssl_key_password or None,
        )
    return context


def faust_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """Faust's ``broker_credentials`` for the configured protocol (None for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context(settings))
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password,
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=ssl_context(settings) if protocol == "SASL_SSL" else None,
    )
