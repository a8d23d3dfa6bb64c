"""Stage 3, identity: stitch the identifiers of events into customers. Pure: the graph is the
stage's owned state, passed in and mutated; no Kafka, no clock.

For each link (one per event) :func:`resolve` unions the clusters of all the link's nodes.
Placeholders and forgotten nodes are dropped first. Then, while the union breaks a rule,
a node is dropped and the union retried with the rest:

1. one value per unique type, and the caps per type: the lowest-priority node of the
   event (the last) is dropped;
2. then, for a union the first rules allow: hubs already blocked and expired cookies that
   would join anything new are dropped; else a node that would join more than K customers
   is blocked as a hub, and dropped.

This order makes a replayed link a no-op: the same nodes are dropped for the same reasons
(rules 1 only get stricter as clusters grow), and what was linked is already together.
Each dropped node gives a :class:`RefusedLink`; one that is new becomes a cluster of its
own.

The survivor of a merge is the older cluster (smaller first_seen; ties: the smaller
customer id), so a known customer keeps its id when an anonymous visitor logs in. At the
end of the batch each node whose customer changed gets one :class:`NodeAssignment` with its
final customer id, and each absorbed customer id one :class:`CustomerMerge` to its final
survivor, each with the next version of the graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pipeline.errors import truncate
from pipeline.identity_config import GuardrailConfig
from pipeline.identity_rules import (
    Pending,
    hub_culprit,
    hub_customers,
    shared_lines,
    union_violation,
)
from pipeline.identity_state import Losers
from pipeline.identity_store import IdentityGraph
from schemas.identity import (
    CustomerMerge,
    ForgetResult,
    IdentityLink,
    LinkBatch,
    NodeAssignment,
    RefusedLink,
    ResolverOutput,
    kind_of,
)

__all__ = ["GuardrailConfig", "IdentityGraph", "forget", "resolve"]


class _Collector:
    """What one resolve call emits, gathered while its links are processed."""

    def __init__(self, graph: IdentityGraph) -> None:
        self.graph = graph
        self.before: dict[str, str] = {}
        self.merged: dict[str, tuple[str, datetime]] = {}
        self.refusals: list[RefusedLink] = []
        self.shared: list[str] = []

    def absorbed(self, losers: Losers, survivor: str, at: datetime) -> None:
        merged = self.merged
        for customer, aliases in losers:
            for lost in (customer, *aliases):
                merged[lost] = (survivor, merged[lost][1] if lost in merged else at)

    def refuse(self, link: IdentityLink, pending: Pending, customer: str) -> None:
        for node, reason, detail, _new in pending:
            self.refusals.append(
                RefusedLink(
                    event_id=link.event_id,
                    node=node,
                    reason=reason,
                    customer_id=customer,
                    occurred_at=link.occurred_at,
                    detail=truncate(detail),
                )
            )

    def share(self, link: IdentityLink, found: list[tuple[str, str]]) -> None:
        """Phones the link revealed as shared lines: refused from now on, announced."""
        others = [n for n in link.nodes if not self.graph.is_shared(n)]
        customer = (self.graph.customer_of(others[0]) or "") if others else ""
        refused = {r.node for r in self.refusals if r.event_id == link.event_id}
        for node, detail in found:
            self.shared.append(node)
            if node not in refused:  # not already refused as it would link something
                self.refuse(link, [(node, "shared_line", detail, False)], customer)

    def output(self) -> ResolverOutput:
        graph = self.graph
        assignments = []
        changed = [*self.before.items(), *((n, None) for n in self.shared if n not in self.before)]
        for node, old in changed:
            customer = graph.customer_of(node)
            if customer is not None and customer != old:  # old "" is a fallback id: differs
                version, shared = graph.next_version(), graph.is_shared(node)
                assignments.append(
                    NodeAssignment(node=node, customer_id=customer, version=version, shared=shared)
                )
        merges = [
            CustomerMerge(
                absorbed=lost,
                survivor=self._final(survivor),
                occurred_at=at,
                version=graph.next_version(),
            )
            for lost, (survivor, at) in self.merged.items()
        ]
        return ResolverOutput(
            assignments=tuple(assignments), merges=tuple(merges), refusals=tuple(self.refusals)
        )

    def _final(self, customer: str) -> str:
        while customer in self.merged:
            customer = self.merged[customer][0]
        return customer


def resolve(
    graph: IdentityGraph, batch: LinkBatch, cfg: GuardrailConfig | None = None
) -> ResolverOutput:
    """Stitch a batch of links into ``graph`` (mutated: it is the stage's owned state) and
    return what changed: assignments, merges and refusals."""
    cfg = cfg if cfg is not None else GuardrailConfig()
    out = _Collector(graph)
    screen = bool(cfg.placeholders) or graph.has_forgotten
    cookies = cfg.cookie_set if cfg.cookie_ttl is not None else None
    lines = cfg.shared_lines
    find, touch, add_singleton = graph.find, graph.touch, graph.add_singleton
    for link in batch.links:
        nodes = link.nodes
        found = shared_lines(graph, link, cfg) if link.call and lines else None
        if len(nodes) == 1 and not screen:  # the common case, inlined
            root = find(nodes[0])
            if root is None:
                add_singleton(nodes[0], link.occurred_at)
            elif not (lines and graph.is_shared(nodes[0])):  # a line's lone calls: no one's
                touch(root, link.occurred_at)
        else:
            _resolve_link(graph, link, cfg, out, screen)
        if found:
            out.share(link, found)
        if cookies is not None:
            for node in nodes:
                if kind_of(node) in cookies:
                    graph.touch_cookie(node, link.occurred_at)
    return out.output()


def forget(graph: IdentityGraph, node: str) -> ForgetResult:
    """GDPR erasure: remove the whole customer holding ``node``; replays never bring its nodes
    back (links drop them, reason ``forgotten``). An unknown node is remembered all the same."""
    cluster, nodes = graph.remove_cluster(node)
    if cluster is None:
        return ForgetResult(customer_id="", nodes=())
    return ForgetResult(
        customer_id=cluster.customer_id, nodes=tuple(nodes), absorbed=cluster.absorbed
    )


def _resolve_link(
    graph: IdentityGraph, link: IdentityLink, cfg: GuardrailConfig, out: _Collector, screen: bool
) -> None:
    at = link.occurred_at
    pending: Pending = []
    kept = _admissible(graph, link.nodes, cfg, pending) if screen else list(link.nodes)
    root: str | None = None
    if len(kept) == 1:
        root = graph.find(kept[0])
        if root is None:
            graph.add_singleton(kept[0], at)
            root = kept[0]
        else:
            graph.touch(root, at)
    elif kept:
        root = _link_many(graph, kept, at, cfg, out, pending)
    if pending:
        customer = graph.cluster(root).customer_id if root is not None else ""
        out.refuse(link, pending, customer)


def _admissible(
    graph: IdentityGraph, nodes: Sequence[str], cfg: GuardrailConfig, pending: Pending
) -> list[str]:
    kept = []
    for node in nodes:
        if cfg.is_placeholder(node):
            pending.append((node, "placeholder", "placeholder value", False))
        elif graph.is_forgotten(node):
            pending.append((node, "forgotten", "erased by a forget request", False))
        else:
            kept.append(node)
    return kept


def _link_many(
    graph: IdentityGraph,
    kept: list[str],
    at: datetime,
    cfg: GuardrailConfig,
    out: _Collector,
    pending: Pending,
) -> str:
    """Union the clusters of several nodes under the rules; returns the event's root."""
    find = graph.find
    roots = [find(node) for node in kept]
    first = roots[0]
    if first is not None and roots.count(first) == len(roots):
        graph.touch(first, at)
        return first
    parts, new, hub = _settle(graph, kept, roots, at, cfg, pending)
    if len(parts) == 1 and not new:
        root = parts[0]
        graph.touch(root, at)
    else:
        root, losers = graph.union(parts, new, at, out.before)
        if losers:
            out.absorbed(losers, graph.cluster(root).customer_id, at)
    if hub:
        for node in kept:
            if kind_of(node) not in cfg.unique_set:
                graph.note_seen(node, hub)
    for node, _reason, _detail, was_new in pending:
        if was_new and node not in graph:
            graph.add_singleton(node, at)
    return root


def _split(kept: list[str], roots: list[str | None]) -> tuple[list[str], list[str]]:
    """The distinct existing roots and the new nodes."""
    parts: list[str] = []
    new: list[str] = []
    for node, root in zip(kept, roots, strict=True):
        if root is None:
            new.append(node)
        elif root not in parts:
            parts.append(root)
    return parts, new


def _settle(
    graph: IdentityGraph,
    kept: list[str],
    roots: list[str | None],
    at: datetime,
    cfg: GuardrailConfig,
    pending: Pending,
) -> tuple[list[str], list[str], set[str]]:
    """Drop nodes until the union passes the rules; returns its roots, its new nodes and the
    customers it joins for the hub rule."""
    screen = (
        cfg.cookie_ttl is not None
        or (cfg.hub_limit is not None and graph.has_blocked)
        or (cfg.shared_lines and graph.has_shared)
    )
    while True:
        parts, new = _split(kept, roots)
        if len(parts) + (1 if new else 0) < 2:
            return parts, new, set()
        clusters = [graph.cluster(r) for r in parts]
        found = union_violation(clusters, new, cfg)
        weakest = len(kept) - 1
        if found is None:
            if screen and _drop_unlinkable(graph, kept, roots, at, cfg, pending):
                continue
            hub = hub_customers(clusters, cfg)
            culprit = hub_culprit(graph, kept, hub, cfg)
            if culprit is None:
                return parts, new, hub
            weakest, found = culprit
            graph.block(kept[weakest])
        pending.append((kept[weakest], found[0], found[1], roots[weakest] is None))
        del kept[weakest], roots[weakest]


def _drop_unlinkable(
    graph: IdentityGraph,
    kept: list[str],
    roots: list[str | None],
    at: datetime,
    cfg: GuardrailConfig,
    pending: Pending,
) -> bool:
    """Drop hubs and expired cookies that would link their cluster to anything else."""
    dropped = False
    for i in range(len(kept) - 1, -1, -1):
        root, node = roots[i], kept[i]
        if root is None or roots.count(root) == len(roots):
            continue
        if cfg.shared_lines and graph.is_shared(node):
            pending.append((node, "shared_line", "a shared line: links nothing new", False))
        elif cfg.hub_limit is not None and graph.is_blocked(node):
            pending.append((node, "hub", "blocked as a hub: links nothing new", False))
        elif cfg.cookie_ttl is not None and kind_of(node) in cfg.cookie_set:
            first = graph.cookie_first_seen(node)
            if first is None or at - first <= cfg.cookie_ttl:
                continue
            detail = f"cookie first seen {first.isoformat()}, older than {cfg.cookie_ttl}"
            pending.append((node, "cookie_expired", detail, False))
        else:
            continue
        del kept[i], roots[i]
        dropped = True
    return dropped
