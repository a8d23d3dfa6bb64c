"""All Prometheus metrics of a worker in one injectable bundle, with explicit buckets.

Create one :class:`PipelineMetrics` per process (or per test, on its own registry) and
pass it to whatever records.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 500, 1_000, 2_000, 5_000, 10_000, 20_000)


@dataclass(frozen=True)
class PipelineMetrics:
    registry: CollectorRegistry
    events_in: Counter
    events_valid: Counter
    dead_lettered: Counter
    duplicates: Counter
    unknown_event_types: Counter
    rows_written: Counter
    insert_errors: Counter
    sink_batch_seconds: Histogram
    sink_batch_rows: Histogram
    sink_retrying: Gauge
    consumer_lag: Gauge
    newest_event_time: Gauge
    ingest_lag_seconds: Gauge
    healthy: Gauge
    erased: Counter
    identity_merges: Counter
    identity_refusals: Counter
    stages: StageGauges

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> PipelineMetrics:
        reg = registry if registry is not None else CollectorRegistry()
        return cls(
            registry=reg,
            events_in=Counter("touchpoint_events_in", "Raw messages consumed.", registry=reg),
            events_valid=Counter("touchpoint_events_valid", "Events that passed validation.", registry=reg),
            dead_lettered=Counter(
                "touchpoint_dead_lettered", "Messages dead-lettered.", ["reason", "stage"], registry=reg
            ),
            duplicates=Counter("touchpoint_duplicates", "Repeated event_ids dropped.", registry=reg),
            unknown_event_types=Counter(
                "touchpoint_unknown_event_types",
                "Accepted events whose type is outside the catalogue.",
                ["channel"],
                registry=reg,
            ),
            rows_written=Counter(
                "touchpoint_rows_written", "Rows inserted into ClickHouse.", ["table"], registry=reg
            ),
            insert_errors=Counter(
                "touchpoint_insert_errors", "Failed ClickHouse inserts.", ["table", "code"], registry=reg
            ),
            sink_batch_seconds=Histogram(
                "touchpoint_sink_batch_seconds", "Time of one ClickHouse insert.", ["table"],
                buckets=LATENCY_BUCKETS, registry=reg,
            ),
            sink_batch_rows=Histogram(
                "touchpoint_sink_batch_rows", "Rows per ClickHouse insert.", ["table"],
                buckets=BATCH_SIZE_BUCKETS, registry=reg,
            ),
            sink_retrying=Gauge(
                "touchpoint_sink_retrying", "1 while inserts into a table are being retried.",
                ["table"], registry=reg,
            ),
            consumer_lag=Gauge(
                "touchpoint_consumer_lag", "Messages not yet read, per topic partition.",
                ["topic", "partition"], registry=reg,
            ),
            newest_event_time=Gauge(
                "touchpoint_newest_event_time_seconds", "occurred_at of the newest event seen.",
                registry=reg,
            ),
            ingest_lag_seconds=Gauge(
                "touchpoint_ingest_lag_seconds",
                "Seconds between an event's arrival at the broker and its validation (last batch).",
                registry=reg,
            ),
            healthy=Gauge(
                "touchpoint_worker_healthy", "1 when the last health check passed, else 0.",
                registry=reg,
            ),
            erased=Counter(
                "touchpoint_erased_events", "Events dropped: all their identifiers were erased (GDPR).",
                registry=reg,
            ),
            identity_merges=Counter(
                "touchpoint_identity_merges", "Customers merged into another by the resolver.",
                registry=reg,
            ),
            identity_refusals=Counter(
                "touchpoint_identity_refusals", "Identifiers kept out of a customer, by reason.",
                ["reason"], registry=reg,
            ),
            stages=StageGauges.create(reg),
        )  # fmt: skip


SC = ["stage", "channel"]
SCS = ["stage", "channel", "segment"]


@dataclass(frozen=True)
class StageGauges:
    """The live stage metrics (newest complete window) and the drop-off detector."""

    entries: Gauge
    conversions: Gauge
    dropoffs: Gauge
    in_stage: Gauge
    firing: Gauge
    suppressed: Gauge
    rate: Gauge
    baseline: Gauge
    zscore: Gauge
    relative: Gauge
    volume: Gauge
    newest_final: Gauge
    ingest_lag: Gauge
    late_events: Counter
    alerts: Counter
    webhook_sent: Counter
    webhook_failed: Counter

    @classmethod
    def create(cls, reg: CollectorRegistry) -> StageGauges:
        def g(name: str, doc: str, labels: list[str] = SC) -> Gauge:
            return Gauge(name, doc, labels, registry=reg)

        window = " in the newest complete 1-minute window."
        return cls(
            entries=g("touchpoint_stage_entries", "Entries" + window, SCS),
            conversions=g("touchpoint_stage_conversions", "Conversions" + window, SCS),
            dropoffs=g("touchpoint_stage_dropoffs", "Drop-offs" + window, SCS),
            in_stage=g("touchpoint_stage_in_stage", "Customers in the stage at its end.", SCS),
            firing=g("touchpoint_dropoff_alert_firing", "1 while a drop-off spike alert fires."),
            suppressed=g(
                "touchpoint_dropoff_alert_suppressed",
                "1 when the last evaluation took no decision (ingest lag, warming up).",
            ),
            rate=g("touchpoint_stage_dropoff_rate", "Drop-off rate over the alert span."),
            baseline=g("touchpoint_stage_dropoff_baseline", "Baseline drop-off rate."),
            zscore=g("touchpoint_stage_dropoff_zscore", "Robust z-score against the baseline."),
            relative=g("touchpoint_stage_dropoff_relative_increase", "Rate / baseline - 1."),
            volume=g(
                "touchpoint_stage_expected_conversions",
                "Conversions expected in the alert span (its volume).",
            ),
            newest_final=Gauge(
                "touchpoint_metrics_newest_final_window_seconds",
                "Unix time of the end of the newest final window.", registry=reg,
            ),
            ingest_lag=Gauge(
                "touchpoint_metrics_ingest_lag_seconds",
                "Seconds from the newest event's arrival to the metrics stage.", registry=reg,
            ),
            late_events=Counter(
                "touchpoint_metrics_late_changes", "Changes that reached a final window.",
                registry=reg,
            ),
            alerts=Counter("touchpoint_alerts", "Alerts fired or resolved.", ["state"], registry=reg),
            webhook_sent=Counter(
                "touchpoint_alert_webhook_sent", "Webhook requests delivered.", registry=reg
            ),
            webhook_failed=Counter(
                "touchpoint_alert_webhook_failed", "Webhook requests given up.", registry=reg
            ),
        )  # fmt: skip
