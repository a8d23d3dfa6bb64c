"""Stage 4 in the pipeline: one partition's batch of ``<prefix>.valid`` messages through the
journey core (pure over the partition's in-memory :class:`PartitionState`, which it mutates).

A partition of ``<prefix>.valid`` owns the journey states of the customers
:func:`~pipeline.stamp.customer_partition` maps to it. Its messages are of three kinds:

* :class:`TouchpointBatch`: events are grouped by customer and each group goes through one
  :func:`~pipeline.journey.advance`. An event stamped with a customer since merged into
  another (a *redirect*) is counted as the survivor's: processed here when the survivor
  lives on this partition, forwarded to the survivor's partition otherwise;
* :class:`MergeNotice` (absorbed, survivor): the absorbed state leaves the partition as a
  :class:`StateHandoff` to the survivor's partition, and a redirect is kept;
* :class:`StateHandoff`: :func:`~pipeline.journey.merge` into the survivor's state; the
  absorbed customer's rows are retracted. A repeated handoff (a replay) is skipped.

Messages are applied one at a time, in offset order, and each change of a state emits its
rows (transitions and journeys) against the state just before it. So a batch's rows depend
on its messages, never on how faust cut them into batches: a replay after a crash (outputs
sent, changelog entry not written) may cut the same messages otherwise and still sends the
rows the lost batch sent, with the same keys and versions; none stays live for good.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field

from pipeline.journey import advance, merge
from pipeline.journey_profile import empty_state, journey_rows, profile_of, retired_rows
from pipeline.journey_states import StateCache
from pipeline.stage_model import StageModel
from pipeline.stamp import customer_partition
from schemas.journey import (
    CustomerProfile,
    JourneyChangelog,
    JourneyRow,
    JourneyState,
    MergeNotice,
    StageTransition,
    StateHandoff,
)
from schemas.records import Touchpoint, TouchpointBatch

ValidMsg = TouchpointBatch | MergeNotice | StateHandoff
MAX_HOPS = 16
"""Redirect chains are flat (the resolver re-emits merges); this only guards against loops."""


@dataclass
class PartitionState:
    """What a worker keeps for one partition of ``<prefix>.valid``."""

    states: MutableMapping[str, JourneyState] = field(default_factory=StateCache)
    """Compact at rest: see :mod:`pipeline.journey_states`."""
    redirects: dict[str, str] = field(default_factory=dict)
    merged: dict[str, int] = field(default_factory=dict)

    def apply(self, entry: JourneyChangelog) -> None:
        """Replay one changelog message."""
        self.states.update(entry.states)
        for customer_id in entry.dropped:
            self.states.pop(customer_id, None)
        self.redirects.update(entry.redirects)
        self.merged.update(entry.merged)

    def current(self, customer_id: str) -> str:
        for _ in range(MAX_HOPS):
            nxt = self.redirects.get(customer_id)
            if nxt is None or nxt == customer_id:
                break
            customer_id = nxt
        return customer_id


@dataclass
class BatchOutput:
    """What one batch of one partition produces."""

    stamped: list[Touchpoint] = field(default_factory=list)
    transitions: list[StageTransition] = field(default_factory=list)
    journeys: list[JourneyRow] = field(default_factory=list)
    customers: list[CustomerProfile] = field(default_factory=list)
    forward: dict[int, list[ValidMsg]] = field(default_factory=lambda: defaultdict(list))
    """Messages for other partitions of ``<prefix>.valid``."""
    changelog: JourneyChangelog = field(default_factory=JourneyChangelog)
    duplicates: int = 0
    too_late: int = 0


class _Batch:
    """The working set of one batch: pending events, customers touched, changes."""

    def __init__(self, part: PartitionState, partition: int, partitions: int, model: StageModel):
        self.part, self.partition, self.partitions, self.model = part, partition, partitions, model
        self.out = BatchOutput()
        self.pending: dict[str, list[Touchpoint]] = defaultdict(list)
        self.touched: dict[str, None] = {}
        """Customers whose state the batch read or changed, in first-touch order."""
        self.dropped: set[str] = set()
        self.redirects: dict[str, str] = {}
        self.merged: dict[str, int] = {}

    def home(self, customer_id: str) -> int:
        return customer_partition(customer_id, self.partitions)

    def touchpoints(self, batch: TouchpointBatch) -> None:
        forward: dict[int, list[Touchpoint]] = defaultdict(list)
        for tp in batch.records:
            if not tp.customer_id:
                self.out.stamped.append(tp)  # not stitched: nothing to place it in
                continue
            customer = self.part.current(tp.customer_id)
            if customer != tp.customer_id:  # redirected: the survivor's event, by its id
                tp = tp.model_copy(update={"customer_id": customer})
            if self.home(customer) == self.partition:
                self.pending[customer].append(tp)
            else:
                forward[self.home(customer)].append(tp)
        for target, records in forward.items():
            self.out.forward[target].append(TouchpointBatch(records=tuple(records)))
        self.flush()  # one message at a time: see the module docstring

    def flush(self) -> None:
        for customer, events in self.pending.items():
            old = self._touch(customer)
            step = advance(old, events, self.model)
            self.out.stamped += step.stamped
            self.out.transitions += step.transitions
            self.out.duplicates += step.duplicates
            self.out.too_late += step.too_late
            if step.state is not None and step.state is not old:
                self.part.states[customer] = step.state
                self.out.journeys += journey_rows(old, step.state, self.model)
        self.pending.clear()

    def notice(self, msg: MergeNotice) -> None:
        self.flush()
        if not msg.survivor:  # GDPR erasure: the state goes, nothing is handed on
            self._touch(msg.absorbed)
            self.part.states.pop(msg.absorbed, None)
            self.dropped.add(msg.absorbed)
            return
        if msg.absorbed == msg.survivor:
            return
        survivor = self.part.current(msg.survivor)
        self.part.redirects[msg.absorbed] = self.redirects[msg.absorbed] = survivor
        state = self.part.states.pop(msg.absorbed, None)
        if state is None:
            return
        self._touch(msg.absorbed)
        self.dropped.add(msg.absorbed)
        self.handoff(StateHandoff(survivor=survivor, state=state))

    def handoff(self, msg: StateHandoff) -> None:
        self.flush()
        survivor, absorbed = self.part.current(msg.survivor), msg.state
        if self.home(survivor) != self.partition:
            self.out.forward[self.home(survivor)].append(
                StateHandoff(survivor=survivor, state=absorbed)
            )
            return
        if self.part.merged.get(absorbed.customer_id, -1) >= absorbed.version:
            return  # this state was merged in already (a replayed handoff)
        old = self._touch(survivor)
        step = merge(old or empty_state(survivor, absorbed), absorbed, survivor, self.model)
        self.part.states[survivor] = step.state
        self.out.journeys += journey_rows(old, step.state, self.model)
        self.part.merged[absorbed.customer_id] = self.merged[absorbed.customer_id] = (
            absorbed.version
        )
        self.out.transitions += step.transitions + step.retractions
        rows, profile = retired_rows(absorbed, step.state.version, self.model)
        self.out.journeys += rows
        self.out.customers.append(profile)

    def _touch(self, customer_id: str) -> JourneyState | None:
        state = self.part.states.get(customer_id)
        self.touched[customer_id] = None
        return state

    def finish(self) -> BatchOutput:
        self.flush()
        changed: dict[str, JourneyState] = {}
        for customer in self.touched:
            state = self.part.states.get(customer)
            if state is None:
                continue
            changed[customer] = state
            self.dropped.discard(customer)
            self.out.customers.append(profile_of(state))
        self.out.changelog = JourneyChangelog(
            states=changed,
            dropped=tuple(sorted(self.dropped)),
            redirects=self.redirects,
            merged=self.merged,
        )
        return self.out


def run_batch(
    part: PartitionState,
    partition: int,
    partitions: int,
    messages: Sequence[ValidMsg],
    model: StageModel,
) -> BatchOutput:
    """Apply one partition's messages, in offset order, to ``part`` (mutated)."""
    batch = _Batch(part, partition, partitions, model)
    for msg in messages:
        if isinstance(msg, TouchpointBatch):
            batch.touchpoints(msg)
        elif isinstance(msg, MergeNotice):
            batch.notice(msg)
        else:
            batch.handoff(msg)
    return batch.finish()


def is_empty(entry: JourneyChangelog) -> bool:
    return not (entry.states or entry.dropped or entry.redirects or entry.merged)
