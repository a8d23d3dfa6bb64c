"""Pain points, the pure parts: the intervals (against published values), the stage model
rows, the ranking models and the command's rendering."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from rich.console import Console
from typer.testing import CliRunner

import pipeline.cli_painpoints as cli_painpoints
from pipeline.cli import cli
from pipeline.painpoints import (
    Painpoint,
    Ranking,
    StageCoverage,
    katz_interval,
    newcombe_interval,
    wilson_interval,
)
from pipeline.stage_model import StageModel, load_stage_model
from pipeline.stage_model_table import StageRow, stage_rows


def test_katz_interval_of_a_textbook_table() -> None:
    # 10/100 vs 5/100: RR 2, se(log RR) = sqrt(1/10 - 1/100 + 1/5 - 1/100) = sqrt(0.28)
    low, high = katz_interval(10, 100, 5, 100)
    se = math.sqrt(0.28)
    assert low == pytest.approx(2 * math.exp(-1.959963984540054 * se))
    assert high == pytest.approx(2 * math.exp(1.959963984540054 * se))
    assert (round(low, 3), round(high, 3)) == (0.709, 5.642)


def test_katz_interval_adds_a_half_to_each_cell_when_a_count_is_zero() -> None:
    low, high = katz_interval(0, 20, 10, 100)
    se = math.sqrt(1 / 0.5 - 1 / 21 + 1 / 10.5 - 1 / 101)
    centre = math.log((0.5 / 21) / (10.5 / 101))
    assert (low, high) == pytest.approx(
        (math.exp(centre - 1.959963984540054 * se), math.exp(centre + 1.959963984540054 * se))
    )
    assert 0 < low < high < 4
    assert all(math.isfinite(x) for x in katz_interval(5, 20, 0, 100))


def test_wilson_interval_matches_newcombe_1998() -> None:
    # Newcombe (1998), Statistics in Medicine 17:857, Table I: 81/263 -> 0.2553 to 0.3662
    assert tuple(round(x, 4) for x in wilson_interval(81, 263)) == (0.2553, 0.3662)
    low, high = wilson_interval(0, 10)
    assert low == pytest.approx(0.0) and round(high, 4) == 0.2775


def test_newcombe_interval_matches_newcombe_1998() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, Table II, method 10: 56/70 - 48/80
    assert tuple(round(x, 4) for x in newcombe_interval(56, 70, 48, 80)) == (0.0524, 0.3339)
    # 9/10 - 3/10 -> 0.1705 to 0.8090 (same table)
    assert tuple(round(x, 4) for x in newcombe_interval(9, 10, 3, 10)) == (0.1705, 0.8090)


def test_stage_rows_of_the_shipped_model() -> None:
    rows = stage_rows(load_stage_model())
    assert rows == (
        StageRow("awareness", 0, 7 * 86_400.0, (), False),
        StageRow("consideration", 1, 3 * 86_400.0, (), False),
        StageRow("purchase", 2, 1_800.0, ("web/purchase",), False),
        StageRow("retention", 3, 30 * 86_400.0, (), False),
        StageRow("advocacy", 4, None, (), True),
    )


def test_stage_rows_of_a_model_without_timeouts() -> None:
    model = StageModel(("a", "b"), {"a": None, "b": timedelta(minutes=5)}, timedelta(days=1), {}, {})
    assert [(r.stage, r.timeout_seconds, r.is_last) for r in stage_rows(model)] == [
        ("a", None, False),
        ("b", 300.0, True),
    ]


def _painpoint(**over: Any) -> Painpoint:
    values: dict[str, Any] = {
        "stage": "consideration", "channel": "call_center", "event_type": "call_started",
        "property": "wait_seconds", "bucket": ">5 min", "journeys_with": 44, "dropped_with": 43,
        "journeys_without": 1666, "dropped_without": 1218, "dropoff_with": 43 / 44,
        "dropoff_without": 1218 / 1666, "lift": 1.34, "lift_low": 1.27, "lift_high": 1.41,
        "difference": 0.246, "difference_low": 0.149, "difference_high": 0.275,
        "lift_within_type": 1.16, "lift_within_type_low": 0.98, "lift_within_type_high": 1.36,
    }  # fmt: skip
    return Painpoint(**{**values, **over})


def test_kind_names_the_touchpoint_and_the_bucket() -> None:
    assert _painpoint().kind() == "call_center/call_started wait_seconds >5 min"
    assert _painpoint(property="", bucket="").kind() == "call_center/call_started"


RANKING = Ranking(
    watermark=datetime(2026, 3, 1, tzinfo=UTC),
    min_journeys=30,
    stages=(
        StageCoverage(stage="awareness", timeout_seconds=604_800.0, journeys=100, decided=0,
                      dropped_off=0),
        StageCoverage(stage="purchase", timeout_seconds=1_800.0, journeys=50, decided=40,
                      dropped_off=12),
        StageCoverage(stage="advocacy", timeout_seconds=None, journeys=5, decided=0,
                      dropped_off=0),
    ),
    painpoints=(
        _painpoint(),
        _painpoint(property="", bucket="", lift_within_type=None, lift_within_type_low=None,
                   lift_within_type_high=None),
    ),
)  # fmt: skip


def test_render_shows_the_rows_the_watermark_and_the_undecided_stages() -> None:
    console = Console(record=True, width=250)
    cli_painpoints.render(RANKING, console)
    text = console.export_text()
    assert "wait_seconds >5 min" in text and "1.34 [1.27, 1.41]" in text
    assert "+24.6 [+14.9, +27.5]" in text and "43/44" in text and "1.16 [0.98, 1.36]" in text
    assert "2026-03-01T00:00:00+00:00" in text
    assert "awareness 0 of 100 (timeout 7d)" in text and "purchase 40 of 50 (timeout 30m)" in text
    waiting, never = text.split("not ranked yet")[1].split("never ranked")
    assert "awareness" in waiting and "advocacy" not in waiting and "advocacy" in never


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "none"), (604_800.0, "7d"), (1_800.0, "30m"), (7_200.0, "2h"), (90.0, "90s")],
)
def test_duration(seconds: float | None, text: str) -> None:
    assert cli_painpoints.duration(seconds) == text


def test_command_prints_json_with_the_flags_it_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_rank(client: Any, **kwargs: Any) -> Ranking:
        seen.update(kwargs)
        return RANKING

    monkeypatch.setattr(cli_painpoints, "rank_painpoints", fake_rank)
    monkeypatch.setattr("pipeline.chclient.connect", lambda *a, **k: object())
    result = CliRunner().invoke(
        cli, ["painpoints", "--format", "json", "--min-journeys", "12", "--limit", "3"]
    )
    assert result.exit_code == 0, result.output
    assert seen == {"min_journeys": 12, "limit": 3, "stage": None}
    data = orjson.loads(result.output)
    assert data["painpoints"][0]["bucket"] == ">5 min" and data["min_journeys"] == 30


def test_command_flags_show_their_env_vars() -> None:
    result = CliRunner().invoke(cli, ["painpoints", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for var in ("TOUCHPOINT_PAINPOINTS_MIN_JOURNEYS", "TOUCHPOINT_PAINPOINTS_LIMIT",
                "TOUCHPOINT_PAINPOINTS_FORMAT", "TOUCHPOINT_CLICKHOUSE_URL"):  # fmt: skip
        assert var in result.output
