"""A small Python client for services that emit touchpoint events.

::

    from pipeline.producers.client import TouchpointProducer

    with TouchpointProducer(bootstrap="kafka:9092") as tp:
        tp.send({"event_id": "e1", "channel": "web", "event_type": "page_view",
                 "occurred_at": "2026-01-01T12:00:00Z", "identifiers": {"user_id": "u1"}})

``send`` checks the event locally with the pipeline's own validate stage (PII hashing off:
only validity is checked) and raises :class:`~pipeline.errors.InvalidEvent`, naming field and
value, before anything reaches Kafka. The message sent is the event as given (not
normalised), keyed by the raw value of its strongest identifier. No faust import.

The module-level helpers (:func:`local_validation_config`, :func:`encode_event`,
:func:`check_event`, :func:`message_key`, :func:`invalid_event`) are shared with the file
producer and the HTTP collector.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import orjson
from pydantic import BaseModel

from pipeline.errors import FieldIssue, InvalidEvent, truncate
from pipeline.kafka_config import KafkaConfig
from pipeline.producers.kafka import DeliveryStats, TrackedProducer, make_producer, strongest_key
from pipeline.settings import DEFAULT_PLACEHOLDERS, Settings
from pipeline.validate import ValidationConfig, validate_message
from schemas.records import DeadLetter, FieldError, SourceRef, Touchpoint

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "touchpoints.raw"
LOCAL_SRC = SourceRef(topic="local", partition=0, offset=0)
"""The source reference of events checked before they reach Kafka."""

Event = Mapping[str, Any] | BaseModel
"""What producers accept: a JSON-like mapping or a pydantic model of the contract."""


# --- local validation (shared by the client, the file producer and the collector) ----------


def local_validation_config(
    *,
    placeholders: frozenset[str] | None = None,
    phone_region: str = "US",
    max_event_bytes: int = 1_000_000,
    max_future: timedelta = timedelta(hours=24),
) -> ValidationConfig:
    """A :class:`ValidationConfig` for checking validity only: PII hashing is off."""
    return ValidationConfig(
        hash_key=b"",
        hash_pii=False,
        max_bytes=max_event_bytes,
        placeholders=(
            placeholders
            if placeholders is not None
            else frozenset(p.lower() for p in DEFAULT_PLACEHOLDERS)
        ),
        phone_region=phone_region,
        max_future=max_future,
    )


def validation_config_from_settings(settings: Settings) -> ValidationConfig:
    """The local (hash-free) check with the same limits as the pipeline's validate stage."""
    return local_validation_config(
        placeholders=settings.placeholders,
        phone_region=settings.default_phone_region,
        max_event_bytes=settings.max_event_bytes,
        max_future=timedelta(seconds=settings.max_future_seconds),
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode_event(event: Event) -> bytes:
    """The event as JSON bytes, as given (a model is dumped without its ``None`` fields).

    Raises :class:`InvalidEvent` (reason ``not_json``) if it cannot be encoded.
    """
    try:
        if isinstance(event, BaseModel):
            return event.model_dump_json(exclude_none=True).encode("utf-8")
        return orjson.dumps(
            event if isinstance(event, dict) else dict(event), default=_json_default
        )
    except (TypeError, ValueError, orjson.JSONEncodeError) as exc:
        raise InvalidEvent(
            "not_json",
            (FieldIssue(path="$", message=f"cannot encode as JSON: {exc}", value=truncate(event)),),
        ) from None


def check_event(
    raw: bytes,
    cfg: ValidationConfig,
    *,
    now: datetime | None = None,
    src: SourceRef = LOCAL_SRC,
) -> Touchpoint | DeadLetter:
    """Run the pipeline's validate stage on one raw message."""
    return validate_message(raw, src, now or datetime.now(UTC), cfg)


def issues_of(errors: tuple[FieldError, ...]) -> tuple[FieldIssue, ...]:
    return tuple(FieldIssue(path=e.path, message=e.message, value=e.value) for e in errors)


def invalid_event(dead: DeadLetter) -> InvalidEvent:
    """The exception for a rejected event: reason, then each field, message and value."""
    error = InvalidEvent(dead.reason, issues_of(dead.errors))
    error.add_note(f"event_id={dead.event_id!r}" if dead.event_id else "event without event_id")
    return error


def message_key(data: Any, touchpoint: Touchpoint | None = None) -> bytes | None:
    """The Kafka key of an event: the *raw* value of its strongest identifier.

    With ``touchpoint`` (the validated event), only identifiers that survived validation
    count, so a placeholder such as ``user_id: "null"`` never becomes the key.
    """
    if not isinstance(data, Mapping):
        return None
    raw_ids = data.get("identifiers")
    if not isinstance(raw_ids, Mapping):
        return None
    if touchpoint is not None:
        raw_ids = {k: raw_ids[k] for k in touchpoint.identifiers if k in raw_ids}
    return strongest_key(raw_ids)


def raw_message_key(raw: bytes, touchpoint: Touchpoint | None = None) -> bytes | None:
    """:func:`message_key` of raw JSON bytes (``None`` if they do not parse)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return message_key(data, touchpoint)


# --- the client ----------------------------------------------------------------------------


class TouchpointProducer:
    """Validate events locally and produce them to the raw topic.

    ``bootstrap`` overrides the servers of ``kafka`` (the full connection settings, SASL and
    TLS included); with neither, ``127.0.0.1:9092``. ``validation`` defaults to the contract
    defaults (placeholders, phone region ``US``, 1 MB limit, 24 h future). Extra keyword
    arguments go to :func:`~pipeline.producers.kafka.make_producer` (``linger_ms`` ...).
    """

    def __init__(
        self,
        bootstrap: str | None = None,
        topic: str = DEFAULT_TOPIC,
        kafka: KafkaConfig | None = None,
        *,
        client_id: str = "touchpoint-client",
        validation: ValidationConfig | None = None,
        producer: TrackedProducer | None = None,
        **producer_options: Any,
    ) -> None:
        config = kafka or KafkaConfig()
        if bootstrap:
            config = dataclasses.replace(config, bootstrap=bootstrap)
        self.kafka = config
        self.topic = topic
        self.validation = validation or local_validation_config()
        self._owns_producer = producer is None
        self.producer = producer or make_producer(config, client_id=client_id, **producer_options)

    def validate(self, event: Event) -> Touchpoint:
        """Check one event; return it validated (normalised) or raise :class:`InvalidEvent`."""
        return self._check(encode_event(event))

    def send(self, event: Event) -> Any:
        """Validate and produce one event; returns kafka-python's record-metadata future.

        Raises :class:`InvalidEvent` (nothing is sent) if the event breaks the contract.
        Delivery failures are raised by :meth:`flush` / :meth:`close`.
        """
        raw = encode_event(event)
        touchpoint = self._check(raw)
        data = event.model_dump(exclude_none=True) if isinstance(event, BaseModel) else event
        return self.producer.send(self.topic, value=raw, key=message_key(data, touchpoint))

    def _check(self, raw: bytes) -> Touchpoint:
        result = check_event(raw, self.validation)
        if isinstance(result, DeadLetter):
            raise invalid_event(result)
        return result

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every event sent is acknowledged; raise on delivery failures."""
        self.producer.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush and close (the producer is closed only if this client created it)."""
        if self._owns_producer:
            self.producer.close(timeout)
        else:
            self.producer.flush(timeout)

    @property
    def stats(self) -> DeliveryStats:
        return self.producer.delivery_stats()

    def __enter__(self) -> TouchpointProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        try:  # do not hide the exception that is already on its way out
            self.close()
        except Exception as close_error:
            log.error("while closing after %r: %s", exc, close_error)
