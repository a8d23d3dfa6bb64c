"""Personas: who the simulated customers are and what they do.

A :class:`Customer` belongs to a :class:`Segment` (channel preferences, patience on hold,
basket size) and holds 1-3 emails, 1-2 phones, a rotating cookie (``anonymous_id``) and,
once earned, a ``chat_visitor_id`` (first chat), a ``user_id`` (signup) and a ``crm_id``
(first purchase). Identifier values come from :class:`IdFactory`: a counter per kind through
a seeded bijection, so they look random, never collide by accident and reveal nothing about
the customer; only the adversarial cases (:mod:`pipeline.producers.adversarial`) share them.

:func:`journey` yields one customer's events (:class:`Draft`) stage by stage: sessions on the
channels the segment prefers, then a drop-off decision raised by the pains met in the stage
(:data:`DROP_OFF_CAUSES`) and by incidents. The shared services (randomness, ids, truth,
drop-off model) come from :class:`pipeline.producers.simulator.World`.
"""

from __future__ import annotations

from pipeline.producers.contact_sessions import (
    OUTCOMES as OUTCOMES,
)
from pipeline.producers.identities import (
    AREA_CODES as AREA_CODES,
)
from pipeline.producers.identities import (
    FIRST_NAMES as FIRST_NAMES,
)
from pipeline.producers.identities import (
    LAST_NAMES as LAST_NAMES,
)
from pipeline.producers.identities import (
    MAIL_DOMAINS as MAIL_DOMAINS,
)
from pipeline.producers.identities import (
    WORK_DOMAINS as WORK_DOMAINS,
)
from pipeline.producers.identities import (
    Customer as Customer,
)
from pipeline.producers.identities import (
    IdFactory as IdFactory,
)
from pipeline.producers.journey import (
    journey as journey,
)
from pipeline.producers.segments import (
    CHANNEL_ORDER as CHANNEL_ORDER,
)
from pipeline.producers.segments import (
    DROP_OFF_CAUSES as DROP_OFF_CAUSES,
)
from pipeline.producers.segments import (
    LONG_HOLD_SECONDS as LONG_HOLD_SECONDS,
)
from pipeline.producers.segments import (
    MAX_DROPOFF as MAX_DROPOFF,
)
from pipeline.producers.segments import (
    SEGMENTS as SEGMENTS,
)
from pipeline.producers.segments import (
    STAGE_CHANNELS as STAGE_CHANNELS,
)
from pipeline.producers.segments import (
    STAGES as STAGES,
)
from pipeline.producers.segments import (
    Draft as Draft,
)
from pipeline.producers.segments import (
    DropOffCause as DropOffCause,
)
from pipeline.producers.segments import (
    Segment as Segment,
)
from pipeline.producers.segments import (
    Session as Session,
)
from pipeline.producers.segments import (
    SimRandom as SimRandom,
)
from pipeline.producers.segments import (
    Stage as Stage,
)
from pipeline.producers.segments import (
    StageRun as StageRun,
)
from pipeline.producers.segments import (
    T as T,
)
from pipeline.producers.segments import (
    pick_channel as pick_channel,
)
from pipeline.producers.segments import (
    pick_segment as pick_segment,
)
from pipeline.producers.web_sessions import (
    ACCOUNT_PAGES as ACCOUNT_PAGES,
)
from pipeline.producers.web_sessions import (
    AD_SOURCES as AD_SOURCES,
)
from pipeline.producers.web_sessions import (
    CAMPAIGNS as CAMPAIGNS,
)
from pipeline.producers.web_sessions import (
    PAGES as PAGES,
)
from pipeline.producers.web_sessions import (
    PRODUCTS as PRODUCTS,
)
from pipeline.producers.web_sessions import (
    QUERIES as QUERIES,
)
from pipeline.producers.web_sessions import (
    REFERRERS as REFERRERS,
)
from pipeline.producers.web_sessions import (
    WebSignup as WebSignup,
)
from pipeline.producers.web_sessions import (
    WebStart as WebStart,
)
