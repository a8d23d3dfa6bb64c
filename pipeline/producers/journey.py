"""One customer's journey: :func:`journey` yields their events (:class:`Draft`) stage by
stage: sessions on the channels the segment prefers, then a drop-off decision raised by the
pains met in the stage (:data:`~pipeline.producers.segments.DROP_OFF_CAUSES`) and by
incidents. The shared services (randomness, ids, truth, drop-off model) come from
:class:`pipeline.producers.world.World`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from pipeline.producers.contact_sessions import _SESSIONS, _call, _newsletter
from pipeline.producers.identities import Customer
from pipeline.producers.segments import STAGES, Draft, Stage, StageRun
from pipeline.producers.web_sessions import _advocate, _cart, _open_web, _order, _signup

if TYPE_CHECKING:
    from pipeline.producers.world import World


def journey(c: Customer, w: World) -> Iterator[Draft]:
    """The events of one customer in occurred order, until they drop off or advocate."""
    for i, stage in enumerate(STAGES):
        if i:
            w.gap(c)
        c.pains.clear()
        w.ledger.enter(c.idx, stage, c.t)
        if not (yield from _RUNNERS[stage](c, w)):
            return


# --- stages ------------------------------------------------------------------------------------
def _sessions(c: Customer, w: World, stage: Stage, low: int, high: int) -> StageRun:
    """``low`` to ``high`` sessions, each on a channel the customer prefers, then the
    stage's drop-off decision."""
    for i in range(w.rng.randint(low, high)):
        if i:
            w.gap(c)
        yield from _SESSIONS[stage, w.channel(c, stage)](c, w)
    return w.advances(c, stage)


def _awareness(c: Customer, w: World) -> StageRun:
    return _sessions(c, w, "awareness", 1, 2)


def _consideration(c: Customer, w: World) -> StageRun:
    return _sessions(c, w, "consideration", 1, 3)


def _purchase(c: Customer, w: World) -> StageRun:
    """A sales call for phone people, then the web checkout; abandonment is the drop-off."""
    if w.channel(c, "purchase") == "call_center":
        yield from _call(c, w, "sales")
        w.gap(c)
    ids, tag = yield from _open_web(c, w, 1.0)
    if c.user_id is None:
        ids = yield from _signup(c, w, ids, tag)
    total = yield from _cart(c, w, ids, tag)
    if not w.pays(c):
        return False
    yield from _order(c, w, ids, tag, total)
    return True


def _retention(c: Customer, w: World) -> StageRun:
    return _sessions(c, w, "retention", 1, 3)


def _advocacy(c: Customer, w: World) -> StageRun:
    """A review or referral on the web, or a support call rated as a promoter (NPS 9-10)."""
    channel = w.channel(c, "advocacy")
    if channel == "call_center":
        yield from _call(c, w, "support", promoter=True)
    else:
        if channel == "email":
            yield from _newsletter(c, w, click=True)
            w.gap(c)
        yield from _advocate(c, w)
    w.end(c, "completed")
    return True


_RUNNERS: dict[Stage, Callable[[Customer, World], StageRun]] = {
    "awareness": _awareness,
    "consideration": _consideration,
    "purchase": _purchase,
    "retention": _retention,
    "advocacy": _advocacy,
}
