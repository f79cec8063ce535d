"""Delivery of member and community alerts to outside systems (a CRM, a messaging gateway).

Durable and signed, in two halves:

1. **Outbox.** When the core emits alerts it calls :func:`outbox_rows` and adds the
   rows to the sink's ``webhook_outbox`` table in the same batch as the ``alerts``
   rows, i.e. before the input is acknowledged. A crash before the ack redelivers
   the batch, which writes the same rows again (the alert id is deterministic).
   A rule's alert goes out only if the rule names a webhook, the alert ``fired``,
   and, for a member, the member did not withdraw marketing consent.
2. **Sender.** :class:`WebhookSender` is a thread with its own ClickHouse client. It
   polls the outbox for rows without a final outcome in ``webhook_deliveries``,
   POSTs each one, and appends the outcome of every attempt there: ``delivered``,
   ``retried`` (tried again later, with back-off) or ``failed`` (gave up after
   ``max_attempts``). A restarted sender therefore resumes exactly the deliveries
   that were not done, with the same ``Idempotency-Key`` (the alert id); a receiver
   that de-duplicates on it sees each alert once. Nothing stops the thread: a bad
   URL, a timeout, an ``http.client.HTTPException`` or ClickHouse being away is an
   outcome or a retry, never a dead sender.

Each POST carries ``X-Pulse-Timestamp`` (Unix seconds) and ``X-Pulse-Signature:
sha256=<hex>``: HMAC-SHA256 under the webhook's secret of ``timestamp + "." +
body``. Receivers check it with :func:`verify_signature` (or the same three
lines in their language) and refuse stale timestamps. The secret comes from the
environment variable the rules file names (``secret_env``); it is never logged,
and neither is the URL (it may hold a token). Only ``https`` URLs are used
unless the webhook sets ``allow_http``; redirects are not followed.

The payload names a member by pseudonym (``member_pseudonym``, and
``subject_id``). A rule with ``send_member_id = true`` adds ``member_id``: the
outbox stores it sealed (AES-GCM), never in clear.

>>> secret = b"s3cret"
>>> header = sign(secret, "1767225600", b'{"a":1}')
>>> header.startswith("sha256="), verify_signature(secret, "1767225600", b'{"a":1}', header,
...     now=1767225630)
(True, True)
>>> verify_signature(secret, "1767225600", b'{"a":2}', header, now=1767225630)
False
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from prometheus_client import Counter

from schemas.errors import PulseError
from scoring.alerts import AlertRecord, RuleSet
from sinks.privacy import Pseudonymizer
from sinks.rows import utc
from sinks.sealing import Sealer

__all__ = [
    "WebhookSender",
    "WebhookConfigError",
    "outbox_rows",
    "sign",
    "verify_signature",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Pulse-Signature"
TIMESTAMP_HEADER = "X-Pulse-Timestamp"

#: Marketing consent of a member (by member id): False suppresses their webhooks.
Consent = Callable[[str], bool]


class WebhookConfigError(PulseError):
    """A webhook cannot be used as configured (e.g. its secret's variable is not set)."""


# --- signatures -----------------------------------------------------------------------
def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Pulse-Signature`` value: ``sha256=`` HMAC of ``timestamp.body``."""
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: bytes,
    timestamp: str,
    body: bytes,
    header: str,
    *,
    now: float | None = None,
    tolerance_seconds: float = 300.0,
) -> bool:
    """What a receiver checks: the signature matches and the timestamp is recent."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance_seconds and hmac.compare_digest(sign(secret, timestamp, body), header)


# --- the outbox -----------------------------------------------------------------------
def outbox_rows(
    alerts: Sequence[AlertRecord],
    rules: RuleSet,
    pseudonym: Pseudonymizer,
    consent: Consent,
    *,
    sealer: Sealer | None = None,
    partition_of: Mapping[str, int] | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """The ``webhook_outbox`` rows of the alerts to deliver (pure: no I/O).

    One row per fired alert whose rule names a webhook, except a member's alert when
    ``consent(member_id)`` is False (marketing withdrawn). ``sealer`` is needed only if
    a rule sets ``send_member_id``; ``partition_of`` (member id -> input partition)
    lets each worker's sender deliver the rows of the partitions it owns.
    """
    send_member_id = {rule.name: rule.send_member_id for rule in rules.rules}
    created = utc(now or datetime.now(UTC))
    rows: list[dict[str, Any]] = []
    for alert in alerts:
        if alert.status != "fired" or not alert.webhook:
            continue
        if alert.webhook not in rules.webhooks:
            raise WebhookConfigError(f"rule {alert.rule!r}: unknown webhook {alert.webhook!r}")
        member = alert.subject_type == "member"
        if member and not consent(alert.subject_id):
            continue
        subject = pseudonym(alert.subject_id) if member else alert.subject_id
        sealed = ""
        if member and send_member_id.get(alert.rule, False):
            if sealer is None:
                raise WebhookConfigError(
                    f"rule {alert.rule!r} sends the member id: outbox_rows needs a sealer"
                )
            sealed = sealer.seal(alert.subject_id.encode())
        payload = {
            "alert_id": alert.alert_id,
            "rule": alert.rule,
            "severity": alert.severity,
            "status": alert.status,
            "subject_type": alert.subject_type,
            "subject_id": subject,
            "member_pseudonym": subject if member else None,
            "value": float(alert.value),
            "threshold": float(alert.threshold),
            "raised_at": alert.raised_at.isoformat(),
            "episode_start": alert.episode_start.isoformat(),
            "context": alert.context,
        }
        partition = (partition_of or {}).get(alert.subject_id, -1) if member else -1
        rows.append(
            {
                "alert_id": alert.alert_id,
                "webhook": alert.webhook,
                "rule": alert.rule,
                "subject_type": alert.subject_type,
                "subject_id": subject,
                "member_sealed": sealed,
                "payload": json.dumps(payload, separators=(",", ":"), default=str),
                "source_partition": partition,
                "created_at": created,
            }
        )
    return rows


# --- the sender -----------------------------------------------------------------------
class _Client(Protocol):
    """What the sender needs of a clickhouse-connect client."""

    def query(self, query: str, parameters: dict[str, Any] | None = None) -> Any: ...
    def insert(self, table: str, data: Any, column_names: Sequence[str]) -> Any: ...


@dataclass(frozen=True, slots=True)
class _Pending:
    webhook: str
    alert_id: str
    rule: str
    member_sealed: str
    payload: str
    partition: int
    attempts: int
    last_attempt: float  # epoch seconds, 0 if never tried


@dataclass(frozen=True, slots=True)
class _Outcome:
    outcome: str  # delivered | retried | failed
    status: int
    error: str


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is an answer, not an instruction: never follow it (https -> http, elsewhere)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_DELIVERY_COLUMNS = ("alert_id", "webhook", "attempt", "outcome", "status_code", "error", "at")


class WebhookSender:
    """The thread that delivers the outbox; see the module docstring.

    ``client`` is its own ClickHouse client (chDB: a client on the worker's path);
    ``environ`` holds the webhooks' secrets (default ``os.environ``);
    ``deliveries`` is ``pulse_webhook_deliveries_total``. ``owned``, for workers that
    share one ClickHouse server, returns the input partitions whose rows this worker
    delivers (-1: community alerts); None (one worker, or one ClickHouse per worker):
    every row of the outbox.
    """

    def __init__(
        self,
        client: _Client,
        database: str,
        rules: RuleSet,
        *,
        deliveries: Counter | None = None,
        sealer: Sealer | None = None,
        poll_seconds: float = 1.0,
        environ: Mapping[str, str] | None = None,
        owned: Callable[[], Collection[int]] | None = None,
        batch: int = 100,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.database = database
        self.webhooks = rules.webhooks
        self.deliveries = deliveries
        self.sealer = sealer
        self.poll_seconds = poll_seconds
        self.owned = owned
        self.batch = batch
        self.clock = clock
        env = os.environ if environ is None else environ
        self._secrets: dict[str, bytes] = {}
        for name, hook in self.webhooks.items():
            secret = env.get(hook.secret_env, "")
            if not secret:
                raise WebhookConfigError(
                    f"webhook {name!r}: the environment variable {hook.secret_env} "
                    "(its signing secret) is not set"
                )
            self._secrets[name] = secret.encode()
        self._opener = urllib.request.build_opener(_NoRedirects)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="pulse-webhooks", daemon=True)
        self.delivered = 0
        self.failed = 0
        self.errors = 0  # polls that raised (ClickHouse away...), survived

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> WebhookSender:
        self.thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the attempt in progress (undelivered rows wait in the outbox)."""
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception as exc:  # never let the thread die: next poll retries
                self.errors += 1
                log.warning("webhook sender: poll failed (%s); retrying", _describe(exc))
                busy = 0
            if not busy:
                self._stop.wait(self.poll_seconds)

    # --- one poll -----------------------------------------------------------------------
    def pending(self) -> list[_Pending]:
        """Outbox rows with no final outcome whose next attempt is due, oldest first
        (rows waiting for their back-off, or of partitions not owned, are left out here
        so that they never crowd due rows out of the batch)."""
        db = self.database
        parameters: dict[str, Any] = {"now_ms": int(self.clock() * 1000)}
        owned = ""
        if self.owned is not None:
            parameters["owned"] = sorted(self.owned())
            owned = "AND o.source_partition IN {owned:Array(Int32)}"
        result = self.client.query(
            f"""
            SELECT o.webhook, o.alert_id, o.rule, o.member_sealed, o.payload,
                   o.source_partition, d.attempts, toUnixTimestamp64Milli(d.last_at)
            FROM (SELECT * FROM {db}.webhook_outbox FINAL) AS o
            LEFT JOIN (
                SELECT webhook, alert_id, count() AS attempts, max(at) AS last_at,
                       max(outcome IN ('delivered', 'failed')) AS done
                FROM {db}.webhook_deliveries GROUP BY webhook, alert_id
            ) AS d ON o.webhook = d.webhook AND o.alert_id = d.alert_id
            WHERE d.done = 0 {owned}
              -- back-off after attempt n: 0.5 s * 2^(n-1), at most 60 s
              AND (d.attempts = 0 OR toUnixTimestamp64Milli(d.last_at)
                   + least(60000, 500 * pow(2, d.attempts - 1)) <= {{now_ms:Int64}})
            ORDER BY o.created_at, o.alert_id
            LIMIT {int(self.batch)}
            """,
            parameters=parameters,
        )
        return [
            _Pending(
                str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), int(r[5]), int(r[6]),
                int(r[7]) / 1000 if r[6] else 0.0,
            )
            for r in result.result_rows
        ]  # fmt: skip

    def run_once(self) -> int:
        """Attempt every pending delivery that is due; return how many were attempted."""
        attempted = 0
        for item in self.pending():
            if self._stop.is_set():
                break
            hook = self.webhooks.get(item.webhook)
            attempt = item.attempts + 1
            if hook is None:  # the webhook left the rules file: give up on its rows
                result = _Outcome("failed", 0, "webhook not configured")
            else:
                result = self._attempt(item, attempt, hook.max_attempts)
            self._record(item, attempt, result)
            attempted += 1
        return attempted

    def _attempt(self, item: _Pending, attempt: int, max_attempts: int) -> _Outcome:
        try:
            status = self._post(item)
        except urllib.error.HTTPError as exc:  # an answer that is not 2xx
            status, error = exc.code, f"HTTP {exc.code}"
        except Exception as exc:  # bad URL, refused, timeout, HTTPException, TLS...
            status, error = 0, _describe(exc)
        else:
            if 200 <= status < 300:
                return _Outcome("delivered", status, "")
            error = f"HTTP {status}"
        outcome = "failed" if attempt >= max_attempts else "retried"
        log.warning(
            "webhook %s: alert %s attempt %d/%d failed: %s",
            item.webhook,
            item.alert_id,
            attempt,
            max_attempts,
            error,
        )
        return _Outcome(outcome, status, error)

    def _post(self, item: _Pending) -> int:
        hook = self.webhooks[item.webhook]
        scheme = urlsplit(str(hook.url)).scheme.lower()
        if scheme != "https" and not (scheme == "http" and hook.allow_http):
            raise WebhookConfigError(f"{scheme or 'no'} scheme refused (https only)")
        body = item.payload.encode()
        if item.member_sealed:
            if self.sealer is None:
                raise WebhookConfigError("the row holds a sealed member id but no sealer is set")
            payload = json.loads(item.payload)
            payload["member_id"] = self.sealer.open(item.member_sealed).decode()
            body = json.dumps(payload, separators=(",", ":")).encode()
        timestamp = str(int(self.clock()))
        request = urllib.request.Request(  # noqa: S310 - scheme checked above
            str(hook.url),
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Idempotency-Key": item.alert_id,
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(self._secrets[item.webhook], timestamp, body),
                "User-Agent": "community-pulse",
            },
        )
        with self._opener.open(request, timeout=float(hook.timeout_seconds)) as response:
            response.read(65536)
            return int(response.status)

    def _record(self, item: _Pending, attempt: int, result: _Outcome) -> None:
        row = [
            item.alert_id,
            item.webhook,
            attempt,
            result.outcome,
            result.status,
            result.error[:200],
            utc(datetime.fromtimestamp(self.clock(), UTC)),
        ]
        self.client.insert(
            f"{self.database}.webhook_deliveries", [row], column_names=_DELIVERY_COLUMNS
        )
        if self.deliveries is not None:
            self.deliveries.labels(item.rule, result.outcome).inc()
        self.delivered += result.outcome == "delivered"
        self.failed += result.outcome == "failed"

    def status(self) -> dict[str, int]:
        return {
            "webhooks_delivered": self.delivered,
            "webhooks_failed": self.failed,
            "webhook_poll_errors": self.errors,
        }


def _describe(exc: BaseException) -> str:
    """An error's class and, for OS-level errors, their reason: never a URL or a secret."""
    if isinstance(exc, WebhookConfigError):
        return str(exc)
    reason = getattr(exc, "reason", None)
    if isinstance(exc, urllib.error.URLError) and isinstance(reason, OSError):
        exc = reason
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return type(exc).__name__
