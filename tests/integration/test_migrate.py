"""Migrations: versioned files applied once each, recorded, idempotent, through HTTP."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline.chclient import ClickHouseConfig, connect
from pipeline.migrate import load_migrations, migrate
from pipeline.testing import unique_name


def test_migrate_applies_each_file_once_and_records_it(clickhouse_url: str) -> None:
    database = unique_name("mig").replace("-", "_")
    client = connect(ClickHouseConfig(url=clickhouse_url), database="")
    applied = migrate(client, database)
    assert [m.version for m in applied] == [m.version for m in load_migrations()]
    assert migrate(client, database) == []
    ledger = client.query(f"SELECT version, name FROM `{database}`.schema_migrations FINAL ORDER BY version").result_rows
    assert ledger == [(m.version, m.name) for m in load_migrations()]
    tables = {r[0] for r in client.query(f"SHOW TABLES FROM `{database}`").result_rows}
    assert {"touchpoints", "dead_letters", "identity_overrides", "touchpoints_current"} <= tables


def test_migrate_command_is_idempotent(clickhouse_url: str) -> None:
    database = unique_name("migcli").replace("-", "_")
    env = {**os.environ, "TOUCHPOINT_CLICKHOUSE_URL": clickhouse_url, "TOUCHPOINT_CLICKHOUSE_DATABASE": database}
    first = subprocess.run([sys.executable, "-m", "pipeline.cli", "migrate"], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert f"{len(load_migrations())} migration(s) applied to {database}" in first.stdout
    again = subprocess.run([sys.executable, "-m", "pipeline.cli", "migrate"], env=env, capture_output=True, text=True)
    assert again.returncode == 0 and f"0 migration(s) applied to {database}" in again.stdout


def test_bad_settings_fail_with_the_field_and_value() -> None:
    env = {**os.environ, "TOUCHPOINT_PII_MODE": "sha1", "TOUCHPOINT_PARTITIONS": "0"}
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "create-topics"], env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert "TOUCHPOINT_PII_MODE='sha1': Input should be 'hash' or 'clear'" in result.stderr
    assert "TOUCHPOINT_PARTITIONS=0: Input should be greater than or equal to 1" in result.stderr


def test_0008_keeps_the_late_events_and_makes_them_one_row_per_change(
    clickhouse_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upgrading a database migrated up to 0007: its late_events rows are kept (each with
    an id of its own), and a change written twice is then read once with FINAL."""
    import pipeline.migrate as migrate_module

    database = unique_name("mig8").replace("-", "_")
    client = connect(ClickHouseConfig(url=clickhouse_url), database="")
    before = [m for m in load_migrations() if m.version < 8]
    monkeypatch.setattr(migrate_module, "load_migrations", lambda: before)
    migrate(client, database)
    old = "('2026-01-01 10:00:00', 'a', 'web', 'all', 'c', 'j', 'entries', 1, '2026-01-01 10:30:00')"
    client.command(f"INSERT INTO late_events (* EXCEPT written_at) VALUES {old}, {old}")
    monkeypatch.undo()
    assert [m.version for m in migrate(client, database)][:1] == [8]  # then any later ones
    kept = "SELECT count(), uniqExact(change_id) FROM late_events FINAL"
    assert client.query(kept).result_rows == [(2, 2)]  # rows from before: kept, as they were
    new = "('2026-01-01 10:01:00', 'a', 'web', 'all', 'c', 'j', 'entries', 1, '2026-01-01 10:30:00', '7.0')"
    for _ in range(2):  # the same change, written again after a takeover
        client.command(f"INSERT INTO late_events (* EXCEPT written_at) VALUES {new}")
    assert client.query(kept).result_rows == [(3, 3)]
