"""Guardrails of the identity graph: what keeps two people who share a phone or a laptop
from becoming one customer.

* **unique types** (``crm_id``, ``user_id``): a customer holds at most one value of each.
* **caps**: a customer holds at most so many nodes of a type (3 emails, 2 phones, ...).
* **hubs**: a node that would join more than ``hub_limit`` distinct customers over time (a
  switchboard phone, a shared inbox, a family laptop's cookie) is blocked: it stays in its
  customer but links nothing new. Each node keeps the set of customers it has joined: a
  union of existing clusters adds their ids to the set of every node of the link (brand
  new identifiers being attached count for nothing). Only customers holding a non-cookie
  identifier count, so a person whose cookie rotates does not turn their own email into a
  hub; unique types are exempt (the unique rule covers them). The rule is checked on the
  unions that the unique types and caps allow, which keeps a replayed link a no-op.
* **cookie TTL** (off by default): a cookie first seen longer ago than the TTL, in event
  time, links nothing new (reason ``cookie_expired``). Enable it from the start: a cookie
  the graph saw before carries no first-seen time and is dated from its next event.
* **shared lines**: a phone seen on two calls at once (call ids whose first-to-last event
  times overlap: a company switchboard, a shared office line) stands for no one person. It
  links nothing new from then on (reason ``shared_line``), and an event that carries no
  other identifier gets a customer of its own instead of the line's. Its events from
  before are not split off (the overrides only merge).
* **placeholders**: values (or whole nodes) that are never identifiers ("null", "0", ...);
  email and phone values arrive hashed, so give those as the pipeline hashes them.

:meth:`GuardrailConfig.off` turns every guardrail off: clusters are then exactly the
connected components of the links.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from types import MappingProxyType
from typing import Final

from pipeline.errors import ConfigError
from schemas.events import IDENTIFIER_TYPES
from schemas.identity import kind_of

DEFAULT_UNIQUE_TYPES: Final = ("crm_id", "user_id")
DEFAULT_CAPS: Final[Mapping[str, int]] = MappingProxyType(
    {"email": 3, "phone": 2, "anonymous_id": 5, "chat_visitor_id": 5}
)
COOKIE_TYPES: Final = ("anonymous_id", "chat_visitor_id")
DEFAULT_HUB_LIMIT: Final = 3
CALLS_KEPT: Final = 8
"""Latest calls kept per phone for the shared-line rule."""


@dataclass(frozen=True)
class GuardrailConfig:
    """Stitching rules; see the module docstring. Taken from settings at the entry point."""

    unique_types: tuple[str, ...] = DEFAULT_UNIQUE_TYPES
    caps: Mapping[str, int] = field(default_factory=lambda: DEFAULT_CAPS)
    hub_limit: int | None = DEFAULT_HUB_LIMIT
    """K: a node may join at most K distinct customers; ``None`` turns the rule off."""
    cookie_ttl: timedelta | None = None
    cookie_types: tuple[str, ...] = COOKIE_TYPES
    placeholders: frozenset[str] = frozenset()
    """Values, or whole ``type:value`` nodes, that are refused (exact match)."""
    shared_lines: bool = True
    """Find phones on two calls at once and stop them linking (see the module docstring)."""

    def __post_init__(self) -> None:
        known = set(IDENTIFIER_TYPES)
        for kind in (*self.unique_types, *self.caps, *self.cookie_types):
            if kind not in known:
                raise ConfigError(f"unknown identifier type {kind!r} in guardrails")
        if any(cap < 1 for cap in self.caps.values()):
            raise ConfigError(f"identity caps must be at least 1, got {dict(self.caps)}")
        if self.hub_limit is not None and self.hub_limit < 1:
            raise ConfigError(f"hub_limit must be at least 1, got {self.hub_limit}")
        if self.cookie_ttl is not None and self.cookie_ttl <= timedelta(0):
            raise ConfigError(f"cookie_ttl must be positive, got {self.cookie_ttl}")

    @classmethod
    def off(cls) -> GuardrailConfig:
        """No guardrail at all: clusters are the connected components of the links."""
        return cls(unique_types=(), caps=MappingProxyType({}), hub_limit=None, shared_lines=False)

    @cached_property
    def unique_set(self) -> frozenset[str]:
        return frozenset(self.unique_types)

    @cached_property
    def cookie_set(self) -> frozenset[str]:
        return frozenset(self.cookie_types)

    @cached_property
    def cap_items(self) -> tuple[tuple[str, int], ...]:
        return tuple(self.caps.items())

    def is_placeholder(self, node: str) -> bool:
        """True if ``node`` or its value is on the placeholder list."""
        found = self.placeholders
        return bool(found) and (node in found or node[len(kind_of(node)) + 1 :] in found)
