"""``POST /v1/events``: the collector for apps that cannot speak Kafka.

A request carries one event (a JSON object), a JSON array of events, or NDJSON
(one event per line), up to ``PULSE_HTTP_MAX_BODY_BYTES`` and
``PULSE_HTTP_MAX_EVENTS``. Each event is validated exactly as the pipeline does
(:func:`schemas.registry.decode_event`, same size and clock limits) and answered
on its own: accepted events are produced to their topic keyed by ``member_id``
(``acks=all``, idempotent, the murmur2 partitioner every Pulse producer uses) and
confirmed by the broker *before* the response; rejected ones go to the dead-letter
topic with the pipeline's headers (source topic ``http``, partition and offset
``-1``). If the broker does not confirm within ``PULSE_HTTP_PRODUCE_TIMEOUT_SECONDS``
the answer is 503 with ``Retry-After``: retrying is safe, ``event_id`` is the
idempotency key and the pipeline drops duplicates.

The exact bytes of each event are what is validated and produced:

>>> split_body(b' [ {"a": 1} , {"b": [2, 3]} ] ', "application/json")
[b'{"a": 1}', b'{"b": [2, 3]}']
>>> split_body(b'{"a": 1}\\n\\n{"b": 2}\\r\\n', "application/x-ndjson; charset=utf-8")
[b'{"a": 1}', b'{"b": 2}']
>>> split_body(b'[1, ', "application/json")
Traceback (most recent call last):
...
fastapi.exceptions.HTTPException: 400: body is not JSON (JSONDecodeError at position 4)
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from schemas.envelope import EventBase
from schemas.errors import EventRejected, InvalidJson
from schemas.registry import decode_event, stream_of
from streams.config import Settings
from streams.metrics import HttpMetrics
from streams.web.body import read_body
from streams.web.models import CollectorResponse, EventResult, Problem

__all__ = [
    "collector_router",
    "KafkaSender",
    "split_body",
    "validate",
    "JSON_TYPES",
    "NDJSON_TYPES",
]

log = logging.getLogger(__name__)

JSON_TYPES = ("application/json",)
NDJSON_TYPES = (
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/x-jsonlines",
)
#: Source topic, partition and offset in the dead-letter headers of an HTTP event.
HTTP_SOURCE = ("http", -1, -1)
_WHITESPACE = " \t\n\r"


# --- parsing ------------------------------------------------------------------------
def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WHITESPACE:
        i += 1
    return i


def _array_elements(text: str) -> list[str]:
    """The source text of each element of a JSON array already known to be valid."""
    decoder = json.JSONDecoder()
    i = _skip(text, 0) + 1  # past "["
    i = _skip(text, i)
    elements: list[str] = []
    if text[i] == "]":
        return elements
    while True:
        _, end = decoder.raw_decode(text, i)
        elements.append(text[i:end])
        i = _skip(text, end)
        if text[i] == "]":
            return elements
        i = _skip(text, i + 1)  # past ","


def split_body(body: bytes, content_type: str) -> list[bytes]:
    """The raw events of a request body, or an HTTPException (400, 415) saying why not."""
    media = content_type.split(";")[0].strip().lower()
    if media in NDJSON_TYPES:
        lines = (line.strip() for line in body.split(b"\n"))
        return [line for line in lines if line]
    if media not in JSON_TYPES:
        accepted = ", ".join((*JSON_TYPES, *NDJSON_TYPES))
        raise HTTPException(415, f"unsupported content type {media or '(none)'!r}: use {accepted}")
    try:
        text = body.decode("utf-8")
        document = json.loads(text)
    except UnicodeDecodeError:
        raise HTTPException(400, "body is not JSON (not UTF-8)") from None
    except json.JSONDecodeError as exc:
        raise HTTPException(
            400, f"body is not JSON (JSONDecodeError at position {exc.pos})"
        ) from None
    except (RecursionError, ValueError) as exc:  # nesting or number-size limits of the parser
        raise HTTPException(400, f"body is not JSON ({type(exc).__name__})") from None
    if isinstance(document, dict):
        return [text.strip(_WHITESPACE).encode()]
    if isinstance(document, list):
        return [element.encode() for element in _array_elements(text)]
    raise HTTPException(400, "expected an event object or an array of events")


# --- validation ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Checked:
    """One event of a request: the typed event, or the rejection."""

    raw: bytes
    event: EventBase | None
    rejection: EventRejected | None


def validate(raws: list[bytes], settings: Settings, now: datetime) -> list[Checked]:
    """Validate each raw event as the pipeline does; parser limits become ``invalid_json``."""
    checked: list[Checked] = []
    for raw in raws:
        try:
            event = decode_event(
                raw,
                now=now,
                max_bytes=settings.max_event_bytes,
                max_future_skew=timedelta(seconds=settings.max_future_skew_seconds),
            )
        except EventRejected as exc:
            checked.append(Checked(raw, None, exc))
        except (RecursionError, ValueError) as exc:  # json's nesting and big-int limits
            checked.append(Checked(raw, None, InvalidJson(f"{type(exc).__name__} in the parser")))
        else:
            checked.append(Checked(raw, event, None))
    return checked


Headers = list[tuple[str, str | bytes | None]]


def dead_letter_headers(exc: EventRejected) -> Headers:
    """The pipeline's dead-letter headers, for a message that came over HTTP."""
    topic, partition, offset = HTTP_SOURCE
    return [
        ("pulse.source.topic", topic.encode()),
        ("pulse.source.partition", str(partition).encode()),
        ("pulse.source.offset", str(offset).encode()),
        ("pulse.error.class", type(exc).__name__.encode()),
        ("pulse.error.reason", exc.reason.encode()),
        ("pulse.error.detail", exc.detail.encode()[:1000]),
    ]


