"""The simulator's models: its configuration (:class:`SimulationConfig`, with
:class:`Incident` and :class:`Conversion`), the messages it emits (:class:`SimEvent`) and
the counts of a run (:class:`SimulationSummary`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.producers.adversary import AdversarialMix
from pipeline.producers.malformed import MALFORMED_REASONS, MalformedKind
from pipeline.producers.segments import Stage
from schemas.properties import CATALOGUE
from schemas.records import DeadLetterReason

EVENT_CHANNELS = {kind: channel for channel, kinds in CATALOGUE.items() for kind in kinds}
"""The channel of every catalogued event type (each type belongs to exactly one channel)."""


# --- configuration ---------------------------------------------------------------------------
class Incident(BaseModel):
    """During ``[start_minute, end_minute)`` of the run, drop-off at ``stage`` is multiplied."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stage: Stage
    start_minute: float = Field(ge=0)
    end_minute: float = Field(gt=0)
    dropoff_multiplier: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Incident:
        if self.end_minute <= self.start_minute:
            raise ValueError("end_minute must be after start_minute")
        return self


class Conversion(BaseModel):
    """Probability of going on past each stage (drop-off is one minus it, before pains)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    awareness: float = Field(0.6, ge=0, le=1)
    consideration: float = Field(0.5, ge=0, le=1)
    purchase: float = Field(0.7, ge=0, le=1, description="Checkouts completed (no incident).")
    retention: float = Field(0.5, ge=0, le=1, description="Retained customers who advocate.")


class SimulationConfig(BaseModel):
    """Everything a run depends on; the same config gives the same bytes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 0
    start: AwareDatetime
    duration: timedelta = Field(timedelta(hours=2), gt=timedelta(0))
    customers: int = Field(1000, ge=1, description="Customers arriving during the run.")
    events_per_second: float | None = Field(
        None, gt=0, description="Target simulated rate; when set, replaces `customers`."
    )
    max_events: int | None = Field(None, ge=1, description="Budget of generated events.")
    late_fraction: float = Field(0.01, ge=0, le=1, description="Delivered 2-30 min late.")
    out_of_order_fraction: float = Field(0.05, ge=0, le=1, description="Delivered 1-60 s late.")
    duplicate_fraction: float = Field(0.01, ge=0, le=1, description="Re-emitted, same bytes.")
    malformed_fraction: float = Field(0.005, ge=0, le=1, description="Broken on the way.")
    malformed_kinds: tuple[MalformedKind, ...] = tuple(MALFORMED_REASONS)
    incidents: tuple[Incident, ...] = ()
    adversarial: bool = False
    adversarial_mix: AdversarialMix = AdversarialMix()
    conversion: Conversion = Conversion()
    mean_session_gap: timedelta = Field(timedelta(minutes=6), gt=timedelta(0))

    @field_validator("start")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _fractions(self) -> SimulationConfig:
        if self.late_fraction + self.out_of_order_fraction > 1:
            raise ValueError("late_fraction + out_of_order_fraction must not exceed 1")
        if not self.malformed_kinds:
            raise ValueError("malformed_kinds must name at least one kind")
        return self


# --- output ----------------------------------------------------------------------------------
class SimEvent(NamedTuple):
    """One message to produce, in delivery order, with its truth. (A NamedTuple: immutable,
    typed, and three times cheaper to build than a frozen dataclass at 50k+ events/s.)"""

    payload: bytes
    """The exact bytes to produce."""
    key: bytes | None
    """The strongest real identifier (crm_id > user_id > email > phone > chat > cookie)."""
    event_id: str | None
    """The event id validation will read from the payload (None when it cannot)."""
    truth_customer: int | None
    malformed: DeadLetterReason | None
    """The dead-letter reason validation must give (None for a valid event)."""
    malformed_kind: MalformedKind | None
    duplicate: bool
    occurred_at: datetime
    delivered_at: datetime
    """The simulated time the message is produced (later than occurred_at when displaced)."""
    channel: str
    event_type: str
    tag: str | None
    """Adversarial or link marker (see :mod:`pipeline.producers.adversarial`)."""

    @property
    def delay_seconds(self) -> float:
        return (self.delivered_at - self.occurred_at).total_seconds()


@dataclass
class SimulationSummary:
    """Counts of what a run emitted (generated events once, duplicate copies separately)."""

    customers: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    late: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    """Generated events (valid or malformed) by event type (each belongs to one channel)."""
    malformed: Counter[str] = field(default_factory=Counter)
    """Malformed messages by :data:`~pipeline.producers.adversarial.MalformedKind`."""
    tags: Counter[str] = field(default_factory=Counter)

    @property
    def events(self) -> int:
        return sum(self.counts.values())

    @property
    def messages(self) -> int:
        """Everything delivered: the events and their duplicate copies."""
        return self.events + self.duplicates

    @property
    def by_channel(self) -> Counter[str]:
        totals: Counter[str] = Counter()
        for kind, n in self.counts.items():
            totals[EVENT_CHANNELS[kind]] += n
        return totals

    @property
    def by_type(self) -> Counter[str]:
        """Counts by ``channel/event_type``."""
        return Counter({f"{EVENT_CHANNELS[k]}/{k}": n for k, n in self.counts.items()})

    def as_dict(self) -> dict[str, Any]:
        return {
            "customers": self.customers, "events": self.events, "messages": self.messages,
            "duplicates": self.duplicates, "out_of_order": self.out_of_order, "late": self.late,
            "by_channel": dict(self.by_channel), "by_type": dict(self.by_type),
            "malformed": dict(self.malformed), "tags": dict(self.tags),
        }  # fmt: skip
