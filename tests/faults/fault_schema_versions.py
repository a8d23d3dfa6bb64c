"""Fault 7: mixed schema versions from producers running side by side.

Three producers share the raw topic at once, as during a rollout: the web SDK upgraded to
v2 (``schema_version: 2`` with an added optional top-level field, ``consent``); the other
channels' v1 producers, some of whose events carry an unknown optional field without a
version bump (a v1 minor change the contract allows); and a v3 producer (1 web event in
50) with an incompatible change: ``occurred_at`` renamed ``timestamp``, or only the version
bumped. Oracle: every compatible event stored once, with its version and its added field
kept in ``extra``; every incompatible one dead-lettered ``unsupported_schema_version``;
lost 0; final metric windows equal their recomputation.
"""

from __future__ import annotations

from collections import Counter

import orjson
from clickhouse_connect.driver.client import Client

from pipeline.producers.sim_models import SimEvent
from pipeline.testing.fault_inputs import Body, Size, simulated, with_body
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

CONSENT = {"marketing": True, "analytics": False}


SIZES = {
    "short": Size(500, 4_000, 3, 1, 6.0, 120.0),
    "long": Size(10_000, 100_000, 6, 2, 150.0, 600.0),
}


def _v2(body: Body) -> None:
    body.update(schema_version=2, consent=CONSENT)


def _v1_minor(body: Body) -> None:
    body.update(schema_version=1, sdk_build="2024.11.3")


def _v3_renamed(body: Body) -> None:
    body.update(schema_version=3, timestamp=body.pop("occurred_at"))


def _v3_bumped(body: Body) -> None:
    body.update(schema_version=3)


def versioned(events: list[SimEvent]) -> dict[str, list[SimEvent]]:
    """Each producer's share of ``events``, rewritten to its schema (malformed messages of
    the simulator stay with the v1 producers, as they are)."""
    out: dict[str, list[SimEvent]] = {"v1": [], "v2": [], "v3": []}
    for n, e in enumerate(events):
        if e.malformed is not None or e.channel != "web":
            minor = e.malformed is None and n % 10 == 0
            out["v1"].append(with_body(e, _v1_minor) if minor else e)
        elif n % 50 == 1 and not e.duplicate:
            change = _v3_renamed if n % 100 == 1 else _v3_bumped
            out["v3"].append(with_body(e, change, "unsupported_schema_version"))
        else:
            out["v2"].append(with_body(e, _v2))
    return out


def _incompatible_ids(shares: dict[str, list[SimEvent]]) -> set[str]:
    """Event ids only the v3 producer sent (a duplicate copy may have gone out as v2)."""
    compatible = {e.event_id for k in ("v1", "v2") for e in shares[k] if e.malformed is None}
    return {e.event_id for e in shares["v3"] if e.event_id} - compatible


def run(env: FaultEnv, scale: Scale) -> FaultResult:
    size = SIZES[scale]
    settings = env.settings(partitions=size.partitions)
    shares = versioned(simulated(7, size.customers, size.events))
    events = [e for share in shares.values() for e in share]
    for i in range(size.workers):
        env.start_worker(settings, i, worker_web_port=free_port())
    producers = [SteadyProducer(settings, share, size.produce_seconds) for share in shares.values()]
    for p in producers:
        p.start()
    for p in producers:
        p.finish(size.produce_seconds + 180)
    client = clickhouse(settings)
    drain = wait_drained(client, events, size.drain_timeout)
    delivery = check_delivery(client, events)
    stored = _stored_by_version(client)
    expected = _expected_by_version(shares)
    figures = {
        "events": len(events), **{f"sent {k}": len(v) for k, v in shares.items()},
        "v1 with an unknown field": sum(b"sdk_build" in e.payload for e in shares["v1"]),
        **{f"stored {k}": n for k, n in sorted(stored.items())},
        **delivery.figures(), "drain after last produce (s)": round(drain, 1),
    }  # fmt: skip
    problems = delivery.problems()
    if stored != expected:
        problems.append(f"stored by version and extra field {dict(stored)}, expected {expected}")
    leaked = _leaked(client, _incompatible_ids(shares))
    if leaked:
        problems.append(f"{leaked} incompatible (v3) events were stored")
    problems += check_metrics(client, settings, events)
    return FaultResult("schema-versions", figures, problems)


def _stored_by_version(client: Client) -> Counter[str]:
    q = (
        "SELECT schema_version, JSONHas(extra, 'consent') AND JSONExtractRaw(extra, 'consent') = "
        f"'{orjson.dumps(CONSENT).decode()}', JSONHas(extra, 'sdk_build'), count() "
        "FROM touchpoints FINAL GROUP BY 1, 2, 3"
    )
    rows = client.query(q).result_rows
    return Counter({_label(int(v), bool(c), bool(s)): int(n) for v, c, s, n in rows})


def _label(version: int, consent: bool, sdk_build: bool) -> str:
    return f"v{version}" + (" +consent" if consent else "") + (" +sdk_build" if sdk_build else "")


def _expected_by_version(shares: dict[str, list[SimEvent]]) -> Counter[str]:
    """Unique valid ids per label (the first copy of an id decides; copies are identical)."""
    seen: dict[str, str] = {}
    for key in ("v1", "v2"):
        for e in shares[key]:
            if e.malformed is None and e.event_id is not None:
                minor = b"sdk_build" in e.payload
                seen.setdefault(e.event_id, _label(2 if key == "v2" else 1, key == "v2", minor))
    return Counter(seen.values())


def _leaked(client: Client, ids: set[str]) -> int:
    if not ids:
        return 0
    q = "SELECT count() FROM touchpoints WHERE event_id IN {ids:Array(String)}"
    rows = client.query(q, parameters={"ids": sorted(ids)}).result_rows
    return int(rows[0][0])


FAULT = Fault(7, "schema-versions", "v1, v2 (added field) and v3 (incompatible) side by side", run)
