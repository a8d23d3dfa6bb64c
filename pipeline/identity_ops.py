"""Identity operations for other tools: GDPR forget and the override squash.

:func:`forget_identifier` erases the person holding one identifier:

1. the identifier is normalised and hashed exactly as the validate stage does under the
   current settings (``pii_mode``, hash key, phone region), giving the graph node;
2. a forget request goes to the resolver (:mod:`pipeline.identity_ops_kafka`), which
   removes the whole cluster from the graph and publishes erasures: from then on the
   workers drop those identifiers on ingest, so a replay does not bring the person back;
3. the person's rows are deleted from every table holding a customer id at once
   (:mod:`pipeline.identity_ops_erase`), without waiting for the resolver (and, at the
   end, the dead letters whose raw payload names them: :mod:`pipeline.identity_ops_dead_letters`);
4. once the resolver's erasure is seen, the deletes run again, after the time an event
   needs to go through ingest and the sink, and again while a pass still finds rows:
   events in flight when the erasure was published (stamped by a worker that had not
   applied it yet) land after the first delete.

:func:`squash` (:mod:`pipeline.identity_ops_squash`) rewrites rows stamped with an old
customer id to their current customer and clears the overrides it made unnecessary.

Do not run the two at once: a squash that read a person's rows before a forget deleted
them writes them back, and only the forget passes that follow the squash delete them again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from pipeline.chclient import ClickHouseConfig, connect
from pipeline.errors import TouchpointError, truncate
from pipeline.identity_ops_dead_letters import TABLE as DEAD_LETTERS
from pipeline.identity_ops_dead_letters import erase_dead_letters
from pipeline.identity_ops_erase import EraseCounts, erase_pass
from pipeline.identity_ops_kafka import (
    ErasureOutcome,
    ErasureTail,
    ErasureWatch,
    request_forget,
    wait_for_erasure,
)
from pipeline.identity_ops_squash import SquashReport, squash
from pipeline.identity_ops_tables import discover
from pipeline.kafka_config import KafkaConfig
from pipeline.settings import Settings
from pipeline.validate import protect_identifiers
from pipeline.worker_context import validation_config
from schemas.events import IDENTIFIER_TYPES, Identifiers, ParseContext
from schemas.identity import node_of

__all__ = ["ForgetReport", "SquashReport", "forget_identifier", "identifier_node", "squash"]

MAX_PASSES = 6
"""Delete passes after the erasure, at most (a pass that finds nothing ends them)."""


def identifier_node(settings: Settings, identifier: str) -> str:
    """``type:value`` as the pipeline stores it: normalised, and hashed if it is PII."""
    kind, sep, value = identifier.partition(":")
    kind = kind.strip()
    if not sep or kind not in IDENTIFIER_TYPES:
        raise TouchpointError(
            f"identifier {truncate(identifier)!r}: expected type:value with type one of "
            + ", ".join(IDENTIFIER_TYPES),
            stage="forget",
        )
    ctx = ParseContext(
        now=datetime.now(UTC),
        default_phone_region=settings.default_phone_region,
        placeholders=settings.placeholders,
    )
    try:
        parsed = Identifiers.model_validate({kind: value}, context=ctx).as_dict()
    except ValidationError as exc:
        why = exc.errors(include_url=False)[0]["msg"]
        raise TouchpointError(
            f"identifier {truncate(identifier)!r} is not a valid {kind}: {why}", stage="forget"
        ) from None
    protected = protect_identifiers(parsed, validation_config(settings))
    return node_of(kind, protected[kind])


@dataclass(frozen=True)
class ForgetReport:
    node: str
    """The erased identifier as stored (type:value, the value hashed if it is PII)."""
    customer_ids: tuple[str, ...]
    nodes_erased: tuple[str, ...]
    """Every identifier of the person, erased from the graph (as the resolver reported)."""
    rows_deleted: dict[str, int]
    rows_scrubbed: dict[str, int]
    """Other people's rows that named an erased identifier: kept, without it."""
    erasure_confirmed: bool
    node_known: bool
    passes: int
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.erasure_confirmed

    def lines(self) -> list[str]:
        deleted = ", ".join(f"{t}={n}" for t, n in sorted(self.rows_deleted.items()))
        out = [
            f"forgot {self.node}",
            f"  customer ids ({len(self.customer_ids)}): {', '.join(self.customer_ids) or '-'}",
            f"  identifiers erased ({len(self.nodes_erased)}): "
            + (", ".join(self.nodes_erased) or "-"),
            f"  rows deleted: {deleted or '-'} (total {sum(self.rows_deleted.values())})",
        ]
        if any(self.rows_scrubbed.values()):
            scrubbed = ", ".join(f"{t}={n}" for t, n in sorted(self.rows_scrubbed.items()))
            out.append(f"  other rows stripped of the identifier: {scrubbed}")
        state = "confirmed" if self.erasure_confirmed else "NOT confirmed"
        out.append(f"  resolver erasure: {state}; delete passes: {self.passes}")
        out += [f"  warning: {w}" for w in self.warnings]
        return out


