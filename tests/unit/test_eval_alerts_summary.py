"""The summary of ``touchpoint eval alerts``: detections, delays per incident size, false alerts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rich.console import Console

from pipeline.cli_metrics import summary_table
from pipeline.eval_alerts import Detection, RunResult
from pipeline.producers.simulator import Incident, SimulationConfig
from schemas.metrics import Alert

START = datetime(2026, 1, 5, 8, tzinfo=UTC)


def _alert(minute: int) -> Alert:
    at = START + timedelta(minutes=minute)
    return Alert(
        alert_id=f"dropoff:purchase:all:{minute}", state="firing", stage="purchase",
        channel="all", window_start=at, dropoff_rate=0.6, baseline_rate=0.3,
        relative_increase=1.0, zscore=5.0, volume=80, started_at=at, evaluated_at=at,
        summary="spiked",
    )  # fmt: skip


def _detection(size: float, onset: int, fired_at: int | None) -> Detection:
    incident = Incident(
        stage="purchase", start_minute=onset, end_minute=onset + 15, dropoff_multiplier=size
    )
    fired = _alert(fired_at) if fired_at is not None else None
    return Detection(incident, START + timedelta(minutes=onset), fired, None)


def test_the_summary_gives_the_delays_of_each_incident_size() -> None:
    detections = (
        _detection(2.0, 100, 101),  # fired on the second window: delay 2
        _detection(2.0, 200, 200),  # on the onset's own window: delay 1
        _detection(1.6, 300, None),
    )
    config = SimulationConfig(seed=1, start=START, duration=timedelta(hours=6))
    result = RunResult(config, (), detections, (_alert(50),), 1000)
    console = Console(width=120, record=True)
    console.print(summary_table([result]))
    text = console.export_text()
    assert "detected at drop-off x2  " in text and "2/2 (delays 2, 1)" in text
    assert "0/1" in text and "missed" in text
    assert "median delay (windows)                │ 2.0" in text
    assert "false alerts per simulated 6-hour day │ 1.00" in text
