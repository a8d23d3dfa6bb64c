"""The broker as a worker sees it: reachable or not, and whether it lost data it had.

The embedded broker (memory storage) comes back empty when it restarts. A worker that goes
on over it holds read positions of records that no longer exist, and faust commits them as
soon as it rejoins the group (the new broker has no committed offset, so any is "newer");
the workers after it would then skip that many new records. So every commit of faust's
consumer is checked first (:func:`guard_commits`): the end offsets of the partitions are
read, and if any went back the commit is refused and the worker fail-stops
(:func:`stop_on_lost_data`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import faust

log = logging.getLogger("touchpoint.health")
BROKER_STALE_AFTER = 30.0
LOST_DATA_EXIT_AFTER = 15.0
"""Seconds a worker that saw the broker lose data stays up, paused and red, before it exits."""
EXIT_BROKER_LOST_DATA = 75
HIGHWATERS_TIMEOUT = 10.0
"""Seconds one end-offsets request may take. aiokafka waits up to its request timeout
(90 s): a worker stopping or rebalancing stalled that long in a commit, still a member of
the group, and held up every worker joining it."""


@dataclass
class BrokerHealth:
    ok_at: float = field(default_factory=time.monotonic)
    error: str = ""
    lost_data: str = ""
    last_highs: dict[Any, int] = field(default_factory=dict)

    def problems(self, now: float) -> list[str]:
        found = []
        if now - self.ok_at > BROKER_STALE_AFTER:
            found.append(f"broker unreachable for {now - self.ok_at:.0f}s: {self.error}")
        if self.lost_data:
            found.append(self.lost_data)
        return found


async def read_highs(
    app: faust.App, health: BrokerHealth, tps: Iterable[Any], within: float = HIGHWATERS_TIMEOUT
) -> dict[Any, int]:
    """One broker round trip: the end offsets of ``tps`` (empty when the broker did not
    answer within ``within`` seconds). End offsets lower than seen before mean the broker
    lost data: fail-stop."""
    tps = sorted(tps)
    try:
        highs = dict(await asyncio.wait_for(app.consumer.highwaters(*tps), within)) if tps else {}
    except TimeoutError:
        health.error = f"end offsets not answered within {within:g}s"
        return {}
    except Exception as exc:  # any broker failure: health goes red after BROKER_STALE_AFTER
        health.error = f"{type(exc).__name__}: {exc}"
        return {}
    health.ok_at, health.error = time.monotonic(), ""
    lost = [
        f"{tp.topic}[{tp.partition}]"
        for tp in tps
        if highs.get(tp, 0) < health.last_highs.get(tp, 0)
    ]
    if lost and not health.lost_data:  # sticky: the records are gone, someone has to look
        health.lost_data = (
            f"broker lost data (restarted?): end offsets went back on {', '.join(lost)}"
        )
        stop_on_lost_data(app, health.lost_data)
    health.last_highs.update(highs)
    return highs


def stop_on_lost_data(app: faust.App, reason: str) -> None:
    """Fail-stop: pause every partition, stay up red for :data:`LOST_DATA_EXIT_AFTER` s (the
    health endpoint and gauge say why), then exit without committing.

    A worker that carries on over an emptied broker holds read positions of records that no
    longer exist; committing them on shutdown or rebalance would make the restarted workers
    skip that many new records. Exiting with no clean-up commits nothing, so the next worker
    starts from what the new broker really holds.
    """
    consumer = app.consumer
    consumer.pause_partitions(consumer.assignment())
    log.critical("%s; paused, exiting in %.0fs without committing (code %d)",
                 reason, LOST_DATA_EXIT_AFTER, EXIT_BROKER_LOST_DATA)  # fmt: skip

    def leave() -> None:
        log.critical("exiting: %s", reason)
        logging.shutdown()
        os._exit(EXIT_BROKER_LOST_DATA)

    asyncio.get_running_loop().call_later(LOST_DATA_EXIT_AFTER, leave)


def guard_commits(app: faust.App, health: BrokerHealth, within: float = HIGHWATERS_TIMEOUT) -> None:
    """Check the broker before each commit of faust's consumer; refuse it once data is lost,
    or when the end offsets could not be read (a new broker may not have the topics yet).
    A refused commit is not lost work: the next one covers the same partitions, and at worst
    a successor replays a little (the sinks' dedup absorbs it)."""
    consumer: Any = app.consumer  # the driver's Consumer: faust has no public hook around
    commit = consumer._commit  # its driver-level commit

    async def checked(offsets: Mapping[Any, int]) -> bool:
        await read_highs(app, health, offsets, within)
        if health.lost_data or health.error:  # unchecked: the next commit covers these
            reason = health.lost_data or f"end offsets unknown: {health.error}"
            log.error("commit of %d partitions refused: %s", len(offsets), reason)
            return False
        return bool(await commit(offsets))

    consumer._commit = checked
