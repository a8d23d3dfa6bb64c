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
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from pipeline.errors import BrokerError
from pipeline.kafka_config import KafkaConfig
from pipeline.producers.client import (
    check_event,
    local_validation_config,
    raw_message_key,
    validation_config_from_settings,
)
from pipeline.producers.kafka import DeliveryFailed, TrackedProducer, make_producer
from pipeline.settings import Settings
from pipeline.validate import ValidationConfig
from schemas.records import DeadLetter, SourceRef

log = logging.getLogger(__name__)

PATH = "/v1/touchpoints"
SRC_TOPIC = "collector"
DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024
DEFAULT_MAX_EVENTS = 10_000
_PREFLIGHT_MAX_AGE = "600"
_ROUTE_METHODS = {PATH: "POST, OPTIONS", "/healthz": "GET, HEAD, OPTIONS"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class CollectorConfig:
    """Limits and CORS of the collector. ``validation.max_bytes`` is the per-event limit."""

    validation: ValidationConfig = field(default_factory=local_validation_config)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_events: int = DEFAULT_MAX_EVENTS
    cors_origins: tuple[str, ...] = ()
    ack_timeout: float = 30.0
    """How long a request waits for Kafka's acknowledgement before answering 503."""
    flush_interval: float = 1.0

    @property
    def max_event_bytes(self) -> int:
        return self.validation.max_bytes

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> CollectorConfig:
        validation = validation_config_from_settings(settings)
        values: dict[str, Any] = {
            "validation": validation,
            "max_body_bytes": max(DEFAULT_MAX_BODY_BYTES, validation.max_bytes),
            "cors_origins": settings.collector_cors_origins,
        }
        return cls(**(values | overrides))

    def origin_allowed(self, origin: str) -> bool:
        return "*" in self.cors_origins or origin in self.cors_origins


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers
    )


def _error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return _json(status, {"error": code, "message": message, **extra})


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
        limit = self.cfg.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return self._too_large_body(request.content_length), []
        body = bytearray()
        async for chunk in request.content.iter_any():
            body += chunk
            if len(body) > limit:
                return self._too_large_body(None), []
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _error(400, "not_json", f"the body is not JSON: {exc}"), []
        if isinstance(data, dict):
            items = [bytes(body)]  # one event: sent exactly as received
        elif isinstance(data, list):
            if len(data) > self.cfg.max_events:
                message = f"{len(data)} events in one request; the limit is {self.cfg.max_events}"
                return _error(413, "too_many_events", message, limit=self.cfg.max_events), []
            items = [orjson.dumps(event) for event in data]
        else:
            return _error(
                400,
                "not_object_or_array",
                f"expected an event object or an array of them, got {type(data).__name__}",
            ), []
        too_big = [i for i, raw in enumerate(items) if len(raw) > self.cfg.max_event_bytes]
        if too_big:
            return _error(
                413,
                "event_too_large",
                f"{len(too_big)} event(s) exceed {self.cfg.max_event_bytes} bytes "
                f"(first at index {too_big[0]}: {len(items[too_big[0]])} bytes); "
                "nothing of this request was accepted",
                limit=self.cfg.max_event_bytes,
                indexes=too_big[:100],
            ), []
        return None, items

    def _too_large_body(self, size: int | None) -> web.Response:
        got = f"{size} bytes" if size is not None else "more"
        return _error(
            413,
            "body_too_large",
            f"the request body is {got}; the limit is {self.cfg.max_body_bytes} bytes",
            limit=self.cfg.max_body_bytes,
        )

    def _process(self, items: list[bytes]) -> _Outcome:
        """Validate and send one request's events (in the worker thread, in order)."""
        outcome = _Outcome()
        now = datetime.now(UTC)
        try:
            for index, raw in enumerate(items):
                src = SourceRef(topic=SRC_TOPIC, partition=0, offset=next(self._offsets))
                result = check_event(raw, self.cfg.validation, now=now, src=src)
                if isinstance(result, DeadLetter):
                    outcome.rejected.append(_rejection(index, result))
                    value = result.model_dump_json().encode("utf-8")
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
        return _json(
            200,
            {
                "status": "ok",
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
        origin = request.headers.get("Origin")
        if origin is None:
            return await handler(request)
        allowed = self.cfg.origin_allowed(origin)
        wanted = request.headers.get("Access-Control-Request-Method")
        if request.method == "OPTIONS" and wanted is not None:
            methods = _ROUTE_METHODS.get(request.path)
            if methods is None:
                return _error(404, "not_found", f"no route {request.path}")
            if not allowed:
                return _error(403, "origin_not_allowed", f"CORS origin {origin} is not allowed")
            if wanted.upper() not in methods:
                return _error(403, "method_not_allowed", f"{wanted} is not allowed here")
            headers = {
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": methods,
                "Access-Control-Allow-Headers": request.headers.get(
                    "Access-Control-Request-Headers", "Content-Type"
                ),
                "Access-Control-Max-Age": _PREFLIGHT_MAX_AGE,
                "Vary": "Origin",
            }
            return web.Response(status=204, headers=headers)
        if not allowed:
            if request.method in ("GET", "HEAD"):
                return await handler(request)  # readable by no browser script: no CORS header
            return _error(403, "origin_not_allowed", f"CORS origin {origin} is not allowed")
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        return response

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


def _rejection(index: int, dead: DeadLetter) -> dict[str, Any]:
    return {
        "index": index,
        "event_id": dead.event_id or None,
        "reason": dead.reason,
        "errors": [e.model_dump() for e in dead.errors],
    }


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
