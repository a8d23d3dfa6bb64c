"""SQL for product teams over a simulated run through the real broker, worker and ClickHouse
(chDB): every example in docs/sql.md runs and returns rows, every column of every documented
table and view is documented, the funnels and the five attribution models equal an
independent computation in Python over the same events (product_sql_reference.py), and
`touchpoint sql` prints tables, CSV and JSON and fails clearly on bad SQL."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from product_sql_reference import (
    EVENT_COLUMNS,
    MODELS,
    Event,
    attribution,
    current_events,
    funnel,
    journey_of,
)
from typer.testing import CliRunner

from pipeline.chclient import ClickHouseConfig, connect
from pipeline.cli import cli
from pipeline.kafka_config import KafkaConfig
from pipeline.producers.kafka import make_producer
from pipeline.producers.simulator import SimulationConfig, simulate
from pipeline.settings import settings_env
from pipeline.testing.stack import (
    prepare,
    settings_for_test,
    wait_for,
    worker_process,
    worker_ready,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "sql.md"
BLOCK = re.compile(r"```sql\n(.*?)```", re.S)


def examples() -> dict[str, tuple[str, dict[str, str]]]:
    """name -> (sql, params) for every ```sql block of docs/sql.md."""
    found: dict[str, tuple[str, dict[str, str]]] = {}
    for block in BLOCK.findall(DOCS.read_text()):
        name = re.search(r"^-- example: (\w+)$", block, re.M)
        assert name, f"a ```sql block without an '-- example:' line:\n{block}"
        assert name.group(1) not in found, f"two examples named {name.group(1)}"
        line = re.search(r"^-- params: (.*)$", block, re.M)
        params = dict(kv.split("=", 1) for kv in line.group(1).split()) if line else {}
        found[name.group(1)] = (block, params)
    return found


