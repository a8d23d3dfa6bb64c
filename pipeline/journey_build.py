"""Journey spans and record helpers for one advance or merge.

Journeys are kept as *spans* by event time: an event within the inactivity gap of a span
joins it, an event that bridges two spans joins them, any other starts a new span. Each
span keeps order-independent summaries (earliest marks per stage, completions, the gated
events), so entries are a function of the set of events, not of their arrival order.
Marks are plain ``(at, event_id, channel)`` tuples here; records are built at the end with
:func:`trusted` (the hot path cannot afford validating what it built itself).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from hashlib import blake2b

from pipeline.journey_history import Gated, History, gate
from schemas.events import Channel
from schemas.journey import Journey, PendingEvent, StageEntry
from schemas.records import trusted

MAX_JOURNEYS = 4
"""Journeys kept per customer; older ones are folded and their late events not placed."""
MAX_PENDING = 32
"""Gated events kept per journey; beyond, the oldest keep the stage they have then."""
RECENT_IDS = 64
"""Event ids kept per customer to skip repeats."""

Mark = tuple[datetime, str, Channel]
"""(at, event_id, channel): the smallest wins."""
Marks = dict[str, Mark]
Decided = str | PendingEvent | None
"""What an event maps to: a stage, a gated event (decided at the end), or no stage."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def marks_of(entries: dict[str, StageEntry]) -> Marks:
    return {stage: (e.entered_at, e.event_id, e.channel) for stage, e in entries.items()}


def note(marks: Marks, stage: str, mark: Mark) -> None:
    """Keep the earliest mark per stage."""
    old = marks.get(stage)
    if old is None or mark < old:
        marks[stage] = mark


def journey_id(customer_id: str, start: datetime) -> str:
    """A new journey's id: a hash of the customer and the time of the event that opened it."""
    micros = (start - _EPOCH) // _MICRO
    return blake2b(f"{customer_id}|{micros}".encode(), digest_size=8).hexdigest()


def utc(at: datetime) -> datetime:
    return at if at.tzinfo is UTC else at.astimezone(UTC)


@dataclass(slots=True)
class Span:
    """A journey under construction: [start, last] and its summaries."""

    jid: str
    """The journey id, fixed by the event that opened the journey (see :func:`journey_id`)."""
    start: datetime
    last: datetime
    resolved: Marks = field(default_factory=dict)
    completions: Marks = field(default_factory=dict)
    pending: dict[str, PendingEvent] = field(default_factory=dict)
    old: Journey | None = None
    """The record this span was read from, and its entries as marks."""
    old_marks: Marks | None = None
    old_completions: Marks | None = None

    @classmethod
    def of(cls, j: Journey) -> Span:
        pending = {p.event_id: p for p in j.pending}
        resolved, completions = marks_of(j.resolved), marks_of(j.completions)
        return cls(
            j.journey_id,
            j.started_at,
            j.last_seen,
            resolved,
            completions,
            pending,
            j,
            marks_of(j.entries),
            dict(completions),
        )

    def unchanged(self, entries: Marks) -> bool:
        """True if ``entries`` are those of the record the span was read from."""
        return (
            self.old_marks is not None
            and entries == self.old_marks
            and self.completions == self.old_completions
        )

    def absorb(self, other: Span) -> None:
        """Join ``other``: the joined journey keeps the id of the one that started first."""
        if (other.start, other.jid) < (self.start, self.jid):
            self.jid, self.old, self.old_marks = other.jid, other.old, other.old_marks
            self.old_completions = other.old_completions
        self.start = min(self.start, other.start)
        self.last = max(self.last, other.last)
        for stage, mark in other.resolved.items():
            note(self.resolved, stage, mark)
        for stage, mark in other.completions.items():
            note(self.completions, stage, mark)
        self.pending.update(other.pending)

    def decide(self, history: History) -> Marks:
        """The entries: the resolved marks and the gated events decided against ``history``."""
        if not self.pending:
            return self.resolved
        entries = dict(self.resolved)
        for p in self.pending.values():
            stage = gate(p.steps, p.fallback, p.kind, p.at, p.event_id, history)
            if stage is not None:
                note(entries, stage, (p.at, p.event_id, p.channel))
        return entries

    def fold_pending(self, keep: int, history: History) -> None:
        """Decide all but the ``keep`` latest gated events for good."""
        ordered = sorted(self.pending.values(), key=lambda p: (p.at, p.event_id))
        for p in ordered[: len(ordered) - keep]:
            del self.pending[p.event_id]
            stage = gate(p.steps, p.fallback, p.kind, p.at, p.event_id, history)
            if stage is not None:
                note(self.resolved, stage, (p.at, p.event_id, p.channel))


def place(spans: list[Span], at: datetime, gap: timedelta, customer_id: str) -> Span:
    """The span ``at`` belongs to (joining the spans it bridges); ``spans`` stays sorted."""
    if spans:
        last = spans[-1]
        if last.start <= at <= last.last + gap:
            if at > last.last:
                last.last = at
            return last
    hits = [s for s in spans if s.start - gap <= at <= s.last + gap]
    if not hits:
        span = Span(journey_id(customer_id, at), at, at)
        spans.append(span)
        spans.sort(key=lambda s: s.start)
        return span
    target = hits[0]
    for other in hits[1:]:
        target.absorb(other)
        spans.remove(other)
    target.start, target.last = min(target.start, at), max(target.last, at)
    return target


def resegment(spans: list[Span], gap: timedelta) -> list[Span]:
    """Join spans closer than ``gap`` (after a merge of two customers)."""
    out: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start, s.jid)):
        if out and span.start - out[-1].last <= gap:
            out[-1].absorb(span)
        else:
            out.append(span)
    return out


def pending(at: datetime, event_id: str, channel: Channel, kind: str, gated: Gated) -> PendingEvent:
    """The record of a gated event."""
    values = {"at": at, "event_id": event_id, "channel": channel, "kind": kind}
    return trusted(PendingEvent, {**values, "steps": gated.steps, "fallback": gated.fallback})
