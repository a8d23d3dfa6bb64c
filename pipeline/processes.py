"""Child processes of ``touchpoint up``: started in their own session, tied to the parent
(they get SIGTERM if it dies), stopped in reverse order, killed if they linger.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class ProcessGroup:
    """The processes one command started; :meth:`stop_all` leaves none behind."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> Child:
        child = self._spawn(name, argv, env)
        self.children.append(child)
        return child

    def restart(self, child: Child) -> Child:
        """Start a dead child again with the same command line and environment."""
        fresh = self._spawn(child.name, child.argv, child.env)
        self.children[self.children.index(child)] = fresh
        return fresh

    def _spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
                start_new_session=True,
                preexec_fn=die_with_parent if sys.platform == "linux" else None,  # only calls prctl
            )
        return Child(name, process, log_path, list(argv), dict(env))

    def stop_all(self, grace: float = 10.0) -> None:
        for child in reversed(self.children):
            if child.alive:
                os.killpg(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in reversed(self.children):
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait(5)
        self.children.clear()

    def dead(self) -> list[Child]:
        return [c for c in self.children if not c.alive]


def python_module(module: str, *args: str) -> list[str]:
    """argv running ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]
