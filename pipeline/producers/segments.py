"""Who the simulated customers are, by segment, and what makes them drop off.

A :class:`Segment` holds channel preferences, patience on hold and basket size;
:data:`DROP_OFF_CAUSES` are the pains that raise a stage's drop-off. A journey yields
:class:`Draft` events stage by stage (:data:`STAGES`).
"""

from __future__ import annotations

import random
from bisect import bisect
from collections.abc import Generator
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

if TYPE_CHECKING:
    from _typeshed import SupportsLenAndGetItem

T = TypeVar("T")

Stage = Literal["awareness", "consideration", "purchase", "retention", "advocacy"]
STAGES: tuple[Stage, ...] = ("awareness", "consideration", "purchase", "retention", "advocacy")
CHANNEL_ORDER = ("web", "chat", "email", "call_center")
"""The order of the preference weights in :attr:`Segment.channels`."""


class Draft(NamedTuple):
    """One contract event before it is serialised: what a journey yields."""

    t: float
    """Seconds since the simulated start."""
    channel: str
    event_type: str
    ids: dict[str, str]
    """Identifiers as they appear in the payload (shared, never mutated)."""
    props: dict[str, Any]
    who: int
    """The true customer behind the event."""
    tag: str | None = None
    """An adversarial or link marker kept in the ground truth (``None`` for plain events)."""


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    weight: float
    """Share of the customers."""
    ages: tuple[int, int]
    channels: tuple[float, float, float, float]
    """Preference weights in :data:`CHANNEL_ORDER` order."""
    patience: float
    """Seconds on hold before hanging up."""
    basket: tuple[float, float]
    """Order value range in USD."""
    work_email: float
    """Probability that an address is at a company domain."""


SEGMENTS: dict[str, Segment] = {
    s.name: s
    for s in (
        Segment("young_digital", 0.30, (18, 29), (0.55, 0.30, 0.10, 0.05), 240.0, (15, 120), 0.05),
        Segment("family", 0.30, (30, 49), (0.45, 0.15, 0.25, 0.15), 420.0, (40, 320), 0.10),
        Segment("professional", 0.25, (28, 60), (0.45, 0.10, 0.30, 0.15), 360.0, (80, 900), 0.60),
        Segment("senior", 0.15, (65, 88), (0.25, 0.05, 0.25, 0.45), 900.0, (20, 200), 0.02),
    )
}
_SEGMENT_LIST = tuple(SEGMENTS.values())
_SEGMENT_CUM = tuple(accumulate(s.weight for s in _SEGMENT_LIST))

STAGE_CHANNELS: dict[Stage, tuple[int, int, int, int]] = {
    "awareness": (1, 0, 1, 0),
    "consideration": (1, 1, 1, 1),
    "purchase": (1, 0, 0, 1),
    "retention": (1, 1, 1, 1),
    "advocacy": (1, 0, 1, 1),
}
"""Which channels a stage's sessions may use (web, chat, email, call_center)."""
_CHANNEL_CUM: dict[tuple[str, Stage], tuple[float, ...]] = {
    (seg.name, stage): tuple(accumulate(w * m for w, m in zip(seg.channels, mask, strict=True)))
    for seg in _SEGMENT_LIST
    for stage, mask in STAGE_CHANNELS.items()
}


class SimRandom(random.Random):
    """``random.Random`` with cheaper ``randint`` and ``choice`` (one ``random()`` call each,
    no rejection loop): the simulator draws several numbers per event."""

    def randint(self, a: int, b: int) -> int:
        return a + int(self.random() * (b - a + 1))

    def choice(self, seq: SupportsLenAndGetItem[T]) -> T:
        return seq[int(self.random() * len(seq))]


def pick_segment(rng: random.Random) -> Segment:
    return _SEGMENT_LIST[bisect(_SEGMENT_CUM, rng.random() * _SEGMENT_CUM[-1])]


def pick_channel(rng: random.Random, segment: Segment, stage: Stage) -> str:
    """A channel for one session, by the segment's preferences among the stage's channels."""
    cum = _CHANNEL_CUM[segment.name, stage]
    return CHANNEL_ORDER[bisect(cum, rng.random() * cum[-1])]


# --- what a customer does ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DropOffCause:
    """A built-in cause of drop-off: a stage whose events show it has its drop-off multiplied."""

    name: str
    events: tuple[tuple[str, str], ...]
    """(channel, event_type) pairs that can show the cause."""
    field: str | None
    """The property tested (None: the event itself shows it)."""
    op: Literal[">", "<=", "=="] | None
    value: float | bool | None
    multiplier: float

    @property
    def condition(self) -> str:
        return "any" if self.field is None else f"{self.field} {self.op} {self.value}"

    def matches(self, channel: str, event_type: str, properties: dict[str, Any]) -> bool:
        """Whether an event shows this cause."""
        if (channel, event_type) not in self.events:
            return False
        if self.field is None:
            return True
        got = properties.get(self.field)
        if got is None:
            return False
        if self.op == ">":
            return bool(got > self.value)
        if self.op == "<=":
            return bool(got <= self.value)
        return bool(got == self.value)


DROP_OFF_CAUSES: dict[str, DropOffCause] = {
    c.name: c
    for c in (
        DropOffCause("long_phone_hold", (("call_center", "call_started"),), "wait_seconds", ">",
                     300.0, 2.5),
        DropOffCause("unresolved_chat", (("chat", "chat_ended"),), "resolved", "==", False, 2.0),
        DropOffCause("email_bounced", (("email", "email_bounced"),), None, None, None, 1.8),
        DropOffCause("low_csat", (("chat", "chat_ended"), ("call_center", "call_ended")), "csat",
                     "<=", 2, 1.5),
    )
}  # fmt: skip
"""Causes, strongest first: a pain-point ranking over the simulated data should find them.
Each multiplies the drop-off of the stage in which the customer met it (once per stage)."""
LONG_HOLD_SECONDS = 300.0
MAX_DROPOFF = 0.95


Session = Generator[Draft, None, None]
StageRun = Generator[Draft, None, bool]
"""A stage's events; returns whether the customer goes on to the next stage."""
