"""A deadline on a worker's clean stop: a stop that hangs ends anyway, with its stacks logged.

On SIGTERM (or SIGINT) faust stops its services one by one, commits, leaves the consumer
group and closes the event loop. Rarely, and so far only under heavy load with a rebalance
in flight, that sequence never finishes: the process stays up, holds its partitions until
its session times out, and an orchestrator has to SIGKILL it blind.

When the app starts stopping, :func:`arm` starts a daemon timer. If the process is still
alive ``seconds`` later, the timer logs every thread's stack and every asyncio task's stack
(where the stop is stuck: the evidence to fix it), then exits with
:data:`EXIT_SHUTDOWN_DEADLINE` without any further clean-up. That loses nothing: offsets are
committed only after ClickHouse stored the rows they cover, so what the worker had not
committed yet is read again by whoever takes its partitions (at-least-once; the sinks'
insert tokens and ReplacingMergeTree absorb the repeat), exactly as after a SIGKILL.
"""

from __future__ import annotations

import asyncio
import faulthandler
import io
import logging
import os
import tempfile
import threading
from typing import Any

import faust

from pipeline import failpoints

log = logging.getLogger("touchpoint.worker")

EXIT_SHUTDOWN_DEADLINE = 76
"""Exit code of a worker whose clean stop did not finish within the deadline."""


class ShutdownDeadline:
    """One timer per process; :meth:`arm` again is a no-op."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.loop: asyncio.AbstractEventLoop | None = None
        self._timer: threading.Timer | None = None

    def arm(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if self._timer is not None or self.seconds <= 0:
            return
        self.loop = loop
        self._timer = threading.Timer(self.seconds, self.expire)
        self._timer.daemon = True  # it must never itself keep the process alive
        self._timer.name = "shutdown-deadline"
        self._timer.start()
        log.info("stopping: the stop has %.0f s before it is cut short", self.seconds)

    def expire(self) -> None:
        """The stop did not finish: log where it is stuck, then exit at once."""
        log.critical(
            "stop did not finish within %.0f s; exiting with code %d without further "
            "clean-up (nothing is lost: uncommitted batches are replayed). Stacks:\n%s",
            self.seconds, EXIT_SHUTDOWN_DEADLINE, stacks(self.loop),
        )  # fmt: skip
        logging.shutdown()
        os._exit(EXIT_SHUTDOWN_DEADLINE)


def stacks(loop: asyncio.AbstractEventLoop | None) -> str:
    """Every thread's Python stack, then every pending asyncio task's (best effort: the
    loop belongs to another thread, which may be the one that is stuck)."""
    out = io.StringIO()
    out.write(thread_stacks())
    if loop is not None:
        try:
            tasks = list(asyncio.all_tasks(loop))
        except RuntimeError as exc:  # the set changed while it was read: say so, go on
            out.write(f"\n(asyncio tasks not readable: {exc})\n")
            tasks = []
        for task in tasks:
            out.write(f"\n--- {task!r}\n")
            task.print_stack(limit=12, file=out)
    return out.getvalue()


def thread_stacks() -> str:
    """faulthandler's dump of all threads (it needs a real file, not a StringIO)."""
    try:
        with tempfile.TemporaryFile("w+") as dump:
            faulthandler.dump_traceback(dump, all_threads=True)
            dump.seek(0)
            return dump.read()
    except OSError as exc:
        return f"(thread stacks not readable: {exc})\n"


def install(app: faust.App, seconds: float) -> ShutdownDeadline:
    """Arm the deadline when the app starts stopping (faust's ``on_before_shutdown``)."""
    deadline = ShutdownDeadline(seconds)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # faust types receivers narrower than it calls them
    async def arm_deadline(sender: Any, *args: Any, **kwargs: Any) -> None:
        deadline.arm(asyncio.get_running_loop())
        failpoints.hit("worker.stopping")  # the fault suite hangs a stop here (sleep:<s>)

    return deadline
