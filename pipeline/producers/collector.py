"""``touchpoint collect``: an HTTP collector in front of the raw topic (aiohttp).

``POST /v1/touchpoints`` takes one event object or a JSON array of them. Each event is
checked locally with the pipeline's validate stage (PII hashing off: validity only):

* accepted events are produced to the raw topic as given, keyed by their strongest
  identifier;
* rejected events are answered to the caller *and* produced to the dead-letter topic as
  :class:`~schemas.records.DeadLetter` JSON (``src`` topic ``collector``, partition 0,
  offset: this collector's running count of events received), so nothing is dropped.

Answers: ``202 {"accepted": n, "rejected": [{"index", "event_id", "reason", "errors":
[{"path", "message", "value"}]}]}`` once Kafka acknowledged every message of the request;
``400`` for a body that is not JSON or not an object/array; ``413`` for a body over
``max_body_bytes``, an event over ``max_event_bytes`` or more than ``max_events`` events
(nothing of that request is produced); ``503`` if Kafka did not acknowledge (retry: the
pipeline de-duplicates on ``event_id``). Errors are JSON ``{"error": code, "message": text}``.

``GET /healthz`` answers ``{"status": "ok", ...counters}``. CORS: the configured origins
(``*`` for any) get preflight answers and ``Access-Control-Allow-Origin``; writes and
preflights from other origins get ``403``.

Kafka sends never block the event loop: validation and ``send()`` run in one worker thread
(which also keeps the order of messages), acknowledgements come back as asyncio futures,
and a background task flushes and reports delivery failures every ``flush_interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from pipeline.errors import BrokerError
from pipeline.kafka_config import KafkaConfig
from pipeline.producers.client import check_event, raw_message_key
from pipeline.producers.collector_http import (
    _PREFLIGHT_MAX_AGE as _PREFLIGHT_MAX_AGE,
)
from pipeline.producers.collector_http import (
    _ROUTE_METHODS as _ROUTE_METHODS,
)
from pipeline.producers.collector_http import (
    DEFAULT_MAX_BODY_BYTES as DEFAULT_MAX_BODY_BYTES,
)
from pipeline.producers.collector_http import (
    DEFAULT_MAX_EVENTS as DEFAULT_MAX_EVENTS,
)
from pipeline.producers.collector_http import (
    PATH as PATH,
)
from pipeline.producers.collector_http import (
    SRC_TOPIC as SRC_TOPIC,
)
from pipeline.producers.collector_http import (
    CollectorConfig as CollectorConfig,
)
from pipeline.producers.collector_http import (
    Handler as Handler,
)
from pipeline.producers.collector_http import (
    _error as _error,
)
from pipeline.producers.collector_http import (
    _json as _json,
)
from pipeline.producers.collector_http import (
    _rejection as _rejection,
)
from pipeline.producers.collector_http import (
    cors_response as cors_response,
)
from pipeline.producers.collector_http import (
    parse_body as parse_body,
)
from pipeline.producers.collector_http import (
    too_large_body as too_large_body,
)
from pipeline.producers.kafka import (
    STALL_SECONDS,
    DeliveryFailed,
    DeliveryStalled,
    TrackedProducer,
    make_producer,
)
from pipeline.redact import redact_dead_letter
from pipeline.settings import Settings
from schemas.records import DeadLetter, SourceRef

log = logging.getLogger(__name__)


@dataclass
class _Counters:
    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    refused_requests: int = 0
    delivery_failures: int = 0


@dataclass
class _Outcome:
    """What the worker thread did with one request."""

    accepted: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    futures: list[Any] = field(default_factory=list)
    send_error: BaseException | None = None


class Collector:
    """The state behind the routes: producer, worker thread, counters."""

    def __init__(
        self, producer: TrackedProducer, raw_topic: str, dlq_topic: str, cfg: CollectorConfig
    ) -> None:
        self.producer = producer
        self.raw_topic = raw_topic
        self.dlq_topic = dlq_topic
        self.cfg = cfg
        self.counters = _Counters()
        self._offsets = itertools.count()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="collector-send")
        self._flusher: asyncio.Task[None] | None = None

    # -- request handling -------------------------------------------------------------------

    async def post_touchpoints(self, request: web.Request) -> web.Response:
        self.counters.requests += 1
        refusal, items = await self._parse(request)
        if refusal is not None:
            self.counters.refused_requests += 1
            return refusal
        if not items:
            return _json(202, {"accepted": 0, "rejected": []})
        loop = asyncio.get_running_loop()
        outcome = await loop.run_in_executor(self._worker, self._process, items)
        acks = [self._bridge(loop, f) for f in outcome.futures]
        failures = await self._wait_acks(acks)
        if outcome.send_error is not None or failures:
            cause = outcome.send_error or failures[0]
            self.counters.delivery_failures += len(failures) + (outcome.send_error is not None)
            log.error("collector could not produce to Kafka: %s: %s", type(cause).__name__, cause)
            return _error(
                503,
                "kafka_unavailable",
                f"events were not stored, retry later ({type(cause).__name__}: {cause})",
            )
        self.counters.accepted += outcome.accepted
        self.counters.rejected += len(outcome.rejected)
        return _json(202, {"accepted": outcome.accepted, "rejected": outcome.rejected})

    async def _parse(self, request: web.Request) -> tuple[web.Response | None, list[bytes]]:
        return await parse_body(request, self.cfg)

    def _too_large_body(self, size: int | None) -> web.Response:
        return too_large_body(self.cfg, size)

    def _process(self, items: list[bytes]) -> _Outcome:
        """Validate and send one request's events (in the worker thread, in order)."""
        outcome = _Outcome()
        now = datetime.now(UTC)
        try:
            for index, raw in enumerate(items):
                src = SourceRef(topic=SRC_TOPIC, partition=0, offset=next(self._offsets))
                result = check_event(raw, self.cfg.validation, now=now, src=src)
                if isinstance(result, DeadLetter):
                    outcome.rejected.append(_rejection(index, result))  # the sender's own data
                    redaction = self.cfg.redaction
                    stored = redact_dead_letter(result, redaction) if redaction else result
                    value = stored.model_dump_json().encode("utf-8")
                    key = result.event_id.encode("utf-8") if result.event_id else None
                    outcome.futures.append(self.producer.send(self.dlq_topic, value, key))
                else:
                    key = raw_message_key(raw, result)
                    outcome.futures.append(self.producer.send(self.raw_topic, raw, key))
                    outcome.accepted += 1
        except Exception as exc:  # send() refused synchronously (buffer full, no metadata)
            outcome.send_error = exc
        return outcome

    @staticmethod
    def _bridge(loop: asyncio.AbstractEventLoop, future: Any) -> asyncio.Future[None]:
        """An asyncio future settled by a kafka-python future (from the producer's thread)."""
        done: asyncio.Future[None] = loop.create_future()

        def settle(error: BaseException | None) -> None:
            if done.done():
                return
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

        def call(error: BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                loop.call_soon_threadsafe(settle, error)

        future.add_callback(lambda _metadata: call(None))
        future.add_errback(call)
        return done

    async def _wait_acks(self, acks: list[asyncio.Future[None]]) -> list[BaseException]:
        if not acks:
            return []
        done, pending = await asyncio.wait(acks, timeout=self.cfg.ack_timeout)
        failures: list[BaseException] = [exc for f in done if (exc := f.exception()) is not None]
        if pending:
            failures.append(
                BrokerError(
                    f"{len(pending)} message(s) unacknowledged after {self.cfg.ack_timeout}s"
                )
            )
        return failures

    async def healthz(self, request: web.Request) -> web.Response:
        stats = self.producer.delivery_stats()
        problems = []
        if stats.offsets_went_back:  # sticky: acknowledged records are gone
            problems.append(
                f"broker lost data (restarted?): offsets went back {stats.offsets_went_back} time(s)"
            )
        try:
            self.producer.raise_if_stalled(STALL_SECONDS)
        except DeliveryStalled as exc:
            problems.append(str(exc))
        return _json(
            503 if problems else 200,
            {
                "status": "failing" if problems else "ok",
                "problems": problems,
                "raw_topic": self.raw_topic,
                "dlq_topic": self.dlq_topic,
                "idempotent": self.producer.idempotent,
                "requests": self.counters.requests,
                "accepted": self.counters.accepted,
                "rejected": self.counters.rejected,
                "refused_requests": self.counters.refused_requests,
                "delivery_failures": stats.failed,
            },
        )

    # -- CORS -------------------------------------------------------------------------------

    @web.middleware
    async def cors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        return await cors_response(self.cfg, request, handler)

    # -- background flush and shutdown ------------------------------------------------------

    async def _flush_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.cfg.flush_interval)
            await self._flush(loop)

    async def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            await loop.run_in_executor(None, self._flush_sync)
        except DeliveryFailed as exc:  # already answered 503 to the callers; report it
            log.error("collector: %s", exc)
        except BrokerError as exc:
            log.error("collector: flush failed: %s", exc)

    def _flush_sync(self) -> None:
        self.producer.flush(self.cfg.ack_timeout)

    async def lifespan(self, app: web.Application) -> AsyncIterator[None]:
        self._flusher = asyncio.create_task(self._flush_forever(), name="collector-flush")
        yield
        self._flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._flusher
        await self._flush(asyncio.get_running_loop())
        self._worker.shutdown(wait=True)


