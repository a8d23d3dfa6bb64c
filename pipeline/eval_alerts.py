"""How well the drop-off detector finds the simulator's incidents (``touchpoint eval alerts``).

The simulated events go through the same pure stages as in a worker (validation, the
journey stage, the metrics stage with its detector) in one process, with the simulator's
true customer as the stitched identity (stitching is measured by ``eval stitching``) and the
simulated delivery time as the clock. An alert *detects* an incident when it is for the
incident's stage and fires between the onset and the end of the incident plus the stage's
drop-off timeout (the last moment the incident's own drop-offs are decided) plus the
evaluation span; every other firing alert is a false alert.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pipeline.gc_tuning import gc_tuned
from pipeline.journey_stage import PartitionState, run_batch
from pipeline.metric_input import metric_input
from pipeline.producers.simulator import Incident, SimEvent, SimulationConfig, simulate
from pipeline.stage_metrics import MetricsConfig, MetricsState, step
from pipeline.stage_model import StageModel
from pipeline.validate import ValidationConfig, validate_message
from schemas.metrics import Alert
from schemas.records import SourceRef, Touchpoint, TouchpointBatch

_VALIDATION = ValidationConfig(
    hash_key=b"eval-alerts", hash_pii=False, max_bytes=1 << 20, placeholders=frozenset(),
    phone_region="US", max_future=timedelta(days=3650),
)  # fmt: skip


@dataclass(frozen=True)
class Detection:
    incident: Incident
    onset: datetime
    fired: Alert | None
    resolved: Alert | None

    @property
    def delay_windows(self) -> float | None:
        """Windows from the onset to the end of the window whose evaluation fired."""
        if self.fired is None:
            return None
        end = self.fired.window_start + timedelta(minutes=1)
        return (end - self.onset).total_seconds() / 60


@dataclass(frozen=True)
class RunResult:
    config: SimulationConfig
    alerts: tuple[Alert, ...]
    detections: tuple[Detection, ...]
    false_alerts: tuple[Alert, ...]
    events: int

    @property
    def simulated_days(self) -> float:
        return self.config.duration / timedelta(days=1)


def run(
    config: SimulationConfig,
    model: StageModel,
    metrics: MetricsConfig,
    batch: int = 500,
    progress: Callable[[int], None] | None = None,
    gc_young: int = 100_000,
) -> RunResult:
    """Simulate ``config`` through the pure stages; returns the alerts and their scoring.
    The garbage collector runs with a young threshold of ``gc_young`` meanwhile (as in a
    worker: :mod:`pipeline.gc_tuning`)."""
    with gc_tuned(gc_young):
        return _run(config, model, metrics, batch, progress)


def _run(
    config: SimulationConfig,
    model: StageModel,
    metrics: MetricsConfig,
    batch: int,
    progress: Callable[[int], None] | None,
) -> RunResult:
    state, part = MetricsState(metrics), PartitionState()
    alerts: list[Alert] = []
    buffer: list[SimEvent] = []
    events = 0
    for event in simulate(config):
        if event.malformed is not None or event.truth_customer is None:
            continue
        buffer.append(event)
        if len(buffer) >= batch:
            alerts += _flush(buffer, part, state, model, events)
            events += len(buffer)
            buffer.clear()
            if progress is not None:
                progress(events)
    if buffer:
        alerts += _flush(buffer, part, state, model, events)
        events += len(buffer)
    detections, false = score(config, metrics, alerts)
    return RunResult(config, tuple(alerts), detections, false, events)


def _flush(
    buffer: list[SimEvent], part: PartitionState, state: MetricsState, model: StageModel,
    offset: int,
) -> list[Alert]:  # fmt: skip
    records: list[Touchpoint] = []
    for i, event in enumerate(buffer):
        src = SourceRef(topic="simulated", partition=0, offset=offset + i)
        out = validate_message(event.payload, src, event.delivered_at, _VALIDATION)
        if isinstance(out, Touchpoint):
            records.append(out.model_copy(update={"customer_id": f"c{event.truth_customer}"}))
    result = run_batch(part, 0, 1, [TouchpointBatch(records=tuple(records))], model)
    newest = {0: max(tp.occurred_at for tp in result.stamped)} if result.stamped else {}
    fed = metric_input(result.stamped, result.transitions, result.customers, None, newest)
    if fed is None:
        return []
    return list(step(state, fed, buffer[-1].delivered_at).alerts)


def score(
    config: SimulationConfig, metrics: MetricsConfig, alerts: Iterable[Alert]
) -> tuple[tuple[Detection, ...], tuple[Alert, ...]]:
    """Match firing alerts to the incidents of ``config``."""
    fired = [a for a in alerts if a.state == "firing"]
    resolved = {a.alert_id: a for a in alerts if a.state == "resolved"}
    span = timedelta(minutes=metrics.alerts.span_windows)
    used: set[str] = set()
    detections = []
    for incident in config.incidents:
        onset = config.start + timedelta(minutes=incident.start_minute)
        timeout = timedelta(seconds=metrics.timeouts.get(incident.stage) or 0)
        last = config.start + timedelta(minutes=incident.end_minute) + timeout + span
        match = [a for a in fired if a.stage == incident.stage and onset <= a.window_start <= last]
        first = min(match, key=lambda a: a.window_start, default=None)
        used.update(a.alert_id for a in match)
        back = resolved.get(first.alert_id) if first is not None else None
        detections.append(Detection(incident, onset, first, back))
    false = tuple(a for a in fired if a.alert_id not in used)
    return tuple(detections), false
