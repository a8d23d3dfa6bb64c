"""Migrations: versioned files applied once each, recorded, idempotent, through HTTP."""

from __future__ import annotations

import os
import subprocess
import sys

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
