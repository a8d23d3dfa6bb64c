"""``python -m tests.faults``: the long fault suite. Each fault runs on a fresh embedded
broker and ClickHouse server, with minutes of simulated traffic; one table (and JSON) at the
end with every figure and whether the oracle held (nothing lost, nothing duplicated after
FINAL, dead letters exact, metrics equal their recomputation)."""

from __future__ import annotations

import argparse
import json
import shutil
import time
import traceback
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipeline.testing.faults import FaultResult, fresh_env
from tests.faults.suite import Scale, all_faults

console = Console(stderr=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    names = [f.name for f in all_faults()]
    p = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    p.add_argument(
        "--only", action="append", choices=names, help="run only this fault (repeatable)"
    )
    p.add_argument(
        "--scale",
        choices=("long", "short"),
        default="long",
        help="long (default) or short: the pytest sizes",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("test-output/faults.json"),
        help="JSON results (test-output/faults.json)",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=Path("test-output/faults"),
        help="each fault's data and worker logs, emptied per fault (test-output/faults)",
    )
    return p.parse_args(argv)  # fmt: skip


def run_one(fault_run: object, name: str, scale: Scale, tmp: Path) -> FaultResult:
    started = time.monotonic()
    try:
        with fresh_env(tmp / name) as env:
            result: FaultResult = fault_run(env, scale)  # type: ignore[operator]
    except Exception as exc:  # a crashed fault is a failed row, the suite goes on
        traceback.print_exc()
        result = FaultResult(name, problems=[f"{type(exc).__name__}: {exc}"[:300]])
    result.figures["seconds"] = round(time.monotonic() - started, 1)
    return result


def table(results: list[tuple[int, FaultResult]], scale: str) -> Table:
    t = Table(title=f"touchpoint fault suite ({scale})", show_lines=True)
    for col in ("#", "fault", "oracle", "figures", "problems"):
        t.add_column(col)
    for number, r in results:
        figs = "\n".join(f"{k}: {v}" for k, v in r.figures.items())
        t.add_row(str(number), r.fault, "held" if r.ok else "FAILED", figs, "\n".join(r.problems))
    return t


def save(path: Path, results: list[tuple[int, FaultResult]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {"number": n, "fault": r.fault, "ok": r.ok, "figures": r.figures, "problems": r.problems}
        for n, r in results
    ]
    path.write_text(json.dumps(rows, indent=2))


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    chosen = [f for f in all_faults() if not args.only or f.name in args.only]
    results: list[tuple[int, FaultResult]] = []
    work = args.work_dir.resolve()  # kept after the run: the workers' logs explain a failure
    for fault in chosen:
        shutil.rmtree(work / fault.name, ignore_errors=True)
        console.log(f"fault {fault.number} {fault.name}: {fault.description}")
        result = run_one(fault.run, fault.name, args.scale, work)
        console.log(result.summary())
        results.append((fault.number, result))
        save(args.out, results)
    Console().print(table(results, args.scale))
    console.log(f"saved {args.out}; logs under {work}")
    return 0 if all(r.ok for _, r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
