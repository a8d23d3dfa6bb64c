"""Fault 4: poison input at 1 in 1,000 among simulated traffic.

The simulator breaks 1 message in 1,000 its own ways (every malformed kind, the ~1 MB
oversized one included); on top, 1 valid event in 1,000 is rewritten into poison, cycling
through the kinds the issue names: not JSON, invalid UTF-8, a 2 MB message, placeholder-only
identifiers, a wrong type, and a valid event that makes a stage raise (the failpoint
``ingest.event=raise~stagebug-`` fires on event ids carrying that marker). Every kind is
injected at least once, however short the run. Oracle: dead letters equal the injected
poison exactly, by reason (the stage bug with ``stage = validate``); good events lost 0;
every worker the same process from start to end, with no traceback in its log; final
metric windows equal their recomputation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from pipeline.producers.sim_models import SimEvent
from pipeline.testing.fault_inputs import (
    CrashWatch,
    Size,
    dead_letters_by,
    pick,
    simulated,
    with_body,
)
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

MARKER = "stagebug-"
TWO_MB = 2 * 1024 * 1024


SIZES = {
    "short": Size(500, 4_000, 3, 1, 6.0, 120.0),
    "long": Size(10_000, 100_000, 6, 2, 150.0, 600.0),
}


def _stage_bug(body: dict[str, object]) -> None:
    body["event_id"] = f"{MARKER}{body['event_id']}"


def _placeholders(body: dict[str, object]) -> None:
    ids = body["identifiers"]
    assert isinstance(ids, dict)
    body["identifiers"] = {k: ("null", "N/A", "undefined")[i % 3] for i, k in enumerate(ids)}


def _blob(body: dict[str, object]) -> None:
    props = body.get("properties") or {}
    assert isinstance(props, dict)
    body["properties"] = {**props, "blob": "x" * TWO_MB}


Poison = Callable[[SimEvent], SimEvent]
POISONS: dict[str, Poison] = {
    "not_json": lambda e: with_body(e, lambda b: None, "not_json", raw=lambda r: r[:-7]),
    "invalid_utf8": lambda e: with_body(
        e, lambda b: None, "invalid_utf8", raw=lambda r: r[:10] + b"\xff\xfe" + r[10:]
    ),
    "2mb": lambda e: with_body(e, _blob, "too_large"),
    "placeholder_ids": lambda e: with_body(e, _placeholders, "placeholder_identifier"),
    "wrong_type": lambda e: with_body(e, lambda b: b.update(event_type=42), "wrong_type"),
    "stage_exception": lambda e: with_body(e, _stage_bug, "stage_error"),
}
"""Each poison kind of the issue and how a valid event is turned into it (with the reason
validation must give it)."""


def poisoned(events: list[SimEvent], seed: int) -> tuple[list[SimEvent], Counter[str]]:
    """``events`` with 1 in 1,000 valid ones (at least one per kind) rewritten into poison."""
    kinds = list(POISONS)
    count = max(len(kinds), len(events) // 1000)
    out = list(events)
    injected: Counter[str] = Counter()
    for n, i in enumerate(pick(events, count, seed)):
        kind = kinds[n % len(kinds)]
        out[i] = POISONS[kind](events[i])
        injected[kind] += 1
    return out, injected


def run(env: FaultEnv, scale: Scale) -> FaultResult:
    size = SIZES[scale]
    settings = env.settings(partitions=size.partitions)
    base = simulated(4, size.customers, size.events, malformed_fraction=0.001)
    events, injected = poisoned(base, seed=4)
    watches = [
        CrashWatch(
            env.start_worker(
                settings, i, worker_web_port=free_port(), failpoints=f"ingest.event=raise~{MARKER}"
            )
        )
        for i in range(size.workers)
    ]
    producer = SteadyProducer(settings, events, size.produce_seconds)
    producer.start()
    producer.finish(size.produce_seconds + 180)
    client = clickhouse(settings)
    drain = wait_drained(client, events, size.drain_timeout)
    delivery = check_delivery(client, events)
    stage_bugs = dead_letters_by(client, f"event_id LIKE '{MARKER}%'")
    expected_bugs = {("stage_error", "validate"): injected["stage_exception"]}
    figures = {
        "events": len(events), "simulator malformed": sum(e.malformed is not None for e in base),
        "injected": sum(injected.values()),
        **{f"injected {k}": n for k, n in sorted(injected.items())},
        **delivery.figures(),
        "stage errors dead-lettered": sum(stage_bugs.values()),
        "worker crashes": sum(w.crashes() for w in watches),
        "worker tracebacks": sum(w.tracebacks() for w in watches),
        "drain after last produce (s)": round(drain, 1),
    }  # fmt: skip
    problems = delivery.problems()
    if stage_bugs != expected_bugs:
        problems.append(f"stage-bug dead letters {stage_bugs}, expected {expected_bugs}")
    for i, watch in enumerate(watches):
        problems += watch.problems(f"worker {i}")
    problems += check_metrics(client, settings, events)
    return FaultResult("poison", figures, problems)


FAULT = Fault(4, "poison", "1 in 1,000 poison messages of every kind, a stage bug among them", run)
