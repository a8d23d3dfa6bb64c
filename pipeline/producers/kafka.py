"""The Kafka producer every touchpoint producer uses (kafka-python, thread-safe).

:func:`make_producer` builds a :class:`TrackedProducer`: a ``KafkaProducer`` that is
idempotent where the broker allows it, tuned for throughput, and never loses a delivery
error silently: failures are counted as they happen and raised at the next ``flush()``
(or ``close()``) as :class:`DeliveryFailed`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaConfigurationError, KafkaError, KafkaTimeoutError

from pipeline.errors import BrokerError, truncate
from pipeline.kafka_config import KafkaConfig
from schemas.events import IDENTIFIER_TYPES

log = logging.getLogger(__name__)

MAX_ERROR_SAMPLES = 5

# Throughput defaults: a batch fills for up to 20 ms and holds up to 256 KiB per partition.
DEFAULT_LINGER_MS = 20
DEFAULT_BATCH_SIZE = 256 * 1024
DEFAULT_MAX_REQUEST_SIZE = 4 * 1024 * 1024
DEFAULT_DELIVERY_TIMEOUT_MS = 120_000
DEFAULT_REQUEST_TIMEOUT_MS = 10_000
# (a request unanswered for 10 s is retried within the delivery timeout, so nothing is lost;
# a broker that came back empty is then reported within ~15 s instead of Kafka's default ~35)
IDEMPOTENCE_PROBE_SECONDS = 5.0
STALL_SECONDS = 15.0
"""Seconds without any answer from Kafka, records pending, after which the simulate command
stops (exit 2) and the collector's ``/healthz`` turns 503 (see ``raise_if_stalled``)."""


def strongest_key(identifiers: Mapping[str, Any]) -> bytes | None:
    """The producer key: the value of the strongest identifier present, UTF-8 encoded.

    Order is :data:`schemas.events.IDENTIFIER_TYPES` (crm_id > user_id > email > phone >
    chat_visitor_id > anonymous_id). Empty or non-string values are skipped; ``None`` when
    no identifier qualifies (the message then goes to a partition of the producer's choice).
    """
    for kind in IDENTIFIER_TYPES:
        value = identifiers.get(kind)
        if isinstance(value, str) and value.strip():
            return value.encode("utf-8")
    return None


@dataclass(frozen=True, slots=True)
class DeliveryStats:
    """Counts since the producer started."""

    sent: int
    """Records handed to ``send()``."""
    failed: int
    """Records the broker never acknowledged (reported or not)."""
    unreported: int
    """Failures not yet raised by ``flush()`` / ``close()``."""
    offsets_went_back: int = 0
    """Partitions whose acknowledged offsets went backwards: the broker lost records it had
    acknowledged (a broker without persistent storage restarted)."""


class DeliveryFailed(BrokerError):
    """Some records were not acknowledged by Kafka; they are not in the topic."""

    def __init__(self, failed: int, samples: tuple[str, ...]) -> None:
        self.failed = failed
        self.samples = samples
        detail = "; ".join(samples)
        more = f" (first {len(samples)} shown)" if failed > len(samples) else ""
        why = ""
        if any("ProducerId" in sample for sample in samples):
            why = (
                " (the broker no longer knows this idempotent producer: it lost its state, "
                "a broker restarted without storage?, and records it acknowledged may be lost)"
            )
        super().__init__(f"{failed} record(s) were not delivered to Kafka{more}{why}: {detail}")


class BrokerLostData(BrokerError):
    """The broker acknowledged offsets lower than it had before on some partitions: records
    it had acknowledged are gone (a broker without persistent storage restarted)."""

    def __init__(self, samples: tuple[str, ...]) -> None:
        self.samples = samples
        super().__init__(
            "the broker lost records it had acknowledged (restarted without its data?): "
            "offsets went back on " + "; ".join(samples)
        )


class DeliveryStalled(BrokerError):
    """Records were sent but the broker acknowledged none of them for too long (it is down,
    or it came back empty and every send retries against a topic that no longer exists)."""

    def __init__(self, pending: int, seconds: float) -> None:
        self.pending, self.seconds = pending, seconds
        super().__init__(
            f"no acknowledgement from Kafka for {seconds:.0f}s with {pending} records pending: "
            "the broker is unreachable or lost its topics (restarted without storage?)"
        )


