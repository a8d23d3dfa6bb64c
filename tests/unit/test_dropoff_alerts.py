"""The drop-off spike detector (pure) on synthetic windows."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from pipeline.dropoff_alerts import AlertConfig, Detector
from pipeline.metrics_windows import Agg
from schemas.metrics import ALL

NOW = datetime(2026, 3, 2, tzinfo=UTC)
T0 = 1_772_409_600  # a minute boundary


class Stream:
    """Windows of one stage: ``entries`` per minute, a share ``drop`` never converting."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.aggs: dict[tuple[int, str, str, str], Agg] = {}
        self.minute = 0

    def add(self, drop: float, entries: int = 40, channel_share: float = 1.0) -> int:
        start = T0 + 60 * self.minute
        converted = sum(1 for _ in range(entries) if self.rng.random() >= drop)
        self.aggs[(start, "purchase", ALL, ALL)] = Agg(entries, converted, 0)
        web = int(entries * channel_share)
        self.aggs[(start, "purchase", "web", ALL)] = Agg(web, int(converted * channel_share), 0)
        self.minute += 1
        return start


def detector(**config: Any) -> Detector:
    return Detector(AlertConfig(**config), ("purchase", "retention"), {"purchase": 1800.0, "retention": None}, 60)


def run(d: Detector, s: Stream, drops: list[float], lag: float = 0.0, **kw: Any) -> list[Any]:
    out = []
    for drop in drops:
        start = s.add(drop, **kw)
        alerts, statuses = d.evaluate(start, SimpleNamespace(aggs=s.aggs), lag, NOW)  # type: ignore[arg-type]  # only .aggs is read
        out.append((start, alerts, statuses))
    return out


def test_a_doubling_fires_within_the_span_and_resolves_after_it_ends() -> None:
    d, s = detector(), Stream()
    calm = run(d, s, [0.3] * 40)
    assert not [a for _, alerts, _ in calm for a in alerts]
    spike = run(d, s, [0.6] * 10)
    fired = [(start, a) for start, alerts, _ in spike for a in alerts if a.channel == ALL]
    assert fired and fired[0][1].state == "firing"
    assert fired[0][0] <= spike[2][0]  # within 3 windows of the onset
    assert fired[0][1].relative_increase >= 0.5 and fired[0][1].zscore >= 3
    back = run(d, s, [0.3] * 15)
    resolved = [a for _, alerts, _ in back for a in alerts if a.channel == ALL]
    assert [a.state for a in resolved] == ["resolved"]
    assert resolved[0].alert_id == fired[0][1].alert_id


def test_no_decision_while_ingest_lags() -> None:
    d, s = detector(), Stream()
    run(d, s, [0.3] * 40)
    lagging = run(d, s, [0.9] * 5, lag=120.0)
    assert not [a for _, alerts, _ in lagging for a in alerts]
    assert {st.suppressed for _, _, sts in lagging for st in sts} == {"ingest_lag"}


def test_warm_up_and_low_volume_say_so() -> None:
    d, s = detector(), Stream()
    first = run(d, s, [0.9] * 3)
    assert {st.suppressed for _, _, sts in first for st in sts} == {"warming_up"}
    thin = run(d, s, [0.3] * 6, entries=2)  # the span (5) holds thin windows only
    assert "low_volume" in {st.suppressed for _, _, sts in thin for st in sts}


def test_channels_are_judged_only_with_volume_and_stages_without_timeout_never() -> None:
    d, s = detector(), Stream()
    statuses = [st for _, _, sts in run(d, s, [0.3] * 3, channel_share=0.1) for st in sts]
    assert {st.channel for st in statuses} == {ALL}
    statuses = [st for _, _, sts in run(d, s, [0.3] * 3, channel_share=0.9) for st in sts]
    assert {st.channel for st in statuses} == {ALL, "web"}
    assert {st.stage for st in statuses} == {"purchase"}


def test_noise_does_not_fire() -> None:
    d, s = detector(), Stream(seed=3)
    quiet = run(d, s, [0.3] * 360)
    assert not [a for _, alerts, _ in quiet for a in alerts]
