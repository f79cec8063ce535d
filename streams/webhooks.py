"""Delivery of member alerts to outside systems (a CRM, a messaging gateway).

Each rule may name a ``[webhooks.NAME]`` entry of the rules file. An alert is
POSTed as JSON with an ``Idempotency-Key`` header (the alert id, stable across
restarts and redelivery), retried with back-off up to ``max_attempts``. It is
queued only once the alert is stored in ClickHouse, from a thread of its own, so
a slow endpoint never holds the stream.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from scoring.alerts import RuleSet
from streams.metrics import PulseMetrics

__all__ = ["WebhookSender"]

log = logging.getLogger(__name__)


class WebhookSender:
    """A background thread that POSTs queued alerts to their rule's webhook."""

    def __init__(self, rules: RuleSet, metrics: PulseMetrics) -> None:
        self.webhooks = rules.webhooks
        self.metrics = metrics
        self.queue: queue.Queue[tuple[str, str, dict[str, Any]] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="pulse-webhooks", daemon=True)
        self.thread.start()

    def enqueue(self, webhook: str, rule: str, payload: dict[str, Any]) -> None:
        self.queue.put((webhook, rule, payload))

    def stop(self, timeout: float = 10.0) -> None:
        self.queue.put(None)
        self.thread.join(timeout)

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            webhook, rule, payload = item
            self._deliver(webhook, rule, payload)

    def _deliver(self, name: str, rule: str, payload: dict[str, Any]) -> None:
        hook = self.webhooks[name]
        body = json.dumps(payload, default=str).encode()
        attempts = int(hook.max_attempts)
        for attempt in range(1, attempts + 1):
            request = urllib.request.Request(  # noqa: S310 - URL from the operator's rules file
                str(hook.url),
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "Idempotency-Key": str(payload["alert_id"]),
                    "User-Agent": "community-pulse",
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=float(hook.timeout_seconds)):  # noqa: S310
                    pass
                self.metrics.webhook_deliveries.labels(rule, "delivered").inc()
                return
            except (urllib.error.URLError, OSError) as exc:
                outcome = "failed" if attempt == attempts else "retried"
                self.metrics.webhook_deliveries.labels(rule, outcome).inc()
                log.warning("webhook %s attempt %d/%d failed: %s", name, attempt, attempts, exc)
                if attempt < attempts:
                    time.sleep(min(30.0, 0.5 * 2 ** (attempt - 1)))
