"""The commit guard's end-offset check is bounded in time and refuses what it cannot check."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from pipeline.broker_watch import BrokerHealth, guard_commits, read_highs


class _Consumer:
    def __init__(self, highs: dict[str, int] | None) -> None:
        self.highs = highs  # None: the broker never answers
        self.committed: list[Mapping[Any, int]] = []

    async def highwaters(self, *tps: str) -> dict[str, int]:
        if self.highs is None:
            await asyncio.sleep(3600)
        return {tp: (self.highs or {})[tp] for tp in tps}

    async def _commit(self, offsets: Mapping[Any, int]) -> bool:
        self.committed.append(offsets)
        return True


def _app(highs: dict[str, int] | None) -> Any:
    return SimpleNamespace(consumer=_Consumer(highs))


def test_end_offsets_are_read_and_remembered() -> None:
    health = BrokerHealth(error="old")
    highs = asyncio.run(read_highs(_app({"a": 5, "b": 7}), health, ["b", "a"]))
    assert highs == {"a": 5, "b": 7}
    assert health.error == ""
    assert health.last_highs == {"a": 5, "b": 7}


def test_a_broker_that_does_not_answer_costs_the_timeout_not_the_request_timeout() -> None:
    health = BrokerHealth()
    started = time.monotonic()
    highs = asyncio.run(read_highs(_app(None), health, ["a"], within=0.05))
    assert highs == {}
    assert health.error == "end offsets not answered within 0.05s"
    assert time.monotonic() - started < 30  # not aiokafka's 90 s request timeout


def test_guarded_commit_goes_through_when_the_end_offsets_are_known() -> None:
    app = _app({"a": 5})
    guard_commits(app, BrokerHealth())
    assert asyncio.run(app.consumer._commit({"a": 3})) is True
    assert app.consumer.committed == [{"a": 3}]


def test_guarded_commit_is_refused_when_the_end_offsets_cannot_be_read() -> None:
    app = _app(None)
    health = BrokerHealth()
    guard_commits(app, health, within=0.05)
    assert asyncio.run(asyncio.wait_for(app.consumer._commit({"a": 3}), 30)) is False
    assert app.consumer.committed == []
    assert health.error == "end offsets not answered within 0.05s"
