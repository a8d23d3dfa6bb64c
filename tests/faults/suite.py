"""The fault registry: every ``tests/faults/fault_*.py`` module defines ``FAULT``, a
:class:`Fault` with its number, name, one-line description and ``run(env, scale)``.

``scale`` is ``"short"`` (the pytest form, part of the test command, tens of seconds) or
``"long"`` (``python -m tests.faults``: minutes, more events, more partitions and workers).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.testing.faults import FaultEnv, FaultResult

Scale = Literal["short", "long"]


@dataclass(frozen=True)
class Fault:
    number: int
    name: str
    description: str
    run: Callable[[FaultEnv, Scale], FaultResult]
    needs_own_services: bool = False
    """True when the fault stops or restarts the broker or ClickHouse: under pytest it then
    starts services of its own (:func:`pipeline.testing.faults.fresh_env`)."""


def all_faults() -> list[Fault]:
    """Every registered fault, by number."""
    here = Path(__file__).parent
    found = []
    for info in pkgutil.iter_modules([str(here)]):
        if info.name.startswith("fault_"):
            module = importlib.import_module(f"tests.faults.{info.name}")
            found.append(module.FAULT)
    return sorted(found, key=lambda f: f.number)