class TrackedProducer(KafkaProducer):  # type: ignore[misc]  # kafka-python ships no type hints
    """A ``KafkaProducer`` that counts delivery failures and raises them at flush/close.

    ``send()`` behaves as kafka-python's (asynchronous, returns the record future); each
    failure is logged, counted, and raised once as :class:`DeliveryFailed` by the next
    ``flush()`` or ``close()``, so a caller that flushes cannot miss it. An acknowledged
    offset lower than the last one of its partition means the broker lost data: it is
    logged at once and raised as :class:`BrokerLostData` the same way.
    """

    idempotent: bool = False

    def __init__(self, **configs: Any) -> None:
        self._track_lock = threading.Lock()
        self._sent = 0
        self._failed = 0
        self._unreported = 0
        self._samples: list[str] = []
        self._acked: dict[tuple[str, int], int] = {}  # written by the I/O thread only
        self._went_back = 0
        self._lost_samples: list[str] = []
        self._closing = False
        self._close_timed_out: BaseException | None = None
        self._settled = 0  # acknowledged or failed (I/O thread)
        self._progress_at = time.monotonic()  # last send into an idle producer, or last answer
        super().__init__(**configs)
        self.idempotent = bool(self.config.get("enable_idempotence"))

    def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> Any:
        future = super().send(
            topic,
            value=value,
            key=key,
            headers=headers,
            partition=partition,
            timestamp_ms=timestamp_ms,
        )
        with self._track_lock:
            if self._sent == self._settled:  # nothing was pending: the wait starts now
                self._progress_at = time.monotonic()
            self._sent += 1
        future.add_errback(self._on_delivery_error, topic)
        future.add_callback(self._on_ack, topic)
        return future

    def _on_ack(self, topic: str, metadata: Any) -> None:
        with self._track_lock:
            self._settled += 1
            self._progress_at = time.monotonic()
        offset, tp = metadata.offset, (topic, metadata.partition)
        last = self._acked.get(tp, -1)
        if offset >= 0:
            self._acked[tp] = offset
        if 0 <= offset < last:  # a broker keeps its offsets: these records are gone
            sample = f"{topic}[{metadata.partition}] from {last} to {offset}"
            with self._track_lock:
                self._went_back += 1
                if len(self._lost_samples) < MAX_ERROR_SAMPLES:
                    self._lost_samples.append(sample)
            log.error("broker lost data (restarted?): acknowledged offsets of %s went back", sample)

    def _on_delivery_error(self, topic: str, exc: BaseException) -> None:
        with self._track_lock:
            self._settled += 1
            self._progress_at = time.monotonic()
            self._failed += 1
            self._unreported += 1
            first = self._unreported == 1
            if len(self._samples) < MAX_ERROR_SAMPLES:
                self._samples.append(f"{topic}: {_describe(exc)}")
        if first:  # one log line per reporting window; the count is in the exception
            log.error("delivery to %s failed: %s", topic, _describe(exc))

    def delivery_stats(self) -> DeliveryStats:
        with self._track_lock:
            return DeliveryStats(
                sent=self._sent, failed=self._failed, unreported=self._unreported,
                offsets_went_back=self._went_back,
            )  # fmt: skip

    def raise_if_stalled(self, after: float) -> None:
        """Raise :class:`DeliveryStalled` when records are pending and Kafka answered none of
        them for ``after`` seconds (kafka-python would keep retrying until the delivery
        timeout, silently)."""
        with self._track_lock:
            pending = self._sent - self._settled
            waited = time.monotonic() - self._progress_at
        if pending > 0 and waited > after:
            log.error("no acknowledgement from Kafka for %.0fs (%d pending)", waited, pending)
            raise DeliveryStalled(pending, waited)

    def raise_delivery_errors(self) -> None:
        """Raise :class:`BrokerLostData`, then :class:`DeliveryFailed`, for what was not
        reported yet (then reset it)."""
        with self._track_lock:
            failed, samples = self._unreported, tuple(self._samples)
            lost, self._lost_samples = tuple(self._lost_samples), []
            if not lost:
                self._unreported = 0
                self._samples = []
        if lost:
            raise BrokerLostData(lost)
        if failed:
            raise DeliveryFailed(failed, samples)

    def flush(self, timeout: float | None = None, *, raise_errors: bool = True) -> None:
        """Send everything buffered and wait; raise :class:`DeliveryFailed` on failures.

        A ``KafkaTimeoutError`` (records still in flight after ``timeout``) is raised as a
        :class:`~pipeline.errors.BrokerError`.
        """
        try:
            super().flush(timeout)
        except KafkaTimeoutError as exc:
            if self._closing:  # let close() stop the I/O thread, then report
                self._close_timed_out = exc
                return
            raise BrokerError(f"flush did not complete within {timeout}s: {exc}") from exc
        if raise_errors and not self._closing:
            self.raise_delivery_errors()

    def close(self, timeout: float | None = None, null_logger: bool = False) -> None:
        """Flush, stop the I/O thread, then raise on records that were not delivered.

        :class:`DeliveryFailed` for unreported failures; :class:`BrokerError` if records
        were still in flight when ``timeout`` ran out (they are lost). The producer is
        closed either way. Nothing is raised when kafka-python's own atexit / ``__del__``
        cleanup calls this (``null_logger=True``); failures were logged as they happened.
        """
        self._closing = True
        try:
            super().close(timeout=timeout, null_logger=null_logger)
        finally:
            self._closing = False
        timed_out, self._close_timed_out = self._close_timed_out, None
        if null_logger:
            return
        if timed_out is not None:
            stats = self.delivery_stats()
            raise BrokerError(
                f"closed with records still undelivered after {timeout}s "
                f"({stats.failed} failed so far of {stats.sent} sent): {timed_out}"
            )
        self.raise_delivery_errors()


