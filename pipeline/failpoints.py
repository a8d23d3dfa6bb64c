"""Fault-injection points for the fault suite; inert unless configured.

A failpoint is a named place in the code (``failpoints.hit("sink.before_insert")``). The
setting ``TOUCHPOINT_FAILPOINTS`` (read once at the worker's entry point and passed to
:func:`configure`) arms some of them, comma-separated, each ``name=action``:

* ``exit``: the process dies at once with ``os._exit(137)``: no clean-up, no final commit,
  like a SIGKILL at exactly that line;
* ``raise``: :class:`FailpointError` is raised there (a bug inside a stage);
* ``sleep:<seconds>``: the caller stalls that long (a slow disk, a GC pause).

Two optional suffixes narrow it: ``~<text>`` fires only when the ``key`` passed to
:func:`hit` contains ``text`` (one event id, one table), and ``@<n>`` fires only on the n-th
matching hit (1-based), once. Examples::

    TOUCHPOINT_FAILPOINTS=sink.after_insert=exit@3
    TOUCHPOINT_FAILPOINTS=ingest.event=raise~poison-

Never set in production: an armed failpoint is logged as a warning at start.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.errors import TouchpointError

log = logging.getLogger("touchpoint.failpoints")


class FailpointError(TouchpointError):
    """Raised by a failpoint armed with ``raise``."""


@dataclass
class _Armed:
    action: str
    argument: float
    match: str | None
    nth: int | None
    hits: int = 0


_ARMED: dict[str, _Armed] = {}


def parse(spec: str) -> dict[str, _Armed]:
    """``name=action[:arg][~match][@n],...`` (see the module doc); ``ValueError`` names the
    part that is wrong."""
    armed: dict[str, _Armed] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, rest = part.partition("=")
        if not sep or not name:
            raise ValueError(f"failpoint {part!r}: expected name=action")
        rest, _, nth = rest.partition("@")
        rest, _, match = rest.partition("~")
        action, _, arg = rest.partition(":")
        if action not in ("exit", "raise", "sleep") or (action == "sleep") != bool(arg):
            raise ValueError(f"failpoint {part!r}: action must be exit, raise or sleep:<s>")
        try:
            armed[name] = _Armed(action, float(arg or 0), match or None, int(nth) if nth else None)
        except ValueError:
            raise ValueError(f"failpoint {part!r}: bad number") from None
    return armed


def configure(spec: str) -> None:
    """Arm the failpoints of ``spec`` (replacing any armed before); empty disarms all."""
    _ARMED.clear()
    _ARMED.update(parse(spec))
    for name, armed in _ARMED.items():
        log.warning("failpoint armed: %s=%s (fault injection; never in production)", name, armed)


def hit(name: str, key: str = "", prelude: Callable[[], None] | None = None) -> None:
    """Mark the failpoint ``name``; does nothing unless it is armed and matches ``key``.

    ``prelude`` runs only when the failpoint fires, just before its action: it sets up the
    moment to fail in (e.g. half an insert already sent), so ``exit`` dies right in it."""
    if not _ARMED:
        return
    armed = _ARMED.get(name)
    if armed is None or (armed.match is not None and armed.match not in key):
        return
    armed.hits += 1
    if armed.nth is not None and armed.hits != armed.nth:
        return
    log.warning("failpoint %s fires (%s, key %r)", name, armed.action, key)
    if prelude is not None:
        prelude()
    if armed.action == "exit":
        logging.shutdown()
        os._exit(137)
    if armed.action == "raise":
        raise FailpointError(f"failpoint {name} (key {key!r})")
    time.sleep(armed.argument)