@pytest.fixture(scope="module")
def run(kafka_bootstrap: str, clickhouse_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One simulated month (5,000 events) through the pipeline, drained and settled."""
    settings = settings_for_test(kafka_bootstrap, clickhouse_url, tmp_path_factory.mktemp("product_sql"))
    prepare(settings)
    worker = worker_process(settings).start()
    try:
        wait_for(lambda: worker_ready(worker), 90, "worker ready")
        config = SimulationConfig(
            seed=11, start=datetime.now(UTC) - timedelta(days=28), duration=timedelta(days=28),
            customers=450, max_events=5000, mean_session_gap=timedelta(hours=12),
        )  # fmt: skip
        events = list(simulate(config))
        producer = make_producer(KafkaConfig.from_settings(settings), client_id="product-sql")
        for event in events:
            producer.send(settings.raw_topic, key=event.key, value=event.payload)
        producer.close()
        client = connect(ClickHouseConfig.from_settings(settings))
        valid = len({e.event_id for e in events if e.malformed is None})
        count = "SELECT count() FROM touchpoints FINAL"
        wait_for(lambda: client.query(count).result_rows[0][0] >= valid, 120, f"{valid} touchpoints")
        _settle(client)
        yield settings, client
    finally:
        worker.stop()


def _settle(client: Any) -> None:
    """Wait until the journey and identity tables hold rows and stop changing (three equal
    polls; under load the journey stage can still be at zero when the touchpoints are in)."""
    sql = (
        "SELECT (SELECT count() FROM stage_transitions FINAL), (SELECT count() FROM journeys FINAL),"
        " (SELECT count() FROM identity_overrides FINAL), (SELECT count() FROM customers FINAL)"
    )
    seen: list[Any] = []

    def still() -> bool:
        seen.append(client.query(sql).result_rows[0])
        return len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3] and all(seen[-1][:2])

    wait_for(still, 60, "journey and identity tables to settle", interval=1.0)


def _events(client: Any) -> list[Event]:
    rows = client.query(f"SELECT {EVENT_COLUMNS} FROM touchpoints FINAL").result_rows
    overrides = client.query(
        "SELECT customer_id, current_customer_id, is_deleted FROM identity_overrides FINAL"
    ).result_rows
    return current_events(rows, overrides)


def test_every_documented_example_runs_and_returns_rows(run: Any) -> None:
    _, client = run
    found = examples()
    assert len(found) >= 20
    for name in ("funnel_customer", "funnel_journey", "funnel_chat", "funnel_call",
                 "top_stage_paths_before_purchase", "top_stage_paths_before_dropoff",
                 "top_touch_paths", "attribution_by_channel", "attribution_time_decay",
                 "retention_matrix", "identity_summary"):  # fmt: skip
        assert name in found, name
    for name, (sql, params) in found.items():
        rows = client.query(sql, parameters=params or None).result_rows
        assert rows, f"example {name} returned no rows"
    outcomes = dict(client.query("SELECT outcome, count() FROM journey_paths GROUP BY outcome").result_rows)
    assert outcomes.get("purchased", 0) > 10 and outcomes.get("dropped_off", 0) > 10, outcomes
    weeks = client.query("SELECT uniqExact(cohort_week), max(week_number) FROM retention_cohorts").result_rows[0]
    assert weeks[0] >= 3 and weeks[1] >= 1, weeks


def test_every_column_of_every_documented_table_is_documented(run: Any) -> None:
    settings, client = run
    sections = re.split(r"^### (.*)$", DOCS.read_text(), flags=re.M)
    documented = {
        name: text
        for heading, text in zip(sections[1::2], sections[2::2], strict=True)
        for name in re.findall(r"`(\w+)", heading)
    }
    columns: dict[str, set[str]] = {}
    for table, column in client.query(
        "SELECT table, name FROM system.columns WHERE database = {db:String}",
        parameters={"db": settings.clickhouse_database},
    ).result_rows:
        columns.setdefault(table, set()).add(column)
    assert {"touchpoints", "journeys", "top_touch_paths", "attribution", "retention_cohorts"} <= set(documented)
    for name, text in documented.items():
        if name not in columns:  # the parameterized view has no entry in system.columns
            continue
        named = set(re.findall(r"`(\w+)`", text))
        for other in re.findall(r"[Ee]very column of `(\w+)`", text):
            named |= columns[other]
        missing = columns[name] - named
        assert not missing, f"docs/sql.md does not define {sorted(missing)} of {name}"


def _doc_steps(client: Any, name: str) -> list[int]:
    sql, params = examples()[name]
    return [row[2] for row in client.query(sql, parameters=params).result_rows]


def test_funnels_equal_an_independent_computation(run: Any) -> None:
    _, client = run
    events = _events(client)
    journeys = client.query("SELECT customer_id, journey_id, started_at FROM journeys FINAL").result_rows
    stage_steps = [
        lambda e: e.stage == "awareness",
        lambda e: e.stage == "consideration",
        lambda e: e.event_type in ("add_to_cart", "checkout_started"),
        lambda e: e.channel == "web" and e.event_type == "purchase",
    ]
    sender = lambda e, who: e.event_type == "chat_message" and e.properties.get("sender") == who  # noqa: E731
    chats = [e for e in events if e.channel == "chat" and e.conversation_id]
    calls = [e for e in events if e.channel == "call_center" and e.call_id]
    expected = {
        "funnel_customer": funnel(events, lambda e: e.customer, stage_steps, 604800),
        "funnel_journey": funnel(events, journey_of(journeys), stage_steps, 604800),
        "funnel_chat": funnel(chats, lambda e: e.conversation_id, [
            lambda e: e.event_type == "chat_started", lambda e: sender(e, "customer"),
            lambda e: sender(e, "agent"),
            lambda e: e.event_type == "chat_ended" and e.outcome == "resolved",
        ], 3600),
        "funnel_call": funnel(calls, lambda e: e.call_id, [
            lambda e: e.event_type == "call_started",
            lambda e: e.event_type == "call_ended" and e.outcome != "abandoned",
            lambda e: e.event_type == "call_ended" and e.outcome == "resolved",
        ], 7200),
    }
    for name, want in expected.items():
        assert _doc_steps(client, name) == want, name
        assert want[0] > want[-1] > 0, (name, want)
    # a window of one second keeps only chains within one second: fewer customers get far
    sql, _ = examples()["funnel_customer"]
    narrow = [r[2] for r in client.query(sql, parameters={"window_seconds": 1}).result_rows]
    assert narrow == funnel(events, lambda e: e.customer, stage_steps, 1)
    assert narrow[1] < expected["funnel_customer"][1]


def _close(got: dict[Any, tuple[float, float]], want: dict[Any, tuple[float, float]]) -> None:
    for key in set(got) | set(want):
        g, w = got.get(key, (0.0, 0.0)), want.get(key, (0.0, 0.0))
        assert math.isclose(g[0], w[0], abs_tol=1e-6) and math.isclose(g[1], w[1], rel_tol=1e-9, abs_tol=1e-6), (key, g, w)


def test_five_attribution_models_equal_an_independent_computation(run: Any) -> None:
    _, client = run
    events = _events(client)
    purchases = sum(e.channel == "web" and e.event_type == "purchase" for e in events)
    assert purchases > 30
    want = attribution(events, 168)
    rows = client.query("SELECT model, channel, campaign, purchases, revenue FROM attribution").result_rows
    got = {(m, ch, ca): (p, r) for m, ch, ca, p, r in rows}
    _close(got, want)
    for model in MODELS:
        assert math.isclose(sum(v[0] for k, v in got.items() if k[0] == model), purchases)
    # the models disagree: they are not all the same computation
    by_channel = {m: {k[1]: v[0] for k, v in want.items() if k[0] == m} for m in MODELS}
    assert len({json.dumps(by_channel[m], sort_keys=True) for m in MODELS}) == len(MODELS)

    sql, params = examples()["attribution_by_channel"]  # five columns, one per model
    doc = {row[0]: row[1:] for row in client.query(sql).result_rows}
    order = ("first_touch", "last_touch", "linear", "time_decay", "position_based")
    for channel, values in doc.items():
        for model, value in zip(order, values, strict=True):
            expect = sum(v[0] for k, v in want.items() if k[0] == model and k[1] == channel)
            assert math.isclose(value, expect, abs_tol=1e-6), (channel, model)

    sql, params = examples()["attribution_time_decay"]  # a custom half-life, as a parameter
    day = attribution(events, float(params["half_life_hours"]))
    rows = client.query(sql, parameters=params).result_rows
    _close({("time_decay", ch, ca): (p, r) for ch, ca, p, r in rows},
           {k: v for k, v in day.items() if k[0] == "time_decay"})  # fmt: skip
    week = {k: v[0] for k, v in want.items() if k[0] == "time_decay"}
    assert any(abs(v[0] - week.get(k, 0.0)) > 1e-3 for k, v in day.items() if k[0] == "time_decay")


def _sql(settings: Any, *args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(cli, ["sql", *args], env=settings_env(settings), input=stdin)


def test_touchpoint_sql_prints_table_csv_and_json_and_fails_clearly(run: Any) -> None:
    settings, client = run
    query = "SELECT channel, count() AS events, min(occurred_at) AS first FROM touchpoints FINAL GROUP BY channel ORDER BY channel"
    expected = client.query(query).result_rows

    table = _sql(settings, query)
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["channel", "events", "first"] and set(lines[1]) <= {"-", " "}
    assert [line.split()[:2] for line in lines[2:-1]] == [[c, str(n)] for c, n, _ in expected]
    assert lines[-1] == f"({len(expected)} rows)"
    ends = {line.index(f" {n} ") + len(str(n)) for line, (_, n, _) in zip(lines[2:], expected, strict=False)}
    assert len(ends) == 1  # numbers right-aligned

    out = _sql(settings, "--format", "csv", query)
    assert out.exit_code == 0, out.output
    parsed = list(csv.reader(io.StringIO(out.stdout)))
    assert parsed[0] == ["channel", "events", "first"]
    assert [(c, int(n)) for c, n, _ in parsed[1:]] == [(c, n) for c, n, _ in expected]
    assert datetime.fromisoformat(parsed[1][2]) == expected[0][2]

    out = _sql(settings, "-f", "json", "-", stdin=query)
    assert out.exit_code == 0, out.output
    assert [(r["channel"], r["events"]) for r in json.loads(out.stdout)] == [(c, n) for c, n, _ in expected]

    sql, params = examples()["funnel_customer"]
    args = [a for k, v in params.items() for a in ("--param", f"{k}={v}")]
    out = _sql(settings, "--format", "json", *args, "--", sql)  # "--": the query starts with "--"
    assert out.exit_code == 0, out.output
    assert [r["units"] for r in json.loads(out.stdout)] == _doc_steps(client, "funnel_customer")

    bad = _sql(settings, "SELEC channel FROM touchpoints")
    assert bad.exit_code == 1 and bad.stdout == ""
    assert "ClickHouse error 62:" in bad.stderr and "Syntax error" in bad.stderr
    unknown = _sql(settings, "SELECT nope FROM touchpoints")
    assert unknown.exit_code == 1 and "ClickHouse error 47:" in unknown.stderr and "nope" in unknown.stderr
    unbound = _sql(settings, "SELECT {x:UInt8}")
    assert unbound.exit_code == 1 and "ClickHouse error 456:" in unbound.stderr
    usage = _sql(settings, "--param", "no-equals", "SELECT 1")
    assert usage.exit_code == 2
