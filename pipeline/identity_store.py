"""Persistence of the identity graph as a changelog of :class:`GraphDelta` messages.

The faust wrapper, after each :func:`~pipeline.identity_graph.resolve` (or forget) call,
takes ``graph.dirty_entries()`` and writes it as *one* message to the changelog topic,
before (or in one transaction with) that batch's outputs. On recovery,
``IdentityGraph.restore(messages)`` replays the messages in order. A message holds:

* ``parents``: node -> an ancestor, for new nodes and for roots re-rooted by a union (path
  compression is not persisted: a stale parent is still an ancestor of the same root);
* ``first_seen`` / ``customers`` / ``absorbed``: the cluster info of roots created or
  changed, and ``unrooted``: former roots whose info goes;
* ``removed`` / ``forgotten``: nodes erased by forget, and the hashes that keep them out;
* hub state, cookie first-seen times, the latest calls of phones and the shared lines, and
  ``seq``, the version counter.

Members, counts per type and unique values are not persisted: :meth:`IdentityGraph.restore`
rebuilds them from the nodes. ``graph.snapshot()`` is a ``full`` message with the whole
state, for compaction: a replay starts over at the last full message.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from pipeline.identity_state import Cluster, Dirty, GraphCore, node_kind
from schemas.identity import GraphDelta, fallback_customer_id


@dataclass
class _Roots:
    """Cluster info by root while a changelog is replayed."""

    first_seen: dict[str, datetime] = field(default_factory=dict)
    customers: dict[str, str] = field(default_factory=dict)
    absorbed: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def drop(self, root: str) -> None:
        self.first_seen.pop(root, None)
        self.customers.pop(root, None)
        self.absorbed.pop(root, None)


def _named(root: str, cluster: Cluster, canonical: bool) -> bool:
    """Whether the cluster's customer id must be written: it was set, and (for a canonical
    snapshot) is not the fallback id of the root anyway."""
    named = cluster.explicit_customer
    return bool(named) and not (canonical and named == fallback_customer_id(root))


class IdentityGraph(GraphCore):
    """The resolver's state (see :mod:`pipeline.identity_state`) with its changelog."""

    def dirty_entries(self) -> GraphDelta:
        """The entries changed since the previous call, as one changelog message; clears
        them. Write it before (or atomically with) the outputs of the same batch."""
        dirty, self._dirty = self._dirty, Dirty()
        return self._message(
            self.seq,
            full=False,
            parents={n: self._parent[n] for n in dirty.parents if n in self._parent},
            roots=[r for r in dirty.roots if r in self._clusters],
            unrooted=sorted(r for r in dirty.roots if r not in self._clusters and r in self),
            removed=sorted(dirty.removed),
            cookies=[n for n in dirty.cookies if n in self._cookie_first],
            seen=[n for n in dirty.seen if n in self._seen],
            blocked=sorted(n for n in dirty.blocked if n in self._blocked),
            forgotten=sorted(dirty.forgotten),
            calls=[n for n in dirty.calls if n in self._calls],
            shared=sorted(n for n in dirty.shared if n in self._shared),
        )

    def snapshot(self) -> GraphDelta:
        """The whole state as one ``full`` message (parents flattened to roots). Leaves the
        dirty entries alone: replaying them after the snapshot is harmless."""
        return self._message(
            self.seq,
            full=True,
            parents={n: root for n in list(self._parent) if (root := self.find(n)) is not None},
            roots=list(self._clusters),
            unrooted=[],
            removed=[],
            cookies=list(self._cookie_first),
            seen=list(self._seen),
            blocked=sorted(self._blocked),
            forgotten=sorted(self._forgotten),
            calls=list(self._calls),
            shared=sorted(self._shared),
        )

    def _message(
        self,
        seq: int,
        *,
        full: bool,
        parents: dict[str, str],
        roots: list[str],
        unrooted: list[str],
        removed: list[str],
        cookies: list[str],
        seen: list[str],
        blocked: list[str],
        forgotten: list[str],
        calls: list[str],
        shared: list[str],
    ) -> GraphDelta:
        clusters = [(r, self._clusters[r]) for r in roots]
        return GraphDelta.model_construct(  # built from the graph's own, valid state
            seq=seq,
            full=full,
            parents=parents,
            first_seen={r: c.first_seen for r, c in clusters},
            customers={r: c.explicit_customer for r, c in clusters if _named(r, c, full)},
            absorbed={r: c.absorbed for r, c in clusters if c.absorbed},
            unrooted=tuple(unrooted),
            removed=tuple(removed),
            cookie_first_seen={n: self._cookie_first[n] for n in cookies},
            hub_seen={n: tuple(sorted(self._seen[n])) for n in seen},
            blocked=tuple(blocked),
            forgotten=tuple(forgotten),
            calls={n: dict(self._calls[n]) for n in calls},
            shared=tuple(shared),
        )

    @classmethod
    def restore(cls, messages: Iterable[GraphDelta]) -> IdentityGraph:
        """Rebuild a graph by replaying changelog messages in order."""
        graph, roots = cls(), _Roots()
        for message in messages:
            if message.full:
                graph, roots = cls(), _Roots()
            graph._apply(message, roots)
        graph._rebuild(roots)
        graph._dirty = Dirty()
        return graph

    def _apply(self, delta: GraphDelta, roots: _Roots) -> None:
        self._parent.update(delta.parents)
        roots.first_seen.update(delta.first_seen)
        roots.customers.update(delta.customers)
        roots.absorbed.update(delta.absorbed)
        for root in delta.unrooted:
            roots.drop(root)
        for node in delta.removed:
            self._parent.pop(node, None)
            roots.drop(node)
            self._seen.pop(node, None)
            self._blocked.discard(node)
            self._cookie_first.pop(node, None)
            self._calls.pop(node, None)
            self._shared.discard(node)
        self._cookie_first.update(delta.cookie_first_seen)
        self._calls.update((n, dict(c)) for n, c in delta.calls.items())
        self._shared.update(delta.shared)
        self._seen.update((n, set(s)) for n, s in delta.hub_seen.items())
        self._blocked.update(delta.blocked)
        self._forgotten.update(delta.forgotten)
        self.seq = delta.seq

    def _rebuild(self, roots: _Roots) -> None:
        """Clusters from their root info; members and sizes from the nodes."""
        clusters: dict[str, Cluster] = {}
        for node in list(self._parent):
            root = self.find(node)
            assert root is not None
            cluster = clusters.get(root)
            if cluster is None:
                first = roots.first_seen.get(root)
                if first is None:
                    raise ValueError(f"identity changelog: root {root!r} has no cluster info")
                customer = roots.customers.get(root, "")
                cluster = Cluster(customer, first, absorbed=roots.absorbed.get(root, ()))
                clusters[root] = cluster
            cluster.members[node] = node_kind(node)
        if len(clusters) != len(roots.first_seen):
            stray = sorted(set(roots.first_seen) - set(clusters))[:5]
            raise ValueError(f"identity changelog: cluster info without nodes: {stray}")
        for root, cluster in clusters.items():
            # a snapshot leaves out a customer id that is its root's fallback id (_named);
            # unset, a cluster would take its first member's, and the replay order of the
            # nodes is not their joining order
            if not cluster.explicit_customer and cluster.size > 1:
                cluster.customer_id = fallback_customer_id(root)
        self._clusters = clusters
