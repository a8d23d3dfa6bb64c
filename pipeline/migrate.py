"""Versioned migrations: ``schemas/clickhouse/NNNN_name.sql`` applied in order, once each,
recorded in ``schema_migrations``. Idempotent: a second run applies nothing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError as DriverError

from pipeline.chclient import translate
from pipeline.errors import ClickHouseError
from pipeline.stage_model import StageModel, load_stage_model
from pipeline.stage_model_table import write_stage_model

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree ORDER BY version
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    def statements(self) -> list[str]:
        """The file's statements, split on semicolons that end a line."""
        body = "\n".join(
            line for line in self.sql.splitlines() if not line.strip().startswith("--")
        )
        return [s.strip() for s in re.split(r";\s*$", body, flags=re.M) if s.strip()]


def load_migrations() -> list[Migration]:
    """Every migration shipped in the ``schemas.clickhouse`` package data, by version."""
    found = []
    for entry in resources.files("schemas").joinpath("clickhouse").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)


def _run(client: Client, sql: str, stage: str) -> None:
    try:
        client.command(sql)
    except DriverError as exc:
        raise translate(exc, stage=stage) from exc


def migrate(
    client: Client,
    database: str,
    *,
    progress: Callable[[str], None] = lambda _m: None,
    model: StageModel | None = None,
) -> list[Migration]:
    """Create ``database`` if needed and apply pending migrations; returns those applied.

    Then store the stage model (``model``, else the shipped default) in ``stage_model``."""
    _run(client, f"CREATE DATABASE IF NOT EXISTS `{database}`", "migrate")
    client.database = database
    _run(client, _LEDGER, "migrate")
    done = {
        row[0]: row[1]
        for row in client.query("SELECT version, checksum FROM schema_migrations FINAL").result_rows
    }
    applied = []
    for migration in load_migrations():
        if migration.version in done:
            if done[migration.version] != migration.checksum:
                progress(f"warning: migration {migration.version} changed since it was applied")
            continue
        progress(f"applying {migration.version:04d}_{migration.name}")
        for statement in migration.statements():
            _run(client, statement, f"migrate {migration.version:04d}")
        client.insert(
            "schema_migrations",
            [[migration.version, migration.name, migration.checksum]],
            column_names=["version", "name", "checksum"],
        )
        applied.append(migration)
    if write_stage_model(client, model or load_stage_model()):
        progress("stage model written to stage_model")
    return applied


__all__ = ["ClickHouseError", "Migration", "load_migrations", "migrate"]
