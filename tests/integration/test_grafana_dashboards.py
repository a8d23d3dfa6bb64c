"""Grafana dashboards as code (dashboards/*.json, provisioned by docker-compose.yml).

Grafana cannot run here, so:

* the JSON is checked statically: provisioning points at these files, every panel and
  query uses the provisioned ClickHouse data source, titles and ids are unique, every
  ``$variable`` used is defined, only the plugin's macros are used;
* after a simulated run through the real broker, worker and ClickHouse (chDB), every panel's
  SQL is expanded as Grafana and the plugin would expand it (pipeline/grafana_macros.py:
  the dashboard's own default time range, each panel's interval, the variables' options from
  their own queries) and run: every query returns rows with the default selection (All),
  and runs with a narrower, realistic selection too.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.chclient import ClickHouseConfig, connect
from pipeline.grafana_macros import (
    ALL,
    MACROS,
    QueryContext,
    Variable,
    custom_options,
    expand,
    interval_for,
    macro_calls,
    options_from_rows,
    resolve_time,
    variables_in,
)
from pipeline.kafka_config import KafkaConfig
from pipeline.producers.kafka import make_producer
from pipeline.producers.simulator import Incident, SimulationConfig, simulate
from pipeline.testing.stack import (
    prepare,
    settings_for_test,
    wait_for,
    worker_process,
    worker_ready,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
PLUGIN = "grafana-clickhouse-datasource"
NAMES = ("ops", "product")
OUTPUT = ROOT / "test-output" / "grafana"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DASHBOARDS / f"{name}.json").read_text())
    return data


def provisioned_uid() -> str:
    sources = yaml.safe_load((PROVISIONING / "datasources" / "clickhouse.yml").read_text())
    (source,) = [d for d in sources["datasources"] if d["type"] == PLUGIN]
    uid: str = source["uid"]
    return uid


def queries(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, panel, target) for every panel query and every annotation query."""
    found = [(p["title"], p, t) for p in dashboard["panels"] for t in p.get("targets", [])]
    for a in dashboard["annotations"]["list"]:
        if "target" in a:
            found.append((f"annotation {a['name']}", {}, a["target"]))
    return found


# --- static checks ----------------------------------------------------------------------------


def test_provisioning_loads_these_dashboards_with_the_clickhouse_data_source() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    volumes = compose["services"]["grafana"]["volumes"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in volumes if v.startswith("./"))
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "dashboards.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert mounts["./dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    sources = yaml.safe_load((PROVISIONING / "datasources" / "clickhouse.yml").read_text())
    (source,) = [d for d in sources["datasources"] if d["type"] == PLUGIN]
    assert source["jsonData"]["defaultDatabase"] == "touchpoint"
    assert source["jsonData"]["username"] == "reader"  # read-only (users.d/touchpoint.xml)
    assert sorted(p.stem for p in DASHBOARDS.glob("*.json")) == sorted(NAMES)
    uids = [load(n)["uid"] for n in NAMES]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("name", NAMES)
def test_dashboard_structure(name: str) -> None:
    dashboard = load(name)
    uid = provisioned_uid()
    source = {"type": PLUGIN, "uid": uid}
    panels = dashboard["panels"]
    assert dashboard["title"] and dashboard["uid"] and len(panels) >= 15
    titles = [p["title"] for p in panels]
    assert len(set(titles)) == len(titles), "panel titles must be unique"
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids), "panel ids must be unique"
    for p in panels:
        where = f"{name}: {p['title']}"
        assert p["datasource"] == source, where
        assert p.get("description"), f"{where}: no description"
        pos = p["gridPos"]
        assert pos["x"] + pos["w"] <= 24 and pos["w"] > 0 and pos["h"] > 0, where
        assert p["targets"], where
        refs = [t["refId"] for t in p["targets"]]
        assert len(set(refs)) == len(refs), where
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"channel", "segment"} <= set(variables)
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == source, v["name"]
        elif v["type"] == "custom":
            parsed = custom_options(v["query"])
            assert [(o["text"], o["value"]) for o in v["options"]] == list(parsed), v["name"]
        else:
            pytest.fail(f"{name}: variable {v['name']} of type {v['type']}")
        current = v["current"]["value"]
        assert v.get("includeAll") or current not in (ALL, [ALL]), v["name"]
    texts = [p["title"] for p in panels]
    texts += [v["query"] for v in variables.values() if v["type"] == "query"]
    for title, _, target in queries(dashboard):
        where = f"{name}: {title}"
        assert target["datasource"] == source, where
        assert target["editorType"] == "sql", where
        sql = target["rawSql"]
        texts.append(sql)
        kind = target["queryType"]
        assert (kind, target["format"]) in (("table", 1), ("timeseries", 0)), where
        if kind == "timeseries":  # a time column, sorted: what a time series frame needs
            assert re.search(r"\bAS time\b", sql) and re.search(r"ORDER BY time\b", sql), where
        for macro, args in macro_calls(sql):
            assert macro in MACROS or macro == "conditionalAll", f"{where}: $__{macro}"
            # plain columns only: older plugin versions split macro arguments naively
            assert all(re.fullmatch(r"[\w.]+", a) for a in args), f"{where}: $__{macro}({args})"
    used = set().union(*(variables_in(t) for t in texts))
    assert used <= set(variables), f"{name}: undefined variables {sorted(used - set(variables))}"
    assert {"channel", "segment"} <= used


