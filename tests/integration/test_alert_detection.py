"""The detector on simulated days, time-compressed, in one process through validation,
journeys, metrics and the detector with the default thresholds, as ``touchpoint eval alerts``
runs it (the rates over 20 seeded incidents are in docs/metrics.md, from that command).

In the test command: a checkout drop-off doubling for 15 minutes fires within 2 windows of its
onset and resolves after it ends, with nothing fired in the normal hour before it (a day
where most customers reach the checkout, about 80 checkout conversions a minute as on a
200,000-customer day: about a minute of CPU); and 3 normal hours at the rate of a 6-hour
day of 20,000 customers fire nothing (half a minute; the 6-hour day fired nothing either). Opt-in with ``TOUCHPOINT_TEST_EVAL_LARGE=1``: the same
doubling at the end of a normal 6-hour day of 200,000 customers (about 10 minutes)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.eval_alerts import RunResult, run
from pipeline.metrics_handlers import metrics_config
from pipeline.producers.simulator import Conversion, Incident, SimulationConfig
from pipeline.settings import load_settings
from pipeline.stage_model import load_stage_model

LARGE = os.environ.get("TOUCHPOINT_TEST_EVAL_LARGE") == "1"


def _day(
    seed: int, hours: float, customers: int, onset: int | None, conversion: Conversion | None = None
) -> RunResult:
    model = load_stage_model()
    start = datetime(2026, 1, 27, 8, tzinfo=UTC) + timedelta(days=seed)
    incidents = (
        (Incident(stage="purchase", start_minute=onset, end_minute=onset + 15, dropoff_multiplier=2.0),)
        if onset is not None
        else ()
    )  # fmt: skip
    day = SimulationConfig(
        seed=seed, start=start, duration=timedelta(hours=hours), customers=customers,
        incidents=incidents, conversion=conversion or Conversion(),
    )  # fmt: skip
    return run(day, model, metrics_config(load_settings(), model))


def _assert_found_within_two_windows(result: RunResult, onset: int) -> None:
    start = result.config.start
    assert not [a for a in result.alerts if a.window_start < start + timedelta(minutes=onset)]
    (detection,) = result.detections
    assert detection.fired is not None and detection.fired.stage == "purchase", result.alerts
    assert detection.delay_windows is not None and detection.delay_windows <= 2, detection
    assert detection.resolved is not None
    assert detection.resolved.window_start >= start + timedelta(minutes=onset + 15)
    assert not result.false_alerts, result.false_alerts


def test_a_checkout_doubling_fires_within_two_windows_and_resolves() -> None:
    # 80 % of customers get through awareness and consideration: the checkout volume of a
    # 200,000-customer day (80 checkouts a minute) from a quarter of the customers and events
    funnel = Conversion(awareness=0.9, consideration=0.9, purchase=0.7)
    result = _day(31, 2, 22_000, onset=60, conversion=funnel)
    _assert_found_within_two_windows(result, 60)


def test_a_normal_day_fires_nothing() -> None:
    # 3 hours of a 20,000-customer 6-hour day's traffic (10,000 customers in 3 hours)
    result = _day(32, 3, 10_000, onset=None)
    assert result.alerts == ()


@pytest.mark.skipif(not LARGE, reason="~10 min of CPU: set TOUCHPOINT_TEST_EVAL_LARGE=1")
@pytest.mark.timeout(3600)
def test_a_doubling_at_the_end_of_a_large_normal_day() -> None:
    result = _day(22, 6, 200_000, onset=300)
    _assert_found_within_two_windows(result, 300)
