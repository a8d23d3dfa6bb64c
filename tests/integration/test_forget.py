"""GDPR forget through the real pipeline: the person's rows go from every table, other
people's stay, and neither a replay nor new events bring the person back."""

from __future__ import annotations

import re
import time
import urllib.request
from datetime import UTC, datetime
from typing import Any

import orjson
from typer.testing import CliRunner

import pipeline.cli_identity  # noqa: F401  # registers forget on the cli
from pipeline.chclient import ClickHouseConfig, connect
from pipeline.cli import cli
from pipeline.identity_ops import identifier_node
from pipeline.kafka_config import KafkaConfig
from pipeline.producers.kafka import make_producer
from pipeline.settings import settings_env
from pipeline.testing.stack import wait_for
from schemas.identity import fallback_customer_id


def _ev(event_id: str, minute: int, **ids: str) -> dict[str, Any]:
    return {
        "event_id": event_id, "occurred_at": f"2026-11-26T10:{minute:02d}:00Z",
        "channel": "web", "event_type": "page_view", "identifiers": ids,
    }  # fmt: skip


ADA = [
    _ev("a1", 0, anonymous_id="cookie-ada"),
    _ev("a2", 1, anonymous_id="cookie-ada", email="ada@example.com"),
    _ev("a3", 2, email="ada@example.com", crm_id="CRM-1"),
    _ev("a4", 3, phone="+14155550101"),
    _ev("a5", 4, phone="+14155550101", crm_id="CRM-1"),
]
BOB = [
    _ev("b1", 5, email="bob@example.com", crm_id="CRM-2"),
    _ev("b2", 6, anonymous_id="cookie-bob", email="bob@example.com"),
    _ev("b3", 7, email="ada@example.com", crm_id="CRM-2"),  # names Ada's email: refused
]
ADA_LATER = [
    _ev("a6", 20, anonymous_id="cookie-ada"),
    _ev("a7", 21, phone="+1 415 555 0101"),
    _ev("a8", 22, anonymous_id="cookie-ada", email="ada@example.com"),
]
DEAD = [  # rejected (no such channel): dead letters keep the raw payload
    {**_ev("d1", 8, phone="+1 (415) 555-0101"), "channel": "fax"},  # Ada's phone, other format
    {**_ev("d2", 9, email="bob@example.com"), "channel": "fax"},  # Bob's
]
ADA_GARBLED = b'{"event_id": "d3", "identifiers": {"email": "ada@example.com"'  # not JSON
OTHERS_LATER = [_ev("b4", 23, email="bob@example.com"), _ev("c1", 24, email="cy@example.com")]


def _send(producer: Any, topic: str, events: list[dict[str, Any]], pause: float = 0.0) -> None:
    for event in events:
        producer.send(topic, value=orjson.dumps(event))
        producer.flush()
        time.sleep(pause)  # one ingest batch each: across partitions Kafka keeps no order


def _current(client: Any) -> dict[str, str]:
    sql = "SELECT event_id, current_customer_id FROM touchpoints_current"
    return dict(client.query(sql).result_rows)


def _settled(client: Any) -> dict[str, str] | None:
    current = _current(client)
    refused = client.query("SELECT count() FROM identity_refusals").result_rows[0][0]
    if len(current) < len(ADA) + len(BOB) or not refused:
        return None
    ada = {current[e["event_id"]] for e in ADA}
    bob = {current[e["event_id"]] for e in BOB}
    return current if len(ada) == 1 and len(bob) == 1 and ada != bob else None


def _ada_ids(client: Any, settings: Any) -> set[str]:
    """Every customer id Ada's rows carry or map to, and her identifiers' fallback ids."""
    ids = {
        v
        for row in client.query(
            "SELECT customer_id, current_customer_id FROM touchpoints_current "
            "WHERE event_id IN ('a1', 'a2', 'a3', 'a4', 'a5')"
        ).result_rows
        for v in row
    }
    for identifier in ("anonymous_id:cookie-ada", "email:ada@example.com", "phone:+14155550101"):
        ids.add(fallback_customer_id(identifier_node(settings, identifier)))
    ids.add(fallback_customer_id("crm_id:CRM-1"))
    return ids


def _rows_of(client: Any, ids: set[str]) -> dict[str, int]:
    tables = client.query(
        "SELECT DISTINCT table FROM system.columns WHERE database = currentDatabase() "
        "AND name = 'customer_id' AND table != 'touchpoints_current'"
    ).result_rows
    found = {}
    for (table,) in tables:
        extra = " OR current_customer_id IN %(ids)s" if table == "identity_overrides" else ""
        sql = f"SELECT count() FROM `{table}` WHERE customer_id IN %(ids)s{extra}"
        found[table] = client.query(sql, parameters={"ids": sorted(ids)}).result_rows[0][0]
    return found