# --- producing ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Delivery:
    topic: str
    partition: int
    offset: int


class Unavailable(Exception):
    """The broker did not take or confirm a message in time."""


class KafkaSender:
    """A confluent-kafka producer whose delivery reports resolve asyncio futures.

    A background thread serves delivery reports; ``message.timeout.ms`` equals the
    request timeout, so an unreachable broker fails the messages instead of keeping
    them queued for minutes.
    """

    def __init__(
        self, config: Mapping[str, Any], *, timeout: float, max_message_bytes: int
    ) -> None:
        self.timeout = timeout
        self._producer = Producer(
            {
                "enable.idempotence": True,
                "acks": "all",
                "partitioner": "murmur2_random",
                "linger.ms": 2,
                "message.timeout.ms": max(1000, int(timeout * 1000)),
                "message.max.bytes": max_message_bytes,
                **config,
            }
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="pulse-collector", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def send(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers
    ) -> asyncio.Future[Delivery]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Delivery] = loop.create_future()

        def settle(error: KafkaError | None, message: Message) -> None:
            if future.done():  # the request gave up waiting
                return
            if error is not None:
                future.set_exception(Unavailable(str(error)))
            else:
                future.set_result(
                    Delivery(
                        message.topic() or topic, message.partition() or 0, message.offset() or 0
                    )
                )

        def delivered(error: KafkaError | None, message: Message) -> None:
            try:
                loop.call_soon_threadsafe(settle, error, message)
            except RuntimeError:  # the web loop is closed: nobody waits any more
                pass

        try:
            self._producer.produce(
                topic, value=value, key=key, headers=headers, on_delivery=delivered
            )
        except BufferError:
            future.set_exception(Unavailable("the producer's local queue is full"))
        except Exception as exc:  # e.g. a message over message.max.bytes
            future.set_exception(Unavailable(f"{type(exc).__name__}: {exc}"))
        return future

    async def confirm(self, futures: list[asyncio.Future[Delivery]]) -> list[Delivery]:
        """Wait for every delivery, at most ``timeout`` seconds; raise :class:`Unavailable`."""
        if not futures:
            return []
        done, pending = await asyncio.wait(futures, timeout=self.timeout + 1.0)
        for future in pending:
            future.cancel()
        if pending:
            raise Unavailable(f"{len(pending)} message(s) not confirmed in {self.timeout:.0f}s")
        return [f.result() for f in futures]

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self._producer.flush(timeout)


