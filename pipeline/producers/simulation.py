"""The engine: :class:`Simulation` interleaves the journeys by a heap of next-event times,
then delivery displaces, duplicates and breaks some events; :func:`simulate` runs it and
writes the ground truth."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from heapq import heappop, heappush, heapreplace
from itertools import accumulate
from pathlib import Path
from typing import Any

import orjson

from pipeline.producers.adversary import LATE_LINK, LINK, PLACEHOLDER, Adversary
from pipeline.producers.identities import Customer, IdFactory
from pipeline.producers.journey import journey
from pipeline.producers.malformed import MALFORMED_REASONS, MALFORMED_WEIGHTS, corrupt
from pipeline.producers.segments import Draft, SimRandom
from pipeline.producers.sim_models import SimEvent, SimulationConfig, SimulationSummary
from pipeline.producers.truth_file import GroundTruthWriter
from pipeline.producers.truth_ledger import TruthLedger
from pipeline.producers.world import DropModel, World
from schemas.events import IDENTIFIER_TYPES

CALL_CENTER_TZ = timezone(timedelta(hours=-5))
"""The contact-centre platform stamps local time with its offset; the rest stamp UTC."""
SOURCES = {"web": "web-sdk", "chat": "chat-widget", "email": "esp-webhooks", "call_center": "ccaas"}


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
