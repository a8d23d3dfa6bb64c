"""Live stage metrics and drop-off alerts (record version 1).

Definitions (``docs/metrics.md`` gives them in full, as implemented in
:mod:`pipeline.stage_metrics`): a customer *enters* stage S at the ``at`` of its
``stage_transitions`` row; *converts* from S at the earliest of S's completion and the entry
into any later stage of the same journey, when that is within S's drop-off timeout; *drops
off* at ``at + timeout`` when the timeout elapses first. Entries count in the 1-minute
event-time window of the entry, conversions in that of the conversion, drop-offs in that of
``at + timeout``.

Two event-time clocks drive the windows, both from ``newest``, the newest event time every
active partition of ``<prefix>.valid`` has reached (the low watermark):
``complete_until = newest - completeness_grace`` (drop-offs are decided up to here, and a
window ending before it is *complete*: alerts may read it) and ``final_until = newest -
allowed_lateness`` (a window ending before it is *final* and never changes again; a later
change to it is recorded in ``late_events`` instead).
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, Field

from schemas.journey import StageTransition
from schemas.records import Record

ALL = "all"
"""The ``channel`` / ``segment`` value of a roll-up over every channel / segment."""
UNKNOWN_SEGMENT = "unknown"
"""The segment of a customer whose events never named one."""


class MetricInput(Record):
    """One message on ``<prefix>.metric-inputs`` (a single partition): what one journey
    batch tells the metrics stage."""

    transitions: tuple[StageTransition, ...] = ()
    segments: dict[str, str] = Field(default_factory=dict)
    """customer_id -> segment, for the customers whose profile the batch wrote."""
    events: dict[str, int] = Field(default_factory=dict)
    """Events received, by the ISO start of their 1-minute event-time window."""
    newest_event_at: AwareDatetime | None = None
    partitions: dict[str, AwareDatetime] = Field(default_factory=dict)
    """The newest event time per ``<prefix>.valid`` partition in the batch: the clocks
    follow the slowest active partition, not the fastest."""
    newest_arrived_at: AwareDatetime | None = None
    """When the latest-arriving event of the batch reached the broker (its Kafka timestamp,
    else when the pipeline received it): the ingest lag is the time since."""
    produced_at: AwareDatetime | None = None


class WindowKey(Record):
    window_start: AwareDatetime
    stage: str
    channel: str
    """The channel of the entry into ``stage``, or ``all``."""
    segment: str
    """The customer's segment, ``unknown``, or ``all``."""


class StageWindow(Record):
    """One row of ``stage_metrics`` (ReplacingMergeTree by ``version``)."""

    window_start: AwareDatetime
    window_end: AwareDatetime
    stage: str
    channel: str
    segment: str
    entries: int = 0
    conversions: int = 0
    dropoffs: int = 0
    conversion_rate: float | None = None
    """conversions / (conversions + dropoffs): the share of outcomes decided in the window."""
    dropoff_rate: float | None = None
    in_stage: int = 0
    """Customers in the stage at the window's end (entered, neither converted nor dropped)."""
    median_seconds_to_convert: float | None = None
    p90_seconds_to_convert: float | None = None
    events: int = 0
    """Events received so far whose event time is in the window (all stages, channels)."""
    ingest_lag_seconds: float = 0.0
    late_events: int = 0
    """Changes that reached this window after it was final (see ``late_events``)."""
    is_complete: bool = False
    is_final: bool = False
    version: int


class LateChange(Record):
    """One row of ``late_events``: a change to a final window, not applied to it."""

    window_start: AwareDatetime
    stage: str
    channel: str
    segment: str
    customer_id: str
    journey_id: str
    measure: Literal["entries", "conversions", "dropoffs"]
    delta: int
    """+1 or -1: what the change would have done to ``measure``."""
    final_until: AwareDatetime
    """The metrics stage's final watermark when the change arrived."""
    change_id: str = ""
    """``<input offset>.<index>``: the metric input that caused it and its place among that
    input's late changes. The fold is deterministic, so a replay after a takeover gives the
    same change the same id, and ``late_events`` (ReplacingMergeTree) keeps it once."""


AlertState = Literal["firing", "resolved"]


class Alert(Record):
    """A drop-off spike alert, fired or resolved (one row of ``alerts``, one message on
    ``<prefix>.alerts``)."""

    alert_id: str
    """Stable for one episode: ``dropoff:<stage>:<channel>:<window_start of firing>``."""
    state: AlertState
    stage: str
    channel: str
    """A channel, or ``all`` for the stage as a whole."""
    window_start: AwareDatetime
    """The window whose evaluation fired or resolved the alert."""
    dropoff_rate: float
    """Over the evaluation span (the last ``span`` windows): the baseline rate moved by the
    conversion deficit (see ``docs/metrics.md``)."""
    baseline_rate: float
    relative_increase: float
    zscore: float
    volume: int
    """Conversions expected in the evaluation span (the evidence behind the z-score)."""
    started_at: AwareDatetime
    """The window start of the firing evaluation."""
    evaluated_at: AwareDatetime
    """Wall clock of the evaluation."""
    summary: str


class AlertStatus(Record):
    """The last evaluation of one (stage, channel), firing or not, or why it was skipped."""

    stage: str
    channel: str
    window_start: AwareDatetime | None
    dropoff_rate: float | None
    baseline_rate: float | None
    zscore: float | None
    volume: int
    firing: bool
    suppressed: str = ""
    """Why no decision was taken (``ingest_lag``, ``incomplete``, ``low_volume``,
    ``warming_up``), or empty."""


class MetricsOutput(Record):
    """One message on ``<prefix>.stage-metrics``: the windows one input changed, the late
    changes, the alerts and the alert statuses."""

    windows: tuple[StageWindow, ...] = ()
    late: tuple[LateChange, ...] = ()
    alerts: tuple[Alert, ...] = ()
    statuses: tuple[AlertStatus, ...] = ()
    newest_event_at: AwareDatetime | None = None
    complete_until: AwareDatetime | None = None
    final_until: AwareDatetime | None = None
