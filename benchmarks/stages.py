"""Benchmark ``stages``: each pure stage of the pipeline alone, on the simulated events, with
no I/O, in the worker's batches of ``batch_max_events`` (2,000), in pipeline order (each
stage is fed the previous stage's output, built untimed), with the garbage collector set as a
worker sets it (``TOUCHPOINT_GC_YOUNG_THRESHOLD``). The baseline is ``orjson.loads``
of the same bytes in the same run. The slowest stage is then profiled (pyinstrument if
installed, else cProfile) and the top of its flat profile saved with the results."""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from benchmarks.common import Figures, Workload
from pipeline.assignment_map import AssignmentMap
from pipeline.dedup import RecentIds
from pipeline.gc_tuning import gc_tuned
from pipeline.identity_graph import IdentityGraph, resolve
from pipeline.ingest import RawMessage, ingest_batch
from pipeline.journey import advance
from pipeline.rows import touchpoint_row
from pipeline.settings import load_settings
from pipeline.stage_model import load_stage_model
from pipeline.stamp import stamp
from pipeline.validate import validate_message
from pipeline.worker_context import validation_config
from schemas.identity import IdentityLink, LinkBatch
from schemas.journey import JourneyState
from schemas.records import SourceRef, Touchpoint, TouchpointBatch

BATCH = 2000
MAX_STAGE_EVENTS = 100_000
PARTITIONS = 6
Work = Callable[[], int]
"""Runs one stage over every batch; returns the number of items it processed."""


