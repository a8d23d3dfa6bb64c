"""Fault 6: late and out-of-order events, and identity merges arriving before and after the
events they link.

The simulator delivers 5% of events 2-30 minutes late and 15% 1-60 seconds out of order,
with adversarial identities on (shared phones and devices, forwarded and typo'd emails...)
and half its link events (the first event tying two of a customer's identifiers together)
held back 2-30 minutes: the merge lands after the events it links. Another third of the
link events are moved the other way, 2-30 simulated minutes ahead of their place: the merge
lands before events that occurred earlier. Oracle: nothing lost or duplicated, dead
letters exact, and the final metric windows (plus the changes that reached them after they
were final, ``late_events``) equal their recomputation from ``stage_transitions``.
"""

from __future__ import annotations

import random
from datetime import timedelta

from clickhouse_connect.driver.client import Client

from pipeline.producers.adversary import LATE_LINK, LINK, AdversarialMix
from pipeline.producers.sim_models import SimEvent
from pipeline.testing.fault_inputs import Size, simulated
from pipeline.testing.faults import (
    FaultEnv,
    FaultResult,
    SteadyProducer,
    check_delivery,
    check_metrics,
    clickhouse,
    wait_drained,
)
from pipeline.testing.kafka import free_port
from tests.faults.suite import Fault, Scale

RUN = timedelta(hours=2)
"""The simulated span of the run (the simulator's default duration)."""


SIZES = {
    "short": Size(500, 4_000, 3, 1, 6.0, 150.0),
    "long": Size(10_000, 100_000, 6, 2, 150.0, 600.0),
}


def early_links(events: list[SimEvent], seed: int) -> tuple[list[SimEvent], int]:
    """``events`` with a third of the on-time link events delivered 2-30 simulated minutes
    ahead of their place; and how many were moved."""
    rng = random.Random(seed)
    out = list(events)
    moved = 0
    per_minute = len(events) / (RUN.total_seconds() / 60)
    for event in [e for e in events if e.tag == LINK and e.malformed is None and not e.duplicate]:
        if rng.random() >= 1 / 3:
            continue
        i = out.index(event)
        out.insert(max(0, i - int(per_minute * rng.uniform(2, 30))), out.pop(i))
        moved += 1
    return out, moved


def _one(client: Client, sql: str) -> int:
    return int(client.query(sql).result_rows[0][0])


def run(env: FaultEnv, scale: Scale) -> FaultResult:
    size = SIZES[scale]
    settings = env.settings(partitions=size.partitions)
    base = simulated(
        6, size.customers, size.events, late_fraction=0.05, out_of_order_fraction=0.15,
        adversarial=True, adversarial_mix=AdversarialMix(late_link=0.5),
    )  # fmt: skip
    events, moved = early_links(base, seed=6)
    for i in range(size.workers):
        env.start_worker(settings, i, worker_web_port=free_port())
    producer = SteadyProducer(settings, events, size.produce_seconds)
    producer.start()
    producer.finish(size.produce_seconds + 180)
    client = clickhouse(settings)
    drain = wait_drained(client, events, size.drain_timeout)
    delivery = check_delivery(client, events)
    problems = delivery.problems() + check_metrics(client, settings, events)
    figures = {
        "events": len(events),
        "late (2-30 min)": sum(e.delay_seconds >= 120 for e in base),
        "out of order (1-60 s)": sum(0 < e.delay_seconds < 120 for e in base),
        "links": sum(e.tag in (LINK, LATE_LINK) for e in base),
        "links after what they link": sum(e.tag == LATE_LINK for e in base),
        "links moved before": moved,
        "merged-away customers": _one(
            client, "SELECT uniqExact(customer_id) FROM customers WHERE is_deleted = 1"
        ),
        "changes after final (late_events)": _one(client, "SELECT count() FROM late_events"),
        **delivery.figures(),
        "drain after last produce (s)": round(drain, 1),
    }  # fmt: skip
    return FaultResult("late-merges", figures, problems)


FAULT = Fault(
    6, "late-merges", "late, out-of-order events and merges before/after their events", run
)
