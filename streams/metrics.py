"""Every Prometheus metric Pulse exports, named once.

Names start with ``pulse_``, carry their unit as a suffix and ``_total`` for
counters. Label values are bounded: topics, partitions, event types, reject
reasons, table names, rule names, severities, risk bands, model names. A member
id is never a label.

Metrics live in a :class:`PulseMetrics` object bound to a registry, so tests
read a private ``CollectorRegistry`` with ``get_sample_value`` and several
workers can share one process without clashing.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

__all__ = ["PulseMetrics", "HttpMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
_FRESHNESS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class PulseMetrics:
    """The metric families of one Pulse worker, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.build_info = Info("pulse_build", "Version of the running Pulse worker.", registry=r)

        # --- ingestion -------------------------------------------------------
        self.events_received = Counter(
            "pulse_events_received_total",
            "Messages read from an input topic, valid or not.",
            ["topic"],
            registry=r,
        )
        self.events_valid = Counter(
            "pulse_events_valid_total",
            "Messages that passed validation, by event type.",
            ["topic", "event_type"],
            registry=r,
        )
        self.events_rejected = Counter(
            "pulse_events_rejected_total",
            "Messages rejected to the dead-letter topic, by typed reason.",
            ["topic", "reason"],
            registry=r,
        )
        self.events_duplicate = Counter(
            "pulse_events_duplicate_total",
            "Valid events dropped because their event_id was already stored.",
            ["topic"],
            registry=r,
        )
        self.dead_letter_published = Counter(
            "pulse_dead_letter_messages_total",
            "Messages written to the dead-letter topic.",
            ["reason"],
            registry=r,
        )

        # --- ClickHouse sink -------------------------------------------------
        self.sink_rows = Counter(
            "pulse_sink_rows_total",
            "Rows inserted into ClickHouse, by table.",
            ["table"],
            registry=r,
        )
        self.sink_flush_duration = Histogram(
            "pulse_sink_flush_duration_seconds",
            "Time to insert one batch (all its tables) into ClickHouse.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.sink_errors = Counter(
            "pulse_sink_errors_total",
            "Failed batch inserts, by table and error class.",
            ["table", "error"],
            registry=r,
        )
        self.sink_retries = Counter(
            "pulse_sink_retries_total",
            "Batch inserts attempted again after a failure.",
            registry=r,
        )
        self.sink_backlog_rows = Gauge(
            "pulse_sink_backlog_rows",
            "Rows buffered and not yet confirmed in ClickHouse.",
            registry=r,
        )
        self.sink_last_success = Gauge(
            "pulse_sink_last_success_timestamp_seconds",
            "Wall-clock time of the last successful flush.",
            registry=r,
        )

        # --- consumer progress (independent of broker watermarks) -------------
        self.consumer_lag_seconds = Gauge(
            "pulse_consumer_lag_seconds",
            "Wall clock minus the broker timestamp of the last message processed, by partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.committed_offset = Gauge(
            "pulse_committed_offset",
            "Next offset to read, as committed after its rows reached ClickHouse.",
            ["topic", "partition"],
            registry=r,
        )
        self.offset_holes = Counter(
            "pulse_offset_holes_total",
            "Input offsets never delivered, even after rewinds (lost messages).",
            ["topic"],
            registry=r,
        )
        self.input_rewinds = Counter(
            "pulse_input_rewinds_total",
            "Partitions rewound to an offset the consumer had skipped (after rebalances).",
            ["topic"],
            registry=r,
        )
        self.acked_messages = Counter(
            "pulse_acked_messages_total",
            "Messages acknowledged for commit after their rows were stored.",
            ["topic"],
            registry=r,
        )
        self.last_ack = Gauge(
            "pulse_last_ack_timestamp_seconds",
            "Wall-clock time of the last acknowledgement (commit progress).",
            registry=r,
        )
        self.event_time_watermark = Gauge(
            "pulse_event_time_watermark_seconds",
            "Event-time clock of the worker: the horizon every input has passed, minus "
            "allowed lateness.",
            registry=r,
        )
        self.events_held = Gauge(
            "pulse_events_held",
            "Valid events not acknowledged yet: held until every input has passed their "
            "event time, or applied and waiting for the next state checkpoint.",
            registry=r,
        )

        # --- scoring ---------------------------------------------------------
        self.freshness = Histogram(
            "pulse_freshness_seconds",
            "Wall-clock delay from an event's broker timestamp to its score being emitted.",
            buckets=_FRESHNESS_BUCKETS,
            registry=r,
        )
        self.scores_emitted = Counter(
            "pulse_scores_emitted_total",
            "Score records emitted, by trigger (event or silence).",
            ["trigger"],
            registry=r,
        )
        self.members = Gauge(
            "pulse_members",
            "Members held in this worker's state.",
            registry=r,
        )
        self.members_by_churn_risk = Gauge(
            "pulse_members_by_churn_risk",
            "Members per churn risk band, as last scored.",
            ["risk"],
            registry=r,
        )
        self.members_by_stage = Gauge(
            "pulse_members_by_lifecycle_stage",
            "Members per lifecycle stage.",
            ["stage"],
            registry=r,
        )
        self.lifecycle_transitions = Counter(
            "pulse_lifecycle_transitions_total",
            "Lifecycle transitions recorded.",
            ["from_stage", "to_stage"],
            registry=r,
        )
        self.labels_applied = Counter(
            "pulse_model_labels_total",
            "Delayed labels the models learned from, by model and label.",
            ["model", "label"],
            registry=r,
        )
        self.model_roc_auc = Gauge(
            "pulse_model_roc_auc",
            "Delayed progressive validation ROC AUC of a partition's model.",
            ["model", "partition"],
            registry=r,
        )
        self.model_log_loss = Gauge(
            "pulse_model_log_loss",
            "Delayed progressive validation log loss of a partition's model.",
            ["model", "partition"],
            registry=r,
        )
        self.model_drift = Counter(
            "pulse_model_drift_detected_total",
            "Concept drift confirmed on a model's error stream.",
            ["model", "partition"],
            registry=r,
        )
        self.scoring_duration = Histogram(
            "pulse_scoring_duration_seconds",
            "CPU time to apply one event: state update, scores and learning.",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
            registry=r,
        )

        # --- alerts ----------------------------------------------------------
        self.alerts_fired = Counter(
            "pulse_alerts_fired_total",
            "Threshold alerts fired.",
            ["rule", "severity"],
            registry=r,
        )
        self.alerts_resolved = Counter(
            "pulse_alerts_resolved_total",
            "Threshold alerts resolved.",
            ["rule", "severity"],
            registry=r,
        )
        self.alerts_active = Gauge(
            "pulse_alerts_active",
            "Threshold alerts currently firing.",
            ["rule", "severity"],
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "pulse_webhook_deliveries_total",
            "Alert webhook delivery attempts, by outcome.",
            ["rule", "outcome"],
            registry=r,
        )


class HttpMetrics:
    """The HTTP endpoint's metric families (:mod:`streams.web`), on the worker's registry.

    ``route`` is the route's template (``/v1/members/{member_id}``), never the path a
    client sent: a path may carry a member id.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.requests = Counter(
            "pulse_http_requests_total",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "code"],
            registry=r,
        )
        self.duration = Histogram(
            "pulse_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["route"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )
        self.collector_events = Counter(
            "pulse_collector_events_total",
            "Events received by POST /v1/events, by outcome (accepted or rejected) and "
            "rejection reason (none when accepted).",
            ["outcome", "reason"],
            registry=r,
        )
        self.collector_unavailable = Counter(
            "pulse_collector_unavailable_total",
            "POST /v1/events requests answered 503 because the broker did not confirm in time.",
            registry=r,
        )
