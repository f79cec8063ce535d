"""The alert stage: threshold rules on scores, emitted to ClickHouse, Kafka, metrics, webhooks.

Fed by the scoring stage with every score record and survey answer of a batch,
and the batch's event-time watermark. What fires or resolves goes, in the same
batch as the scores, to the ``alerts`` table (member ids pseudonymised) and to
``pulse.alerts`` (keyed by member or community id), and moves the
``pulse_alerts_*`` metrics (labels: rule and severity only). Fired alerts whose
rule names a webhook go to the ``webhook_outbox`` table in the same batch (so
before the ack; :mod:`streams.webhooks` delivers them). The engine's state is
sealed into every model checkpoint, so a restart neither forgets an open episode
nor fires it again; alert ids are deterministic per episode, so a redelivered
batch writes the same ids.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from scoring.alerts import AlertEngine, AlertRecord, RuleSet, default_rules, load_rules
from scoring.records import ScoreRecord
from sinks.clickhouse import ClickHouseSink
from sinks.privacy import Pseudonymizer
from sinks.rows import utc
from sinks.sealing import Sealer
from streams.metrics import PulseMetrics
from streams.webhooks import Consent, outbox_rows

__all__ = ["AlertStage", "rules_from_settings"]

Publish = Callable[[str, bytes, bytes], None]


def rules_from_settings(path: str) -> RuleSet:
    """The configured rules file, or the shipped defaults."""
    return load_rules(Path(path)) if path else default_rules()


class AlertStage:
    """Runs the alert engine over score records and emits what it raises."""

    def __init__(
        self,
        rules: RuleSet,
        *,
        metrics: PulseMetrics,
        pseudonym: Pseudonymizer,
        sealer: Sealer,
        publish: Publish,
        topic: str,
        consent: Consent = lambda member_id: True,
        partition_of: Mapping[str, int] | None = None,
    ) -> None:
        self.rules = rules
        self.engine = AlertEngine(rules)
        self.metrics = metrics
        self.pseudonym = pseudonym
        self.sealer = sealer
        self.publish = publish
        self.topic = topic
        self.consent = consent  # marketing consent by member id (False: no webhook)
        self.partition_of = partition_of
        self.fired = 0
        self._export_active()
        for rule in rules.rules:  # counters exist at 0 from the start, so rate() sees the first
            self.metrics.alerts_fired.labels(rule.name, rule.severity)
            self.metrics.alerts_resolved.labels(rule.name, rule.severity)

    def restore(self, sealed: str) -> None:
        if sealed:
            state = json.loads(self.sealer.open(sealed))
            self.engine = AlertEngine.from_dict(self.rules, state)
            self._export_active()

    def checkpoint(self) -> str:
        return self.sealer.seal(json.dumps(self.engine.to_dict(), separators=(",", ":")).encode())

    def observe(
        self,
        scores: list[ScoreRecord],
        surveys: list[tuple[str, int, datetime]],
        watermark: datetime | None,
    ) -> list[AlertRecord]:
        alerts: list[AlertRecord] = []
        for record in scores:
            alerts.extend(self.engine.on_score(record))
        for community, nps, at in surveys:
            alerts.extend(self.engine.on_survey(community, nps, at))
        if watermark is not None:
            alerts.extend(self.engine.advance(watermark))
        return alerts

    def emit(self, alerts: list[AlertRecord], sink: ClickHouseSink) -> None:
        if not alerts:
            return
        now = utc(datetime.now(UTC))
        rows = []
        for alert in alerts:
            row = alert.to_row()
            member = alert.subject_type == "member"
            subject = self.pseudonym(alert.subject_id) if member else alert.subject_id
            rows.append(
                {
                    "alert_id": alert.alert_id,
                    "rule": alert.rule,
                    "severity": alert.severity,
                    "status": alert.status,
                    "subject_type": alert.subject_type,
                    "subject_id": subject,
                    "value": float(alert.value),
                    "threshold": float(alert.threshold),
                    "raised_at": utc(alert.raised_at),
                    "context": row["context"],
                    "emitted_at": now,
                }
            )
            message = {
                **{k: v for k, v in row.items() if k != "webhook"},
                "raised_at": alert.raised_at.isoformat(),
                "episode_start": alert.episode_start.isoformat(),
                "context": alert.context,
            }
            value = json.dumps(message, default=str, separators=(",", ":")).encode()
            self.publish(self.topic, alert.subject_id.encode(), value)
            counter = (
                self.metrics.alerts_fired
                if alert.status == "fired"
                else self.metrics.alerts_resolved
            )
            counter.labels(alert.rule, alert.severity).inc()
            self.fired += alert.status == "fired"
        sink.add("alerts", rows)
        outbox = outbox_rows(
            alerts,
            self.rules,
            self.pseudonym,
            self.consent,
            sealer=self.sealer,
            partition_of=self.partition_of,
        )
        if outbox:  # same batch as the alerts: stored before the ack
            sink.add("webhook_outbox", outbox)
        self._export_active()

    def _export_active(self) -> None:
        for (rule, severity), n in self.engine.active().items():
            self.metrics.alerts_active.labels(rule, severity).set(n)

    def stop(self) -> None:
        """Nothing to stop: webhooks are delivered by :class:`streams.webhooks.WebhookSender`."""
