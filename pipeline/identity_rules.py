"""The guardrail checks of one union, as pure functions over the clusters it would join.

A union is about to merge existing clusters (``clusters``) with brand new nodes (``new``).
:func:`union_violation` checks the unique types and the caps; :func:`hub_customers` and
:func:`hub_culprit` apply the hub limit to a union those allow. Nodes are unique across the graph,
so n nodes of one type in a union are n distinct values of that type. :func:`shared_lines`
records the calls of a link's phones and finds the lines on two calls at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.identity_config import CALLS_KEPT, GuardrailConfig
from pipeline.identity_state import Cluster, GraphCore
from schemas.identity import IdentityLink, RefusalReason, kind_of

Pending = list[tuple[str, RefusalReason, str, bool]]
"""Refusals of the current link: (node, reason, detail, the node was new to the graph)."""
Violation = tuple[RefusalReason, str]


def type_counts(clusters: Sequence[Cluster], new: Sequence[str]) -> dict[str, int]:
    """How many nodes of each type the union would hold."""
    counts: dict[str, int] = {}
    for cluster in clusters:
        for kind in cluster.members.values():
            counts[kind] = counts.get(kind, 0) + 1
    for node in new:
        kind = kind_of(node)
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def union_violation(
    clusters: Sequence[Cluster], new: Sequence[str], cfg: GuardrailConfig
) -> Violation | None:
    """The first rule the union would break (unique types, then caps), if any."""
    counts = type_counts(clusters, new)
    for kind in cfg.unique_types:
        if counts.get(kind, 0) > 1:
            values = [n for c in clusters for n in c.of_kind(kind)]
            values += [n for n in new if kind_of(n) == kind]
            shown = ", ".join(sorted(values)[:4])
            return "unique_conflict", f"one customer would hold {len(values)} {kind}: {shown}"
    for kind, cap in cfg.cap_items:
        if (total := counts.get(kind, 0)) > cap:
            return "cap_exceeded", f"one customer would hold {total} {kind} (cap {cap})"
    return None


def hub_customers(clusters: Sequence[Cluster], cfg: GuardrailConfig) -> set[str]:
    """The customers the union joins that count for the hub rule (those holding more than
    cookies); empty when the rule is off or fewer than two count."""
    if cfg.hub_limit is None or len(clusters) < 2:
        return set()
    found = {c.customer_id for c in clusters if c.identified(cfg.cookie_set)}
    return found if len(found) > 1 else set()


def hub_culprit(
    graph: GraphCore, kept: Sequence[str], customers: set[str], cfg: GuardrailConfig
) -> tuple[int, Violation] | None:
    """The weakest node that would join more than ``hub_limit`` customers, if any."""
    limit = cfg.hub_limit
    if limit is None or not customers:
        return None
    for i in range(len(kept) - 1, -1, -1):
        node = kept[i]
        if kind_of(node) in cfg.unique_set:
            continue
        joined = len(graph.seen(node) | customers)
        if joined > limit:
            return i, ("hub", f"would join {joined} customers (hub limit {limit})")
    return None


def shared_lines(
    graph: GraphCore, link: IdentityLink, cfg: GuardrailConfig
) -> list[tuple[str, str]]:
    """Record the link's call on each of its phones; returns the phones it reveals as shared
    lines (marked in the graph), each with the detail of the overlap. Placeholders and
    forgotten phones are left alone (they never enter the graph)."""
    found = []
    for node in link.nodes:
        if kind_of(node) != "phone" or cfg.is_placeholder(node) or graph.is_forgotten(node):
            continue
        other = graph.note_call(node, link.call, link.occurred_at, CALLS_KEPT)
        if other is not None and not graph.is_shared(node):
            graph.share(node)
            spans = graph.calls_of(node)
            shown = [
                f"{c} {spans[c][0]:%H:%M:%S}-{spans[c][1]:%H:%M:%S}"
                for c in (other, link.call)
                if c in spans
            ]
            found.append((node, "on two calls at once: " + ", ".join(shown)))
    return found
