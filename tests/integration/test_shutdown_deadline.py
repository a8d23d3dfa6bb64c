"""A worker whose clean stop hangs still exits, by the shutdown deadline, with its stacks in
the log; one whose stop goes well exits 0 before it. Real broker, real worker, real chDB."""

from __future__ import annotations

import time
from typing import Any

from pipeline.shutdown_deadline import EXIT_SHUTDOWN_DEADLINE


def _stop(process: Any, within: float) -> tuple[int, float]:
    started = time.monotonic()
    process.popen.terminate()
    code = process.popen.wait(within)
    return code, time.monotonic() - started


def test_a_hung_stop_ends_at_the_deadline_with_its_stacks_logged(
    pipeline_settings: Any, start_worker: Any
) -> None:
    # the failpoint blocks the event loop for 120 s right after the stop began: a real hang
    worker = start_worker(
        pipeline_settings, shutdown_deadline=4, failpoints="worker.stopping=sleep:120"
    )
    code, took = _stop(worker, within=60)
    log = worker.log_tail(200_000)
    assert code == EXIT_SHUTDOWN_DEADLINE, log[-3000:]
    assert 4 <= took < 30, took
    assert "stop did not finish within 4 s" in log
    # where it was stuck: the failpoint's sleep, in the main thread's stack
    stuck = log[log.index("stop did not finish") :]
    assert "failpoints.py" in stuck and "in hit" in stuck, stuck[:3000]


def test_a_clean_stop_exits_0_before_the_deadline(pipeline_settings: Any, start_worker: Any) -> None:
    worker = start_worker(pipeline_settings, shutdown_deadline=20)
    code, took = _stop(worker, within=60)
    log = worker.log_tail(200_000)
    assert code == 0, log[-3000:]
    assert took < 20, took
    assert "the stop has 20 s before it is cut short" in log
    assert "stop did not finish" not in log
