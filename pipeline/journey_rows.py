"""Journey records and stage-transition rows derived from a journey's entries.

Rows are pure functions of the entries: a row per stage entered, its ``from_stage`` the
journey's current (furthest) stage just before, so the rows of a set of events do not
depend on arrival order. Emitting is a diff: rows whose content changed are (re)emitted
with the new version, keys that disappeared are retracted (``is_deleted``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from datetime import datetime

from pipeline.journey_build import Mark, Marks, Span, marks_of
from pipeline.journey_customer import Customer
from pipeline.stage_model import StageModel
from schemas.events import Channel
from schemas.journey import Journey, JourneyState, StageEntry, StageTransition
from schemas.records import trusted

Row = tuple[str | None, datetime, Channel, str, float | None, datetime | None]
"""(from_stage, at, channel, event_id, seconds_in_previous, completed_at)."""
Key = tuple[str, str, str]
"""(customer_id, journey_id, to_stage): the ReplacingMergeTree key."""


def furthest(entries: Mapping[str, object], rank: Mapping[str, int]) -> str | None:
    """The furthest stage entered, in the configured order."""
    return max(entries, key=rank.__getitem__, default=None)


def rows_of(entries: Marks, rank: Mapping[str, int], completions: Marks) -> dict[str, Row]:
    """One row per stage entered; ``from_stage`` is the current stage just before."""
    rows: dict[str, Row] = {}
    current: tuple[datetime, int, str] | None = None
    for at, order, stage, (_, event_id, channel) in sorted(
        [(m[0], rank[s], s, m) for s, m in entries.items()]
    ):
        done = completions.get(stage)
        completed_at = done[0] if done is not None else None
        if current is None:
            rows[stage] = (None, at, channel, event_id, None, completed_at)
        else:
            since = (at - current[0]).total_seconds()
            rows[stage] = (current[2], at, channel, event_id, since, completed_at)
        if current is None or order > current[1]:
            current = (at, order, stage)
    return rows


JourneyMarks = tuple[str, Marks, Marks]
"""(journey_id, entries, completions)."""


def keyed_rows(
    customer_id: str, journeys: Iterable[JourneyMarks], model: StageModel
) -> dict[Key, Row]:
    """The rows of journeys by ReplacingMergeTree key."""
    return {
        (customer_id, jid, stage): row
        for jid, entries, completions in journeys
        for stage, row in rows_of(entries, model.rank, completions).items()
    }


def state_rows(
    state: JourneyState | None, model: StageModel, skip: AbstractSet[str] = frozenset()
) -> dict[Key, Row]:
    """The rows a state has emitted (as of its version), but those of journeys in ``skip``."""
    if state is None:
        return {}
    triples = (
        (j.journey_id, marks_of(j.entries), marks_of(j.completions))
        for j in state.journeys
        if j.journey_id not in skip
    )
    return keyed_rows(state.customer_id, triples, model)


def changed_rows(
    state: JourneyState | None, c: Customer, entries: list[Marks], model: StageModel
) -> tuple[dict[Key, Row], dict[Key, Row]]:
    """(old rows, new rows), leaving out the journeys whose entries did not change."""
    pairs = list(zip(c.spans, entries, strict=True))
    same = {s.jid for s, e in pairs if s.unchanged(e)}
    triples = ((s.jid, e, s.completions) for s, e in pairs if s.jid not in same)
    new = keyed_rows(c.customer_id, triples, model)
    return state_rows(state, model, same), new


def diff(
    old: Mapping[Key, Row], new: Mapping[Key, Row], version: int, *, every: bool = False
) -> tuple[tuple[StageTransition, ...], tuple[StageTransition, ...]]:
    """(rows to emit, rows to retract): changed rows (all rows if ``every``), and the keys
    of ``old`` missing from ``new`` as ``is_deleted`` rows; both sorted by key."""
    emit = [_row(k, r, version, False) for k, r in sorted(new.items()) if every or old.get(k) != r]
    gone = [_row(k, r, version, True) for k, r in sorted(old.items()) if k not in new]
    return tuple(emit), tuple(gone)


def _row(key: Key, row: Row, version: int, deleted: bool) -> StageTransition:
    (customer_id, jid, to_stage), (from_stage, at, channel, event_id, since, done) = key, row
    return trusted(
        StageTransition,
        {
            "customer_id": customer_id,
            "journey_id": jid,
            "from_stage": from_stage,
            "to_stage": to_stage,
            "at": at,
            "channel": channel,
            "event_id": event_id,
            "seconds_in_previous": since,
            "completed_at": done,
            "version": version,
            "is_deleted": deleted,
        },
    )


def journeys_of(c: Customer, entries: list[Marks], model: StageModel) -> list[Journey]:
    """The :class:`Journey` records of the spans of ``c`` with their settled entries."""
    return [_journey(s, e, model) for s, e in zip(c.spans, entries, strict=True)]


def _journey(span: Span, entries: Marks, model: StageModel) -> Journey:
    old = span.old
    if old is not None and span.unchanged(entries):
        records = old.entries
    else:
        records = _records(entries, old.entries if old else {})
    resolved = records if span.resolved is entries else _records(span.resolved, records)
    pending = tuple(sorted(span.pending.values(), key=lambda p: (p.at, p.event_id)))
    return trusted(
        Journey,
        {
            "journey_id": span.jid,
            "started_at": span.start,
            "last_seen": span.last,
            "current_stage": furthest(entries, model.rank),
            "entries": records,
            "completions": _records(span.completions, old.completions if old else {}),
            "resolved": resolved,
            "pending": pending,
        },
    )


def _records(marks: Marks, old: dict[str, StageEntry]) -> dict[str, StageEntry]:
    """StageEntry records of ``marks``, reusing the unchanged ones of ``old``."""
    out: dict[str, StageEntry] = {}
    for stage, mark in marks.items():
        was = old.get(stage)
        out[stage] = was if was is not None and _same(was, mark) else _entry(stage, mark)
    return out


def _same(entry: StageEntry, mark: Mark) -> bool:
    return entry.event_id == mark[1] and entry.entered_at == mark[0]


def _entry(stage: str, mark: Mark) -> StageEntry:
    at, event_id, channel = mark
    return trusted(
        StageEntry, {"stage": stage, "entered_at": at, "channel": channel, "event_id": event_id}
    )
