"""Stage 3, stamp: give each touchpoint its customer, and the resolver its identity link.

Pure over the :class:`AssignmentMap` (the worker's copy of the resolver's published
assignments): the customer of an event is the customer of its strongest identifier, or
that identifier's deterministic fallback id until the resolver has linked it. A shared line
(a phone on two calls at once) is passed over: an event with no other identifier gets a
customer of its own. Identifiers erased by a GDPR forget are removed; an event left with
none is not kept.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.assignment_map import AssignmentMap
from schemas.identity import IdentityLink, event_customer_id, link_from_identifiers
from schemas.records import Touchpoint


@dataclass(frozen=True)
class StampResult:
    by_partition: dict[int, list[Touchpoint]]
    """Stamped touchpoints by the partition of their customer."""
    links: tuple[IdentityLink, ...]
    erased: int
    """Events dropped because every identifier they carry was erased (GDPR)."""


def customer_partition(customer_id: str, partitions: int) -> int:
    """The partition that owns a customer's state: stable across processes and restarts."""
    return zlib.crc32(customer_id.encode()) % partitions


def stamp(touchpoints: Iterable[Touchpoint], amap: AssignmentMap, partitions: int) -> StampResult:
    by_partition: dict[int, list[Touchpoint]] = defaultdict(list)
    links: list[IdentityLink] = []
    erased = 0
    for tp in touchpoints:
        call = tp.properties.get("call_id")
        call = call if isinstance(call, str) else ""
        link = link_from_identifiers(tp.event_id, tp.occurred_at, tp.identifiers, call)
        nodes = tuple(n for n in link.nodes if not amap.is_forgotten(n))
        if not nodes:
            erased += 1
            continue
        if len(nodes) != len(link.nodes):
            link = IdentityLink(
                event_id=tp.event_id, occurred_at=tp.occurred_at, nodes=nodes, call=call
            )
            kept = {n.partition(":")[0] for n in nodes}
            tp = tp.model_copy(
                update={"identifiers": {k: v for k, v in tp.identifiers.items() if k in kept}}
            )
        customer = _customer(nodes, amap, tp.event_id)
        by_partition[customer_partition(customer, partitions)].append(
            tp.model_copy(update={"customer_id": customer})
        )
        links.append(link)
    return StampResult(dict(by_partition), tuple(links), erased)


def _customer(nodes: tuple[str, ...], amap: AssignmentMap, event_id: str) -> str:
    """The customer of the strongest identifier that is not a shared line."""
    shared = amap.shared
    if shared:
        for node in nodes:
            if node not in shared:
                return amap.customer_of(node)
        return event_customer_id(event_id)
    return amap.customer_of(nodes[0])
