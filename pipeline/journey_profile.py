"""Rows of the ``journeys`` and ``customers`` tables from journey states (pure).

Both tables are ReplacingMergeTree(version, is_deleted): a changed state re-emits its
journeys and its profile with the state's version; a journey that no longer exists (joined
into an earlier one by a late event, or re-keyed under a survivor by a merge) and a customer
merged into another are retracted with ``is_deleted``. Journeys folded out of a bounded
state (older than ``closed_until``) are not retracted: they happened, they are just no
longer kept.
"""

from __future__ import annotations

from pipeline.stage_model import StageModel
from schemas.journey import CustomerProfile, Journey, JourneyRow, JourneyState
from schemas.records import trusted


def journey_row(
    customer_id: str, journey: Journey, version: int, model: StageModel, deleted: bool = False
) -> JourneyRow:
    stages = tuple(sorted(journey.entries, key=model.rank.__getitem__))
    completed = tuple(sorted(journey.completions, key=model.rank.__getitem__))
    values = {
        "customer_id": customer_id, "journey_id": journey.journey_id,
        "started_at": journey.started_at, "last_seen": journey.last_seen,
        "current_stage": journey.current_stage, "stages": stages, "completed": completed,
        "version": version, "is_deleted": deleted,
    }  # fmt: skip
    return trusted(JourneyRow, values)  # from a state's own (valid) values


def journey_rows(
    before: JourneyState | None, after: JourneyState, model: StageModel
) -> list[JourneyRow]:
    """The journeys of ``after``, and retractions of those of ``before`` that are gone."""
    rows = [journey_row(after.customer_id, j, after.version, model) for j in after.journeys]
    if before is None:
        return rows
    kept = {j.journey_id for j in after.journeys}
    closed = after.closed_until
    for j in before.journeys:
        folded = closed is not None and j.last_seen <= closed
        if j.journey_id not in kept and not folded:
            rows.append(journey_row(before.customer_id, j, after.version, model, deleted=True))
    return rows


def retired_rows(
    absorbed: JourneyState, version: int, model: StageModel
) -> tuple[list[JourneyRow], CustomerProfile]:
    """Retractions of an absorbed customer's journeys and profile, at the merged version."""
    rows = [journey_row(absorbed.customer_id, j, version, model, True) for j in absorbed.journeys]
    return rows, profile_of(absorbed, version, deleted=True)


def profile_of(
    state: JourneyState, version: int | None = None, deleted: bool = False
) -> CustomerProfile:
    """The ``customers`` row of a state."""
    current = state.journeys[-1] if state.journeys else None
    return CustomerProfile(
        customer_id=state.customer_id,
        journey_id=current.journey_id if current else "",
        stage=current.current_stage if current else None,
        first_seen=state.first_seen,
        last_seen=state.last_seen,
        channels=dict(state.touchpoints),
        segment=state.segment,
        purchases=state.purchases,
        journeys=len(state.journeys),
        version=state.version if version is None else version,
        is_deleted=deleted,
    )


def empty_state(customer_id: str, like: JourneyState) -> JourneyState:
    """A state with no journeys for ``customer_id`` (the survivor of a merge that has not
    been seen yet), to :func:`pipeline.journey.merge` ``like`` into."""
    return JourneyState(
        customer_id=customer_id,
        journeys=(),
        first_seen=like.first_seen,
        last_seen=like.last_seen,
        version=0,
    )
