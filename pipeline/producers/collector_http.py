"""The collector's HTTP side: limits and CORS (:class:`CollectorConfig`), request body
parsing (:func:`parse_body`), the CORS middleware's work (:func:`cors_response`) and JSON
answers. The app and its Kafka side live in :mod:`pipeline.producers.collector`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from pipeline.producers.client import local_validation_config, validation_config_from_settings
from pipeline.settings import Settings
from pipeline.validate import ValidationConfig
from schemas.records import DeadLetter

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
    redaction: ValidationConfig | None = None
    """The workers' PII hashing, applied to the dead letters the collector stores
    (:mod:`pipeline.redact`); None: stored as received."""

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
            "redaction": ValidationConfig(
                hash_key=settings.pii_hash_key.get_secret_value().encode(),
                hash_pii=settings.pii_mode == "hash",
                phone_region=settings.default_phone_region,
            ),
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


async def parse_body(
    request: web.Request, cfg: CollectorConfig
) -> tuple[web.Response | None, list[bytes]]:
    """The events of a request's body, or the refusal to answer instead."""
    limit = cfg.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return too_large_body(cfg, request.content_length), []
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            return too_large_body(cfg, None), []
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _error(400, "not_json", f"the body is not JSON: {exc}"), []
    if isinstance(data, dict):
        items = [bytes(body)]  # one event: sent exactly as received
    elif isinstance(data, list):
        if len(data) > cfg.max_events:
            message = f"{len(data)} events in one request; the limit is {cfg.max_events}"
            return _error(413, "too_many_events", message, limit=cfg.max_events), []
        items = [orjson.dumps(event) for event in data]
    else:
        return _error(
            400,
            "not_object_or_array",
            f"expected an event object or an array of them, got {type(data).__name__}",
        ), []
    too_big = [i for i, raw in enumerate(items) if len(raw) > cfg.max_event_bytes]
    if too_big:
        return _error(
            413,
            "event_too_large",
            f"{len(too_big)} event(s) exceed {cfg.max_event_bytes} bytes "
            f"(first at index {too_big[0]}: {len(items[too_big[0]])} bytes); "
            "nothing of this request was accepted",
            limit=cfg.max_event_bytes,
            indexes=too_big[:100],
        ), []
    return None, items


def too_large_body(cfg: CollectorConfig, size: int | None) -> web.Response:
    got = f"{size} bytes" if size is not None else "more"
    return _error(
        413,
        "body_too_large",
        f"the request body is {got}; the limit is {cfg.max_body_bytes} bytes",
        limit=cfg.max_body_bytes,
    )


async def cors_response(
    cfg: CollectorConfig, request: web.Request, handler: Handler
) -> web.StreamResponse:
    """The CORS middleware's work: preflights, origin checks and response headers."""
    origin = request.headers.get("Origin")
    if origin is None:
        return await handler(request)
    allowed = cfg.origin_allowed(origin)
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


def _rejection(index: int, dead: DeadLetter) -> dict[str, Any]:
    return {
        "index": index,
        "event_id": dead.event_id or None,
        "reason": dead.reason,
        "errors": [e.model_dump() for e in dead.errors],
    }