def _describe(exc: BaseException) -> str:
    """``Type: message`` without the repetition kafka-python's errors already carry."""
    text, name = str(exc), type(exc).__name__
    return truncate(text if text.startswith(name) else f"{name}: {text}")


def _idempotence_refused(producer: TrackedProducer, wait: float) -> BaseException | None:
    """Wait for the producer id; the broker's error if it refused to give one."""
    manager = getattr(producer, "_transaction_manager", None)
    if manager is None:
        return None
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if manager.has_fatal_error():
            error: BaseException | None = manager.last_error
            return error or KafkaError("fatal idempotent-producer error")
        if manager.has_producer_id():
            return None
        time.sleep(0.01)
    return None  # no answer yet: not a refusal; sends wait for the id as usual


def make_producer(
    kafka: KafkaConfig,
    *,
    client_id: str,
    linger_ms: int = DEFAULT_LINGER_MS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    compression_type: str | None = None,
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
    delivery_timeout_ms: int = DEFAULT_DELIVERY_TIMEOUT_MS,
    request_timeout_ms: int = DEFAULT_REQUEST_TIMEOUT_MS,
    idempotence: bool = True,
    **overrides: Any,
) -> TrackedProducer:
    """A connected, durable, throughput-tuned producer.

    ``acks="all"``, unlimited retries within ``delivery_timeout_ms``, and the idempotent
    producer (no duplicates or reordering on retry). If the broker refuses idempotence
    (too old, or no IdempotentWrite permission) the producer falls back, with a warning,
    to ``acks="all"`` + retries + one request in flight per connection: order is kept, a
    retry may duplicate (the pipeline de-duplicates on ``event_id``). ``producer.idempotent``
    says which one you got. ``overrides`` are passed to ``KafkaProducer`` as they are.

    Raises :class:`~pipeline.errors.BrokerError` if Kafka cannot be reached.
    """
    configs: dict[str, Any] = {
        **kafka.kafka_python(),
        "client_id": client_id,
        "acks": "all",
        "retries": 2_147_483_647,
        "linger_ms": linger_ms,
        "batch_size": batch_size,
        "compression_type": compression_type,
        "max_request_size": max_request_size,
        "delivery_timeout_ms": delivery_timeout_ms,
        "request_timeout_ms": request_timeout_ms,
        "max_in_flight_requests_per_connection": 5,
        **overrides,
    }
    if idempotence:
        try:
            producer = _build(configs | {"enable_idempotence": True}, kafka)
        except KafkaConfigurationError as exc:
            refusal: BaseException | None = exc
        else:
            refusal = _idempotence_refused(producer, IDEMPOTENCE_PROBE_SECONDS)
            if refusal is None:
                return producer
            producer.close(timeout=0, null_logger=True)
        log.warning(
            "Kafka at %s refused the idempotent producer (%s: %s); falling back to "
            "acks=all with retries and 1 request in flight: ordered, but a retry may "
            "duplicate a record",
            kafka.bootstrap,
            type(refusal).__name__,
            refusal,
        )
    configs |= {"enable_idempotence": False, "max_in_flight_requests_per_connection": 1}
    return _build(configs, kafka)


def _build(configs: dict[str, Any], kafka: KafkaConfig) -> TrackedProducer:
    try:
        return TrackedProducer(**configs)
    except KafkaConfigurationError:
        raise
    except KafkaError as exc:
        raise BrokerError(f"cannot connect to Kafka at {kafka.bootstrap}: {exc}") from exc
