"""The fault suite's short forms (part of the test command): each registered fault at its
``short`` size, on the session's broker and ClickHouse server, or on services of its own when
it stops or restarts them. ``python -m tests.faults`` runs the long forms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.testing.faults import FaultEnv, fresh_env
from tests.faults.suite import Fault, all_faults

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(420)]


@pytest.mark.parametrize("fault", all_faults(), ids=lambda f: f"{f.number}-{f.name}")
def test_fault_short_form(
    fault: Fault, kafka_bootstrap: str, clickhouse_url: str, tmp_path: Path, capsys: Any
) -> None:
    if fault.needs_own_services:
        with fresh_env(tmp_path / "own") as env:
            result = fault.run(env, "short")
    else:
        env = FaultEnv(kafka_bootstrap, clickhouse_url, tmp_path)
        try:
            result = fault.run(env, "short")
        finally:
            env.stop_workers()
    with capsys.disabled():
        print(f"\n{result.summary()}")
    assert result.ok, result.problems
