"""``python -m benchmarks``: throughput, freshness, per-stage speed and memory of the
pipeline, each as the median (min, max) of R runs, speeds also as ratios to baselines
measured in the same run. Prints a table and saves JSON (see benchmarks/README.md)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.common import CHILDREN, ROOT, Figures, Workload, machine, make_events

NAMES = ("drain", "memory", "freshness", "metric-freshness", "stages", "queries")
console = Console(stderr=True)
Step = tuple[str, Callable[[], list[Figures]]]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--events", type=int, default=200_000, help="simulated events (200000)")
    p.add_argument("--runs", type=int, default=3, help="repetitions of each figure (3)")
    p.add_argument(
        "--only",
        choices=NAMES,
        action="append",
        help="run only this benchmark (repeatable)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks/results/latest.json",
        help="JSON results path (benchmarks/results/latest.json)",
    )
    p.add_argument(
        "--memory-customers",
        default="100000,1000000",
        help="memory: customer counts at which the worker's RSS is read (100000,1000000)",
    )
    p.add_argument(
        "--workers", default="1,2", help="pipeline worker counts for drain, comma-separated (1,2)"
    )
    p.add_argument(
        "--rates",
        default="2000,5000",
        help="freshness produce rates in events/s, comma-separated (2000,5000)",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=30.0,
        help="freshness: seconds of producing at each rate (30)",
    )
    p.add_argument(
        "--metric-rate", type=int, default=200,
        help="metric-freshness: background events/s while probing (200)",
    )
    p.add_argument(
        "--query-events",
        type=int,
        default=10_000_000,
        help="queries: touchpoints in the database the queries read (10000000)",
    )
    p.add_argument(
        "--query-runs",
        type=int,
        default=10,
        help="queries: timed runs of each query, for p50/p95 (10; at least 3, at most 30 s)",
    )
    p.add_argument(
        "--query-kinds",
        default="baseline,dashboard,grafana,docs",
        help="queries: the kinds of queries to time, comma-separated (all four)",
    )
    p.add_argument(
        "--query-dir",
        type=Path,
        default=None,
        help="queries: keep the generated data here and reuse it on the next run (default: a"
        " temporary directory, removed)",
    )
    return p.parse_args(argv)  # fmt: skip


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def say(text: str) -> None:
    console.log(text)


def table(figures: list[Figures], extra: dict[str, Any]) -> Table:
    t = Table(title=f"touchpoint benchmarks ({extra['events']} events, {extra['runs']} runs)")
    notes = any(fig.note for group in figures for fig in group.items.values())
    columns = ("benchmark", "figure", "median", "min", "max", "unit", "ratios: median (min-max)")
    for col in (*columns, "note") if notes else columns:
        t.add_column(col, justify="right" if col in ("median", "min", "max") else "left")
    for group in figures:
        for fig in group.items.values():
            d = fig.to_json()
            ratios = "; ".join(
                f"/{k} {r['median']:.3g} ({r['min']:.3g}-{r['max']:.3g})"
                for k, r in d["ratios"].items()
            )
            cells = [fig.benchmark, fig.name, _num(d["median"]), _num(d["min"]),
                     _num(d["max"]), fig.unit, ratios]  # fmt: skip
            t.add_row(*cells, *([fig.note] if notes else []))
    return t


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _save(path: Path, figures: list[Figures], extra: dict[str, Any]) -> None:
    out = {**extra, "figures": [f.to_json() for g in figures for f in g.items.values()]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str))


def _steps(args: argparse.Namespace, workload: Workload, extra: dict[str, Any]) -> list[Step]:
    def stages_step() -> list[Figures]:
        from benchmarks.stages import stages

        group, extra["profile"] = stages(workload, args.runs, say)
        return [group]

    def drain_step() -> list[Figures]:
        from benchmarks.drain import drain

        return drain(workload, args.runs, [int(w) for w in args.workers.split(",") if w], say)

    def memory_step() -> list[Figures]:
        from benchmarks.memory import memory

        targets = [int(c) for c in args.memory_customers.split(",") if c]
        return [memory(targets, args.runs, say)]

    def freshness_step() -> list[Figures]:
        from benchmarks.freshness import freshness

        rates = [int(r) for r in args.rates.split(",") if r]
        return [freshness(rates, args.seconds, args.runs, say)]

    def metric_freshness_step() -> list[Figures]:
        from benchmarks.metric_freshness import metric_freshness

        return [metric_freshness(args.metric_rate, args.seconds, args.runs, say)]

    def queries_step() -> list[Figures]:
        from benchmarks.queries import queries

        kinds = tuple(k for k in args.query_kinds.split(",") if k)
        group, extra["queries"] = queries(
            args.query_events, args.query_runs, args.query_dir, say, kinds
        )
        return [group]

    steps = {
        "stages": stages_step, "drain": drain_step, "memory": memory_step,
        "freshness": freshness_step,
        "metric-freshness": metric_freshness_step, "queries": queries_step,
    }  # fmt: skip
    return [(name, steps[name]) for name in NAMES if name in set(args.only or NAMES)]


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    started = time.monotonic()
    figures: list[Figures] = []
    extra: dict[str, Any] = {"events": args.events, "runs": args.runs, "machine_before": machine()}
    errors: dict[str, str] = {}
    code = 0
    try:
        simulated = set(args.only or NAMES) - {"queries", "memory"}  # these make their own data
        say(f"simulating {args.events} events" if simulated else "no simulated events needed")
        workload = make_events(args.events) if simulated else Workload([])
        extra["events"] = len(workload.events)
        extra["valid_unique"], extra["malformed"] = len(workload.valid_ids), workload.malformed
        for name, step in _steps(args, workload, extra):
            try:
                figures.extend(step())
            except Exception as exc:  # one benchmark failing keeps the others' figures
                errors[name] = f"{type(exc).__name__}: {exc}"[:2000]
                say(f"[red]{name} failed[/red]: {errors[name]}")
                CHILDREN.stop_all()
                code = 1
            _save(args.out, figures, {**extra, "errors": errors})
    except KeyboardInterrupt:
        say("interrupted: stopping every process started; saving what was measured")
        code = 130
    finally:
        CHILDREN.stop_all()
    extra["machine_after"] = machine()
    extra["seconds"] = round(time.monotonic() - started, 1)
    _save(args.out, figures, {**extra, "errors": errors})
    rich_out = Console(width=max(150, Console().width))
    rich_out.print(table(figures, extra))
    if "profile" in extra:
        rich_out.print(f"[bold]profile of the slowest stage[/bold]\n{extra['profile']}")
    for name, error in errors.items():
        rich_out.print(f"[red]{name} failed:[/red] {error}")
    rich_out.print(f"load before: {extra['machine_before']['uptime']}")
    rich_out.print(f"load after:  {extra['machine_after']['uptime']}")
    rich_out.print(f"took {extra['seconds']:.0f}s; saved {args.out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
