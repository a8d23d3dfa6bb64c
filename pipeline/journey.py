"""Stage 4, journeys: per-customer journeys, stage entries and stage transitions (pure).

:func:`advance` folds a batch of one customer's events into its :class:`JourneyState`;
:func:`merge` joins the states of two customers found to be one person. Entries, stages and
rows depend on the *set* of events seen, not on their arrival order:

* a customer enters stage S at the first event (by occurred_at) of the journey mapping to S;
  the journey's current stage is the furthest stage entered (in the configured order);
* a new journey starts after the model's inactivity gap. Its id is a hash of the customer
  and the time of the event that opened it (the first to arrive that fits no kept journey;
  events are placed in arrival order, so the id does not depend on how the arrivals were
  cut into batches, as a replay after a crash cuts them otherwise), and then stays, so rows
  and stored touchpoints stay joined: a late event that starts the journey earlier re-emits
  its rows under the same key; one that bridges two journeys joins them under the earlier
  one's id and retracts the other's rows. Only ids may thus depend on arrival order, and,
  past ``MAX_JOURNEYS`` journeys, whether a very late event still reaches a journey that a
  call folded away at its end (the journey stage calls once per message, so a replay
  repeats the same calls);
* every changed row is re-emitted with the state's new version (the ReplacingMergeTree
  keyed by customer, journey and to_stage keeps the highest); gone keys get ``is_deleted``.

Stamped touchpoints carry the journey and stage known when they are processed: a late event
does not restamp stored ones (e.g. a login stored without stage before a late purchase).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import TypeVar

from pipeline.journey_build import RECENT_IDS, Decided, Span, resegment, utc
from pipeline.journey_customer import Customer, counted, uncount
from pipeline.journey_history import History, gate
from pipeline.journey_rows import changed_rows, diff, journeys_of, keyed_rows, state_rows
from pipeline.stage_model import StageModel
from schemas.journey import Journey, JourneyState, PendingEvent, RecentId, StageTransition
from schemas.records import Touchpoint, trusted

_V = TypeVar("_V", datetime, tuple[datetime, str])
_Placed = tuple[Touchpoint, datetime, bool, Decided]
_BY_TIME = itemgetter(0, 1)


@dataclass(frozen=True, slots=True)
class JourneyStep:
    state: JourneyState | None
    """The new state (None only if there was no state and no events)."""
    transitions: tuple[StageTransition, ...]
    """Rows to write: changed entries, and ``is_deleted`` retractions of re-keyed journeys."""
    stamped: tuple[Touchpoint, ...]
    """The new events by event time, with customer_id, journey_id and stage set."""
    duplicates: int = 0
    too_late: int = 0
    """Events older than the kept journeys: counted, stamped without journey_id."""


@dataclass(frozen=True, slots=True)
class MergeStep:
    state: JourneyState
    transitions: tuple[StageTransition, ...]
    """Every row of the merged state (re-emitted under the survivor)."""
    retractions: tuple[StageTransition, ...]
    """``is_deleted`` rows for the keys of either input that no longer exist."""


def advance(
    state: JourneyState | None, events: Sequence[Touchpoint], model: StageModel
) -> JourneyStep:
    """Fold one customer's ``events`` (in arrival order, late ones included) into ``state``.

    The events are taken as the state's customer's: their stamps carry its customer_id
    (an event stamped before a merge of customers may still carry the absorbed id)."""
    if not events:
        return JourneyStep(state, (), ())
    c = Customer.of(state) if state is not None else Customer(_customer_of(events))
    placed = _ingest(c, events, model)
    duplicates = len(events) - len(placed)
    if not placed:
        return JourneyStep(state, (), (), duplicates)
    entries, history = c.settle(model)
    ids = [s.jid for s in c.spans]
    emit, gone = diff(*changed_rows(state, c, entries, model), c.version)
    stamped = tuple([_stamp(c, ids, history, item) for item in placed])
    journeys = journeys_of(c, c.trim(entries, history, model), model)
    late = sum(1 for _, _, ok, _ in placed if not ok)
    return JourneyStep(_state_of(c, journeys), emit + gone, stamped, duplicates, late)


def merge(a: JourneyState, b: JourneyState, survivor_id: str, model: StageModel) -> MergeStep:
    """The state of one person from the states of two customers (``merge(a, b)`` equals
    ``merge(b, a)``): journeys joined by event time, entries the earliest, every row
    re-emitted under ``survivor_id``, the rows that no longer exist retracted."""
    c = _combined(a, b, survivor_id, model)
    entries, history = c.settle(model)
    ids = [s.jid for s in c.spans]
    completions = [s.completions for s in c.spans]
    new = keyed_rows(c.customer_id, zip(ids, entries, completions, strict=True), model)
    emit, gone = diff(state_rows(a, model) | state_rows(b, model), new, c.version, every=True)
    journeys = journeys_of(c, c.trim(entries, history, model), model)
    return MergeStep(_state_of(c, journeys), emit, gone)


def _combined(a: JourneyState, b: JourneyState, survivor_id: str, model: StageModel) -> Customer:
    """The working copy of the merged state, symmetric in ``a`` and ``b``."""
    spans = resegment(Customer.of(a).spans + Customer.of(b).spans, model.inactivity_gap)
    counts = {
        k: a.touchpoints.get(k, 0) + b.touchpoints.get(k, 0) for k in a.touchpoints | b.touchpoints
    }
    recent, twice = _union_recent(a, b)
    purchases = uncount(counts, a.purchases + b.purchases, twice)
    closed = max((t for t in (a.closed_until, b.closed_until) if t is not None), default=None)
    return Customer(
        survivor_id, spans, counts, min(a.first_seen, b.first_seen), max(a.last_seen, b.last_seen),
        *_segment(a, b), purchases, recent,
        _earliest(a.firsts, b.firsts), _earliest(a.passed, b.passed), closed,
        max(a.version, b.version) + 1,
    )  # fmt: skip


def _union_recent(a: JourneyState, b: JourneyState) -> tuple[tuple[RecentId, ...], list[str]]:
    """Both states' recent ids (the latest, bounded), and what each event that both counted
    was counted in (a replay after a crash can place an event under a customer's fallback
    id and again under the customer it is merged into). An event out of either window, or
    recorded without ``counted`` (a state of an older version), cannot be told apart."""
    mine = {r[1]: r for r in a.recent_ids}
    union = dict(mine)
    twice: list[str] = []
    for r in b.recent_ids:
        seen = mine.get(r[1])
        if seen is None:
            union[r[1]] = r
            continue
        tag = seen[2] if len(seen) == 3 else r[2] if len(r) == 3 else None
        if tag is not None:
            twice.append(tag)
        union[r[1]] = min(seen, r) if len(seen) == len(r) else max(seen, r, key=len)
    return tuple(sorted(union.values(), key=_BY_TIME)[-RECENT_IDS:]), twice


def dropped_off(journey: Journey, now: datetime, model: StageModel) -> str | None:
    """The stage ``journey`` dropped off at by ``now``: its current stage, not completed,
    entered longer than that stage's timeout ago. None if it has not dropped off."""
    stage = journey.current_stage
    if stage is None or stage in journey.completions:
        return None
    timeout = model.timeouts.get(stage)
    if timeout is None or now - journey.entries[stage].entered_at <= timeout:
        return None
    return stage


