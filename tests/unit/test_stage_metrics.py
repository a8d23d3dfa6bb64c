"""The metrics stage (pure): definitions, clocks, lateness, retractions, replay."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from pipeline.stage_metrics import MetricsConfig, MetricsState, live_windows, step
from schemas.journey import StageTransition
from schemas.metrics import ALL, MetricInput, StageWindow

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CONFIG = MetricsConfig(
    stages=("a", "b", "c"),
    timeouts={"a": 600.0, "b": 300.0, "c": None},
    completeness_grace=60.0,
    allowed_lateness=900.0,
    keep_final=3600.0,
)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def row(
    customer: str, stage: str, minute: float, version: int = 1, *, journey: str = "j1",
    channel: str = "web", done: float | None = None, deleted: bool = False,
) -> StageTransition:  # fmt: skip
    return StageTransition(
        customer_id=customer, journey_id=journey, from_stage=None, to_stage=stage,
        at=at(minute), channel=channel, event_id=f"{customer}-{stage}",  # type: ignore[arg-type]  # a literal channel
        seconds_in_previous=None, completed_at=at(done) if done is not None else None,
        version=version, is_deleted=deleted,
    )  # fmt: skip


def feed(
    state: MetricsState, newest: float, *rows: StageTransition, segments: dict[str, str] | None = None
) -> list[StageWindow]:
    msg = MetricInput(transitions=rows, segments=segments or {}, newest_event_at=at(newest))
    return list(step(state, msg, at(newest)).windows)


def held(state: MetricsState, stage: str, minute: float, channel: str = ALL, segment: str = ALL) -> StageWindow:
    start = at(minute).replace(second=0, microsecond=0)
    for w in live_windows(state):
        if (w.window_start, w.stage, w.channel, w.segment) == (start, stage, channel, segment):
            return w
    raise AssertionError(f"no window {start:%H:%M} {stage} {channel} {segment}")


def test_entry_conversion_and_drop_off_land_in_their_windows() -> None:
    state = MetricsState(CONFIG)
    feed(state, 0, row("x", "a", 0.5), row("y", "a", 0.7))
    feed(state, 4, row("x", "b", 3.2))  # x converts from a after 2.7 minutes
    a0 = held(state, "a", 0)
    assert (a0.entries, a0.conversions, a0.dropoffs) == (2, 0, 0)
    a3 = held(state, "a", 3)
    assert (a3.conversions, a3.median_seconds_to_convert) == (1, 162.0)
    feed(state, 11.5)  # complete clock 10.5: y's a timeout (0.7 + 10) has not elapsed
    assert not _has(state, "a", 10)
    feed(state, 11.8)  # complete clock 10.8: it has
    assert held(state, "a", 10).dropoffs == 1
    assert held(state, "a", 10).dropoff_rate == 1.0
    assert held(state, "b", 8).dropoffs == 1  # x's b timeout (3.2 + 5) passed too


def test_a_conversion_after_the_timeout_is_a_drop_off() -> None:
    state = MetricsState(CONFIG)
    feed(state, 0, row("x", "a", 0))
    feed(state, 12, row("x", "b", 11))  # 11 minutes later: a's timeout is 10
    assert held(state, "a", 10).dropoffs == 1
    assert held(state, "a", 11, ALL).conversions == 0 if _has(state, "a", 11) else True


def _has(state: MetricsState, stage: str, minute: float) -> bool:
    try:
        held(state, stage, minute)
    except AssertionError:
        return False
    return True


def test_completion_converts_and_the_last_stage_never_drops_off() -> None:
    state = MetricsState(CONFIG)
    feed(state, 1, row("x", "b", 0, done=1.5), row("x", "c", 0.2, journey="j2"))
    assert held(state, "b", 1).conversions == 1
    feed(state, 500)
    assert held(state, "c", 0).dropoffs == 0 if _has(state, "c", 0) else True
    assert not [w for w in live_windows(state) if w.stage == "c" and w.dropoffs]


def test_a_late_event_within_the_lateness_corrects_a_provisional_window() -> None:
    state = MetricsState(CONFIG)
    feed(state, 0, row("x", "a", 0))
    feed(state, 11)  # x dropped off at 10 (complete clock 10)
    assert held(state, "a", 10).dropoffs == 1
    feed(state, 12, row("x", "b", 9))  # arrives late but within 15 minutes: a conversion
    assert held(state, "a", 10).dropoffs == 0
    assert held(state, "a", 9).conversions == 1
    assert not held(state, "a", 9).is_final


def test_a_change_after_the_lateness_is_recorded_not_applied() -> None:
    state = MetricsState(CONFIG)
    feed(state, 0, row("x", "a", 0), row("y", "a", 0.5))
    feed(state, 30)  # final clock 15: window 0 is final
    before = held(state, "a", 0)
    assert before.is_final and before.entries == 2
    msg = MetricInput(transitions=(row("z", "a", 0.2),), newest_event_at=at(30))
    out = step(state, msg, at(30))
    after = held(state, "a", 0)
    assert after.entries == 2 and after.late_events == 1
    assert [(x.customer_id, x.measure, x.delta) for x in out.late] == [
        ("z", "entries", 1),
        ("z", "dropoffs", 1),  # its drop-off at 10.2 is in a final window too
    ]
    assert any(w.window_start == at(0) and w.late_events == 1 for w in out.windows)


def test_a_merge_moves_rows_without_double_counting() -> None:
    state = MetricsState(CONFIG)
    feed(state, 1, row("anon", "a", 0.5, 1), row("known", "a", 0.8, 1, journey="k1"))
    assert held(state, "a", 0).entries == 2
    # the resolver merged anon into known: anon's rows are retracted, known's re-emitted
    feed(
        state, 2, row("anon", "a", 0.5, 2, deleted=True),
        row("known", "a", 0.5, 3, journey="k1"),
    )  # fmt: skip
    assert held(state, "a", 0).entries == 1
    assert held(state, "a", 0, "web", "unknown").entries == 1


def test_a_stale_version_is_ignored() -> None:
    state = MetricsState(CONFIG)
    feed(state, 1, row("x", "a", 0.5, 3))
    feed(state, 2, row("x", "a", 0.5, 2, deleted=True))  # older than what we have
    assert held(state, "a", 0).entries == 1


def test_a_segment_change_moves_the_customer_between_buckets() -> None:
    state = MetricsState(CONFIG)
    feed(state, 1, row("x", "a", 0.5))
    assert held(state, "a", 0, ALL, "unknown").entries == 1
    feed(state, 2, segments={"x": "smb"})
    assert held(state, "a", 0, ALL, "unknown").entries == 0
    assert held(state, "a", 0, ALL, "smb").entries == 1
    assert held(state, "a", 0).entries == 1


def test_in_stage_counts_customers_entered_and_not_out() -> None:
    state = MetricsState(CONFIG)
    feed(state, 3, row("x", "a", 0.5), row("y", "a", 1.5), row("x", "b", 2.5))
    assert held(state, "a", 0).in_stage == 1
    assert held(state, "a", 1).in_stage == 2
    assert held(state, "a", 2).in_stage == 1


def _inputs(seed: int) -> list[MetricInput]:
    rng = random.Random(seed)
    rows = []
    for i in range(200):
        start = rng.uniform(0, 60)
        rows.append(row(f"c{i}", "a", start))
        if rng.random() < 0.6:
            rows.append(row(f"c{i}", "b", start + rng.uniform(0.1, 12)))
    rows.sort(key=lambda r: r.at + timedelta(seconds=rng.uniform(-90, 90)))  # out of order
    out, newest = [], T0
    for i in range(0, len(rows), 7):
        chunk = tuple(rows[i : i + 7])
        newest = max(newest, *(r.at for r in chunk))
        out.append(MetricInput(transitions=chunk, newest_event_at=newest))
    out.append(MetricInput(newest_event_at=newest + timedelta(hours=2)))
    return out


def _final_counts(inputs: list[MetricInput]) -> dict[tuple[object, ...], tuple[int, int, int]]:
    state = MetricsState(CONFIG)
    rows: dict[tuple[object, ...], StageWindow] = {}
    for msg in inputs:
        for w in step(state, msg, T0).windows:
            rows[(w.window_start, w.stage, w.channel, w.segment)] = w
    assert all(w.is_final for w in rows.values())
    return {k: (w.entries, w.conversions, w.dropoffs) for k, w in rows.items()}


def test_a_replay_gives_the_same_windows() -> None:
    inputs = _inputs(7)
    assert _final_counts(inputs) == _final_counts(inputs)


def test_totals_match_the_definitions_whatever_the_arrival_order() -> None:
    inputs = _inputs(11)
    counts = _final_counts(inputs)
    totals = [sum(v[i] for k, v in counts.items() if k[1] == "a" and k[2] == ALL and k[3] == ALL) for i in range(3)]
    a_rows = [r for m in inputs for r in m.transitions if r.to_stage == "a"]
    b_at = {r.customer_id: r.at for m in inputs for r in m.transitions if r.to_stage == "b"}
    conv = sum(1 for r in a_rows if r.customer_id in b_at and b_at[r.customer_id] - r.at <= timedelta(minutes=10))
    assert totals == [len(a_rows), conv, len(a_rows) - conv]


def test_the_clocks_follow_the_slowest_active_partition() -> None:
    state = MetricsState(CONFIG)
    both = MetricInput(
        transitions=(row("x", "a", 0.5),), newest_event_at=at(1), partitions={"0": at(1), "1": at(1)}
    )
    step(state, both, at(1))
    fast = MetricInput(newest_event_at=at(60), partitions={"0": at(60)})
    step(state, fast, at(60))
    assert not held(state, "a", 0).is_complete  # partition 1 is still at minute 1
    caught_up = MetricInput(newest_event_at=at(60), partitions={"1": at(60)})
    step(state, caught_up, at(60))
    assert held(state, "a", 0).is_final
    for _ in range(250):  # partition 1 goes quiet: it stops holding the clocks back
        step(state, MetricInput(newest_event_at=at(90), partitions={"0": at(90)}), at(90))
    assert state.windows.complete_until == at(89).timestamp()


def test_rows_with_the_same_contribution_share_one_object() -> None:
    state = MetricsState(CONFIG)
    feed(state, 1, row("x", "a", 0.2), row("y", "a", 0.6), row("z", "a", 0.4, channel="chat"))
    x, y, z = (state.contrib[(c, "j1", "a")] for c in "xyz")
    assert x is y and x == y and z != x  # same window, stage, channel and segment
    feed(state, 4, row("x", "b", 3.0))  # x converts: its contribution is its own again
    assert state.contrib[("x", "j1", "a")] != y and state.contrib[("y", "j1", "a")] is y
