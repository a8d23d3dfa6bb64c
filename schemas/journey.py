"""Journey records: a customer's journeys, the stages they entered, and stage transitions.

A customer *enters* a stage at the first event of the journey that maps to it (by event
time, whatever the arrival order). :class:`JourneyState` is the per-customer state the
journey stage keeps (a faust table value); :class:`StageTransition` is one row of the
``stage_transitions`` table, a ReplacingMergeTree keyed by ``(customer_id, journey_id,
to_stage)`` with ``version``: a late event that changes an entry re-emits the row with a
higher version, and ``is_deleted`` rows retract keys that no longer exist.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Discriminator, Field, Tag, TypeAdapter

from schemas.events import Channel
from schemas.records import Record, TouchpointBatch

GatedStep = tuple[str, str, bool]
"""(stage, after_stage or "", repeat): one rule whose stage depends on the history."""
RecentId = Annotated[
    tuple[AwareDatetime, str, str] | tuple[AwareDatetime, str], Field(union_mode="left_to_right")
]
"""(occurred_at, event_id, counted) of an event a journey state saw; see
:attr:`JourneyState.recent_ids`. Left to right: the current shape is tried first (pydantic's
smart mode tries both, and took twice as long to validate a window)."""


class StageEntry(Record):
    """The event by which a journey entered (or completed) a stage."""

    stage: str
    entered_at: AwareDatetime
    channel: Channel
    event_id: str


class PendingEvent(Record):
    """A gated event (``after_stage``/``repeat`` rules), kept so that a late event can
    re-decide its stage. Only its time, id and rule steps are kept, not the event."""

    at: AwareDatetime
    event_id: str
    channel: Channel
    kind: str
    """"channel/event_type"."""
    steps: tuple[GatedStep, ...]
    fallback: str | None


class Journey(Record):
    """One journey of a customer: a run of events without a gap over the inactivity gap."""

    journey_id: str
    started_at: AwareDatetime
    last_seen: AwareDatetime
    current_stage: str | None
    """The furthest stage entered, in the configured order."""
    entries: dict[str, StageEntry]
    """The first entry into each stage entered."""
    completions: dict[str, StageEntry] = Field(default_factory=dict)
    """The first event completing each stage (``completed_by``)."""
    resolved: dict[str, StageEntry] = Field(default_factory=dict)
    """The earliest ungated event per stage (``entries`` = these + the decided pending)."""
    pending: tuple[PendingEvent, ...] = ()
    """Gated events by (at, event_id), bounded."""


class JourneyState(Record):
    """Everything the journey stage keeps about one customer. ``journey_id``,
    ``journey_started_at``, ``current_stage`` and ``entries`` are properties: those of the
    current (latest) journey."""

    customer_id: str
    journeys: tuple[Journey, ...]
    """Recent journeys by start (bounded); the last one is the current journey."""
    touchpoints: dict[str, int] = Field(default_factory=dict)
    """Events per channel (all journeys)."""
    first_seen: AwareDatetime
    last_seen: AwareDatetime
    segment: str | None = None
    """From ``properties.segment``: that of the latest event (by event time) naming one."""
    segment_since: AwareDatetime | None = None
    purchases: int = 0
    recent_ids: tuple[RecentId, ...] = ()
    """(occurred_at, event_id, counted) of the latest events, bounded: a repeat is skipped,
    and an event that both states of a merge counted is counted once (``counted``: its
    channel, ``+purchase`` when it added to ``purchases``). States written before
    ``counted`` existed hold (occurred_at, event_id) pairs."""
    firsts: dict[str, tuple[AwareDatetime, str]] = Field(default_factory=dict)
    """Earliest (occurred_at, event_id) per "channel/event_type" named by a repeat rule."""
    passed: dict[str, AwareDatetime] = Field(default_factory=dict)
    """When journeys no longer kept passed each ``after_stage`` target."""
    closed_until: AwareDatetime | None = None
    """Journeys up to here are no longer kept: older events are too late to place."""
    version: int = 0
    """Bumped by every change; the version of the transitions it emits."""

    @property
    def current(self) -> Journey:
        return self.journeys[-1]

    @property
    def journey_id(self) -> str:
        return self.journeys[-1].journey_id

    @property
    def journey_started_at(self) -> AwareDatetime:
        return self.journeys[-1].started_at

    @property
    def current_stage(self) -> str | None:
        return self.journeys[-1].current_stage

    @property
    def entries(self) -> dict[str, StageEntry]:
        return self.journeys[-1].entries


class StageTransition(Record):
    """A journey entered ``to_stage`` (one row per journey and stage)."""

    customer_id: str
    journey_id: str
    from_stage: str | None
    """The journey's current stage just before (None for its first stage)."""
    to_stage: str
    at: AwareDatetime
    channel: Channel
    event_id: str
    seconds_in_previous: float | None
    """Seconds since the journey entered ``from_stage``."""
    completed_at: AwareDatetime | None = None
    """When the journey completed ``to_stage`` (its first ``completed_by`` event), if it did."""
    version: int
    is_deleted: bool = False


