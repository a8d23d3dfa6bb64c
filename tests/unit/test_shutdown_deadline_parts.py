"""The shutdown deadline's parts that need no process to exit."""

from __future__ import annotations

import asyncio
import re

from pipeline.shutdown_deadline import ShutdownDeadline, stacks


def test_no_deadline_arms_no_timer() -> None:
    deadline = ShutdownDeadline(0)
    deadline.arm()
    assert deadline._timer is None


def test_arming_twice_keeps_one_timer() -> None:
    deadline = ShutdownDeadline(3600)
    deadline.arm()
    first = deadline._timer
    deadline.arm()
    assert deadline._timer is first and first is not None and first.daemon
    first.cancel()


def test_stacks_name_the_threads_and_the_pending_tasks() -> None:
    async def parked_here() -> None:
        await asyncio.sleep(3600)

    async def main() -> str:
        task = asyncio.create_task(parked_here())
        await asyncio.sleep(0)
        text = stacks(asyncio.get_running_loop())
        task.cancel()
        return text

    text = asyncio.run(main())
    assert re.search(r'test_shutdown_deadline_parts.py", line \d+ in main', text)  # faulthandler
    assert "parked_here" in text  # the pending task's coroutine
