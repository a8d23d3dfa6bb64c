"""Identity-graph records (record version 1): links in; assignments, merges and refusals out;
the GDPR forget request and result; and the changelog deltas that persist the resolver's state.

A *node* is one normalised identifier, ``"type:value"`` (:func:`node_of`), with the type one
of :data:`~schemas.events.IDENTIFIER_TYPES`. Values are opaque strings: email and phone
values are already keyed hashes (HMAC) by the time they get here.

A *customer id* is derived from one node (:func:`fallback_customer_id`): a cluster's id is
the fallback id of the node that created it, so a node that is still alone has its fallback
id, which the stamping stage can use before the resolver has seen the node. A provisional
fallback id ``fallback_customer_id(n)`` maps to the customer of the latest
:class:`NodeAssignment` of ``n``, when there is one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, AwareDatetime, Field, field_validator

from schemas.events import IDENTIFIER_TYPES
from schemas.records import Record

RANK: Final = {kind: rank for rank, kind in enumerate(IDENTIFIER_TYPES)}
"""Priority of each identifier type: 0 is the strongest."""

RefusalReason = Literal[
    "unique_conflict",
    "cap_exceeded",
    "hub",
    "placeholder",
    "forgotten",
    "cookie_expired",
    "shared_line",
]
"""Why a node of an event was kept out of the event's customer.

``shared_line``: a phone seen on two calls at once (a switchboard, a shared office line)
stands for no one person: it links nothing new from then on.

``cookie_expired``: a cookie (``anonymous_id``, ``chat_visitor_id``) first seen longer ago
than the configured TTL, in event time, no longer links anything (a dedicated reason rather
than ``cap_exceeded``, so the two can be told apart in the refusals table).
"""


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]


def node_of(kind: str, value: str) -> str:
    """The node of one identifier: ``"type:value"``."""
    if kind not in RANK:
        raise ValueError(f"unknown identifier type {kind!r}")
    if not value:
        raise ValueError(f"empty {kind} value")
    return f"{kind}:{value}"


def kind_of(node: str) -> str:
    """The identifier type of a node."""
    return node.partition(":")[0]


def fallback_customer_id(node: str) -> str:
    """The customer id a cluster created by ``node`` gets (deterministic, 22 characters)."""
    return "c_" + hashlib.blake2b(node.encode(), digest_size=10).hexdigest()


def event_customer_id(event_id: str) -> str:
    """The customer of an event whose every identifier is a shared line: its own, derived
    from the event id (so a replay stamps it the same)."""
    return fallback_customer_id("event:" + event_id)


def _rank_of(node: str) -> int:
    kind, sep, value = node.partition(":")
    rank = RANK.get(kind)
    if rank is None or not sep or not value:
        raise ValueError(f"not a node (type:value with a known type): {node!r}")
    return rank


class IdentityLink(Record):
    """The identifiers one event carries, as nodes, strongest first (one link per event)."""

    event_id: str = Field(min_length=1)
    occurred_at: UtcDatetime
    nodes: tuple[str, ...] = Field(min_length=1)
    call: str = ""
    """The call id of a call-center event ("" otherwise): two calls at once on one phone
    make it a shared line."""

    @field_validator("nodes")
    @classmethod
    def _strongest_first(cls, nodes: tuple[str, ...]) -> tuple[str, ...]:
        unique = dict.fromkeys(nodes)
        return tuple(sorted(unique, key=_rank_of))


def link_from_identifiers(
    event_id: str, occurred_at: datetime, identifiers: Mapping[str, str], call: str = ""
) -> IdentityLink:
    """The link of an event from its identifiers by type (as on a Touchpoint)."""
    nodes = tuple(node_of(kind, value) for kind, value in identifiers.items())
    return IdentityLink(event_id=event_id, occurred_at=occurred_at, nodes=nodes, call=call)


class LinkBatch(Record):
    links: tuple[IdentityLink, ...]


class NodeAssignment(Record):
    """``node`` now belongs to ``customer_id`` (always the current id, never an absorbed one)."""

    node: str
    customer_id: str
    version: int = Field(ge=0)
    """The graph's sequence number: the latest version of a node wins."""
    shared: bool = False
    """The node is a shared line: an event is stamped by its other identifiers, or gets a
    customer of its own (:func:`event_customer_id`) when it has no other."""