# --- messages of the journey stage ------------------------------------------------------------


class TransitionBatch(Record):
    """One message on ``<prefix>.transitions``: the rows one journey batch of one partition
    produced, for the ``stage_transitions``, ``journeys`` and ``customers`` tables."""

    records: tuple[StageTransition, ...] = ()
    journeys: tuple[JourneyRow, ...] = ()
    customers: tuple[CustomerProfile, ...] = ()
    produced_at: AwareDatetime | None = None


class JourneyRow(Record):
    """One row of ``journeys``: a journey as of its customer's state ``version``."""

    customer_id: str
    journey_id: str
    started_at: AwareDatetime
    last_seen: AwareDatetime
    current_stage: str | None
    stages: tuple[str, ...]
    """The stages entered, in the configured order."""
    completed: tuple[str, ...] = ()
    version: int
    is_deleted: bool = False


class CustomerProfile(Record):
    """One row of ``customers``: the current profile of a customer (``is_deleted`` once it
    was merged into another customer)."""

    customer_id: str
    journey_id: str
    stage: str | None
    first_seen: AwareDatetime
    last_seen: AwareDatetime
    channels: dict[str, int]
    segment: str | None
    purchases: int
    journeys: int
    version: int
    is_deleted: bool = False


class MergeNotice(Record):
    """Sent to the absorbed customer's partition of ``<prefix>.valid``: hand its journey
    state to the survivor and forward its later events there. An empty ``survivor`` means
    the customer was erased (GDPR forget): its state is dropped, nothing is handed on."""

    kind: Literal["merge"] = "merge"
    absorbed: str
    survivor: str
    version: int = 0
    """The identity graph's version of the merge."""


class StateHandoff(Record):
    """Sent to the survivor's partition of ``<prefix>.valid``: the absorbed customer's
    journey state, to merge into the survivor's."""

    kind: Literal["handoff"] = "handoff"
    survivor: str
    state: JourneyState


def _kind_of(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", "touchpoints"))
    return str(getattr(value, "kind", "touchpoints"))


ValidMessage = Annotated[
    Annotated[TouchpointBatch, Tag("touchpoints")]
    | Annotated[MergeNotice, Tag("merge")]
    | Annotated[StateHandoff, Tag("handoff")],
    Discriminator(_kind_of),
]
"""A message of ``<prefix>.valid``, told apart by ``kind`` (absent: a touchpoint batch)."""

VALID_MESSAGE: TypeAdapter[TouchpointBatch | MergeNotice | StateHandoff] = TypeAdapter(ValidMessage)


class JourneyChangelog(Record):
    """One message on ``<prefix>.journey-changelog`` (one per journey batch and partition):
    the states changed by the batch. Replayed in order, the messages rebuild a partition."""

    states: dict[str, JourneyState] = Field(default_factory=dict)
    dropped: tuple[str, ...] = ()
    """Customers whose state left the partition (handed off to a survivor)."""
    redirects: dict[str, str] = Field(default_factory=dict)
    """Absorbed customer -> survivor, for events still stamped with the absorbed id."""
    merged: dict[str, int] = Field(default_factory=dict)
    """Absorbed customer -> version of the state merged in (a repeated handoff is skipped)."""


TransitionBatch.model_rebuild()