def _ingest(c: Customer, events: Sequence[Touchpoint], model: StageModel) -> list[_Placed]:
    """Ingest the events not seen yet, in arrival order; bumps the version if any.

    Not by event time: a new journey's id comes from the event that opened it, and the
    first of a batch by event time depends on where the batch was cut. A replay after a
    crash (outputs sent, changelog entry lost) cuts the same messages differently, and a
    journey keyed otherwise would leave the rows sent before the crash live for good."""
    seen = {r[1] for r in c.recent}
    placed: list[_Placed] = []
    for tp in events:
        if tp.event_id in seen:
            continue
        seen.add(tp.event_id)
        at = utc(tp.occurred_at)
        ok, decided = c.ingest(tp, at, model)
        placed.append((tp, at, ok, decided))
    if not placed:
        return placed
    placed.sort(key=_placed_by_time)  # recent ids and stamped events by event time
    c.version += 1
    c.saw(placed[0][1], placed[-1][1], [(at, tp.event_id, counted(tp)) for tp, at, _, _ in placed])
    return placed


def _placed_by_time(item: _Placed) -> tuple[datetime, str]:
    return item[1], item[0].event_id


def _customer_of(events: Sequence[Touchpoint]) -> str:
    customer_id = next((tp.customer_id for tp in events if tp.customer_id), "")
    if not customer_id:
        raise ValueError(f"event {events[0].event_id} has no customer_id (stitch identities first)")
    return customer_id


def _stamp(c: Customer, ids: list[str], history: History, item: _Placed) -> Touchpoint:
    tp, at, placed, decided = item
    jid = ""
    if placed:
        last = c.spans[-1]
        if last.start <= at <= last.last:
            jid = last.jid
        else:
            jid = next((i for s, i in zip(c.spans, ids, strict=True) if _within(s, at)), "")
    stage = decided
    if isinstance(decided, PendingEvent):
        stage = gate(decided.steps, decided.fallback, decided.kind, at, decided.event_id, history)
    values = {**tp.__dict__, "customer_id": c.customer_id, "journey_id": jid, "stage": stage or ""}
    return trusted(Touchpoint, values)


def _within(span: Span, at: datetime) -> bool:
    return span.start <= at <= span.last


def _segment(a: JourneyState, b: JourneyState) -> tuple[str | None, datetime | None]:
    """The segment of the latest event naming one, over both states (order-independent)."""
    known = [(s.segment_since, s.segment) for s in (a, b) if s.segment_since and s.segment]
    if not known:
        return a.segment or b.segment, None
    since, segment = max(known)
    return segment, since


def _earliest(x: dict[str, _V], y: dict[str, _V]) -> dict[str, _V]:
    return {k: min(v for v in (x.get(k), y.get(k)) if v is not None) for k in x | y}


def _state_of(c: Customer, journeys: list[Journey]) -> JourneyState:
    if c.first_seen is None or c.last_seen is None:
        raise ValueError("a journey state needs at least one event")
    return trusted(
        JourneyState,
        {
            "customer_id": c.customer_id,
            "journeys": tuple(journeys),
            "touchpoints": c.touchpoints,
            "first_seen": c.first_seen,
            "last_seen": c.last_seen,
            "segment": c.segment,
            "segment_since": c.segment_since,
            "purchases": c.purchases,
            "recent_ids": c.recent,
            "firsts": c.firsts,
            "passed": c.passed,
            "closed_until": c.closed_until,
            "version": c.version,
        },
    )


__all__ = ["JourneyStep", "MergeStep", "advance", "dropped_off", "merge"]
