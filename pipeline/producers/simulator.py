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

from pipeline.producers.adversary import (
    AdversarialMix as AdversarialMix,
)
from pipeline.producers.segments import (
    DROP_OFF_CAUSES as DROP_OFF_CAUSES,
)
from pipeline.producers.sim_models import (
    EVENT_CHANNELS as EVENT_CHANNELS,
)
from pipeline.producers.sim_models import (
    Conversion as Conversion,
)
from pipeline.producers.sim_models import (
    Incident as Incident,
)
from pipeline.producers.sim_models import (
    SimEvent as SimEvent,
)
from pipeline.producers.sim_models import (
    SimulationConfig as SimulationConfig,
)
from pipeline.producers.sim_models import (
    SimulationSummary as SimulationSummary,
)
from pipeline.producers.simulation import (
    CALL_CENTER_TZ as CALL_CENTER_TZ,
)
from pipeline.producers.simulation import (
    DUP_DELAY as DUP_DELAY,
)
from pipeline.producers.simulation import (
    LATE_DELAY as LATE_DELAY,
)
from pipeline.producers.simulation import (
    OUT_OF_ORDER_DELAY as OUT_OF_ORDER_DELAY,
)
from pipeline.producers.simulation import (
    SOURCES as SOURCES,
)
from pipeline.producers.simulation import (
    Entry as Entry,
)
from pipeline.producers.simulation import (
    Simulation as Simulation,
)
from pipeline.producers.simulation import (
    customer_count as customer_count,
)
from pipeline.producers.simulation import (
    simulate as simulate,
)
from pipeline.producers.world import (
    SHARED_PHONE_USE as SHARED_PHONE_USE,
)
from pipeline.producers.world import (
    DropModel as DropModel,
)
from pipeline.producers.world import (
    World as World,
)

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
