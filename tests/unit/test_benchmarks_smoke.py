"""Smoke test of the benchmark harness's pure parts (no broker, no ClickHouse)."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.__main__ import parse, table
from benchmarks.common import Figures, make_events, spread
from benchmarks.memory import one_event_each
from benchmarks.queries import p95
from benchmarks.queries_catalog import docs_items
from benchmarks.queries_sql import copy_sql
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


def test_query_flags_and_p95() -> None:
    args = parse(["--only", "queries", "--query-events", "100000", "--query-runs", "3"])
    assert (args.only, args.query_events, args.query_runs, args.query_dir) == (
        ["queries"],
        100_000,
        3,
        None,
    )
    assert parse([]).query_events == 10_000_000
    assert p95([5.0, 1.0, 3.0]) == 5.0
    assert p95([float(v) for v in range(1, 101)]) == 95.0


def test_every_documented_sql_block_is_a_query() -> None:
    items = docs_items()
    names = [i.name for i in items]
    assert len(set(names)) == len(names)
    assert sum(n.startswith("sql.md ") for n in names) >= 20
    assert "identity.md block 1" in names and names[-1].startswith("painpoints feed")
    assert all(i.sql for i in items[:-1]) and not any(i.budgeted for i in items)


def test_copies_suffix_ids_and_shift_times() -> None:
    sql = copy_sql("stage_transitions", 11, 10)
    assert "numbers(11, 10)" in sql and "FROM base_stage_transitions AS t" in sql
    for column in ("customer_id", "journey_id", "event_id"):
        assert f"concat({column}, '~', toString(n))) AS {column}" in sql
    assert "at - toIntervalMillisecond(n * 7000) AS at" in sql
    with pytest.raises(ValueError, match="alerts"):
        copy_sql("alerts", 1, 1)


def test_memory_workload_is_one_valid_event_per_customer() -> None:
    from pydantic import TypeAdapter

    from schemas.events import TouchpointEvent

    workload = one_event_each(50)
    contract: TypeAdapter[Any] = TypeAdapter(TouchpointEvent)
    events = [contract.validate_json(e.payload) for e in workload.events]
    cookies = {e.identifiers.anonymous_id for e in events}
    assert len(cookies) == len(workload.valid_ids) == 50 and workload.malformed == 0
    assert sum(1 for e in events if e.identifiers.email) == 25
    assert parse(["--only", "memory"]).memory_customers == "100000,1000000"
