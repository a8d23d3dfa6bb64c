"""Smoke test of the benchmark harness's pure parts (no broker, no ClickHouse)."""

from __future__ import annotations

from benchmarks.__main__ import parse, table
from benchmarks.common import Figures, make_events, spread
from benchmarks.stages import stages


def test_spread_and_ratios() -> None:
    figs = Figures("drain")
    fig = figs("pipeline-1w", "events/s")
    for value, ratio in ((3.0, 0.5), (1.0, 0.25), (2.0, 1.0)):
        fig.add(value)
        fig.ratio("bare-faust", ratio)
    assert spread(fig.values) == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert fig.to_json()["ratios"]["bare-faust"]["median"] == 0.5
    assert table([figs], {"events": 3, "runs": 3}).row_count == 1


def test_stages_run_on_a_few_events() -> None:
    workload = make_events(300)
    figs, profile = stages(workload, 1, lambda _text: None)
    assert figs.items["validate"].values[0] > 0
    assert "slowest stage" in profile


def test_defaults() -> None:
    args = parse([])
    assert (args.events, args.runs, args.out.name) == (200_000, 3, "latest.json")
