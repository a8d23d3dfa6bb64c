"""The detector on a simulated 6-hour day (100,000 customers, about 40 checkouts a minute,
time-compressed, in one process through validation, journeys, metrics and the detector, as
``touchpoint eval alerts``): a checkout drop-off doubling for 15 minutes near the end fires
within a few windows and resolves after it ends, and the five normal hours before it fire
nothing. About 8 minutes of CPU: opt-in with ``TOUCHPOINT_TEST_EVAL_LARGE=1`` (the measured
rates over 20 seeded incidents are in docs/metrics.md, from ``touchpoint eval alerts``)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.eval_alerts import run
from pipeline.metrics_handlers import metrics_config
from pipeline.producers.simulator import Incident, SimulationConfig
from pipeline.settings import load_settings
from pipeline.stage_model import load_stage_model

pytestmark = pytest.mark.skipif(
    os.environ.get("TOUCHPOINT_TEST_EVAL_LARGE") != "1",
    reason="a 6-hour simulated day takes ~8 min of CPU; set TOUCHPOINT_TEST_EVAL_LARGE=1",
)


def test_a_checkout_doubling_fires_and_a_normal_day_does_not() -> None:
    model = load_stage_model()
    config = metrics_config(load_settings(), model)
    start = datetime(2026, 1, 27, 8, tzinfo=UTC)
    day = SimulationConfig(
        seed=22, start=start, duration=timedelta(hours=6), customers=100_000,
        incidents=(Incident(stage="purchase", start_minute=300, end_minute=315, dropoff_multiplier=2.0),),
    )  # fmt: skip
    result = run(day, model, config)
    onset, end = start + timedelta(minutes=300), start + timedelta(minutes=315)
    assert not [a for a in result.alerts if a.window_start < onset]  # 5 normal hours: nothing
    (detection,) = result.detections
    assert detection.fired is not None and detection.fired.stage == "purchase"
    assert detection.delay_windows is not None and detection.delay_windows <= 4
    assert detection.resolved is not None and detection.resolved.window_start >= end
    assert not result.false_alerts
