"""Benchmark ``queries``: every dashboard query and every documented example over a month of
``--query-events`` touchpoints (default 10 million) in chDB, through the ClickHouse HTTP
server the dashboard talks to; per query p50 and p95 over its runs, and the dashboard and
Grafana queries above the 100 ms budget flagged. The data: benchmarks/queries_data.py; the
queries: benchmarks/queries_catalog.py."""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from benchmarks.common import CHILDREN, Figures
from benchmarks.queries_catalog import BUDGET_MS, KINDS, Item, catalog, newest_event
from benchmarks.queries_data import client_for, open_dataset, parts

MIN_RUNS = 3
SECONDS_PER_QUERY = 30.0
"""A query stops repeating after this many seconds once it has MIN_RUNS runs (the slow
documented examples take seconds each at 10 M events)."""
SLOW_MS = 10_000.0
"""A query whose warm-up run takes longer than this is timed once more only, and its
warm-up counts as a run (the heaviest take a minute at 10 M events; at that size nothing
stays cached from one run to the next)."""


def p95(values: list[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def time_item(client: Client, item: Item, runs: int) -> tuple[list[float], int]:
    """Milliseconds of each run (after one untimed warm-up run, or two runs in all for a
    SLOW_MS query), and the rows returned."""
    began = time.perf_counter()
    rows = item.run(client)
    warm_up = (time.perf_counter() - began) * 1000
    took: list[float] = [warm_up] if warm_up > SLOW_MS else []
    least = 2 if took else MIN_RUNS
    started = time.monotonic()
    while len(took) < max(runs, least):
        began = time.perf_counter()
        item.run(client)
        took.append((time.perf_counter() - began) * 1000)
        if len(took) >= least and time.monotonic() - started > SECONDS_PER_QUERY:
            break
    return took, rows


def measure(
    client: Client, items: list[Item], runs: int, say: Callable[[str], None]
) -> tuple[Figures, dict[str, Any]]:
    figs = Figures("queries")
    over: list[str] = []
    failed: dict[str, str] = {}
    for item in items:
        try:
            took, rows = time_item(client, item, runs)
        except Exception as exc:  # one failing query keeps the others' figures
            failed[item.name] = f"{type(exc).__name__}: {exc}"[:500]
            say(f"[red]queries: {item.kind} {item.name} failed[/red]: {failed[item.name]}")
            continue
        high = p95(took)
        flag = item.budgeted and high > BUDGET_MS
        note = f"p95 {high:,.1f} ms, {len(took)} runs, {rows} rows" + (
            f", OVER {BUDGET_MS:.0f} ms" if flag else ""
        )
        fig = figs(f"{item.kind}: {item.name}", "ms", note)
        fig.values.extend(took)
        if flag:
            over.append(item.name)
        say(f"queries: {item.kind:9} {_ms(took)} {note}  {item.name}")
    return figs, {"over_budget": over, "failed": failed}


def _ms(took: list[float]) -> str:
    ordered = sorted(took)
    return f"p50 {ordered[len(ordered) // 2]:9,.1f} ms"


def queries(
    events: int,
    runs: int,
    directory: Path | None,
    say: Callable[[str], None],
    kinds: tuple[str, ...] = KINDS,
) -> tuple[Figures, dict[str, Any]]:
    """Build (or reuse, in ``directory``) the data, then time every query of ``kinds``
    ``runs`` times."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"--query-kinds: {', '.join(sorted(unknown))}; known: {', '.join(KINDS)}")
    root = directory or Path(tempfile.mkdtemp(prefix="touchpoint-queries-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        clickhouse, dataset = open_dataset(root, events, say)
        client = client_for(clickhouse, dataset.database)
        items = [i for i in catalog(client, newest_event(client)) if i.kind in kinds]
        say(f"queries: {len(items)} queries over {dataset.touchpoints:,} touchpoints, {runs} runs")
        before = parts(client)
        figs, extra = measure(client, items, runs, say)
        extra |= {"dataset": vars(dataset), "parts_before": before, "parts_after": parts(client)}
        CHILDREN.stop(clickhouse)
        return figs, extra
    finally:
        if directory is None:
            shutil.rmtree(root, ignore_errors=True)
