"""The journey simulator: realistic multi-channel customer journeys as contract events.

Pure generation, deterministic for a seed (``random.Random`` streams derived from it, never
the global one, never the wall clock: the simulated start is part of the config)::

    config = SimulationConfig(seed=7, start=datetime(2024, 5, 1, tzinfo=UTC), customers=2000)
    for event in simulate(config, truth_path=Path("truth.jsonl")):
        producer.send(topic, event.payload, key=event.key)

Customers arrive over the run (sorted uniform arrival times, drawn lazily) and each walks
awareness -> consideration -> purchase -> retention -> advocacy
(:func:`pipeline.producers.personas.journey`), dropping off on the way. Journeys are
interleaved by a heap of next-event times, so memory holds the active customers and the
events still in flight, never the whole run. Delivery then displaces some events (out of
order by seconds, late by minutes), re-emits some (duplicates: same event id, same bytes)
and breaks some (malformed, each with the dead-letter reason validation will give it).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from heapq import heappop, heappush, heapreplace
from itertools import accumulate
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.producers.adversarial import (
    HOUSEHOLD,
    LATE_LINK,
    LINK,
    MALFORMED_REASONS,
    MALFORMED_WEIGHTS,
    PLACEHOLDER,
    SHARED_DEVICE,
    SWITCHBOARD,
    TYPO,
    AdversarialMix,
    Adversary,
    GroundTruthWriter,
    MalformedKind,
    TruthLedger,
    corrupt,
)
from pipeline.producers.personas import (
    DROP_OFF_CAUSES,
    MAX_DROPOFF,
    Customer,
    Draft,
    IdFactory,
    SimRandom,
    Stage,
    journey,
    pick_channel,
)
from schemas.events import IDENTIFIER_TYPES
from schemas.properties import CATALOGUE
from schemas.records import DeadLetterReason

__all__ = [
    "DROP_OFF_CAUSES",
    "AdversarialMix",
    "Conversion",
    "Incident",
    "SimEvent",
    "Simulation",
    "SimulationConfig",
    "SimulationSummary",
    "simulate",
]

EVENT_CHANNELS = {kind: channel for channel, kinds in CATALOGUE.items() for kind in kinds}
"""The channel of every catalogued event type (each type belongs to exactly one channel)."""
CALL_CENTER_TZ = timezone(timedelta(hours=-5))
"""The contact-centre platform stamps local time with its offset; the rest stamp UTC."""
SOURCES = {"web": "web-sdk", "chat": "chat-widget", "email": "esp-webhooks", "call_center": "ccaas"}
SHARED_PHONE_USE = {SWITCHBOARD: 0.85, HOUSEHOLD: 0.5}
"""How often a customer with a shared phone calls from it rather than their own."""
LATE_DELAY = (120.0, 1800.0)
"""Seconds a late event is delivered after it occurred."""
OUT_OF_ORDER_DELAY = (1.0, 60.0)
DUP_DELAY = (0.05, 120.0)
"""Seconds a duplicate copy follows its original."""
_KEEPS_EVENT_ID = frozenset(
    {"missing_field", "wrong_type", "placeholder_only", "naive_timestamp", "unknown_channel",
     "future_timestamp", "schema_too_new"}
)  # fmt: skip
"""Malformed kinds that still parse as a JSON object, so validation reads their event_id."""


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


# --- shared services of the journeys ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DropModel:
    """Drop-off probability per stage, raised by the customer's pains and by incidents."""

    base: dict[str, float]
    """Drop-off probability at each stage."""
    incidents: tuple[tuple[str, float, float, float], ...] = ()
    """(stage, start second, end second, multiplier)."""

    @classmethod
    def of(cls, config: SimulationConfig) -> DropModel:
        base = {stage: 1.0 - p for stage, p in config.conversion.model_dump().items()}
        incidents = tuple(
            (i.stage, i.start_minute * 60, i.end_minute * 60, i.dropoff_multiplier)
            for i in config.incidents
        )
        return cls(base, incidents)

    def probability(self, stage: str, t: float, pains: set[str]) -> float:
        p = self.base.get(stage, 0.0)
        for pain in pains:
            p *= DROP_OFF_CAUSES[pain].multiplier
        for inc_stage, start, end, multiplier in self.incidents:
            if inc_stage == stage and start <= t < end:
                p *= multiplier
        return min(p, MAX_DROPOFF)