def _erased_events(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found = re.search(r"^touchpoint_erased_events_total (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_forget_erases_the_person_everywhere_and_for_good(
    pipeline_settings: Any, start_worker: Any
) -> None:
    settings = pipeline_settings
    worker = start_worker(settings)
    producer = make_producer(KafkaConfig.from_settings(settings), client_id="forget-test")
    client = connect(ClickHouseConfig.from_settings(settings))
    _send(producer, settings.raw_topic, ADA[:1])
    wait_for(lambda: client.query("SELECT count() FROM touchpoints").result_rows[0][0], 60, "a1")
    _send(producer, settings.raw_topic, ADA[1:] + BOB, pause=0.4)
    before = wait_for(lambda: _settled(client), 90, "Ada's and Bob's events to settle")
    _send(producer, settings.raw_topic, DEAD)
    producer.send(settings.raw_topic, value=ADA_GARBLED)
    producer.flush()
    dead = "SELECT event_id, original FROM dead_letters ORDER BY src_offset"
    wait_for(lambda: len(client.query(dead).result_rows) == 3, 60, "three dead letters")
    ada_ids = _ada_ids(client, settings)
    bob = before["b1"]
    assert bob not in ada_ids and sum(_rows_of(client, ada_ids).values()) > 0

    result = CliRunner().invoke(
        cli,
        ["forget", "--identifier", "email: Ada@Example.com ", "--timeout", "90"],
        env=settings_env(settings),
    )
    assert result.exit_code == 0, result.output
    assert "resolver erasure: confirmed" in result.output
    assert re.search(r"rows deleted: .*touchpoints=5", result.output), result.output
    assert re.search(r"rows deleted: .*dead_letters=2", result.output), result.output
    # Bob's dead letter stays; Ada's (found by her hashed phone, and by the raw email in a
    # payload too broken to parse) are gone
    assert [r[0] for r in client.query(dead).result_rows] == ["d2"]

    assert _rows_of(client, ada_ids) == dict.fromkeys(_rows_of(client, ada_ids), 0)
    assert set(_current(client)) == {"b1", "b2", "b3"}
    assert set(_current(client).values()) == {bob}
    b3 = client.query("SELECT identifiers FROM touchpoints WHERE event_id = 'b3'").result_rows
    assert b3 == [({"crm_id": "CRM-2"},)]  # Bob's event kept, without Ada's email

    # a replay through a fresh worker (empty dedup window), and new events of Ada's
    worker.stop()
    start_worker(settings, index=1)
    _send(producer, settings.raw_topic, ADA + ADA_LATER + OTHERS_LATER)
    expected = len(ADA) + len(ADA_LATER)
    port = settings.worker_web_port
    wait_for(lambda: _erased_events(port) >= expected, 60, f"{expected} events dropped")
    wait_for(lambda: {"b4", "c1"} <= set(_current(client)), 60, "other traffic to land")
    time.sleep(2 * (settings.batch_max_seconds + settings.sink_max_seconds) + 1)
    assert set(_current(client)) == {"b1", "b2", "b3", "b4", "c1"}
    assert _rows_of(client, ada_ids) == dict.fromkeys(_rows_of(client, ada_ids), 0)
    producer.close()


def test_forget_without_a_resolver_deletes_and_says_so(
    pipeline_settings: Any, start_worker: Any
) -> None:
    settings = pipeline_settings
    client = connect(ClickHouseConfig.from_settings(settings))
    node = identifier_node(settings, "email:zed@example.com")
    client.insert(
        "touchpoints",
        [["z1", datetime.now(UTC), datetime.now(UTC), "c_zed", {"email": node[6:]}, 1]],
        column_names=[
            "event_id",
            "occurred_at",
            "received_at",
            "customer_id",
            "identifiers",
            "version",
        ],
    )
    args = ["forget", "--identifier", "email:zed@example.com", "--timeout", "3"]
    result = CliRunner().invoke(cli, args, env=settings_env(settings))
    assert result.exit_code == 1, result.output  # no worker: the resolver never answered
    assert "resolver erasure: NOT confirmed" in result.output and "touchpoints=1" in result.output
    assert client.query("SELECT count() FROM touchpoints").result_rows == [(0,)]

    start_worker(settings)  # applies the queued request; the identifier was never in the graph
    args[-1] = "60"
    result = CliRunner().invoke(cli, args, env=settings_env(settings))
    assert result.exit_code == 0, result.output
    # the resolver erases even an identifier it never saw, so later events carrying it are dropped
    assert "resolver erasure: confirmed" in result.output
