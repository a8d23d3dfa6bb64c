"""The dashboard panels rewritten for speed at 10 M events (benchmarks/README.md, queries) give
the rows of their former plans, on crafted rows in ClickHouse (chDB): a replayed touchpoint
with a newer version, a customer merged into another, a retracted transition, a replayed
dead letter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipeline import dashboard_queries as dq
from pipeline.chclient import ClickHouseConfig, connect
from pipeline.migrate import migrate
from pipeline.testing import unique_name

pytestmark = pytest.mark.integration
END = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _at(minutes: float) -> datetime:
    return END - timedelta(minutes=minutes)


@pytest.fixture(scope="module")
def client(clickhouse_url: str) -> Any:
    database = unique_name("plans").replace("-", "_")
    migrate(connect(ClickHouseConfig(url=clickhouse_url), database=""), database)
    c = connect(ClickHouseConfig(url=clickhouse_url, database=database))
    cols = ["event_id", "occurred_at", "received_at", "channel", "event_type", "customer_id",
            "csat", "nps", "wait_seconds", "version"]  # fmt: skip
    c.insert("touchpoints", [
        ["e1", _at(30), _at(30), "web", "survey", "c1", 5, None, None, 1],
        ["e1", _at(30), _at(30), "web", "survey", "c1", 3, None, None, 2],  # replay, newer
        ["e2", _at(10), _at(10), "chat", "survey", "c2", None, 9, None, 1],  # c2 merged into c1
        ["e3", _at(120), _at(120), "call_center", "call", "c3", None, None, 30.0, 1],
        ["e4", _at(5), _at(5), "web", "survey", "c4", 4, 2, None, 1],
        ["e5", _at(3), _at(3), "web", "page_view", "c1", None, None, None, 1],  # not rated
    ], column_names=cols)  # fmt: skip
    c.insert("identity_overrides", [["c2", "c1", _at(60), 1]],
             column_names=["customer_id", "current_customer_id", "merged_at", "version"])  # fmt: skip
    c.insert("stage_transitions", [
        ["c1", "j1", "", "awareness", _at(200), "web", 1, 0],
        ["c1", "j1", "awareness", "consideration", _at(20), "chat", 1, 0],
        ["c3", "j3", "", "purchase", _at(180), "web", 1, 0],
        ["c4", "j4", "", "awareness", _at(600), "web", 1, 0],
        ["c4", "j4", "", "awareness", _at(600), "web", 2, 1],  # retracted
    ], column_names=["customer_id", "journey_id", "from_stage", "to_stage", "at", "channel",
                     "version", "is_deleted"])  # fmt: skip
    c.insert("customers", [["c1", "j1", "family", 1], ["c3", "j3", "senior", 1]],
             column_names=["customer_id", "journey_id", "segment", "version"])  # fmt: skip
    dead = ["failed_at", "reason", "stage", "original", "src_topic", "src_partition", "src_offset"]
    c.insert("dead_letters", [
        [_at(40), "invalid_json", "validate", "{", "raw", 0, 7],
        [_at(30), "invalid_json", "validate", "{", "raw", 0, 7],  # the same message, replayed
        [_at(20), "schema", "validate", "{}", "raw", 1, 7],
    ], column_names=dead)  # fmt: skip
    return c


def _rows(client: Any, query: dq.Query) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in client.query(query.sql, parameters=query.params).result_rows]


FILTERS = ({"range": "1h"}, {"range": "24h"}, {"range": "24h", "channel": "call_center"},
           {"range": "24h", "segment": "family"}, {"range": "6h", "channel": "web",
           "segment": "unknown"})  # fmt: skip


@pytest.mark.parametrize("query", FILTERS, ids=lambda q: "-".join(q.values()))
def test_experience_plans_agree(client: Any, query: dict[str, str]) -> None:
    f = dq.parse_filters({**query, "to": END.isoformat()}, END)
    assert _rows(client, dq._experience_narrow(f)) == _rows(client, dq._experience_wide(f))


def test_experience_counts_the_newest_version_under_the_current_customer(client: Any) -> None:
    f = dq.parse_filters({"range": "1h", "to": END.isoformat()}, END)
    rows = {r[0]: r for r in _rows(client, dq.experience(f))}
    assert set(rows) == {"awareness", "consideration", "none"}
    assert rows["awareness"][1:3] == (1, 3.0)  # e1, version 2: csat 3
    assert rows["consideration"][3:5] == (1, 100.0)  # e2 of c2, now c1, after c1's entry
    assert rows["none"][1:5] == (1, 4.0, 1, -100.0)  # e4: c4's only transition is retracted


def test_dead_letters_count_a_replayed_message_once(client: Any) -> None:
    f = dq.parse_filters({"range": "1h", "to": END.isoformat()}, END)
    rows = _rows(client, dq.dead_letters(f))
    assert [(r[0], r[2], r[4]) for r in rows] == [("invalid_json", 1, 2), ("schema", 1, 2)]
    final = "SELECT count() FROM dead_letters FINAL"
    assert client.query(final).result_rows[0][0] == rows[0][4]
