"""The tables of a database that hold customer ids, found in ClickHouse's system tables.

The identity operations (``forget``, ``identity squash``) never list tables by name: every
MergeTree-family table with a ``customer_id`` column is covered, so tables added later
(customers, journeys, stage transitions) are erased and checked without a code change.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.exceptions import ClickHouseError as DriverError

from pipeline.chclient import translate

OVERRIDES = "identity_overrides"
"""The mapping from stamped customer ids to current ones (squash clears it, never rewrites)."""
CUSTOMER = "customer_id"
VERSION = "version"
_NOT_INSERTED = frozenset({"MATERIALIZED", "ALIAS", "EPHEMERAL"})
_REPLACING_ARGS = re.compile(r"ReplacingMergeTree\(([^)]*)\)")


def quote(name: str) -> str:
    """A ClickHouse identifier in backticks."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _mentions(expression: str, column: str) -> bool:
    return (
        re.search(rf"(?<![\w`]){re.escape(column)}(?![\w`])", expression.replace("`", ""))
        is not None
    )


@dataclass(frozen=True)
class TableInfo:
    database: str
    name: str
    engine: str
    engine_full: str
    partition_key: str
    sorting_key: str
    columns: tuple[str, ...]
    """Columns an INSERT may set (not MATERIALIZED, ALIAS or EPHEMERAL), in table order."""
    all_columns: frozenset[str]

    @property
    def qualified(self) -> str:
        return f"{quote(self.database)}.{quote(self.name)}"

    def has(self, column: str) -> bool:
        return column in self.all_columns

    @property
    def holds_customer(self) -> bool:
        return self.has(CUSTOMER)

    @property
    def collapses(self) -> bool:
        """The engine merges rows by key (Replacing, Collapsing, ...): ``FINAL`` applies."""
        base = self.engine.removeprefix("Replicated").removeprefix("Shared")
        return base.endswith("MergeTree") and base != "MergeTree"

    @property
    def versioned(self) -> bool:
        """``ReplacingMergeTree(version)``: a row with a higher version replaces the old one."""
        found = _REPLACING_ARGS.search(self.engine_full)
        if found is None or not self.has(VERSION):
            return False
        args = [a.strip().strip("`\"'") for a in found.group(1).split(",")]
        return VERSION in args

    def squash_refusal(self) -> str | None:
        """Why ``squash`` cannot rewrite this table's customer ids in place, or None."""
        if self.name == OVERRIDES:
            return "the mapping itself (cleared, not rewritten)"
        if not self.versioned:
            return "not ReplacingMergeTree(version): rows cannot be superseded"
        if _mentions(self.sorting_key, CUSTOMER) or _mentions(self.partition_key, CUSTOMER):
            return "customer_id is part of the sorting or partition key"
        return None


def _rows(client: Any, sql: str, params: Mapping[str, Any], stage: str) -> list[Any]:
    try:
        return list(client.query(sql, parameters=dict(params) or None).result_rows)
    except DriverError as exc:
        raise translate(exc, stage=stage) from exc


def discover(client: Any, database: str) -> list[TableInfo]:
    """Every MergeTree-family table of ``database`` with its columns (views excluded)."""
    stage = "identity.tables"
    tables = _rows(
        client,
        "SELECT name, engine, engine_full, partition_key, sorting_key FROM system.tables "
        "WHERE database = {db:String} AND engine LIKE '%MergeTree' ORDER BY name",
        {"db": database},
        stage,
    )
    columns: dict[str, list[tuple[str, str]]] = {}
    for table, name, kind in _rows(
        client,
        "SELECT table, name, default_kind FROM system.columns "
        "WHERE database = {db:String} ORDER BY table, position",
        {"db": database},
        stage,
    ):
        columns.setdefault(table, []).append((name, kind))
    return [
        TableInfo(
            database=database,
            name=name,
            engine=engine,
            engine_full=engine_full,
            partition_key=partition_key,
            sorting_key=sorting_key,
            columns=tuple(c for c, kind in columns.get(name, []) if kind not in _NOT_INSERTED),
            all_columns=frozenset(c for c, _ in columns.get(name, [])),
        )
        for name, engine, engine_full, partition_key, sorting_key in tables
    ]


def run_command(client: Any, sql: str, params: Mapping[str, Any], stage: str) -> int:
    """Run a statement; the rows it wrote (0 when the server does not say)."""
    try:
        summary = client.command(sql, parameters=dict(params) or None)
    except DriverError as exc:
        raise translate(exc, stage=stage) from exc
    written = getattr(summary, "written_rows", 0)
    return int(written) if isinstance(written, int | str) and str(written).isdigit() else 0


def query_rows(client: Any, sql: str, params: Mapping[str, Any], stage: str) -> list[Any]:
    """Run a query; its rows, with driver errors as :class:`~pipeline.errors.ClickHouseError`."""
    return _rows(client, sql, params, stage)
