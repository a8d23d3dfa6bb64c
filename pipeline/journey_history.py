"""Gated events: stages that depend on the customer's history, decided against it.

``after_stage = S`` holds when the customer passed S before the event: completed it (its
``completed_by`` events) if S has completions, entered it otherwise. ``repeat`` holds when
the customer had an earlier event of the same "channel/event_type". Both look at the
whole customer (every kept journey, plus what older journeys left in
``JourneyState.passed``), by event time, so a late event re-decides them consistently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from schemas.journey import GatedStep as Step
from schemas.journey import JourneyState

if TYPE_CHECKING:
    from pipeline.stage_model import StageModel

__all__ = ["EMPTY_HISTORY", "Gated", "History", "Step", "gate", "history_of"]


@dataclass(frozen=True, slots=True)
class Gated:
    """An event whose stage depends on the history: the gated rules, then the fallback."""

    steps: tuple[Step, ...]
    fallback: str | None


@dataclass(frozen=True, slots=True)
class History:
    passed: Mapping[str, datetime]
    """``after_stage`` targets: when the customer passed each."""
    firsts: Mapping[str, tuple[datetime, str]]
    """``repeat`` kinds: the earliest (occurred_at, event_id)."""


EMPTY_HISTORY = History({}, {})


def gate(
    steps: tuple[Step, ...],
    fallback: str | None,
    kind: str,
    at: datetime,
    event_id: str,
    history: History,
) -> str | None:
    """The stage of a gated event: the first step whose conditions hold, else the fallback."""
    for stage, after, repeat in steps:
        if after:
            passed = history.passed.get(after)
            if passed is None or at <= passed:
                continue
        if repeat:
            first = history.firsts.get(kind)
            if first is None or (at, event_id) <= first:
                continue
        return stage
    return fallback


def history_of(state: JourneyState, model: StageModel) -> History:
    """The :class:`History` of a state: its folded marks, then those of its journeys."""
    passed = dict(state.passed)
    for journey in state.journeys:
        for stage in model.after_targets:
            marks = journey.completions if stage in model.completed_stages else journey.entries
            mark = marks.get(stage)
            if mark is not None and (stage not in passed or mark.entered_at < passed[stage]):
                passed[stage] = mark.entered_at
    return History(passed, state.firsts)
