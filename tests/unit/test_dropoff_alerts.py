"""The drop-off spike detector (pure) on synthetic windows: customers enter the stage every
minute and decide one to three minutes later; an incident raises the share that abandon at
the moment of deciding (as a failing checkout does)."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.dropoff_alerts import AlertConfig, Detector, deficit_z
from pipeline.dropoff_baseline import History, Kernel
from pipeline.metrics_windows import Agg
from schemas.metrics import ALL

NOW = datetime(2026, 3, 2, tzinfo=UTC)
T0 = 1_772_409_600  # a minute boundary


class Stream:
    """Windows of the purchase stage; ``share`` of the entries come through the web."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.aggs: dict[tuple[int, str, str, str], Agg] = {}
        self.pending: dict[int, list[tuple[int, str]]] = defaultdict(list)
        self.minute = 0

    def add(self, drop: float, entries: int = 60, share: float = 1.0) -> int:
        m, start = self.minute, T0 + 60 * self.minute
        total = self.aggs[(start, "purchase", ALL, ALL)] = Agg()
        web = self.aggs[(start, "purchase", "web", ALL)] = Agg()
        for i in range(entries):
            channel = "web" if i < entries * share else "call_center"
            total.entries += 1
            web.entries += channel == "web"
            self.pending[m + self.rng.randint(1, 3)].append((m, channel))
        for entered, channel in self.pending.pop(m, []):
            if self.rng.random() >= drop:
                for agg in (total, web) if channel == "web" else (total,):
                    agg.conversions += 1
                    agg.lags[m - entered] = agg.lags.get(m - entered, 0) + 1
        self.minute += 1
        return start


def detector(**config: Any) -> Detector:
    return Detector(
        AlertConfig(**config), ("purchase", "retention"),
        {"purchase": 1800.0, "retention": None}, 60,
    )  # fmt: skip


def run(d: Detector, s: Stream, drops: list[float], lag: float = 0.0, **kw: Any) -> list[Any]:
    out = []
    for drop in drops:
        start = s.add(drop, **kw)
        alerts, statuses = d.evaluate(start, SimpleNamespace(aggs=s.aggs), lag, NOW)  # type: ignore[arg-type]  # only .aggs is read
        out.append((start, alerts, statuses))
    return out


def firing(results: list[Any], channel: str = ALL) -> list[tuple[int, Any]]:
    return [(start, a) for start, alerts, _ in results for a in alerts if a.channel == channel]


def test_the_kernel_expects_the_conversions_of_recent_entries() -> None:
    history, kernel = History(lags=3, keep=6), Kernel(lags=3, size=10)
    for minute in range(8):  # 10 entries a minute, half convert one window later
        history.record(T0 + 60 * minute, 10, {1: 5} if minute else {}, 60)
        kernel.learn(history.conversions(T0 + 60 * minute), history.cohorts(T0 + 60 * minute, 60))
    assert kernel.rate(1) == 35 / 70 and kernel.rate(2) == 0.0
    e = history.expect(kernel, T0 + 60 * 7, 2, 60)
    assert (e.observed, e.expected, e.converting) == (10, 10.0, 0.5)


def test_a_doubling_fires_within_two_windows_and_resolves_after_it_ends() -> None:
    d, s = detector(), Stream()
    assert not firing(run(d, s, [0.3] * 60, entries=120))
    spike = run(d, s, [0.6] * 10, entries=120)
    fired = firing(spike)
    assert fired and fired[0][1].state == "firing"
    assert fired[0][0] <= spike[1][0]  # the onset's window or the next one
    assert fired[0][1].relative_increase >= 0.5 and fired[0][1].zscore >= 4
    assert "conversions where" in fired[0][1].summary
    resolved = firing(run(d, s, [0.3] * 15, entries=120))
    assert [a.state for _, a in resolved] == ["resolved"]
    assert resolved[0][1].alert_id == fired[0][1].alert_id


def test_a_small_increase_is_found_by_the_long_span() -> None:
    d, s = detector(), Stream(seed=5)
    run(d, s, [0.3] * 60, entries=90)
    small = run(d, s, [0.5] * 15, entries=90)
    fired = firing(small)
    assert fired and fired[0][1].state == "firing"
    assert fired[0][0] > small[1][0] and "in the 5 windows" in fired[0][1].summary


def test_more_customers_arriving_is_not_a_spike() -> None:
    d, s = detector(), Stream(seed=7)
    run(d, s, [0.3] * 60)
    assert not firing(run(d, s, [0.3] * 30, entries=150))  # a surge of entries
    assert not firing(run(d, s, [0.3] * 30, entries=30))  # and a lull


def test_no_decision_while_ingest_lags() -> None:
    d, s = detector(), Stream()
    run(d, s, [0.3] * 60)
    lagging = run(d, s, [0.9] * 5, lag=120.0)
    assert not firing(lagging)
    assert {st.suppressed for _, _, sts in lagging for st in sts} == {"ingest_lag"}


def test_warm_up_and_low_volume_say_so() -> None:
    d, s = detector(), Stream()
    first = run(d, s, [0.9] * 10)
    assert {st.suppressed for _, _, sts in first for st in sts} <= {"warming_up", "low_volume"}
    assert "warming_up" in {st.suppressed for _, _, sts in first for st in sts}
    run(d, s, [0.3] * 40)
    thin = run(d, s, [0.3] * 8, entries=2)  # the spans hold thin windows only
    assert "low_volume" in {st.suppressed for _, _, sts in thin for st in sts}


def test_channels_are_judged_only_with_volume_and_stages_without_timeout_never() -> None:
    d, s = detector(), Stream()
    statuses = [st for _, _, sts in run(d, s, [0.3] * 30, share=0.1) for st in sts]
    assert {st.channel for st in statuses} == {ALL}
    statuses = [st for _, _, sts in run(d, s, [0.3] * 10, share=0.9) for st in sts]
    assert {st.channel for st in statuses} == {ALL, "web"}
    assert {st.stage for st in statuses} == {"purchase"}


def test_noise_does_not_fire() -> None:
    d, s = detector(), Stream(seed=3)
    assert not firing(run(d, s, [0.3] * 360))


def test_deficit_z_is_the_poisson_tail_not_the_normal_one() -> None:
    # 46 where 80 are usual: the normal approximation says z = 34 / sqrt(80) = 3.8; the
    # Poisson probability of 46 or fewer is 2.6e-5, a one-sided z of 4.05 (the deviance: 4.13)
    assert deficit_z(46, 80, learned=10**9) == pytest.approx(4.13, abs=0.01)
    assert deficit_z(80, 80, learned=100) == 0
    assert deficit_z(120, 80, learned=10**9) < 0  # a surplus is no deficit
    assert deficit_z(0, 80, learned=10**9) == pytest.approx(math.sqrt(160))
    # a baseline learned from few conversions is itself noisy: the same deficit counts less
    assert deficit_z(46, 80, learned=80) == pytest.approx(4.13 / math.sqrt(2), abs=0.01)
    assert deficit_z(5, 0, learned=10) == 0