def _chunks(items: Sequence[Any], size: int = BATCH) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def build(workload: Workload) -> dict[str, Work]:
    """Each stage as a closure over inputs prepared from the previous stage's output."""
    cfg, model = validation_config(load_settings()), load_stage_model()
    now = datetime.now(UTC)
    ms = int(now.timestamp() * 1000)
    events = workload.events[:MAX_STAGE_EVENTS]
    msgs = [RawMessage("bench.raw", i % PARTITIONS, i // PARTITIONS, e.payload, ms)
            for i, e in enumerate(events)]  # fmt: skip
    srcs = [SourceRef(topic=m.topic, partition=m.partition, offset=m.offset, timestamp=now)
            for m in msgs]  # fmt: skip
    batches = _chunks(msgs)
    ingested = [ingest_batch(b, now, cfg, RecentIds()) for b in batches]
    valid = [[tp for tps in r.valid.values() for tp in tps] for r in ingested]
    stamped = [stamp(v, AssignmentMap(), PARTITIONS) for v in valid]
    links: list[tuple[IdentityLink, ...]] = [s.links for s in stamped]
    by_customer: list[dict[str, list[Touchpoint]]] = []
    for s in stamped:
        groups: dict[str, list[Touchpoint]] = defaultdict(list)
        for tps in s.by_partition.values():
            for tp in tps:
                groups[tp.customer_id].append(tp)
        by_customer.append(groups)
    flat = [tp for s in stamped for tps in s.by_partition.values() for tp in tps]
    encoded = [
        TouchpointBatch(records=tuple(tps), produced_at=now).model_dump_json()
        for s in stamped for tps in s.by_partition.values()
    ]  # fmt: skip

    def json_parse() -> int:
        for m in msgs:
            try:  # noqa: SIM105  (a with-block per message would weigh on the baseline)
                orjson.loads(m.value or b"")
            except orjson.JSONDecodeError:  # the malformed ones
                pass
        return len(msgs)

    def validate() -> int:
        for m, src in zip(msgs, srcs, strict=True):
            validate_message(m.value or b"", src, now, cfg)
        return len(msgs)

    def ingest() -> int:
        window = RecentIds()
        for b in batches:
            ingest_batch(b, now, cfg, window)
        return len(msgs)

    def stamp_stage() -> int:
        amap = AssignmentMap()
        for v in valid:
            stamp(v, amap, PARTITIONS)
        return sum(len(v) for v in valid)

    def resolve_stage() -> int:
        graph = IdentityGraph()
        for ls in links:
            resolve(graph, LinkBatch(links=ls))
        return sum(len(ls) for ls in links)

    def journey() -> int:
        states: dict[str, JourneyState | None] = {}
        for groups in by_customer:
            for customer, tps in groups.items():
                states[customer] = advance(states.get(customer), tps, model).state
        return len(flat)

    def rows() -> int:
        for tp in flat:
            touchpoint_row(tp)
        return len(flat)

    def encode_batches() -> int:
        for s in stamped:
            for tps in s.by_partition.values():
                TouchpointBatch(records=tuple(tps), produced_at=now).model_dump_json()
        return len(flat)

    def decode_batches() -> int:
        for body in encoded:
            TouchpointBatch.model_validate_json(body)
        return len(flat)

    return {
        "json-parse (baseline)": json_parse, "validate": validate, "ingest (validate+dedup)": ingest,
        "stamp": stamp_stage, "resolve (links)": resolve_stage, "journey (advance)": journey,
        "row building": rows, "valid-topic encode": encode_batches,
        "valid-topic decode": decode_batches,
    }  # fmt: skip


def _time(work: Work) -> float:
    started = time.perf_counter()
    count = work()
    return count / (time.perf_counter() - started)


def profile(work: Work, lines: int = 40) -> str:
    """The top of a flat profile of one stage run."""
    try:
        from pyinstrument import Profiler
        from pyinstrument.renderers import ConsoleRenderer
    except ImportError:
        prof = cProfile.Profile()
        prof.runcall(work)
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(lines)
        return "cProfile, by own time:\n" + out.getvalue()
    profiler = Profiler(interval=0.0005)
    profiler.start()
    work()
    profiler.stop()
    assert profiler.last_session is not None
    flat = ConsoleRenderer(unicode=False, color=False, flat=True, time="percent_of_total")
    tree = ConsoleRenderer(unicode=False, color=False, show_all=False)
    top = flat.render(profiler.last_session).splitlines()
    call_tree = tree.render(profiler.last_session).splitlines()
    return "\n".join(["pyinstrument, flat (own time):", *top[: lines + 6], "",
                      "pyinstrument, call tree:", *call_tree[: lines + 6]])  # fmt: skip


def stages(workload: Workload, runs: int, say: Callable[[str], None]) -> tuple[Figures, str]:
    figs = Figures("stages")
    works = build(workload)
    with gc_tuned(load_settings().gc_young_threshold):  # the collector as a worker runs it
        return _measure(figs, works, workload, runs, say)


def _measure(
    figs: Figures, works: dict[str, Work], workload: Workload, runs: int, say: Callable[[str], None]
) -> tuple[Figures, str]:
    n = min(len(workload.events), MAX_STAGE_EVENTS)
    say(f"stages: {n} events, {runs} runs")
    baseline = "json-parse (baseline)"
    per_event: dict[str, list[float]] = defaultdict(list)
    for _ in range(runs):
        rates = {name: _time(work) for name, work in works.items()}
        for name, rate in rates.items():
            fig = figs(name, "items/s")
            fig.add(rate)
            if name != baseline:
                fig.ratio("json-parse", rate / rates[baseline])
        chain = ("ingest (validate+dedup)", "stamp", "resolve (links)", "journey (advance)",
                 "valid-topic encode", "valid-topic decode", "row building")  # fmt: skip
        ceiling = 1 / sum(1 / rates[name] for name in chain)
        figs("pure-stage chain ceiling (1 core)", "events/s").add(ceiling)
        for name in chain:
            per_event[name].append(1e6 / rates[name])
    for name, values in per_event.items():
        figs(f"{name} per item", "us").values.extend(values)
    slowest = min(
        (name for name in works if name != baseline and not name.startswith("ingest")),
        key=lambda name: figs.items[name].to_json()["median"],
    )
    say(f"stages: profiling the slowest, {slowest}")
    return figs, f"slowest stage: {slowest}\n" + profile(works[slowest])
