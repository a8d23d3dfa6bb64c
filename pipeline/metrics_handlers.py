"""What the metrics agent does with one batch of ``<prefix>.metric-inputs`` (one partition,
so one worker holds the metrics state; see :mod:`pipeline.stage_metrics`).

On its first batch the worker rebuilds the state by replaying the topic from the start up
to the batch (the stage is a deterministic fold of its inputs); then each input goes through
:func:`~pipeline.stage_metrics.step`. The outputs are sent to ``<prefix>.stage-metrics``
(the live feed) and ``<prefix>.alerts``, written to ``stage_metrics``, ``late_events`` and
``alerts`` with a deduplication token from the input offsets, published as gauges, and the
alerts are handed to the webhook; only then does faust ack the batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.alert_webhook import WebhookConfig, WebhookSender
from pipeline.dropoff_alerts import AlertConfig
from pipeline.handlers import decode_batch, send_dead_letters
from pipeline.kafka_config import KafkaConfig
from pipeline.metrics import StageGauges
from pipeline.rows import ALERT_COLUMNS, LATE_COLUMNS, STAGE_METRICS_COLUMNS, model_row
from pipeline.settings import Settings
from pipeline.stage_metrics import MetricsConfig, MetricsState, live_windows, step
from pipeline.stage_model import StageModel
from pipeline.worker_context import Topics, Worker
from schemas.metrics import ALL, Alert, AlertStatus, MetricInput, MetricsOutput

log = logging.getLogger("touchpoint.metrics")


def webhook_sender(settings: Settings, worker: Worker) -> WebhookSender | None:
    if not settings.alert_webhook_url:
        return None
    token = settings.alert_webhook_token
    config = WebhookConfig(
        url=settings.alert_webhook_url,
        format=settings.alert_webhook_format,
        token=token.get_secret_value() if token is not None else None,
        external_url=f"http://{settings.dashboard_host}:{settings.dashboard_port}/",
    )
    g = worker.metrics.stages
    return WebhookSender(config, sent=g.webhook_sent, failed=g.webhook_failed)


def metrics_config(settings: Settings, model: StageModel) -> MetricsConfig:
    alerts = AlertConfig(
        span_windows=settings.alert_span_windows,
        fast_span_windows=settings.alert_fast_span_windows,
        confirm=settings.alert_confirm,
        baseline_windows=settings.alert_baseline_windows,
        relative_increase=settings.alert_relative_increase,
        zscore=settings.alert_zscore,
        min_volume=settings.alert_min_volume,
        max_ingest_lag=settings.alert_max_ingest_lag,
    )
    return MetricsConfig.of(
        model,
        completeness_grace=settings.metrics_completeness_grace,
        allowed_lateness=settings.metrics_allowed_lateness,
        alerts=alerts,
    )


@dataclass
class MetricsRuntime:
    """The metrics stage of the worker that owns ``<prefix>.metric-inputs``."""

    config: MetricsConfig
    sender: WebhookSender | None = None
    state: MetricsState | None = None
    alerts: deque[Alert] = field(default_factory=lambda: deque(maxlen=100))
    statuses: dict[tuple[str, str], AlertStatus] = field(default_factory=dict)
    last: MetricsOutput | None = None

    def reset(self) -> None:
        """The partition went to another worker: forget everything."""
        self.state, self.last = None, None
        self.statuses.clear()


async def replay(topic: str, kafka: KafkaConfig, state: MetricsState, stop: int) -> int:
    """Fold the inputs at offsets below ``stop`` into ``state``; returns how many."""
    if stop <= 0:
        return 0
    consumer = AIOKafkaConsumer(enable_auto_commit=False, group_id=None, **kafka.aiokafka())
    await consumer.start()
    count = 0
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        while await consumer.position(tp) < stop:
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=500)
            for record in batch.get(tp, []):
                if record.offset >= stop:
                    break
                if record.value:
                    msg = MetricInput.model_validate_json(record.value)
                    step(state, msg, msg.produced_at or datetime.now(UTC))
                    count += 1
    finally:
        await consumer.stop()
    log.info("metrics: state rebuilt from %d inputs (offsets below %d)", count, stop)
    return count


async def handle_metric_inputs(
    worker: Worker, topics: Topics, runtime: MetricsRuntime, events: Sequence[Any]
) -> None:
    got = decode_batch(events, MetricInput, "stage-metrics")
    if runtime.state is None:
        runtime.state = MetricsState(runtime.config)
        first = min(e.message.offset for e in events)
        await replay(topics.metric_inputs.get_topic_name(), worker.kafka, runtime.state, first)
    now = datetime.now(UTC)
    outputs = [
        identify_late(step(runtime.state, msg, now), offset)
        for msg, offset in zip(got.records, got.offsets, strict=True)
    ]
    out = merge_outputs(outputs)
    runtime.last = out
    pending = []
    if out.windows or out.alerts or out.late:
        body = out.model_dump_json().encode()
        pending.append(await topics.stage_metrics.send(key=b"0", value=body, partition=0))
    for alert in out.alerts:
        body = alert.model_dump_json().encode()
        pending.append(await topics.alerts.send(key=alert.alert_id.encode(), value=body))
    await asyncio.gather(*pending)
    token = got.token(topics.metric_inputs)
    sinks = worker.sinks
    await sinks["stage_metrics"].write(
        [model_row(w, STAGE_METRICS_COLUMNS) for w in out.windows], token
    )
    await sinks["late_events"].write([model_row(x, LATE_COLUMNS) for x in out.late], token)
    await sinks["alerts"].write([model_row(a, ALERT_COLUMNS) for a in out.alerts], token)
    await send_dead_letters(topics, got.bad)
    publish(worker.metrics.stages, runtime, out)
    if runtime.sender is not None and out.alerts:
        runtime.sender.submit(out.alerts)


def identify_late(out: MetricsOutput, offset: int) -> MetricsOutput:
    """Give each late change of the input at ``offset`` its id (``<offset>.<index>``)."""
    if not out.late:
        return out
    late = tuple(
        x.model_copy(update={"change_id": f"{offset}.{i}"}) for i, x in enumerate(out.late)
    )
    return out.model_copy(update={"late": late})


def merge_outputs(outputs: Sequence[MetricsOutput]) -> MetricsOutput:
    """One output for a batch: the newest row per window, everything else in order."""
    windows = {
        (w.window_start, w.stage, w.channel, w.segment): w for o in outputs for w in o.windows
    }
    statuses = {(s.stage, s.channel): s for o in outputs for s in o.statuses}
    last = outputs[-1] if outputs else MetricsOutput()
    return MetricsOutput(
        windows=tuple(windows.values()),
        late=tuple(x for o in outputs for x in o.late),
        alerts=tuple(a for o in outputs for a in o.alerts),
        statuses=tuple(statuses.values()),
        newest_event_at=last.newest_event_at,
        complete_until=last.complete_until,
        final_until=last.final_until,
    )


def publish(g: StageGauges, runtime: MetricsRuntime, out: MetricsOutput) -> None:
    """Gauges for the newest complete window and the detector; counters for the rest."""
    newest_complete = max((w.window_start for w in out.windows if w.is_complete), default=None)
    for w in out.windows:
        if w.window_start == newest_complete:
            labels = (w.stage, w.channel, w.segment)
            g.entries.labels(*labels).set(w.entries)
            g.conversions.labels(*labels).set(w.conversions)
            g.dropoffs.labels(*labels).set(w.dropoffs)
            g.in_stage.labels(*labels).set(w.in_stage)
        g.ingest_lag.set(w.ingest_lag_seconds)
    if out.final_until is not None:
        end = int(out.final_until.timestamp() // 60) * 60
        g.newest_final.set(end)
    g.late_events.inc(len(out.late))
    for alert in out.alerts:
        g.alerts.labels(alert.state).inc()
        runtime.alerts.append(alert)
    for s in out.statuses:
        runtime.statuses[(s.stage, s.channel)] = s
        pair = (s.stage, s.channel)
        g.firing.labels(*pair).set(1 if s.firing else 0)
        g.suppressed.labels(*pair).set(1 if s.suppressed in ("ingest_lag", "warming_up") else 0)
        g.volume.labels(*pair).set(s.volume)
        if s.dropoff_rate is not None:
            g.rate.labels(*pair).set(s.dropoff_rate)
        if s.baseline_rate is not None and s.zscore is not None:
            g.baseline.labels(*pair).set(s.baseline_rate)
            g.zscore.labels(*pair).set(s.zscore)
            relative = (
                s.dropoff_rate / s.baseline_rate - 1
                if s.dropoff_rate is not None and s.baseline_rate
                else 0.0
            )
            g.relative.labels(*pair).set(relative)


def feed(runtime: MetricsRuntime | None) -> dict[str, Any]:
    """The live feed (faust web view ``/stages``): windows held, statuses, recent alerts."""
    if runtime is None or runtime.state is None:
        return {"owner": False, "windows": [], "statuses": [], "alerts": []}
    last = runtime.last
    return {
        "owner": True,
        "newest_event_at": last.newest_event_at if last else None,
        "complete_until": last.complete_until if last else None,
        "final_until": last.final_until if last else None,
        "windows": [
            w.model_dump(mode="json") for w in live_windows(runtime.state) if w.segment == ALL
        ],
        "statuses": [s.model_dump(mode="json") for s in runtime.statuses.values()],
        "alerts": [a.model_dump(mode="json") for a in runtime.alerts],
    }
