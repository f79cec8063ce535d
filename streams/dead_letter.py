"""Dead-letter records: the rejected message, where it came from and why, within a size limit.

A dead-letter copy must never be larger than what the dead-letter topic takes:
a rejected message can be as large as the input topics allow (and the largest
rejects are the oversize ones), and the copy adds headers. When the copy would
not fit in ``max_bytes``, the payload keeps only its start, and headers carry
the original's sha256 (the ``payload_sha256`` of its ``failed_events`` row) and
size. Keys longer than :data:`MAX_KEY_BYTES` (never a valid member id) are
replaced by their sha256. Every header value is bounded and valid UTF-8.

>>> from schemas.errors import Oversize
>>> key, value, headers = dead_letter_record(
...     b"m-1", b"x" * 10_000, "pulse.interactions", 3, 42, Oversize("too big"), 4096)
>>> key, len(value) < 4096, dict(headers)["pulse.payload.truncated"]
(b'm-1', True, b'true')
>>> record_bytes(key, value, headers) <= 4096
True
>>> dict(headers)["pulse.payload.bytes"], dict(headers)["pulse.error.reason"]
(b'10000', b'oversize')
"""

from __future__ import annotations

import hashlib

from schemas.errors import MAX_DETAIL_CHARS, EventRejected, clean_text

__all__ = ["dead_letter_record", "record_bytes", "MAX_KEY_BYTES", "MAX_HEADER_VALUE_BYTES"]

Headers = list[tuple[str, bytes]]

#: Longest key kept as it is (a member id is at most 128 characters).
MAX_KEY_BYTES = 1024
#: Longest header value (the error detail is the only long one).
MAX_HEADER_VALUE_BYTES = MAX_DETAIL_CHARS
#: Upper bound of a record's framing in a Kafka v2 record batch with one record: the
#: batch header (61 bytes) and the record's varints (length, attributes, timestamp and
#: offset deltas, key and value lengths, header count: at most 36 bytes).
_RECORD_OVERHEAD = 100
#: Upper bound of one header's framing (two varint lengths).
_HEADER_OVERHEAD = 10


def record_bytes(key: bytes | None, value: bytes, headers: Headers) -> int:
    """An upper bound of the record's size on the wire, as the broker's limit counts it."""
    return (
        _RECORD_OVERHEAD
        + len(key or b"")
        + len(value)
        + sum(_HEADER_OVERHEAD + len(name.encode()) + len(data) for name, data in headers)
    )


def _header(text: str, limit: int = MAX_HEADER_VALUE_BYTES) -> bytes:
    """Valid UTF-8 of at most ``limit`` bytes (cut on a character boundary)."""
    data = clean_text(text, limit).encode()
    return data[:limit].decode("utf-8", "ignore").encode()


def dead_letter_record(
    key: bytes | None,
    value: bytes,
    topic: str,
    partition: int,
    offset: int,
    exc: BaseException,
    max_bytes: int,
) -> tuple[bytes | None, bytes, Headers]:
    """The (key, value, headers) to publish on the dead-letter topic for a rejected message.

    Headers: ``pulse.source.topic/partition/offset``, ``pulse.error.class/reason/detail``,
    ``pulse.payload.sha256`` and ``pulse.payload.bytes`` (of the original value), and
    ``pulse.payload.truncated`` / ``pulse.key.sha256`` when the value was cut or the
    key replaced. The record is at most ``max_bytes`` (by :func:`record_bytes`) for any
    ``max_bytes`` of at least 4096: key, framing and headers take at most about 3 KB.
    """
    if isinstance(exc, EventRejected):
        reason, detail = exc.reason, exc.detail
    else:  # not a rejection: its message may hold values, so only its class is kept
        reason, detail = "error", type(exc).__name__
    headers: Headers = [
        ("pulse.source.topic", _header(topic, 255)),
        ("pulse.source.partition", str(partition).encode()),
        ("pulse.source.offset", str(offset).encode()),
        ("pulse.error.class", _header(type(exc).__name__, 255)),
        ("pulse.error.reason", _header(reason, 64)),
        ("pulse.error.detail", _header(detail)),
        ("pulse.payload.sha256", hashlib.sha256(value).hexdigest().encode()),
        ("pulse.payload.bytes", str(len(value)).encode()),
    ]
    if key is not None and len(key) > MAX_KEY_BYTES:
        key_hash = hashlib.sha256(key).hexdigest()
        headers.append(("pulse.key.sha256", key_hash.encode()))
        key = key_hash.encode()
    if record_bytes(key, value, headers) <= max_bytes:
        return key, value, headers
    headers.append(("pulse.payload.truncated", b"true"))
    room = max(0, max_bytes - record_bytes(key, b"", headers))
    return key, value[:room], headers