# --- against a simulated run ------------------------------------------------------------------

# A sensitive detector and a short allowed lateness, so that three simulated hours fire
# alerts and leave late changes: every panel has something to show. The events are produced
# in delivery order, 900 times faster than simulated (three hours in 12 s), so that the metrics
# stage sees event time advance as in a live run and judges each window once its data is in
# (completeness grace: 10 simulated minutes, about 0.7 s here).
WORKER = {
    "metrics_allowed_lateness": 600, "metrics_completeness_grace": 600, "alert_min_volume": 2,
    "alert_zscore": 1.2, "alert_relative_increase": 0.25, "alert_baseline_windows": 30,
    "alert_max_ingest_lag": 3600,
}  # fmt: skip
SPEEDUP = 900
_WRITES = (
    "SELECT (SELECT count() FROM stage_transitions), (SELECT count() FROM customers),"
    " (SELECT count() FROM journeys), (SELECT count() FROM identity_overrides),"
    " (SELECT max(version) FROM stage_metrics), (SELECT count() FROM late_events),"
    " (SELECT count() FROM alerts)"
)


@pytest.fixture(scope="module")
def run(
    kafka_bootstrap: str, clickhouse_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """Three simulated hours ending now (3,000 events, an incident at awareness), produced
    at 900x, through the pipeline, until every table the dashboards read stops changing."""
    settings = settings_for_test(
        kafka_bootstrap, clickhouse_url, tmp_path_factory.mktemp("grafana"), **WORKER
    )
    prepare(settings)
    worker = worker_process(settings).start()
    try:
        wait_for(lambda: worker_ready(worker), 90, "worker ready")
        config = SimulationConfig(
            seed=7, start=datetime.now(UTC) - timedelta(hours=3), duration=timedelta(hours=3),
            customers=300, max_events=3000, late_fraction=0.03,
            incidents=(Incident(stage="awareness", start_minute=80, end_minute=120, dropoff_multiplier=4.0),),
        )  # fmt: skip
        events = list(simulate(config))
        producer = make_producer(KafkaConfig.from_settings(settings), client_id="grafana-test")
        began, first = time.monotonic(), events[0].delivered_at
        for event in events:
            ahead = (event.delivered_at - first).total_seconds() / SPEEDUP
            if ahead - (time.monotonic() - began) > 0.05:
                producer.flush()
                time.sleep(max(0.0, ahead - (time.monotonic() - began)))
            producer.send(settings.raw_topic, key=event.key, value=event.payload)
        producer.close()
        client = connect(ClickHouseConfig.from_settings(settings))
        valid = len({e.event_id for e in events if e.malformed is None})
        count = "SELECT count() FROM touchpoints FINAL"
        wait_for(
            lambda: client.query(count).result_rows[0][0] >= valid, 120, f"{valid} touchpoints"
        )
        seen: list[Any] = []

        def still() -> bool:  # nothing written for 4.5 s: every stage is idle
            seen.append(client.query(_WRITES).result_rows[0])
            return len(seen) >= 4 and len(set(seen[-4:])) == 1

        wait_for(still, 120, "the pipeline to go quiet", interval=1.5)
        yield client
    finally:
        worker.stop()


class Dashboard:
    """A dashboard at ``now`` with its default time range: the variables' options (query
    variables run their own query) and the default selection."""

    def __init__(self, name: str, client: Any, now: datetime) -> None:
        self.name, self.client = name, client
        self.json = load(name)
        self.start = resolve_time(self.json["time"]["from"], now)
        self.end = resolve_time(self.json["time"]["to"], now, round_up=True)
        self.variables: dict[str, Variable] = {}
        self.defaults: dict[str, str | tuple[str, ...]] = {}
        base = QueryContext(self.start, self.end, interval_for(self.start, self.end))
        for v in self.json["templating"]["list"]:
            if v["type"] == "query":
                options = options_from_rows(client.query(expand(v["query"], base)).result_rows)
            else:
                options = tuple(value for _, value in custom_options(v["query"]))
            assert options, f"{name}: variable {v['name']} has no options"
            self.variables[v["name"]] = Variable(
                v["name"],
                options,
                v.get("multi", False),
                v.get("includeAll", False),
                v.get("allValue"),
            )
            current = v["current"]["value"]
            self.defaults[v["name"]] = tuple(current) if isinstance(current, list) else current

    def run(
        self, selected: dict[str, Any] | None = None, only: tuple[str, ...] = ()
    ) -> dict[str, tuple[list[Any], float, str]]:
        """name -> (rows, seconds, expanded SQL) of every query (or those named in ``only``),
        with ``selected`` over the default selection."""
        chosen = {**self.defaults, **(selected or {})}
        results = {}
        for title, panel, target in queries(self.json):
            if only and title not in only:
                continue
            interval = interval_for(
                self.start, self.end, panel.get("maxDataPoints", 1000), panel.get("interval")
            )
            ctx = QueryContext(self.start, self.end, interval, self.variables, chosen)
            sql = expand(target["rawSql"], ctx)
            assert re.match(r"\s*(SELECT|WITH)\b", sql) and ";" not in sql, (
                f"{title}: not one SELECT"
            )
            began = time.perf_counter()
            try:
                rows = self.client.query(sql).result_rows
            except Exception as exc:
                raise AssertionError(f"{self.name}: {title} failed: {exc}\n{sql}") from exc
            results[title] = (rows, time.perf_counter() - began, sql)
        return results


def _report(name: str, label: str, results: dict[str, tuple[list[Any], float, str]]) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    lines = [
        f"{seconds:7.3f}s {len(rows):5d} rows  {title}"
        for title, (rows, seconds, _) in results.items()
    ]
    (OUTPUT / f"{name}-{label}.txt").write_text("\n".join(lines) + "\n")
    (OUTPUT / f"{name}-{label}.sql").write_text(
        "\n\n".join(f"-- {title}\n{sql};" for title, (_, _, sql) in results.items()) + "\n"
    )


@pytest.fixture(scope="module")
def dashboards(run: Any) -> dict[str, tuple[Dashboard, dict[str, tuple[list[Any], float, str]]]]:
    """Each dashboard at now, and every query's result with the default selection."""
    found = {}
    for name in NAMES:
        dashboard = Dashboard(name, run, datetime.now(UTC))
        results = dashboard.run()
        _report(name, "default", results)
        found[name] = (dashboard, results)
    return found


@pytest.mark.parametrize("name", NAMES)
def test_every_panel_query_runs_and_returns_rows(dashboards: Any, name: str) -> None:
    _, results = dashboards[name]
    empty = [title for title, (rows, _, _) in results.items() if not rows]
    assert not empty, f"{name}: queries without rows: {empty}"
    slowest = max(results.items(), key=lambda kv: kv[1][1])
    print(f"{name}: {len(results)} queries, slowest {slowest[1][1]:.3f}s ({slowest[0]})")


def test_ops_panels_follow_the_filters(dashboards: Any) -> None:
    """All reads the roll-up rows, and choosing every channel and segment adds up the same;
    a narrower selection gives smaller numbers; alerts and late changes were recorded."""
    ops, everything = dashboards["ops"]
    total = "Stage totals in range"
    every_value = {n: ops.variables[n].options for n in ("channel", "segment", "stage")}
    assert ops.run(every_value, only=(total,))[total][0] == everything[total][0]
    entered, converted, dropped, conversion_rate, dropoff_rate = everything[total][0][0]
    assert entered > 200 and converted > 20 and dropped > 0
    assert 0 < conversion_rate < 1 and conversion_rate + dropoff_rate == pytest.approx(1)

    segment = _busiest_segment(ops)
    narrow = ops.run({"channel": ("web", "email"), "segment": (segment,), "stage": ("purchase",)})
    _report("ops", "filtered", narrow)
    assert narrow[total][0][0][0] < entered
    assert [row[0] for row in narrow["Stages"][0]] in ([], ["purchase"])
    fired = sum(row[1] for row in everything["Alerts fired and resolved"][0])
    assert fired > 0 and len(everything["Recent alerts"][0]) >= fired
    newest_final = everything["Newest final window"][0][0][0] / 1000
    assert ops.start.timestamp() < newest_final <= datetime.now(UTC).timestamp()


def test_product_panels_follow_the_filters(run: Any, dashboards: Any) -> None:
    product, everything = dashboards["product"]
    narrow = product.run({
        "channel": ("web", "email"), "segment": (_busiest_segment(product),),
        "model": "time_decay", "funnel_window": "86400",
    })  # fmt: skip
    _report("product", "filtered", narrow)
    funnel = "Funnel: customers"
    all_steps = [row[1] for row in everything[funnel][0]]
    some_steps = [row[1] for row in narrow[funnel][0]]
    assert all_steps[0] > all_steps[-1] > 0 and all_steps == sorted(all_steps, reverse=True)
    assert all(s <= a for s, a in zip(some_steps, all_steps, strict=True))
    assert some_steps[0] < all_steps[0]
    channels = {row[1] for row in narrow["Touchpoints by channel"][0]}
    assert channels and channels <= {"web", "email"}
    # each of the five models credits every purchase once (the attribution view)
    purchases = run.query("SELECT count() FROM purchases").result_rows[0][0]
    by_channel = everything["Purchases credited by channel: five models"][0]
    for model in range(1, 6):
        assert sum(row[model] for row in by_channel) == pytest.approx(purchases)


def _busiest_segment(dashboard: Dashboard) -> str:
    """The named segment with the most customers: a realistic narrower selection."""
    named = [s for s in dashboard.variables["segment"].options if s != "unknown"]
    counts = dict(
        dashboard.client.query(
            "SELECT segment, count() FROM customers FINAL WHERE is_deleted = 0 GROUP BY segment"
        ).result_rows
    )
    return max(named, key=lambda s: (counts.get(s, 0), s))