class CustomerMerge(Record):
    """Customer ``absorbed`` is now ``survivor``; an id absorbed earlier is re-emitted with the
    new survivor whenever its survivor is itself absorbed, so the mapping stays flat."""

    absorbed: str
    survivor: str
    occurred_at: UtcDatetime
    """Event time of the link that caused the merge."""
    version: int = Field(ge=0)


class RefusedLink(Record):
    """A node of an event kept out of the event's customer, and why."""

    event_id: str
    node: str
    reason: RefusalReason
    customer_id: str
    """The customer the event was resolved to without ``node`` ("" if no node was kept)."""
    occurred_at: UtcDatetime
    detail: str


class ResolverOutput(Record):
    assignments: tuple[NodeAssignment, ...] = ()
    merges: tuple[CustomerMerge, ...] = ()
    refusals: tuple[RefusedLink, ...] = ()


class ForgetRequest(Record):
    """GDPR erasure: forget the customer that holds ``node``, with all its identifiers."""

    node: str


class ForgetResult(Record):
    customer_id: str
    """The forgotten customer ("" if the node was unknown)."""
    nodes: tuple[str, ...]
    """Every node removed from the graph."""
    absorbed: tuple[str, ...] = ()
    """Older customer ids merged into the forgotten one (rows stamped with them go too)."""


# --- changelog ---------------------------------------------------------------------------------


class GraphDelta(Record):
    """One changelog message: the graph's changed entries since the previous message.

    Replaying the messages in order rebuilds the graph; a ``full`` message (a snapshot)
    replaces everything before it. Upserts and deletions are disjoint within a message, so
    applying a message twice in a row is harmless. Cluster info is kept by root, in columns;
    members, counts per type and unique values are rebuilt from the nodes.
    """

    seq: int = Field(ge=0)
    """The graph's version counter."""
    full: bool = False
    parents: dict[str, str] = Field(default_factory=dict)
    """Node -> an ancestor in the union-find (itself for a root): new and re-rooted nodes."""
    first_seen: dict[str, AwareDatetime] = Field(default_factory=dict)
    """Root -> first_seen, for every root created or changed (the key set of roots)."""
    customers: dict[str, str] = Field(default_factory=dict)
    """Root -> customer id, unless it is still the fallback id of the root (a singleton)."""
    absorbed: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """Root -> customer ids merged into it (only when there are some)."""
    unrooted: tuple[str, ...] = ()
    """Former roots, now inside another cluster: their cluster info goes."""
    removed: tuple[str, ...] = ()
    """Nodes erased by a forget request."""
    cookie_first_seen: dict[str, AwareDatetime] = Field(default_factory=dict)
    hub_seen: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """Node -> the customers it has joined, for the hub rule."""
    blocked: tuple[str, ...] = ()
    """Nodes newly blocked as hubs."""
    forgotten: tuple[str, ...] = ()
    """Hashes of forgotten nodes, which must never come back."""
    calls: dict[str, dict[str, tuple[AwareDatetime, AwareDatetime]]] = Field(default_factory=dict)
    """Phone node -> its latest calls: call id -> (first, last) event time seen."""
    shared: tuple[str, ...] = ()
    """Phones newly found to be shared lines."""


class ResolverInput(Record):
    """One message on the links topic: identity links of an ingest batch, or forget requests."""

    links: tuple[IdentityLink, ...] = ()
    forget: tuple[str, ...] = ()
    """Nodes whose whole customer is to be erased (GDPR)."""


class IdentityEvents(Record):
    """What one resolver batch tells the sinks: assignments, merges, refusals, erasures."""

    assignments: tuple[NodeAssignment, ...] = ()
    """Events stamped with ``fallback_customer_id(node)`` belong to ``customer_id`` now."""
    merges: tuple[CustomerMerge, ...] = ()
    refusals: tuple[RefusedLink, ...] = ()
    forgotten: tuple[ForgetResult, ...] = ()