COLLECTOR_KEY = web.AppKey("collector", Collector)


def build_collector_app(
    producer: TrackedProducer,
    raw_topic: str,
    dlq_topic: str,
    cfg: CollectorConfig | None = None,
) -> web.Application:
    """The collector as an aiohttp application. The caller owns (and closes) ``producer``;
    the app flushes it on shutdown. ``app[COLLECTOR_KEY]`` is the :class:`Collector`.
    """
    cfg = cfg or CollectorConfig()
    collector = Collector(producer, raw_topic, dlq_topic, cfg)
    app = web.Application(middlewares=[collector.cors], client_max_size=cfg.max_body_bytes + 1024)
    app[COLLECTOR_KEY] = collector
    app.router.add_post(PATH, collector.post_touchpoints)
    app.router.add_get("/healthz", collector.healthz)
    app.cleanup_ctx.append(collector.lifespan)
    return app


def run_collector(settings: Settings) -> None:
    """Serve the collector on ``collector_host:collector_port`` until interrupted."""
    producer = make_producer(
        KafkaConfig.from_settings(settings), client_id="touchpoint-collector", max_block_ms=10_000
    )
    app = build_collector_app(
        producer, settings.raw_topic, settings.dlq_topic, CollectorConfig.from_settings(settings)
    )
    try:
        web.run_app(
            app,
            host=settings.collector_host,
            port=settings.collector_port,
            print=lambda text: log.info("%s", text),
        )
    finally:
        try:
            producer.close(timeout=10)
        except BrokerError as exc:
            log.error("collector: on close: %s", exc)


if __name__ == "__main__":
    from pipeline.settings import load_settings

    logging.basicConfig(level=logging.INFO)
    run_collector(load_settings())
