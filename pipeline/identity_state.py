"""The identity graph's state: a union-find over nodes (path compression, union by size) with
per-cluster info at each root, and the primitives the resolver builds on.

The graph is the identity stage's *owned state*: one instance per worker (per partition of
the link topic), changed only by :func:`pipeline.identity_graph.resolve` and
:func:`pipeline.identity_graph.forget`, persisted by :mod:`pipeline.identity_store`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pipeline.identity_cluster import Cluster, node_kind, survivor

Losers = list[tuple[str, tuple[str, ...]]]
"""Absorbed customers of a union: (customer id, the ids it had absorbed before)."""
Span = tuple[datetime, datetime]
"""A call's first and last event time seen."""
__all__ = ["Cluster", "Dirty", "GraphCore", "Losers", "forget_key", "node_kind"]


def forget_key(node: str) -> str:
    """What the graph keeps of a forgotten node: a hash, never the node itself."""
    return hashlib.blake2b(node.encode(), digest_size=16, person=b"tp-forget").hexdigest()


@dataclass
class Dirty:
    """What changed since the last changelog message."""

    parents: set[str] = field(default_factory=set)
    roots: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    cookies: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)
    blocked: set[str] = field(default_factory=set)
    forgotten: set[str] = field(default_factory=set)
    calls: set[str] = field(default_factory=set)
    shared: set[str] = field(default_factory=set)


