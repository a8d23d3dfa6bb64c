"""The ClickHouse side of a GDPR forget: find a person's customer ids, delete their rows.

Customers are found from the identifier itself: the stamped customer id of every
touchpoint that carries the identifier's value, except events where the resolver refused
that identifier (another person's event that merely mentions it: a forwarded mail, a
shared phone), then every id the overrides map to or from them, then the fallback id of
each erased identifier (events stamped before the resolver linked it).

Rows are deleted with ``ALTER TABLE ... DELETE ... SETTINGS mutations_sync = 2``: the
parts are rewritten without the rows before the statement returns (a lightweight
``DELETE FROM`` only masks rows until a merge; both work on the embedded chDB server, and
a GDPR erasure wants the data gone from disk). A mutation is skipped when nothing matches:
it rewrites whole parts. Rows of other customers that still mention an erased identifier
keep the event but lose the identifier (``ALTER TABLE ... UPDATE``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.identity_ops_tables import (
    CUSTOMER,
    OVERRIDES,
    TableInfo,
    query_rows,
    quote,
    run_command,
)
from schemas.identity import fallback_customer_id, kind_of

STAGE = "forget.clickhouse"
MAX_EXPANSION_ROUNDS = 8
IDENTIFIERS = "identifiers"
MUTATION = "SETTINGS mutations_sync = 2"


@dataclass
class EraseCounts:
    """Rows deleted and rows scrubbed of an identifier, per table, summed over passes."""

    deleted: dict[str, int] = field(default_factory=dict)
    scrubbed: dict[str, int] = field(default_factory=dict)

    def add(self, deleted: Mapping[str, int], scrubbed: Mapping[str, int]) -> int:
        """Add one pass; returns the rows that pass touched."""
        for mine, theirs in ((self.deleted, deleted), (self.scrubbed, scrubbed)):
            for table, count in theirs.items():
                mine[table] = mine.get(table, 0) + count
        return sum(deleted.values()) + sum(scrubbed.values())


def _value(node: str) -> str:
    return node.partition(":")[2]


def customers_carrying(client: Any, database: str, node: str) -> set[str]:
    """Stamped customer ids of touchpoints carrying ``node``, minus refused events."""
    sql = (
        f"SELECT DISTINCT customer_id FROM {quote(database)}.touchpoints "
        "WHERE identifiers[{kind:String}] = {value:String} AND event_id NOT IN "
        f"(SELECT event_id FROM {quote(database)}.identity_refusals WHERE node = {{node:String}})"
    )
    params = {"kind": kind_of(node), "value": _value(node), "node": node}
    return {row[0] for row in query_rows(client, sql, params, STAGE) if row[0]}


def expand_via_overrides(client: Any, database: str, ids: Iterable[str]) -> set[str]:
    """``ids`` plus every customer id an override maps to or from one of them (to a fixpoint)."""
    found = {i for i in ids if i}
    sql = (
        f"SELECT customer_id, current_customer_id FROM {quote(database)}.{quote(OVERRIDES)} "
        "WHERE current_customer_id != '' AND "
        "(customer_id IN {ids:Array(String)} OR current_customer_id IN {ids:Array(String)})"
    )
    for _ in range(MAX_EXPANSION_ROUNDS):
        rows = query_rows(client, sql, {"ids": sorted(found)}, STAGE)
        more = found | {value for row in rows for value in row if value}
        if more == found:
            break
        found = more
    return found


def find_customers(
    client: Any, database: str, nodes: Iterable[str], known: Iterable[str] = ()
) -> set[str]:
    """Every customer id of the person holding ``nodes`` (see the module doc)."""
    ids = set(known)
    for node in nodes:
        ids |= customers_carrying(client, database, node)
        ids.add(fallback_customer_id(node))
    return expand_via_overrides(client, database, ids)


def _condition(table: TableInfo) -> str | None:
    parts = []
    if table.has(CUSTOMER):
        parts.append("customer_id IN {ids:Array(String)}")
    if table.has("current_customer_id"):
        parts.append("current_customer_id IN {ids:Array(String)}")
    if table.has("node"):
        parts.append("node IN {nodes:Array(String)}")
    return " OR ".join(parts) or None


def delete_rows(
    client: Any, tables: Iterable[TableInfo], customers: Iterable[str], nodes: Iterable[str]
) -> dict[str, int]:
    """Delete the rows of ``customers`` (and rows naming ``nodes``) from every table."""
    params = {"ids": sorted(customers), "nodes": sorted(nodes)}
    deleted: dict[str, int] = {}
    for table in tables:
        where = _condition(table)
        if where is None:
            continue
        count_sql = f"SELECT count() FROM {table.qualified} WHERE {where}"
        count = int(query_rows(client, count_sql, params, STAGE)[0][0])
        if count:
            delete_sql = f"ALTER TABLE {table.qualified} DELETE WHERE {where} {MUTATION}"
            run_command(client, delete_sql, params, STAGE)
        deleted[table.name] = count
    return deleted


def _scrub_assignments(table: TableInfo, kind: str) -> str:
    sets = [
        f"{IDENTIFIERS} = mapFilter((k, v) -> NOT (k = {{kind:String}} AND v = {{value:String}}), "
        f"{IDENTIFIERS})"
    ]
    if table.has(kind) and kind not in table.sorting_key:
        sets.append(f"{quote(kind)} = if({quote(kind)} = {{value:String}}, '', {quote(kind)})")
    return ", ".join(sets)


def scrub_identifier(
    client: Any, tables: Iterable[TableInfo], nodes: Iterable[str]
) -> dict[str, int]:
    """Remove erased identifiers from rows that remain (other people's events naming them)."""
    scrubbed: dict[str, int] = {}
    for table in tables:
        if not table.has(IDENTIFIERS):
            continue
        for node in nodes:
            params = {"kind": kind_of(node), "value": _value(node)}
            where = "identifiers[{kind:String}] = {value:String}"
            count_sql = f"SELECT count() FROM {table.qualified} WHERE {where}"
            count = int(query_rows(client, count_sql, params, STAGE)[0][0])
            if count:
                sets = _scrub_assignments(table, kind_of(node))
                sql = f"ALTER TABLE {table.qualified} UPDATE {sets} WHERE {where} {MUTATION}"
                run_command(client, sql, params, STAGE)
                scrubbed[table.name] = scrubbed.get(table.name, 0) + count
    return scrubbed


def erase_pass(
    client: Any,
    tables: list[TableInfo],
    database: str,
    nodes: tuple[str, ...],
    known: Iterable[str] = (),
) -> tuple[set[str], dict[str, int], dict[str, int]]:
    """One pass: find the customers, delete their rows, scrub what still names the nodes."""
    customers = find_customers(client, database, nodes, known)
    deleted = delete_rows(client, tables, customers, nodes)
    scrubbed = scrub_identifier(client, tables, nodes)
    return customers, deleted, scrubbed