# --- the route ----------------------------------------------------------------------
def _body_doc() -> dict[str, Any]:
    event = {"$ref": "#/components/schemas/Event"}
    return {
        "required": True,
        "description": "one event, a JSON array of events, or NDJSON (one event per line)",
        "content": {
            "application/json": {"schema": {"oneOf": [event, {"type": "array", "items": event}]}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }


def collector_router(
    settings: Settings,
    sender: Callable[[], KafkaSender | None],
    metrics: HttpMetrics,
    guard: Callable[[Request], Awaitable[None]],
) -> APIRouter:
    router = APIRouter(tags=["collector"])
    dead_letter_topic = settings.topic("dead-letter")
    retry_after = str(max(1, round(settings.http_produce_timeout_seconds)))

    @router.post(
        "/v1/events",
        summary="Publish events over HTTP: validated, produced (acks=all) before the answer",
        dependencies=[Depends(guard)],
        response_model=CollectorResponse,
        openapi_extra={"requestBody": _body_doc()},
        responses={
            207: {"model": CollectorResponse, "description": "some events rejected"},
            400: {"model": Problem, "description": "empty, not JSON, not events"},
            401: {"model": Problem},
            403: {"model": Problem},
            413: {"model": Problem, "description": "body or event count over the limit"},
            415: {"model": Problem},
            422: {"model": CollectorResponse, "description": "every event rejected"},
            503: {"model": Problem, "description": "broker unavailable: retry after"},
        },
    )
    async def collect(request: Request) -> JSONResponse:
        body = await read_body(request, settings.http_max_body_bytes)
        if not body.strip():
            raise HTTPException(400, "empty body: send one event, a JSON array or NDJSON")
        raws = split_body(body, request.headers.get("content-type", ""))
        if not raws:
            raise HTTPException(400, "no events in the body")
        if len(raws) > settings.http_max_events:
            raise HTTPException(
                413,
                f"{len(raws)} events exceed the limit of {settings.http_max_events} per request",
            )
        producer = sender()
        if producer is None:
            raise HTTPException(503, "the collector's producer is not running")
        checked = await run_in_threadpool(validate, raws, settings, datetime.now(UTC))
        futures = []
        for item in checked:
            if item.event is not None:
                topic = settings.topic(stream_of(item.event.event_type))  # type: ignore[attr-defined]
                futures.append(producer.send(topic, item.event.member_id.encode(), item.raw, []))
            else:
                assert item.rejection is not None
                headers = dead_letter_headers(item.rejection)
                futures.append(producer.send(dead_letter_topic, None, item.raw, headers))
        try:
            deliveries = await producer.confirm(futures)
        except Unavailable as exc:
            metrics.collector_unavailable.inc()
            log.warning("collector: broker unavailable (%s); answering 503", exc)
            return JSONResponse(
                {"detail": f"the broker did not confirm the events: {exc}; retry later"},
                status_code=503,
                headers={"Retry-After": retry_after},
            )
        results = []
        for index, (item, delivery) in enumerate(zip(checked, deliveries, strict=True)):
            if item.event is not None:
                metrics.collector_events.labels("accepted", "none").inc()
                results.append(
                    EventResult(
                        index=index,
                        status="accepted",
                        event_id=str(item.event.event_id),
                        event_type=item.event.event_type,  # type: ignore[attr-defined]
                        topic=delivery.topic,
                        partition=delivery.partition,
                        offset=delivery.offset,
                    )
                )
            else:
                rejection = item.rejection
                assert rejection is not None
                metrics.collector_events.labels("rejected", rejection.reason).inc()
                results.append(
                    EventResult(
                        index=index,
                        status="rejected",
                        reason=rejection.reason,
                        error_class=type(rejection).__name__,
                        detail=rejection.detail,
                    )
                )
        accepted = sum(r.status == "accepted" for r in results)
        answer = CollectorResponse(
            accepted=accepted, rejected=len(results) - accepted, results=results
        )
        code = 200 if accepted == len(results) else 422 if accepted == 0 else 207
        return JSONResponse(answer.model_dump(mode="json", exclude_none=True), status_code=code)

    return router
