"""Every query benchmark ``queries`` times, each as it reaches ClickHouse:

* ``dashboard``: the web dashboard's panels (:data:`pipeline.dashboard_queries.PANELS`) at
  the ranges 1h (the default), 24h with a channel and segment filter, and 30d; its freshness
  and segments queries; ``GET /api/summary``'s totals;
* ``grafana``: every panel and annotation query of dashboards/ops.json and product.json,
  expanded as Grafana and the plugin expand them (:mod:`pipeline.grafana_macros`) at the
  dashboard's default time range and default selection (the variables' options come from
  their own queries);
* ``docs``: every ```sql example of docs/sql.md (with its ``-- params:``) and
  docs/identity.md, and the pain-point ranking (:func:`pipeline.painpoints.painpoints_feed`;
  the dashboard computes it in the background every 2 minutes, never while a page waits).

and ``baseline``: ``SELECT 1``, the floor of any query (HTTP, the server, chDB).

The 100 ms budget applies to the ``dashboard`` and ``grafana`` kinds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client

from benchmarks.common import ROOT
from pipeline import dashboard_queries as dq
from pipeline.dashboard_data import SUMMARY_QUERIES
from pipeline.grafana_macros import (
    QueryContext,
    Variable,
    custom_options,
    expand,
    interval_for,
    options_from_rows,
    resolve_time,
)

BUDGET_MS = 100.0
BUDGETED = ("dashboard", "grafana")
KINDS = ("baseline", "dashboard", "grafana", "docs")
_BLOCK = re.compile(r"```sql\n(.*?)```", re.S)
Run = Callable[[Client], int]
"""Runs the query on a client; returns the number of rows it gave."""


@dataclass(frozen=True)
class Item:
    kind: str
    name: str
    run: Run
    sql: str = ""

    @property
    def budgeted(self) -> bool:
        return self.kind in BUDGETED


def _sql(sql: str, params: dict[str, Any] | None = None) -> Run:
    def run(client: Client) -> int:
        return len(client.query(sql, parameters=params or None).result_rows)

    return run


def _query_item(kind: str, label: str, q: dq.Query) -> Item:
    return Item(kind, f"{label}{q.name}", _sql(q.sql, q.params), q.sql)


def dashboard_items(client: Client, now: datetime) -> list[Item]:
    """The dashboard's queries at 1h, 24h (filtered: web, the busiest segment) and 30d."""
    segment = busiest_segment(client)
    filters = {
        "1h": {"range": "1h"},
        "24h web/" + segment: {"range": "24h", "channel": "web", "segment": segment},
        "30d": {"range": "30d"},
    }
    items = []
    for label, query in filters.items():
        f = dq.parse_filters(query, now)
        items += [_query_item("dashboard", f"{label} ", build(f)) for build in dq.PANELS]
    f = dq.parse_filters({}, now)
    items += [
        _query_item("dashboard", "", dq.freshness(f)),
        _query_item("dashboard", "", dq.segments()),
    ]
    items += [Item("dashboard", f"summary {n}", _sql(s), s) for n, s in SUMMARY_QUERIES.items()]
    return items


def busiest_segment(client: Client) -> str:
    sql = (
        "SELECT segment, count() AS n FROM customers FINAL WHERE is_deleted = 0 AND segment != ''"
        " GROUP BY segment ORDER BY n DESC, segment LIMIT 1"
    )
    rows = client.query(sql).result_rows
    return str(rows[0][0]) if rows else "unknown"


def grafana_items(client: Client, name: str, now: datetime) -> list[Item]:
    """Every query of dashboards/<name>.json with its default range and selection."""
    board = json.loads((ROOT / "dashboards" / f"{name}.json").read_text())
    start = resolve_time(board["time"]["from"], now)
    end = resolve_time(board["time"]["to"], now, round_up=True)
    variables, selected = _variables(client, board, start, end)
    targets = [(p["title"], p, t) for p in board["panels"] for t in p.get("targets", [])]
    targets += [(f"annotation {a['name']}", {}, a["target"])
                for a in board["annotations"]["list"] if "target" in a]  # fmt: skip
    items = []
    for title, panel, target in targets:
        interval = interval_for(start, end, panel.get("maxDataPoints", 1000), panel.get("interval"))
        sql = expand(target["rawSql"], QueryContext(start, end, interval, variables, selected))
        items.append(Item("grafana", f"{name}: {title}", _sql(sql), sql))
    return items


def _variables(
    client: Client, board: dict[str, Any], start: datetime, end: datetime
) -> tuple[dict[str, Variable], dict[str, Any]]:
    """The variables (a query variable's options from its own query) and their defaults."""
    base = QueryContext(start, end, interval_for(start, end))
    variables: dict[str, Variable] = {}
    selected: dict[str, Any] = {}
    for v in board["templating"]["list"]:
        if v["type"] == "query":
            rows = client.query(expand(v["query"], base)).result_rows
            options = options_from_rows(tuple(row) for row in rows)
        else:
            options = tuple(value for _, value in custom_options(v["query"]))
        variables[v["name"]] = Variable(v["name"], options, v.get("multi", False),
                                        v.get("includeAll", False), v.get("allValue"))  # fmt: skip
        current = v["current"]["value"]
        selected[v["name"]] = tuple(current) if isinstance(current, list) else current
    return variables, selected


def docs_items() -> list[Item]:
    """Every ```sql block of docs/sql.md (named by its ``-- example:`` line) and
    docs/identity.md, and the pain-point ranking."""
    items = []
    for doc in ("sql", "identity"):
        for i, block in enumerate(_BLOCK.findall((ROOT / "docs" / f"{doc}.md").read_text()), 1):
            named = re.search(r"^-- example: (\w+)$", block, re.M)
            line = re.search(r"^-- params: (.*)$", block, re.M)
            params = dict(kv.split("=", 1) for kv in line.group(1).split()) if line else {}
            label = named.group(1) if named else f"block {i}"
            items.append(Item("docs", f"{doc}.md {label}", _sql(block, params), block))
    items.append(Item("docs", "painpoints feed (dashboard, background)", _painpoints))
    return items


def _painpoints(client: Client) -> int:
    from pipeline.painpoints import painpoints_feed

    return len(painpoints_feed(client, limit=10))


def catalog(client: Client, now: datetime) -> list[Item]:
    return [
        Item("baseline", "SELECT 1 (the HTTP round trip)", _sql("SELECT 1"), "SELECT 1"),
        *dashboard_items(client, now),
        *grafana_items(client, "ops", now),
        *grafana_items(client, "product", now),
        *docs_items(),
    ]


def newest_event(client: Client) -> datetime:
    """'now' for the dashboards: the newest event, rounded up to the minute (the data ends
    there; the dashboards' ranges end at now)."""
    newest: datetime = client.query("SELECT max(occurred_at) FROM touchpoints").result_rows[0][0]
    newest = newest.astimezone(UTC) if newest.tzinfo else newest.replace(tzinfo=UTC)
    return newest.replace(second=0, microsecond=0) + timedelta(minutes=1)
