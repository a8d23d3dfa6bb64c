"""The dead letters of a GDPR forget: rejected messages keep the raw payload (it is how a
producer's bug is diagnosed), and so the raw identifiers of the person being forgotten.

A dead letter is erased when its payload names the person: an erased node itself (with
hashing on, dead letters are stored pseudonymised: :mod:`pipeline.redact`), an identifier
that, normalised and hashed as the validate stage does (``node_of``), is one of the erased
nodes, or the raw value given to ``forget`` anywhere in the payload or the error values (a
payload too broken to parse, with PII kept in clear). Dead letters carry no customer id, so the rows are
found by reading them; the ``dead_letters`` table is small by design (a share of a percent
of the traffic), and only its key columns and payloads are read.

The Kafka topics hold raw payloads too and cannot be rewritten: the raw and dead-letter
topics have a bounded retention (7 and 30 days, :mod:`pipeline.broker`), and the resolver's
erasure makes the workers drop the person's identifiers when a topic is replayed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from pipeline.identity_ops_tables import query_rows, run_command
from schemas.events import IDENTIFIER_TYPES

STAGE = "forget.dead_letters"
TABLE = "dead_letters"
Key = tuple[str, int, int]
"""(src_topic, src_partition, src_offset): a dead letter."""
NodeOf = Callable[[str, str], str | None]
"""(type, raw value) to the stored node, or None when the value is not valid."""


def _pairs(payload: Any) -> Iterator[tuple[str, str]]:
    """(type, value) of every identifier-named string field in a parsed payload."""
    if isinstance(payload, dict):
        for key, value in payload.items():
            if key in IDENTIFIER_TYPES and isinstance(value, str):
                yield key, value
            else:
                yield from _pairs(value)
    elif isinstance(payload, list):
        for item in payload:
            yield from _pairs(item)


def names_person(
    original: str, values: list[str], nodes: frozenset[str], raw: str, node_of: NodeOf
) -> bool:
    """Whether a dead letter's payload or error values name the person."""
    needle = raw.casefold()
    if needle and (needle in original.casefold() or any(needle in v.casefold() for v in values)):
        return True
    if any(node in original or any(node in v for v in values) for node in nodes):
        return True  # pseudonymised (pipeline.redact): the stored node itself
    try:
        payload = json.loads(original)
    except ValueError:
        return False
    return any(node_of(kind, value) in nodes for kind, value in _pairs(payload))


def erase_dead_letters(
    client: Any, database: str, nodes: tuple[str, ...], raw: str, node_of: NodeOf
) -> int:
    """Delete the dead letters naming the person; returns how many."""
    if not _exists(client, database):
        return 0
    rows = query_rows(
        client,
        f"SELECT src_topic, src_partition, src_offset, original, error_values "
        f"FROM `{database}`.{TABLE}",
        {}, STAGE,
    )  # fmt: skip
    wanted = frozenset(nodes)
    keys: list[Key] = [
        (topic, int(part), int(offset))
        for topic, part, offset, original, values in rows
        if names_person(original, list(values), wanted, raw, node_of)
    ]
    if not keys:
        return 0
    run_command(
        client,
        f"ALTER TABLE `{database}`.{TABLE} DELETE WHERE "
        f"(src_topic, src_partition, src_offset) IN %(keys)s SETTINGS mutations_sync = 2",
        {"keys": keys}, STAGE,
    )  # fmt: skip
    return len(keys)


def _exists(client: Any, database: str) -> bool:
    found = query_rows(
        client,
        "SELECT count() FROM system.tables WHERE database = %(db)s AND name = %(t)s",
        {"db": database, "t": TABLE}, STAGE,
    )  # fmt: skip
    return bool(found and found[0][0])