class GraphCore:
    """Union-find state and primitives; :class:`pipeline.identity_store.IdentityGraph` adds
    persistence. Customer ids live in the cluster info, independent of which node is root."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}
        self._clusters: dict[str, Cluster] = {}
        self._seen: dict[str, set[str]] = {}
        self._blocked: set[str] = set()
        self._cookie_first: dict[str, datetime] = {}
        self._forgotten: set[str] = set()
        self._calls: dict[str, dict[str, Span]] = {}
        self._shared: set[str] = set()
        self._dirty = Dirty()
        self.seq = 0
        """Sequence number: the version of the latest assignment or merge emitted."""

    # --- reading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._parent)

    def __contains__(self, node: object) -> bool:
        return node in self._parent

    def nodes(self) -> Iterator[str]:
        return iter(self._parent)

    def find(self, node: str) -> str | None:
        """The root of ``node``'s cluster, or None for a node the graph does not hold."""
        parent = self._parent
        up = parent.get(node)
        if up is None or up == node:
            return up
        root = up
        while (nxt := parent[root]) != root:
            root = nxt
        while node != root:
            node, parent[node] = parent[node], root
        return root

    def cluster(self, root: str) -> Cluster:
        return self._clusters[root]

    def clusters(self) -> Iterator[Cluster]:
        return iter(self._clusters.values())

    def customer_of(self, node: str) -> str | None:
        root = self.find(node)
        return None if root is None else self._clusters[root].customer_id

    def is_blocked(self, node: str) -> bool:
        return node in self._blocked

    @property
    def has_blocked(self) -> bool:
        return bool(self._blocked)

    def is_shared(self, node: str) -> bool:
        return node in self._shared

    @property
    def has_shared(self) -> bool:
        return bool(self._shared)

    def seen(self, node: str) -> frozenset[str]:
        """The customers ``node`` has joined through merges (for the hub rule)."""
        return frozenset(self._seen.get(node, ()))

    def cookie_first_seen(self, node: str) -> datetime | None:
        return self._cookie_first.get(node)

    @property
    def has_forgotten(self) -> bool:
        return bool(self._forgotten)

    def is_forgotten(self, node: str) -> bool:
        return node not in self._parent and forget_key(node) in self._forgotten

    # --- changing --------------------------------------------------------------------------

    def next_version(self) -> int:
        self.seq += 1
        return self.seq

    def add_singleton(self, node: str, at: datetime) -> None:
        self._parent[node] = node
        self._clusters[node] = Cluster("", at, {node: node_kind(node)})
        self._dirty.parents.add(node)
        self._dirty.roots.add(node)

    def touch(self, root: str, at: datetime) -> None:
        """Record an event of the cluster (its first_seen is the earliest event time)."""
        cluster = self._clusters[root]
        if at < cluster.first_seen:
            cluster.first_seen = at
            self._dirty.roots.add(root)

    def touch_cookie(self, node: str, at: datetime) -> None:
        first = self._cookie_first.get(node)
        if (first is None or at < first) and node in self._parent:
            self._cookie_first[node] = at
            self._dirty.cookies.add(node)

    def block(self, node: str) -> None:
        self._blocked.add(node)
        self._dirty.blocked.add(node)

    def note_call(self, node: str, call: str, at: datetime, kept: int) -> str | None:
        """Record an event of call ``call`` on phone ``node`` at ``at``; returns another
        call of the phone that overlaps it in time, if any (the line is shared)."""
        calls = self._calls.setdefault(node, {})
        lo, hi = calls.get(call, (at, at))
        span = (min(lo, at), max(hi, at))
        if call not in calls and len(calls) >= kept:
            oldest = min(calls, key=lambda c: calls[c][1])
            if span[1] < calls[oldest][1]:
                return None  # older than every call kept: as if evicted at once
            del calls[oldest]
        if calls.get(call) != span:
            calls[call] = span
            self._dirty.calls.add(node)
        for other, (first, last) in calls.items():
            if other != call and first < span[1] and span[0] < last:
                return other
        return None

    def calls_of(self, node: str) -> dict[str, Span]:
        return dict(self._calls.get(node, {}))

    def share(self, node: str) -> None:
        self._shared.add(node)
        self._dirty.shared.add(node)

    def note_seen(self, node: str, customers: set[str]) -> None:
        seen = self._seen.setdefault(node, set())
        if not customers <= seen:
            seen |= customers
            self._dirty.seen.add(node)

    def union(
        self, roots: Sequence[str], new: Sequence[str], at: datetime, before: dict[str, str]
    ) -> tuple[str, Losers]:
        """Merge the clusters of ``roots`` (distinct) with the brand new nodes ``new``.

        The survivor is the part with the smallest (first_seen, customer_id); the new nodes
        form one part dated ``at`` whose customer id is the fallback id of ``new[0]``. The
        previous customer of each node whose customer may change goes into ``before`` (""
        for a new node: its fallback id). Returns the root and the absorbed customers.
        """
        parts = [self._clusters[r] for r in roots]
        first, customer, new_won = survivor(parts, new, at)
        losers: Losers = []
        aliases: tuple[str, ...] = ()
        for part in parts:
            if part.customer_id == customer:
                aliases = part.absorbed
                continue
            losers.append((part.customer_id, part.absorbed))
            lost = part.customer_id
            for node in part.members:
                before.setdefault(node, lost)
        for lost, lost_aliases in losers:
            aliases = (*aliases, lost, *lost_aliases)
        root = self._absorb_parts(roots, parts) if parts else self._new_root(new[0], customer)
        big = self._clusters[root]
        creator = new[0] if new_won else None
        self._attach_new(root, big, new, before, creator)
        big.customer_id, big.first_seen, big.absorbed = customer, first, aliases
        self._dirty.roots.add(root)
        return root, losers

    def _absorb_parts(self, roots: Sequence[str], parts: list[Cluster]) -> str:
        if len(parts) == 1:
            return roots[0]
        big_at = max(range(len(parts)), key=lambda i: parts[i].size)
        root, big = roots[big_at], parts[big_at]
        for i, part in enumerate(parts):
            if i == big_at:
                continue
            self._parent[roots[i]] = root
            del self._clusters[roots[i]]
            self._dirty.parents.add(roots[i])
            self._dirty.roots.add(roots[i])
            big.members.update(part.members)
        return root

    def _new_root(self, node: str, customer: str) -> str:
        self._parent[node] = node
        self._clusters[node] = Cluster(customer, datetime.min)  # dates set by the caller
        return node

    def _attach_new(
        self,
        root: str,
        big: Cluster,
        new: Sequence[str],
        before: dict[str, str],
        creator: str | None,
    ) -> None:
        """Put new nodes in the cluster; each but the creator of the customer (if among them)
        changes customer: its fallback id ("" in ``before``) is not the cluster's id."""
        for node in new:
            self._parent[node] = root
            big.members[node] = node_kind(node)
            self._dirty.parents.add(node)
            if node != creator:
                before.setdefault(node, "")

    def remove_cluster(self, node: str) -> tuple[Cluster | None, list[str]]:
        """Erase the cluster holding ``node`` and remember its nodes as forgotten."""
        root = self.find(node)
        cluster = self._clusters.pop(root) if root is not None else None
        nodes = cluster.nodes if cluster is not None else [node]
        for gone in nodes:
            self._parent.pop(gone, None)
            self._seen.pop(gone, None)
            self._blocked.discard(gone)
            self._cookie_first.pop(gone, None)
            self._calls.pop(gone, None)
            self._shared.discard(gone)
            key = forget_key(gone)
            self._forgotten.add(key)
            self._dirty.forgotten.add(key)
            self._dirty.removed.add(gone)
        if root is not None:
            self._dirty.roots.add(root)
        return cluster, (nodes if cluster is not None else [])