class World:
    """What every journey shares: randomness, identifiers, truth, adversary, drop-off."""

    def __init__(
        self,
        rng: random.Random,
        ids: IdFactory,
        ledger: TruthLedger,
        adversary: Adversary,
        drops: DropModel,
        mean_gap: float,
    ) -> None:
        self.rng, self.ids, self.ledger, self.adversary = rng, ids, ledger, adversary
        self.drops = drops
        self._gap_rate = 1.0 / mean_gap
        self._serial = 0

    def admit(self, c: Customer) -> None:
        """Register a newly arrived customer and everything it holds."""
        self.adversary.equip(c)
        self.ledger.start(c.idx, c.segment.name, c.t)
        for id_type, value in c.identifiers():
            self.ledger.own(id_type, value, c.idx, c.special.get(value))

    def new_id(self, c: Customer, id_type: str) -> str:
        value: str = getattr(self.ids, id_type)()
        self.ledger.own(id_type, value, c.idx)
        return value

    def serial(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}{self._serial:07x}"

    def gap(self, c: Customer) -> None:
        c.t += max(20.0, self.rng.expovariate(self._gap_rate))

    def click(
        self, c: Customer, channel: str, event_type: str, ids: dict[str, str],
        props: dict[str, Any], tag: str | None = None,
    ) -> Draft:  # fmt: skip
        """The customer's next event, a few seconds to a minute after the last."""
        c.t += 3.0 + 72.0 * self.rng.random()
        return _tuple_new(Draft, (c.t, channel, event_type, ids, props, c.idx, tag))

    def channel(self, c: Customer, stage: Stage) -> str:
        return pick_channel(self.rng, c.segment, stage)

    def ev(
        self, c: Customer, dt: float, channel: str, event_type: str, ids: dict[str, str],
        props: dict[str, Any], tag: str | None = None, who: int | None = None,
    ) -> Draft:  # fmt: skip
        c.t += dt
        who = c.idx if who is None else who
        return _tuple_new(Draft, (c.t, channel, event_type, ids, props, who, tag))

    def cookie(self, c: Customer) -> tuple[str, str | None]:
        """The cookie of a new web session: the shared device's or the customer's own."""
        if c.shared_cookie is not None and self.rng.random() < 0.5:
            return c.shared_cookie, SHARED_DEVICE
        c.cookie_left -= 1
        if c.cookie_left < 0:
            c.cookie = self.new_id(c, "anonymous_id")
            c.cookie_left = self.rng.randint(1, 4)
        return c.cookie, None

    def caller(self, c: Customer) -> tuple[str, str | None]:
        """The number a call comes from, as the phone system shows it, and its tag."""
        phone = c.shared_phone
        if phone is None or self.rng.random() >= SHARED_PHONE_USE[c.special[phone]]:
            phone = c.phones[0] if len(c.phones) == 1 else self.rng.choice(c.phones)
        return self.show_phone(phone), c.special.get(phone)

    def mailbox(self, c: Customer) -> tuple[str, str | None]:
        """The address a marketing email goes to, and its tag."""
        if c.typo_email is not None and self.rng.random() < 0.5:
            return c.typo_email, TYPO
        first = len(c.emails) == 1 or self.rng.random() < 0.6
        return self.show_email(c.emails[0] if first else self.rng.choice(c.emails)), None

    def show_phone(self, phone: str) -> str:
        r = self.rng.random()
        if r >= 0.2:
            return phone
        sep = f"({phone[2:5]}) " if r < 0.12 else f"{phone[2:5]}-"
        shown = f"{sep}{phone[5:8]}-{phone[8:]}"
        self.ledger.alias(shown, phone)
        return shown

    def show_email(self, email: str) -> str:
        if self.rng.random() >= 0.08:
            return email
        shown = email.capitalize()
        self.ledger.alias(shown, email)
        return shown

    def advances(self, c: Customer, stage: Stage) -> bool:
        """Whether ``c`` goes on past ``stage``; if not, the journey ends here."""
        if self.rng.random() >= self.drops.probability(stage, c.t, c.pains):
            return True
        self.end(c, "dropped", tuple(sorted(c.pains)))
        return False

    def end(self, c: Customer, outcome: str, causes: tuple[str, ...] = ()) -> None:
        self.ledger.finish(c.idx, outcome, c.t, causes)
        self.adversary.retire(c)


# --- the engine ------------------------------------------------------------------------------
_tuple_new = tuple.__new__
"""Builds a NamedTuple from a tuple of its fields, skipping the Python-level ``__new__``."""


