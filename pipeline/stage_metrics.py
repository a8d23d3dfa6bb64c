"""Stage 5 in the pipeline: live stage metrics in event time (pure; see ``docs/metrics.md``).

:func:`step` folds one :class:`~schemas.metrics.MetricInput` into :class:`MetricsState`
and returns what changed. The state holds every current ``stage_transitions`` row (by key,
newest version wins, ``is_deleted`` retracts), each customer's segment, and each row's
*contribution*: its entry, and its conversion or drop-off once decided, as items in
1-minute windows (:mod:`pipeline.metrics_windows`). A change to a journey recomputes the
contributions of its rows; the difference is applied to the windows. Drop-offs are decided by
timers on ``at + timeout`` as the completeness clock passes them. The drop-off spike
detector (:mod:`pipeline.dropoff_alerts`) reads each window as it becomes complete.

Everything is a function of the inputs in order: replaying the input topic rebuilds the
state and gives the same windows.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from pipeline.dropoff_alerts import AlertConfig, Detector
from pipeline.metrics_windows import Item, Windows, utc
from pipeline.stage_model import StageModel
from schemas.metrics import UNKNOWN_SEGMENT, LateChange, MetricInput, MetricsOutput, StageWindow

Key = tuple[str, str, str]
"""(customer_id, journey_id, stage): a ``stage_transitions`` key."""
JKey = tuple[str, str]
IDLE_INPUTS = 200
SHARED_MAX = 100_000


@dataclass(frozen=True)
class MetricsConfig:
    stages: tuple[str, ...]
    timeouts: Mapping[str, float | None]
    """Drop-off timeout per stage, in seconds (None: never drops off)."""
    window_seconds: int = 60
    completeness_grace: float = 120.0
    allowed_lateness: float = 1800.0
    keep_final: float = 600.0
    """Seconds a final window stays in memory (and in the live feed)."""
    key_retention: float = 86_400.0
    """Seconds a decided row is kept after its last window is final (for late changes)."""
    alerts: AlertConfig = field(default_factory=AlertConfig)

    @classmethod
    def of(cls, model: StageModel, **overrides: object) -> MetricsConfig:
        timeouts = {s: (t.total_seconds() if t else None) for s, t in model.timeouts.items()}
        return cls(model.stages, timeouts, **overrides)  # type: ignore[arg-type]  # kwargs checked by the dataclass

    @property
    def rank(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.stages)}


@dataclass(slots=True)
class Entry:
    at: float
    channel: str
    completed: float | None


@dataclass
class MetricsState:
    config: MetricsConfig
    keys: dict[Key, Entry] = field(default_factory=dict)
    versions: dict[Key, int] = field(default_factory=dict)
    journeys: dict[JKey, tuple[str, ...]] = field(default_factory=dict)
    """The stages of each journey. Tuples, not sets: most hold one or two items, and at a
    million customers a set's 216 bytes against a tuple's 48 are 300 MB."""
    customer_journeys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    segments: dict[str, str] = field(default_factory=dict)
    contrib: dict[Key, tuple[Item, ...]] = field(default_factory=dict)
    shared: dict[tuple[Item, ...], tuple[Item, ...]] = field(default_factory=dict)
    """One object per distinct contribution: most rows of a window, stage, channel and
    segment contribute the same entry, and sharing it saves ~180 bytes a row. A cache only
    (equal values compare equal whether shared or not): emptied when it grows too large."""
    timers: list[tuple[float, Key]] = field(default_factory=list)
    newest: float = float("-inf")
    partitions: dict[int, tuple[float, int]] = field(default_factory=dict)
    """Per ``<prefix>.valid`` partition: its newest event time, the input count when seen."""
    inputs: int = 0
    version: int = 0
    evicted_at: float = float("-inf")
    windows: Windows = field(init=False)
    detector: Detector = field(init=False)
    rank: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        c = self.config
        self.windows = Windows(c.window_seconds, int(c.keep_final))
        self.detector = Detector(c.alerts, c.stages, c.timeouts, c.window_seconds)
        self.rank = c.rank


def step(state: MetricsState, msg: MetricInput, now: datetime) -> MetricsOutput:
    """Fold ``msg`` into ``state``; returns the changed windows, late changes and alerts."""
    c, w = state.config, state.windows
    late: list[LateChange] = []
    if msg.newest_event_at is not None:
        state.newest = max(state.newest, msg.newest_event_at.timestamp())
    watermark = _watermark(state, msg)
    w.count_events({int(datetime.fromisoformat(k).timestamp()): n for k, n in msg.events.items()})
    touched = _ingest(state, msg)
    for jkey in sorted(touched):
        _recompute(state, _keys_of(state, jkey), late)
    became = w.advance(watermark - c.completeness_grace, w.final_until)
    _fire_timers(state, late)
    w.advance(w.complete_until, watermark - c.allowed_lateness)
    lag = _lag(msg, now)
    alerts, statuses = [], []
    for start in became:
        fired, status = state.detector.evaluate(start, w, lag, now)
        alerts += fired
        statuses += status
    rows, state.version = w.rows(state.version, lag)
    w.evict()
    _evict_keys(state)
    return MetricsOutput(
        windows=tuple(rows),
        late=tuple(late),
        alerts=tuple(alerts),
        statuses=tuple(statuses),
        newest_event_at=utc(state.newest) if state.newest > float("-inf") else None,
        complete_until=_clock(w.complete_until),
        final_until=_clock(w.final_until),
    )


def live_windows(state: MetricsState) -> list[StageWindow]:
    """Every window held, as rows (for the live feed), without touching versions."""
    rows = state.windows.snapshot(sorted(state.windows.aggs), state.version, 0.0)
    return [r.model_copy(update={"version": state.version}) for r in rows]


def _clock(ts: float) -> datetime | None:
    return utc(ts) if ts > float("-inf") else None


def _watermark(state: MetricsState, msg: MetricInput) -> float:
    """The newest event time every active partition has reached: the lowest of the
    partitions' newest times, over the partitions heard from in the last ``IDLE_INPUTS``
    inputs (an idle partition does not hold the clocks back; a slow one does)."""
    state.inputs += 1
    for partition, at in msg.partitions.items():
        old = state.partitions.get(int(partition), (float("-inf"), 0))[0]
        state.partitions[int(partition)] = (max(old, at.timestamp()), state.inputs)
    active = [t for t, seen in state.partitions.values() if state.inputs - seen <= IDLE_INPUTS]
    return min(active) if active else state.newest


def _lag(msg: MetricInput, now: datetime) -> float:
    if msg.newest_arrived_at is None:
        return 0.0
    return max(0.0, (now - msg.newest_arrived_at).total_seconds())


def _ingest(state: MetricsState, msg: MetricInput) -> set[JKey]:
    touched: set[JKey] = set()
    for t in msg.transitions:
        key = (t.customer_id, t.journey_id, t.to_stage)
        if t.version < state.versions.get(key, -1) or t.to_stage not in state.rank:
            continue
        state.versions[key] = t.version
        jkey = (t.customer_id, t.journey_id)
        if t.is_deleted:
            state.keys.pop(key, None)
            state.journeys[jkey] = _without(state.journeys.get(jkey, ()), t.to_stage)
        else:
            done = t.completed_at.timestamp() if t.completed_at else None
            state.keys[key] = Entry(t.at.timestamp(), t.channel, done)
            state.journeys[jkey] = _with(state.journeys.get(jkey, ()), t.to_stage)
            held = state.customer_journeys.get(t.customer_id, ())
            state.customer_journeys[t.customer_id] = _with(held, t.journey_id)
        touched.add(jkey)
    for customer, segment in msg.segments.items():
        if state.segments.get(customer, UNKNOWN_SEGMENT) != segment:
            state.segments[customer] = segment
            touched.update((customer, j) for j in state.customer_journeys.get(customer, ()))
    return touched


def _keys_of(state: MetricsState, jkey: JKey) -> list[Key]:
    stages = state.journeys.get(jkey, ())
    known = [(*jkey, s) for s in sorted(stages)]
    stale = [k for k in _contributed(state, jkey) if k[2] not in stages]
    return known + stale


def _contributed(state: MetricsState, jkey: JKey) -> Iterable[Key]:
    return [(*jkey, s) for s in state.config.stages if (*jkey, s) in state.contrib]


def _recompute(state: MetricsState, keys: Iterable[Key], late: list[LateChange]) -> None:
    for key in keys:
        old = state.contrib.pop(key, ())
        entry = state.keys.get(key)
        new = _items(state, key, entry) if entry is not None else ()
        if new:
            state.contrib[key] = new
        if old == new:
            continue
        for item in old:
            if item not in new:
                _apply(state, key, item, -1, late)
        for item in new:
            if item not in old:
                _apply(state, key, item, 1, late)


def _apply(state: MetricsState, key: Key, item: Item, sign: int, late: list[LateChange]) -> None:
    if state.windows.apply(item, sign):
        return
    measure, start, stage, channel, segment, *_ = item
    late.append(
        LateChange(
            window_start=utc(start), stage=stage, channel=channel, segment=segment,
            customer_id=key[0], journey_id=key[1], measure=measure,
            delta=sign, final_until=utc(state.windows.final_until),
        )
    )  # fmt: skip


def _items(state: MetricsState, key: Key, e: Entry) -> tuple[Item, ...]:
    customer, _, stage = key
    segment = state.segments.get(customer, UNKNOWN_SEGMENT)
    start_of = state.windows.start_of
    entered = start_of(e.at)
    items: list[Item] = [("entries", entered, stage, e.channel, segment, None, None)]
    timeout = state.config.timeouts.get(stage)
    converted = _conversion_at(state, key, e)
    if converted is not None and (timeout is None or converted - e.at <= timeout):
        seconds = converted - e.at
        items.append(
            ("conversions", start_of(converted), stage, e.channel, segment, seconds, entered)
        )
    elif timeout is not None:
        due = e.at + timeout
        if due <= state.windows.complete_until:
            items.append(("dropoffs", start_of(due), stage, e.channel, segment, None, None))
        else:
            heapq.heappush(state.timers, (due, key))
    return _shared(state, tuple(items))


def _shared(state: MetricsState, items: tuple[Item, ...]) -> tuple[Item, ...]:
    known = state.shared.get(items)
    if known is not None:
        return known
    if len(state.shared) >= SHARED_MAX:
        state.shared.clear()
    state.shared[items] = items
    return items


def _conversion_at(state: MetricsState, key: Key, e: Entry) -> float | None:
    """The earliest of the stage's completion and the entry into a later stage (not
    before the entry itself: a journey already past the stage converts on entering it)."""
    customer, journey, stage = key
    rank = state.rank[stage]
    later = [
        state.keys[(customer, journey, s)].at
        for s in state.journeys.get((customer, journey), ())
        if state.rank[s] > rank
    ]
    candidates = [max(e.at, min(later))] if later else []
    if e.completed is not None:
        candidates.append(max(e.at, e.completed))
    return min(candidates) if candidates else None


def _fire_timers(state: MetricsState, late: list[LateChange]) -> None:
    timers, until = state.timers, state.windows.complete_until
    due: set[Key] = set()
    while timers and timers[0][0] <= until:
        due.add(heapq.heappop(timers)[1])
    _recompute(state, sorted(k for k in due if k in state.keys), late)


def _evict_keys(state: MetricsState) -> None:
    """Every 10 event-time minutes, forget decided rows whose windows are long final."""
    final = state.windows.final_until
    if final - state.evicted_at < 600:
        return
    state.evicted_at = final
    horizon = final - state.config.key_retention
    width = state.config.window_seconds
    for key, items in list(state.contrib.items()):
        decided = len(items) > 1 or state.config.timeouts.get(key[2]) is None
        if decided and all(item[1] + width <= horizon for item in items):
            _forget(state, key)


def _forget(state: MetricsState, key: Key) -> None:
    customer, journey, stage = key
    state.contrib.pop(key, None)
    state.keys.pop(key, None)
    state.versions.pop(key, None)
    stages = state.journeys.get((customer, journey))
    if stages is None:
        return
    if stages := _without(stages, stage):
        state.journeys[(customer, journey)] = stages
        return
    del state.journeys[(customer, journey)]
    journeys = state.customer_journeys.get(customer)
    if journeys is None:
        return
    if journeys := _without(journeys, journey):
        state.customer_journeys[customer] = journeys
        return
    del state.customer_journeys[customer]
    state.segments.pop(customer, None)


def _with(group: tuple[str, ...], item: str) -> tuple[str, ...]:
    return group if item in group else (*group, item)


def _without(group: tuple[str, ...], item: str) -> tuple[str, ...]:
    return tuple(x for x in group if x != item)
