"""The mutable copy of a customer's journey state, used inside one advance or merge.

:class:`Customer` counts and places events into spans (:mod:`pipeline.journey_build`), then
*settles*: decides the gated events against a history consistent with the entries they
produce, so entries are a function of the set of events seen. :meth:`Customer.trim` keeps
the state bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pipeline.journey_build import (
    MAX_JOURNEYS,
    MAX_PENDING,
    RECENT_IDS,
    Decided,
    Marks,
    Span,
    note,
    pending,
    place,
)
from pipeline.journey_history import Gated, History
from pipeline.stage_model import StageModel
from schemas.journey import JourneyState, PendingEvent, RecentId
from schemas.records import Touchpoint


@dataclass(slots=True)
class Customer:
    """The mutable copy of a :class:`JourneyState`."""

    customer_id: str
    spans: list[Span] = field(default_factory=list)
    touchpoints: dict[str, int] = field(default_factory=dict)
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    segment: str | None = None
    segment_since: datetime | None = None
    purchases: int = 0
    recent: tuple[RecentId, ...] = ()
    firsts: dict[str, tuple[datetime, str]] = field(default_factory=dict)
    passed: dict[str, datetime] = field(default_factory=dict)
    closed_until: datetime | None = None
    version: int = 0

    @classmethod
    def of(cls, s: JourneyState) -> Customer:
        spans = [Span.of(j) for j in s.journeys]
        return cls(
            s.customer_id,
            spans,
            dict(s.touchpoints),
            s.first_seen,
            s.last_seen,
            s.segment,
            s.segment_since,
            s.purchases,
            s.recent_ids,
            dict(s.firsts),
            dict(s.passed),
            s.closed_until,
            s.version,
        )

    def ingest(self, tp: Touchpoint, at: datetime, model: StageModel) -> tuple[bool, Decided]:
        """Count ``tp`` and place it; returns whether it was placed (not too late) and
        what it maps to."""
        channel, event_type, event_id = tp.channel, tp.event_type, tp.event_id
        pair = (channel, event_type)
        self.touchpoints[channel] = self.touchpoints.get(channel, 0) + 1
        if event_type == "purchase":
            self.purchases += 1
        segment = tp.properties.get("segment")
        if isinstance(segment, str) and segment:
            self._segment(at, segment)
        if pair in model.repeat_pairs:
            self._first(f"{channel}/{event_type}", (at, event_id))
        found = model.classify(pair, tp.properties)
        decided: Decided
        if isinstance(found, Gated):
            decided = pending(at, event_id, channel, f"{channel}/{event_type}", found)
        else:
            decided = found
        if self.closed_until is not None and at <= self.closed_until:
            return False, decided
        spans = self.spans
        span = spans[-1] if spans else None
        if span is not None and span.start <= at <= span.last + model.inactivity_gap:
            if at > span.last:
                span.last = at
        else:
            span = place(spans, at, model.inactivity_gap, self.customer_id)
        if pair in model.completes:
            for stage in model.completes[pair]:
                note(span.completions, stage, (at, event_id, channel))
        if isinstance(decided, PendingEvent):
            span.pending[event_id] = decided
        elif decided is not None:
            mark = span.resolved.get(decided)
            if mark is None or at < mark[0] or (at == mark[0] and event_id < mark[1]):
                span.resolved[decided] = (at, event_id, channel)
        return True, decided

    def _segment(self, at: datetime, segment: str) -> None:
        """Keep the segment of the latest event (by time, then value) that names one."""
        since = self.segment_since
        if since is None or (at, segment) > (since, self.segment or ""):
            self.segment, self.segment_since = segment, at

    def _first(self, kind: str, first: tuple[datetime, str]) -> None:
        old = self.firsts.get(kind)
        if old is None or first < old:
            self.firsts[kind] = first

    def history(self, entries: list[Marks], model: StageModel) -> History:
        """The history given each span's ``entries`` (and its completions)."""
        passed = dict(self.passed)
        for span, marks in zip(self.spans, entries, strict=True):
            _fold_passed(passed, span, marks, model)
        return History(passed, self.firsts)

    def settle(self, model: StageModel) -> tuple[list[Marks], History]:
        """Each span's entries, with the gated events decided against a consistent history."""
        entries = [s.resolved for s in self.spans]
        history = self.history(entries, model)
        if not any(s.pending for s in self.spans):
            return entries, history
        if model.after_targets <= model.completed_stages:  # the history ignores the entries
            return [s.decide(history) for s in self.spans], history
        for _ in range(len(model.stages) + 1):
            entries = [s.decide(history) for s in self.spans]
            again = self.history(entries, model)
            if again == history:
                break
            history = again
        return entries, history

    def trim(self, entries: list[Marks], history: History, model: StageModel) -> list[Marks]:
        """Bound the state: fold the oldest journeys and the oldest gated events."""
        while len(self.spans) > MAX_JOURNEYS:
            span = self.spans.pop(0)
            _fold_passed(self.passed, span, entries.pop(0), model)
            if self.closed_until is None or span.last > self.closed_until:
                self.closed_until = span.last
        for span in self.spans:
            if len(span.pending) > MAX_PENDING:
                span.fold_pending(MAX_PENDING, history)
        return entries

    def saw(self, first: datetime, last: datetime, ids: list[RecentId]) -> None:
        """Note a batch: its first and last event times, its (at, event_id, counted)."""
        if self.first_seen is None or first < self.first_seen:
            self.first_seen = first
        if self.last_seen is None or last > self.last_seen:
            self.last_seen = last
        self.recent = (*self.recent, *ids)[-RECENT_IDS:]


PURCHASE = "+purchase"
"""The suffix of a recent id's ``counted`` when the event added to ``purchases``."""


def counted(tp: Touchpoint) -> str:
    """What :meth:`Customer.ingest` counted ``tp`` in: its channel, and ``purchases``."""
    return tp.channel + PURCHASE if tp.event_type == "purchase" else tp.channel


def uncount(touchpoints: dict[str, int], purchases: int, twice: list[str]) -> int:
    """Take the events counted in both states of a merge (their ``counted``) out of the
    summed ``touchpoints`` (changed in place); returns ``purchases`` corrected the same way."""
    for tag in twice:
        channel = tag.removesuffix(PURCHASE)
        if touchpoints.get(channel, 0) > 0:
            touchpoints[channel] -= 1
        if tag.endswith(PURCHASE) and purchases > 0:
            purchases -= 1
    return purchases


def _fold_passed(
    passed: dict[str, datetime], span: Span, entries: Marks, model: StageModel
) -> None:
    """Fold when ``span`` passed each after_stage target (completion or entry) into ``passed``."""
    for stage in model.after_targets:
        mark = (span.completions if stage in model.completed_stages else entries).get(stage)
        if mark is not None and (stage not in passed or mark[0] < passed[stage]):
            passed[stage] = mark[0]
