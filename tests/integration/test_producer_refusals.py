"""On the real broker: a message refused for its size is a typed, per-message outcome, and a
dead-letter record built for a limit is accepted by a producer that enforces that limit.
"""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import KafkaError

from schemas.errors import Oversize
from streams.broker import EmbeddedBroker, ensure_topics
from streams.dead_letter import dead_letter_record
from streams.producer import MessageRefused, PulseProducer

pytestmark = pytest.mark.integration


def test_an_oversize_message_is_refused_alone_and_the_rest_is_delivered(
    broker: EmbeddedBroker,
) -> None:
    topic = f"refusals-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap, [topic], 1)
    delivered: list[int] = []
    producer = PulseProducer(
        broker.bootstrap, on_delivery=lambda _t, _p, offset: delivered.append(offset)
    )
    refused: list[KafkaError] = []
    producer.send_raw(topic, b"m-1", b"small")
    producer.send_raw(topic, b"m-1", b"x" * 1_200_000, on_refused=refused.append)
    producer.send_raw(topic, None, b"also small", partition=0)
    producer.flush(30)  # the refusal does not fail the flush
    assert [e.code() for e in refused] == [KafkaError.MSG_SIZE_TOO_LARGE]
    assert sorted(delivered) == [0, 1]
    with pytest.raises(MessageRefused, match="MSG_SIZE_TOO_LARGE"):  # typed, without callback
        producer.send_raw(topic, b"m-1", b"x" * 1_200_000)


@pytest.mark.parametrize("limit", [4096, 100_000, 1_000_000])
def test_a_dead_letter_record_fits_a_producer_limited_to_its_size(
    broker: EmbeddedBroker, limit: int
) -> None:
    topic = f"dead-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap, [topic], 1)
    # librdkafka refuses a message over message.max.bytes before it leaves the client
    producer = PulseProducer(broker.bootstrap, config={"message.max.bytes": limit})
    key, value, headers = dead_letter_record(
        b"m-" + b"k" * 500, b"v" * (2 * limit), topic, 1, 2, Oversize("too big"), limit
    )
    outcomes: list[KafkaError | None] = []
    producer._producer.produce(
        topic, value=value, key=key, headers=headers, on_delivery=lambda e, _m: outcomes.append(e)
    )
    assert producer._producer.flush(30) == 0
    assert outcomes == [None]  # delivered
    refused: list[KafkaError] = []  # and the whole original would have been refused
    producer.send_raw(topic, key, b"v" * (2 * limit), on_refused=refused.append)
    producer.flush(30)
    assert [e.code() for e in refused] == [KafkaError.MSG_SIZE_TOO_LARGE]