def _warnings(outcome: ErasureOutcome, timeout: float, leftover: int) -> tuple[str, ...]:
    found = []
    if not outcome.confirmed:
        found.append(
            f"the resolver did not answer within {timeout:.0f}s (is a worker running?); the "
            "request stays queued on the links topic: run forget again once it is applied"
        )
    elif not outcome.known:
        found.append(
            "the identity graph did not know this identifier: no erasure was published, so "
            "workers will not drop it on ingest"
        )
    if leftover:
        found.append(f"the last delete pass still found {leftover} row(s): run forget again")
    return tuple(found)


def settle_seconds(settings: Settings) -> float:
    """How long after an erasure an event stamped before it may still land in ClickHouse:
    a worker applies the assignment (polls every 0.5 s), one ingest batch, one sink batch."""
    return settings.batch_max_seconds + settings.sink_max_seconds + 1.5


def _erase_dead_letters(
    settings: Settings, client: Any, nodes: tuple[str, ...], identifier: str
) -> int:
    def node_of(kind: str, value: str) -> str | None:
        try:
            return identifier_node(settings, f"{kind}:{value}")
        except TouchpointError:
            return None  # not a valid identifier: only the raw value can match it

    raw = identifier.partition(":")[2].strip()
    return erase_dead_letters(client, settings.clickhouse_database, nodes, raw, node_of)


def forget_identifier(
    settings: Settings,
    identifier: str,
    *,
    timeout: float,
    progress: Callable[[str], None] | None = None,
) -> ForgetReport:
    """Erase the person holding ``identifier`` (``type:value``); see the module doc."""
    say = progress or (lambda _message: None)
    node = identifier_node(settings, identifier)
    deadline = time.monotonic() + timeout
    client = connect(ClickHouseConfig.from_settings(settings))
    database = settings.clickhouse_database
    tables = discover(client, database)
    kafka = KafkaConfig.from_settings(settings)
    counts = EraseCounts()
    tail = ErasureTail(kafka, settings.topic("assignments"), settings.topic("identity-events"))
    try:
        offset = request_forget(kafka, settings.topic("links"), node)
        say(f"forget request for {node} sent to {settings.topic('links')}[0] at offset {offset}")
        customers, deleted, scrubbed = erase_pass(client, tables, database, (node,))
        say(f"pass 1: {counts.add(deleted, scrubbed)} row(s) deleted or stripped")
        outcome = wait_for_erasure(tail, ErasureWatch(node), deadline, say)
    finally:
        tail.close()
    say("resolver erasure seen" if outcome.known else "resolver answer: nothing in the graph")
    nodes = tuple(sorted({node, *outcome.nodes}))
    customers |= set(outcome.customers)
    passes, touched = 1, 0
    for _ in range(MAX_PASSES):
        time.sleep(settle_seconds(settings))
        found, deleted, scrubbed = erase_pass(client, tables, database, nodes, customers)
        customers |= found
        passes, touched = passes + 1, counts.add(deleted, scrubbed)
        say(f"pass {passes}: {touched} row(s) deleted or stripped")
        if not touched or time.monotonic() > deadline:
            break
    counts.add({DEAD_LETTERS: _erase_dead_letters(settings, client, nodes, identifier)}, {})
    say(f"dead letters naming the person: {counts.deleted[DEAD_LETTERS]} deleted")
    return ForgetReport(
        node=node, customer_ids=tuple(sorted(customers)), nodes_erased=outcome.nodes,
        rows_deleted=counts.deleted, rows_scrubbed=counts.scrubbed,
        erasure_confirmed=outcome.confirmed, node_known=outcome.known, passes=passes,
        warnings=_warnings(outcome, timeout, touched),
    )  # fmt: skip
