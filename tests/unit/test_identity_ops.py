"""identity_ops: identifier hashing, the erasure watch, and the ClickHouse halves of forget
and squash against the embedded ClickHouse server (no Kafka, no workers)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import typer
from typer.testing import CliRunner

import pipeline.cli_identity  # noqa: F401  # registers forget and identity squash
from pipeline.chclient import ClickHouseConfig, connect
from pipeline.cli import cli
from pipeline.errors import TouchpointError
from pipeline.identity_ops import identifier_node, squash
from pipeline.identity_ops_erase import erase_pass
from pipeline.identity_ops_kafka import GRACE_SECONDS, ErasureWatch
from pipeline.identity_ops_tables import TableInfo, discover
from pipeline.migrate import migrate
from pipeline.settings import load_settings
from pipeline.testing.kafka import unique_name
from pipeline.validate import validate_message
from pipeline.worker_context import validation_config
from schemas.identity import (
    ForgetResult,
    IdentityEvents,
    NodeAssignment,
    fallback_customer_id,
)
from schemas.records import SourceRef, Touchpoint

# --- identifiers are stored as the validate stage stores them -----------------------------


def _stored(settings: Any, kind: str, raw: str) -> str:
    event = {
        "event_id": "e", "occurred_at": "2026-11-26T10:00:00Z", "channel": "web",
        "event_type": "page_view", "identifiers": {kind: raw},
    }  # fmt: skip
    src = SourceRef(topic="t", partition=0, offset=0)
    tp = validate_message(orjson.dumps(event), src, datetime.now(UTC), validation_config(settings))
    assert isinstance(tp, Touchpoint)
    return f"{kind}:{tp.identifiers[kind]}"


@pytest.mark.parametrize(
    ("kind", "raw", "over"),
    [
        ("email", " Someone@Example.COM ", {}),
        ("phone", "(415) 555-0101", {}),
        ("phone", "020 7946 0958", {"default_phone_region": "GB"}),
        ("email", "someone@example.com", {"pii_mode": "clear"}),
        ("anonymous_id", " cookie-1 ", {}),
        ("crm_id", "CRM-9", {"pii_hash_key": "another-key"}),
    ],
)
def test_identifier_node_matches_the_validate_stage(kind: str, raw: str, over: Any) -> None:
    settings = load_settings(**over)
    assert identifier_node(settings, f"{kind}:{raw}") == _stored(settings, kind, raw)


def test_identifier_node_hashes_pii_unless_clear() -> None:
    hashed = identifier_node(load_settings(), "email:a@b.co")
    assert hashed.startswith("email:") and "a@b.co" not in hashed
    assert identifier_node(load_settings(pii_mode="clear"), "email:A@B.co") == "email:a@b.co"


@pytest.mark.parametrize(
    "text", ["nocolon", "fax:123", "email:not-an-email", "anonymous_id:null", "phone:12"]
)
def test_identifier_node_rejects_bad_input_naming_the_value(text: str) -> None:
    with pytest.raises(TouchpointError) as err:
        identifier_node(load_settings(), text)
    assert "[forget]" in str(err.value) and text in str(err.value)


# --- the resolver's answer ----------------------------------------------------------------


def _erasure(node: str, version: int) -> bytes:
    return NodeAssignment(node=node, customer_id="", version=version).model_dump_json().encode()


def _forgotten(*results: ForgetResult) -> bytes:
    return IdentityEvents(forgotten=results).model_dump_json().encode()


def test_watch_finishes_on_erasure_and_result() -> None:
    watch = ErasureWatch("email:x")
    watch.on_assignment(
        NodeAssignment(node="email:x", customer_id="c", version=1).model_dump_json().encode(), 0
    )
    watch.on_assignment(_erasure("email:other", 5), 0.1)
    assert not watch.finished(0.2)
    watch.on_assignment(_erasure("email:x", 9), 1.0)
    watch.on_assignment(_erasure("anonymous_id:k", 9), 1.0)
    assert not watch.finished(1.1)
    result = ForgetResult(customer_id="c1", nodes=("email:x", "anonymous_id:k"), absorbed=("c2",))
    watch.on_identity_events(_forgotten(ForgetResult(customer_id="", nodes=()), result), 1.2)
    assert watch.finished(1.2)
    out = watch.outcome()
    assert (out.confirmed, out.known) == (True, True)
    assert out.nodes == ("email:x", "anonymous_id:k") and out.customers == ("c1", "c2")


def test_watch_without_result_uses_the_erasures_of_the_same_version() -> None:
    watch = ErasureWatch("email:x")
    for node, version in (("email:x", 4), ("phone:p", 4), ("email:y", 3)):
        watch.on_assignment(_erasure(node, version), 1.0)
    assert not watch.finished(1.0 + GRACE_SECONDS / 2)
    assert watch.finished(1.0 + GRACE_SECONDS)
    assert watch.outcome().nodes == ("email:x", "phone:p")


def test_watch_unknown_node_needs_the_assignments_read_to_the_end() -> None:
    watch = ErasureWatch("email:x")
    watch.on_identity_events(_forgotten(ForgetResult(customer_id="", nodes=())), 1.0)
    assert not watch.finished(10.0)  # the assignments backlog may still hold an old erasure
    watch.on_caught_up(10.0)
    assert watch.finished(10.0 + GRACE_SECONDS)
    out = watch.outcome()
    assert (out.confirmed, out.known, out.nodes) == (True, False, ())


def test_watch_times_out_unconfirmed() -> None:
    watch = ErasureWatch("email:x")
    watch.on_caught_up(0.0)
    assert not watch.finished(1000.0)
    assert not watch.outcome().confirmed


# --- tables ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "engine_full", "sorting", "part", "refused"),
    [
        ("t", "ReplacingMergeTree(version) ORDER BY x", "x", "", False),
        ("r", "ReplicatedReplacingMergeTree('/p', '{r}', version)", "x", "", False),
        ("j", "ReplacingMergeTree(version, is_deleted)", "x", "", False),
        ("u", "ReplacingMergeTree ORDER BY x", "x", "", True),
        ("k", "ReplacingMergeTree(version)", "customer_id, day", "", True),
        ("p", "ReplacingMergeTree(version)", "x", "customer_id", True),
        ("identity_overrides", "ReplacingMergeTree(version)", "customer_id", "", True),
    ],
)
def test_squash_refusal(
    name: str, engine_full: str, sorting: str, part: str, refused: bool
) -> None:
    cols = ("customer_id", "version")
    engine = engine_full.split("(")[0].split(" ")[0]
    table = TableInfo("db", name, engine, engine_full, part, sorting, cols, frozenset(cols))
    assert (table.squash_refusal() is not None) == refused


def test_every_flag_shows_its_env_var() -> None:
    group: Any = typer.main.get_command(cli)  # typer vendors click: duck-typed
    for command in (group.commands["forget"], group.commands["identity"].commands["squash"]):
        for param in command.params:
            if param.param_type_name == "option" and param.name != "help":
                assert param.envvar and param.show_envvar, (command.name, param.name)
    runner = CliRunner()
    for args, names in (
        (["forget", "--help"], ["TOUCHPOINT_FORGET_IDENTIFIER", "TOUCHPOINT_FORGET_TIMEOUT"]),
        (["identity", "squash", "--help"], ["TOUCHPOINT_SQUASH_GRACE"]),
    ):
        result = runner.invoke(cli, args, env={"COLUMNS": "250"})
        assert result.exit_code == 0, result.output
        assert all(name in result.output for name in names), result.output


# --- ClickHouse: forget and squash ----------------------------------------------------------


@pytest.fixture
def ch(clickhouse_url: str) -> Iterator[tuple[Any, str]]:
    database = unique_name("ops").replace("-", "_").replace(".", "_")
    migrate(connect(ClickHouseConfig(url=clickhouse_url), database=""), database)
    yield connect(ClickHouseConfig(url=clickhouse_url, database=database)), database


TP_COLUMNS = (
    "event_id", "occurred_at", "received_at", "customer_id", "identifiers", "email", "version",
)  # fmt: skip


def _touchpoint(client: Any, event_id: str, customer: str, version: int = 1, **ids: str) -> None:
    now = datetime.now(UTC)
    client.insert(
        "touchpoints",
        [[event_id, now, now, customer, ids, ids.get("email", ""), version]],
        column_names=TP_COLUMNS,
    )


def _override(client: Any, old: str, new: str, version: int, deleted: int = 0) -> None:
    client.command(
        "INSERT INTO identity_overrides (customer_id, current_customer_id, merged_at, version, "
        "is_deleted) VALUES ({o:String}, {n:String}, now(), {v:UInt64}, {d:UInt8})",
        parameters={"o": old, "n": new, "v": version, "d": deleted},
    )


def _refusal(client: Any, event_id: str, node: str, customer: str) -> None:
    client.command(
        "INSERT INTO identity_refusals (event_id, node, customer_id, occurred_at) "
        "VALUES ({e:String}, {n:String}, {c:String}, now())",
        parameters={"e": event_id, "n": node, "c": customer},
    )


def _final(client: Any) -> dict[str, str]:
    return dict(client.query("SELECT event_id, customer_id FROM touchpoints FINAL").result_rows)


def test_erase_finds_the_person_and_spares_refused_mentions(ch: tuple[Any, str]) -> None:
    client, db = ch
    client.command(
        "CREATE TABLE later_table (customer_id String, n UInt32) ENGINE = MergeTree ORDER BY customer_id"
    )
    _touchpoint(client, "a1", "A", email="ha")
    _touchpoint(client, "a2", "A2", anonymous_id="k")  # cookie customer, merged into A
    _override(client, "A2", "A", 1)
    _touchpoint(client, "b1", "B", email="hb")
    _touchpoint(client, "b2", "B", email="ha", crm_id="CRM-2")  # Bob's event naming Ada's email
    _refusal(client, "b2", "email:ha", "B")
    client.command("INSERT INTO later_table VALUES ('A', 1), ('A2', 2), ('B', 3)")
    tables = discover(client, db)
    customers, deleted, scrubbed = erase_pass(client, tables, db, ("email:ha",))
    assert {"A", "A2", fallback_customer_id("email:ha")} <= customers and "B" not in customers
    assert deleted["touchpoints"] == 2 and deleted["later_table"] == 2
    assert deleted["identity_overrides"] == 1 and deleted["identity_refusals"] == 1
    assert scrubbed == {"touchpoints": 1}
    assert _final(client) == {"b1": "B", "b2": "B"}
    rows = client.query(
        "SELECT identifiers, email FROM touchpoints WHERE event_id = 'b2'"
    ).result_rows
    assert rows == [({"crm_id": "CRM-2"}, "")]
    assert client.query("SELECT customer_id FROM later_table").result_rows == [("B",)]


def test_squash_rewrites_clears_keeps_and_defers(ch: tuple[Any, str]) -> None:
    client, db = ch
    _touchpoint(client, "e1", "old1")
    _touchpoint(client, "e2", "old2")
    _touchpoint(client, "e3", "cur")
    _touchpoint(client, "e4", "gone")  # erased by a forget: the mapping has no target
    _override(client, "old1", "cur", 1)
    _override(client, "old2", "cur", 2)
    _override(client, "gone", "", 3, deleted=1)
    _override(client, "newest", "cur", 9)  # the newest version: deferred
    _refusal(client, "x", "email:z", "old2")  # old2 still referenced elsewhere: kept
    before = dict(
        client.query("SELECT event_id, current_customer_id FROM touchpoints_current").result_rows
    )
    report = squash(client, db, grace_seconds=0)
    assert report.rows_rewritten == {"touchpoints": 2}
    assert (report.overrides_cleared, report.overrides_kept, report.overrides_deferred) == (1, 1, 1)
    assert report.skipped_tables["identity_refusals"].startswith("not ReplacingMergeTree")
    assert "touchpoints" not in report.skipped_tables
    assert _final(client) == before == {"e1": "cur", "e2": "cur", "e3": "cur", "e4": "gone"}
    again = squash(client, db, grace_seconds=0)
    assert (again.rows_rewritten, again.overrides_cleared) == ({"touchpoints": 0}, 0)
    active = client.query(
        "SELECT customer_id FROM identity_overrides GROUP BY customer_id "
        "HAVING argMax(is_deleted, version) = 0 ORDER BY customer_id"
    ).result_rows
    assert active == [("newest",), ("old2",)]


def test_squash_grace_and_late_rows(ch: tuple[Any, str]) -> None:
    client, db = ch
    _touchpoint(client, "e1", "old1")
    _override(client, "old1", "cur", 1)
    _override(client, "other", "cur", 2)
    assert squash(client, db).overrides_cleared == 0  # landed just now: within the grace
    assert squash(client, db, grace_seconds=0).overrides_cleared == 1
    _touchpoint(client, "late", "old1")  # stamped with the cleared id, landed afterwards
    report = squash(client, db, grace_seconds=0)
    assert report.rows_rewritten == {"touchpoints": 1} and _final(client)["late"] == "cur"


def test_squash_ignores_retracted_rows_of_keyed_tables(ch: tuple[Any, str]) -> None:
    client, db = ch
    client.command(
        "CREATE TABLE profiles (customer_id String, version UInt64, is_deleted UInt8) "
        "ENGINE = ReplacingMergeTree(version, is_deleted) ORDER BY customer_id"
    )
    client.command("INSERT INTO profiles VALUES ('old1', 1, 0), ('old2', 1, 0)")
    client.command("INSERT INTO profiles VALUES ('old1', 2, 1)")  # merged away: retracted
    _override(client, "old1", "cur", 1)
    _override(client, "old2", "cur", 2)
    _override(client, "other", "cur", 3)
    report = squash(client, db, grace_seconds=0)
    assert (
        report.skipped_tables["profiles"] == "customer_id is part of the sorting or partition key"
    )
    assert (report.overrides_cleared, report.overrides_kept) == (1, 1)
