"""Drop-off alerts to a webhook, as Alertmanager's webhook JSON (version 4) or plain JSON
(the payloads: :mod:`pipeline.alert_payloads`).

:class:`WebhookSender` delivers them in the background: :meth:`WebhookSender.submit` only
queues, so a slow or dead endpoint never holds up the pipeline; the queue is bounded, and
what does not fit is dropped, logged and counted as failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
import orjson
from prometheus_client import Counter

from pipeline.alert_payloads import ALERTNAME as ALERTNAME
from pipeline.alert_payloads import FORMATS, RETRY_STATUSES, SEVERITY, WebhookFormat
from pipeline.alert_payloads import PLAIN_KIND as PLAIN_KIND
from pipeline.alert_payloads import ZERO_TIME as ZERO_TIME
from pipeline.alert_payloads import alertmanager_payload as alertmanager_payload
from pipeline.alert_payloads import fingerprint as fingerprint
from pipeline.alert_payloads import plain_payload as plain_payload
from pipeline.alert_payloads import redact_url as redact_url
from pipeline.alert_payloads import rfc3339 as rfc3339
from schemas.metrics import Alert

log = logging.getLogger("touchpoint.alerts")


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    format: WebhookFormat = "alertmanager"
    token: str | None = field(default=None, repr=False)
    """Sent as ``Authorization: Bearer <token>``."""
    timeout_seconds: float = 10.0
    max_attempts: int = 5
    receiver: str = "touchpoint"
    external_url: str = "http://127.0.0.1:8080/"
    """Where people look at the alert (the dashboard): ``externalURL`` and ``generatorURL``."""
    severity: str = SEVERITY
    backoff_seconds: float = 1.0
    """Delay before the second attempt; doubled for each further one, up to the maximum."""
    max_backoff_seconds: float = 60.0
    queue_size: int = 1000

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        _ = parts.port  # raises ValueError when out of range
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook url must be http(s)://host/...: {redact_url(self.url)!r}")
        if self.format not in FORMATS:
            raise ValueError(f"webhook format must be one of {FORMATS}, not {self.format!r}")
        if self.token is not None and (not self.token or any(c.isspace() for c in self.token)):
            raise ValueError("webhook token must be non-empty, without whitespace")
        if self.token is not None and (parts.username or parts.password):
            raise ValueError("webhook url carries credentials: use them or a token, not both")
        if not self.timeout_seconds > 0 or not 0 <= self.backoff_seconds <= self.max_backoff_seconds:  # fmt: skip
            raise ValueError("webhook needs timeout > 0 and 0 <= backoff <= max backoff")
        if self.max_attempts < 1 or self.queue_size < 1:
            raise ValueError("webhook max_attempts and queue_size must be >= 1")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class _Delivery:
    body: bytes
    alert_ids: tuple[str, ...]


class WebhookSender:
    """Posts alerts to one webhook from a background task, with retries and backoff.

    ``sent`` / ``failed`` (unlabelled, or a labelled child) count webhook requests: one per
    :meth:`submit` in the ``alertmanager`` format, one per alert in ``json``. A request is
    failed when every attempt failed, a non-retryable status came back, the queue was full,
    the sender was stopped, or :meth:`stop`'s deadline passed first.
    """

    def __init__(
        self, config: WebhookConfig, *, sent: Counter | None = None, failed: Counter | None = None
    ) -> None:
        self.config = config
        self.target = redact_url(config.url)
        self.sent_count = 0
        self.failed_count = 0
        self._sent, self._failed = sent, failed
        for counter in (sent, failed):  # a labelled parent fails here, not in the pipeline
            if counter is not None:
                counter.inc(0)
        self._queue: asyncio.Queue[_Delivery] = asyncio.Queue(maxsize=config.queue_size)
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def _count(self, ok: bool) -> None:
        self.sent_count += ok
        self.failed_count += not ok
        if (counter := self._sent if ok else self._failed) is not None:
            counter.inc()

    def _fail(self, why: str, alert_ids: tuple[str, ...]) -> None:
        log.error("alert webhook %s: %s; alerts %s not sent", self.target, why, list(alert_ids))
        self._count(False)

    def submit(self, alerts: Sequence[Alert]) -> int:
        """Queue ``alerts`` for delivery and return how many requests were queued. Never
        blocks and never raises: what cannot be queued is logged and counted as failed."""
        cfg = self.config
        batches = [tuple(alerts)] if cfg.format == "alertmanager" and alerts else []
        batches += [(a,) for a in alerts] if cfg.format == "json" else []
        queued = 0
        for batch in batches:
            ids = tuple(a.alert_id for a in batch)
            if self._closed:
                self._fail("the sender is stopped", ids)
                continue
            try:
                if cfg.format == "alertmanager":
                    payload = alertmanager_payload(
                        batch, cfg.receiver, cfg.external_url, severity=cfg.severity
                    )
                else:
                    payload = plain_payload(batch[0])
                self._queue.put_nowait(_Delivery(orjson.dumps(payload), ids))
                queued += 1
            except asyncio.QueueFull:
                self._fail(f"the queue is full ({cfg.queue_size})", ids)
            except Exception as exc:
                self._fail(f"cannot build the payload: {exc!r}", ids)
        return queued

    async def start(self) -> None:
        if self._task is not None:
            return
        headers = {"Content-Type": "application/json", "User-Agent": "touchpoint-alerts"}
        if self.config.token is not None:
            headers["Authorization"] = f"Bearer {self.config.token}"
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=self.config.timeout_seconds)
        )
        self._task = asyncio.create_task(self._run(), name="alert-webhook")

    async def stop(self, deadline_seconds: float = 10.0) -> None:
        """Stop taking alerts, deliver what is queued until the deadline, drop the rest."""
        self._closed = True
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), deadline_seconds)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            delivery = self._queue.get_nowait()
            self._queue.task_done()
            self._fail(f"stop deadline ({deadline_seconds:.1f}s) passed", delivery.alert_ids)
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while True:
            delivery = await self._queue.get()
            why: str | None = "interrupted by stop()"
            try:
                why = await self._deliver(delivery)
            except Exception as exc:
                why = f"unexpected error {exc!r}"
                log.exception("alert webhook %s: unexpected error", self.target)
            finally:
                if why is None:
                    self._count(True)
                else:
                    self._fail(why, delivery.alert_ids)
                self._queue.task_done()

    async def _deliver(self, delivery: _Delivery) -> str | None:
        """Post with retries: None when delivered, else why not."""
        assert self._session is not None
        cfg = self.config
        for attempt in range(1, cfg.max_attempts + 1):
            retry_after = 0.0
            try:
                post = self._session.post(cfg.url, data=delivery.body, allow_redirects=False)
                async with post as resp:
                    if 200 <= resp.status < 300:
                        return None
                    body = (await resp.content.read(200)).decode("utf-8", "replace")
                    problem = f"HTTP {resp.status} {body!r}"
                    if resp.status not in RETRY_STATUSES:
                        return f"{problem}, not retried"
                    with contextlib.suppress(ValueError):
                        retry_after = float(resp.headers.get("Retry-After", ""))
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = f"{type(exc).__name__}: {exc}".replace(cfg.url, self.target)
            if attempt == cfg.max_attempts:
                return f"gave up after {attempt} attempts ({problem})"
            delay = min(max(cfg.backoff(attempt), retry_after), cfg.max_backoff_seconds)
            log.warning(
                "alert webhook %s: attempt %d/%d failed (%s); retrying in %.1fs",
                self.target, attempt, cfg.max_attempts, problem, delay,
            )  # fmt: skip
            await asyncio.sleep(delay)
        return "no attempt made"
