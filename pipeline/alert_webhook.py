"""Drop-off alerts to a webhook, as Alertmanager's webhook JSON (version 4) or plain JSON.

:func:`alertmanager_payload` builds what Alertmanager itself would POST, so anything that
takes Alertmanager webhooks takes the pipeline's alerts without Prometheus in between;
:func:`plain_payload` is the :class:`~schemas.metrics.Alert` record itself. :class:`WebhookSender` delivers them
in the background: :meth:`WebhookSender.submit` only queues, so a slow or dead endpoint
never holds up the pipeline; the queue is bounded, and what does not fit is dropped,
logged and counted as failed.

Times are event time: ``startsAt`` is the window start of the firing evaluation, ``endsAt``
that of the resolving one (Alertmanager's zero time while firing).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp
import orjson
from prometheus_client import Counter

from schemas.metrics import Alert

log = logging.getLogger("touchpoint.alerts")

ALERTNAME: Final = "TouchpointDropoffSpike"
PLAIN_KIND: Final = "touchpoint.dropoff_alert"
SEVERITY: Final = "critical"
"""The severity label: ``critical`` pages (the Prometheus rules' and Alertmanager's routes)."""
ZERO_TIME: Final = "0001-01-01T00:00:00Z"
"""Alertmanager's ``endsAt`` of an alert that is still firing."""
WebhookFormat = Literal["alertmanager", "json"]
FORMATS: Final = ("alertmanager", "json")
GROUP_KEY: Final = '{}:{alertname="' + ALERTNAME + '"}'
"""Alertmanager's group key of a notification grouped by ``alertname`` under the root route."""
RETRY_STATUSES: Final = frozenset({408, 425, 429, 500, 502, 503, 504})


def rfc3339(at: datetime) -> str:
    """UTC, ``Z``-suffixed, as Alertmanager writes it."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def alert_labels(alert: Alert, severity: str = SEVERITY) -> dict[str, str]:
    return {"alertname": ALERTNAME, "stage": alert.stage, "channel": alert.channel, "severity": severity}  # fmt: skip


def fingerprint(labels: Mapping[str, str]) -> str:
    """16 hex digits of a hash of the sorted labels: one per (stage, channel), every episode."""
    text = "\xff".join(f"{k}\xfe{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def summary(alert: Alert) -> str:
    """The alert's own summary, or one made up from its stage and channel."""
    verb = "spikes" if alert.state == "firing" else "is back to normal"
    return alert.summary or f"drop-off at {alert.stage} ({alert.channel}) {verb}"


def describe(alert: Alert) -> str:
    where = f"{alert.stage} ({alert.channel})"
    numbers = (
        f"drop-off rate {alert.dropoff_rate:.1%} against a baseline of {alert.baseline_rate:.1%} "
        f"(relative increase {alert.relative_increase:+.0%}, z-score {alert.zscore:.1f}) "
        f"on {alert.volume} outcomes, evaluation window {rfc3339(alert.window_start)}"
    )
    if alert.state == "firing":
        return f"Drop-off spike at {where}: {numbers}."
    return f"Drop-off at {where} is back to normal: {numbers}."


def _endpoint(external_url: str, alert: Alert) -> str:
    if not external_url:
        return ""
    query = urlencode({"stage": alert.stage, "channel": alert.channel, "alert": alert.alert_id})
    return f"{external_url}{'&' if '?' in external_url else '?'}{query}"


def alertmanager_payload(
    alerts: Sequence[Alert], receiver: str, external_url: str, *, severity: str = SEVERITY
) -> dict[str, Any]:
    """One Alertmanager webhook notification (version 4) holding ``alerts``."""
    if not alerts:
        raise ValueError("an Alertmanager notification needs at least one alert")
    entries: list[dict[str, Any]] = []
    for alert in alerts:
        labels = alert_labels(alert, severity)
        ends = max(alert.window_start, alert.started_at)
        entries.append(
            {
                "status": alert.state,
                "labels": labels,
                "annotations": {"summary": summary(alert), "description": describe(alert)},
                "startsAt": rfc3339(alert.started_at),
                "endsAt": ZERO_TIME if alert.state == "firing" else rfc3339(ends),
                "generatorURL": _endpoint(external_url, alert),
                "fingerprint": fingerprint(labels),
            }
        )

    def common(key: str) -> dict[str, str]:
        first: dict[str, str] = entries[0][key]
        return {k: v for k, v in first.items() if all(e[key].get(k) == v for e in entries)}

    return {
        "version": "4",
        "groupKey": GROUP_KEY,
        "truncatedAlerts": 0,
        "status": "firing" if any(a.state == "firing" for a in alerts) else "resolved",
        "receiver": receiver,
        "groupLabels": {"alertname": ALERTNAME},
        "commonLabels": common("labels"),
        "commonAnnotations": common("annotations"),
        "externalURL": external_url,
        "alerts": entries,
    }


def plain_payload(alert: Alert) -> dict[str, Any]:
    """The alert record as JSON-able values, tagged with ``kind``."""
    return {"kind": PLAIN_KIND, **alert.model_dump(mode="json")}


def redact_url(url: str) -> str:
    """``url`` without user, password, query or fragment: safe to log."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    with contextlib.suppress(ValueError):  # an invalid port is left out
        netloc += f":{parts.port}" if parts.port is not None else ""
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


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
