"""A takeover of the metrics stage replays work the old owner already did: the late changes
it makes again must be the same rows. They get ids from the metric input that caused them,
so the changes re-made after a replay (the new owner folds the committed inputs, then handles
the uncommitted ones again) have the ids of the first time, and ``late_events``
(ReplacingMergeTree by id) keeps them once."""

from __future__ import annotations

from test_stage_metrics import CONFIG, at, row  # type: ignore[import-not-found]

from pipeline.metrics_handlers import identify_late
from pipeline.stage_metrics import MetricsState, step
from schemas.metrics import LateChange, MetricInput


def _inputs() -> list[MetricInput]:
    """Two entries, a jump of the clocks that makes their window final, a late entry."""
    return [
        MetricInput(transitions=(row("x", "a", 0), row("y", "a", 0.5)), newest_event_at=at(0)),
        MetricInput(newest_event_at=at(30)),
        MetricInput(transitions=(row("z", "a", 0.2),), newest_event_at=at(30)),
    ]


def _late(state: MetricsState, inputs: list[MetricInput], first: int) -> list[LateChange]:
    """Handle ``inputs[first:]`` live (offset = index) after folding the ones before."""
    for msg in inputs[:first]:
        step(state, msg, at(0))
    out = [identify_late(step(state, m, at(30)), i) for i, m in enumerate(inputs) if i >= first]
    return [x for o in out for x in o.late]


def test_late_changes_made_again_after_a_replay_have_the_same_ids() -> None:
    inputs = _inputs()
    first_time = _late(MetricsState(CONFIG), inputs, 0)
    after_takeover = _late(MetricsState(CONFIG), inputs, 2)
    assert [x.change_id for x in first_time] == ["2.0", "2.1"]
    assert after_takeover == first_time