def _key(ids: dict[str, str]) -> bytes | None:
    for kind in IDENTIFIER_TYPES:
        value = ids.get(kind)
        if value:
            return value.encode()
    return None


Entry = tuple[float, int, Draft, Iterator[Draft]]
"""A heap entry: next event time, customer, that event, the rest of the journey."""


class Simulation:
    """One run. Iterate :meth:`events` once; :attr:`summary` and :attr:`truth` fill as it goes."""

    def __init__(self, config: SimulationConfig, *, track_truth: bool = True) -> None:
        self.config = config
        self.summary = SimulationSummary()
        self.truth = TruthLedger(track_truth)
        seed = config.seed
        self._rng = SimRandom(seed)
        self._net = SimRandom(f"{seed}/delivery")
        self._arrival_rng = SimRandom(f"{seed}/arrivals")
        self._ids = IdFactory(self._rng.getrandbits(32))
        mix = config.adversarial_mix if config.adversarial else None
        self.adversary = Adversary(mix, SimRandom(f"{seed}/adversary"), self._ids)
        gap = config.mean_session_gap.total_seconds()
        drops = DropModel.of(config)
        self._world = World(self._rng, self._ids, self.truth, self.adversary, drops, gap)
        self._epoch = config.start.timestamp()
        self._end = config.duration.total_seconds()
        self._adversarial = mix is not None
        self._late_link = mix.late_link if mix else 0.0
        self._displaced = config.late_fraction + config.out_of_order_fraction
        self._duplicated = config.duplicate_fraction
        self._broken_share = config.malformed_fraction
        self._kinds = config.malformed_kinds
        self._kind_cum = list(accumulate(MALFORMED_WEIGHTS[k] for k in self._kinds))
        self._pending: list[tuple[float, int, SimEvent]] = []
        self._counts = self.summary.counts
        self._held = 0
        self._by_ids: dict[int, tuple[dict[str, str], bytes | None, list[int]]] = {}
        """id(ids) -> (ids, key, customers it was observed for): a session's events share
        one identifiers dict, so its key and identity links are worked out once."""

    def events(self) -> Iterator[SimEvent]:
        """The messages in delivery order, until the run's end or the event budget."""
        heap: list[Entry] = []
        pending, emit, end = self._pending, self._emit, self._end
        arrivals = self._arrival_times()
        arrival = next(arrivals, None)
        budget = self.config.max_events or -1
        while budget:
            if arrival is not None and (not heap or arrival <= heap[0][0]):
                self._admit(heap, arrival)
                arrival = next(arrivals, None)
                continue
            if not heap or heap[0][0] >= end:
                break
            t, seq, draft, gen = heap[0]
            following = next(gen, None)
            if following is None:
                heappop(heap)
            else:
                heapreplace(heap, (following.t, seq, following, gen))
            budget -= 1
            while pending and pending[0][0] <= t:
                yield heappop(pending)[2]
            event = emit(draft)
            if event is not None:
                yield event
        while pending:
            yield heappop(pending)[2]

    def _arrival_times(self) -> Iterator[float]:
        """Sorted uniform arrival times over the run, drawn one at a time (no list)."""
        rng, u = self._arrival_rng, 0.0
        for left in range(customer_count(self.config), 0, -1):
            u = 1.0 - (1.0 - u) * rng.random() ** (1.0 / left)
            yield u * self._end

    def _admit(self, heap: list[Entry], t: float) -> None:
        idx = self.summary.customers
        self.summary.customers += 1
        customer = Customer(idx, t, self._rng, self._ids)
        self._world.admit(customer)
        gen = journey(customer, self._world)
        first = next(gen, None)
        if first is not None:
            heappush(heap, (first.t, idx, first, gen))

    def _emit(self, draft: Draft) -> SimEvent | None:
        """The message of ``draft`` to deliver now, or None when it is held in flight; a
        duplicate copy, if any, is held too."""
        net = self._net
        r = net.random()
        if r < self._displaced or (self._late_link and draft.tag == LINK):
            delay, tag = self._delay(draft, r)
        else:
            delay, tag = 0.0, draft.tag
        event = self._build(draft, tag)
        if net.random() < self._duplicated:
            self.summary.duplicates += 1
            self._hold(event._replace(duplicate=True), draft.t + delay + net.uniform(*DUP_DELAY))
        if delay:
            self._hold(event, draft.t + delay)
            return None
        return event

    def _delay(self, draft: Draft, r: float) -> tuple[float, str | None]:
        """Seconds the event is delivered after it occurred, and its tag."""
        net, cfg = self._net, self.config
        if draft.tag == LINK and self._late_link and net.random() < self._late_link:
            self.summary.late += 1
            return net.uniform(*LATE_DELAY), LATE_LINK
        if r < cfg.late_fraction:
            self.summary.late += 1
            return net.uniform(*LATE_DELAY), draft.tag
        if r < self._displaced:
            self.summary.out_of_order += 1
            return net.uniform(*OUT_OF_ORDER_DELAY), draft.tag
        return 0.0, draft.tag

    def _hold(self, event: SimEvent, at: float) -> None:
        held = event._replace(delivered_at=datetime.fromtimestamp(self._epoch + at, UTC))
        self._held += 1
        heappush(self._pending, (at, self._held, held))

    def _build(self, d: Draft, tag: str | None) -> SimEvent:
        at = datetime.fromtimestamp(self._epoch + d.t, UTC)
        ids, shown = d.ids, None
        if self._adversarial:
            shown = self.adversary.decorate(ids)
            tag = tag or (PLACEHOLDER if shown is not None else None)
        event_id = f"{self._net.getrandbits(128):032x}"
        body: dict[str, Any] = {
            "event_id": event_id,
            "occurred_at": at.astimezone(CALL_CENTER_TZ) if d.channel == "call_center" else at,
            "channel": d.channel,
            "event_type": d.event_type,
            "identifiers": shown or ids,
            "properties": d.props,
            "schema_version": 1,
            "source": SOURCES[d.channel],
        }
        counts = self._counts
        counts[d.event_type] = counts.get(d.event_type, 0) + 1
        if tag is not None:
            self.summary.tags[tag] += 1
        known = self._by_ids.get(id(ids))
        if known is None or known[0] is not ids:
            known = self._remember(ids)
        if self._net.random() < self._broken_share:
            return self._broken(d, body, at, tag, known[1])
        if d.who not in known[2]:
            known[2].append(d.who)
            self.truth.observe(d.who, ids)
        payload = orjson.dumps(body, option=orjson.OPT_UTC_Z)
        fields = (payload, known[1], event_id, d.who, None, None, False, at, at, d.channel,
                  d.event_type, tag)  # fmt: skip
        return _tuple_new(SimEvent, fields)

    def _remember(self, ids: dict[str, str]) -> tuple[dict[str, str], bytes | None, list[int]]:
        if len(self._by_ids) >= 65_536:
            self._by_ids.clear()
        known = self._by_ids[id(ids)] = (ids, _key(ids), [])
        return known

    def _broken(
        self, d: Draft, body: dict[str, Any], at: datetime, tag: str | None, key: bytes | None
    ) -> SimEvent:
        kind = self._net.choices(self._kinds, cum_weights=self._kind_cum)[0]
        self.summary.malformed[kind] += 1
        event_id = body["event_id"] if kind in _KEEPS_EVENT_ID else None
        key = None if kind == "placeholder_only" else key
        return SimEvent(corrupt(kind, body, self._net), key, event_id, d.who,
                        MALFORMED_REASONS[kind], kind, False, at, at, d.channel, d.event_type, tag)  # fmt: skip


def customer_count(config: SimulationConfig) -> int:
    """Customers of a run: ``customers``, or as many as ``events_per_second`` needs, from
    the mean events per customer of a small pilot run with the same journey settings."""
    if config.events_per_second is None:
        return config.customers
    pilot_customers = 400
    pilot = config.model_copy(
        update={"events_per_second": None, "customers": pilot_customers, "max_events": None,
                "duration": timedelta(days=30), "incidents": ()}
    )  # fmt: skip
    run = Simulation(pilot, track_truth=False)
    for _ in run.events():
        pass
    per_customer = run.summary.events / pilot_customers
    return max(1, round(config.events_per_second * config.duration.total_seconds() / per_customer))


def simulate(
    config: SimulationConfig, truth_path: Path | None = None
) -> Generator[SimEvent, None, None]:
    """The run's messages in delivery order; with ``truth_path``, its ground truth is written
    there as the events pass (completed when the iteration ends or is closed)."""
    sim = Simulation(config, track_truth=truth_path is not None)
    if truth_path is None:
        yield from sim.events()
        return
    with GroundTruthWriter(truth_path, sim) as writer:
        for event in sim.events():
            writer.add(event)
            yield event
