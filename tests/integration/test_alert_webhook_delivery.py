"""The alert webhook sender against real local HTTP servers (aiohttp): both payload formats,
a server that fails twice then succeeds, a non-retryable answer, a slow server, a dead URL."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry, Counter

from pipeline.alert_webhook import PLAIN_KIND, WebhookConfig, WebhookSender
from schemas.metrics import Alert, AlertState

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def fast(url: str, **kw: Any) -> WebhookConfig:
    """A config with short backoff, for tests."""
    return WebhookConfig(url, backoff_seconds=0.01, max_backoff_seconds=0.05, timeout_seconds=2.0, **kw)  # fmt: skip


def alert(channel: str = "web", state: AlertState = "firing") -> Alert:
    return Alert(
        alert_id=f"dropoff:purchase:{channel}:2026-03-01T12:00Z", state=state,
        stage="purchase", channel=channel, window_start=T0 + timedelta(minutes=4),
        dropoff_rate=0.24, baseline_rate=0.1, relative_increase=1.4, zscore=4.6, volume=812,
        started_at=T0, evaluated_at=T0 + timedelta(minutes=7), summary="drop-off spiked",
    )  # fmt: skip


@dataclass
class Hook:
    """A webhook endpoint that answers with ``statuses`` in turn (then 200) and records
    every request it got."""

    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    requests: list[tuple[dict[str, str], Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.json()))
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="nope" if status >= 300 else "ok")


def serve(hook: Hook, test: Callable[[str], Awaitable[None]]) -> None:
    async def main() -> None:
        app = web.Application()
        app.router.add_post("/hook", hook.handle)
        async with TestServer(app) as server:
            await test(str(server.make_url("/hook")))

    asyncio.run(main())


def counters() -> tuple[CollectorRegistry, Counter, Counter]:
    registry = CollectorRegistry()
    sent = Counter("touchpoint_alert_webhook_sent", "sent", registry=registry)
    failed = Counter("touchpoint_alert_webhook_failed", "failed", registry=registry)
    return registry, sent, failed


def totals(registry: CollectorRegistry) -> tuple[float | None, float | None]:
    return (
        registry.get_sample_value("touchpoint_alert_webhook_sent_total"),
        registry.get_sample_value("touchpoint_alert_webhook_failed_total"),
    )


def test_alertmanager_format_one_post_per_submit_with_bearer_token() -> None:
    hook = Hook()
    registry, sent, failed = counters()

    async def test(url: str) -> None:
        config = fast(url, token="t0ken", receiver="ops", external_url="http://d/")
        sender = WebhookSender(config, sent=sent, failed=failed)
        await sender.start()
        sender.submit([alert("web"), alert("email", "resolved")])
        sender.submit([alert("chat")])
        await sender.stop(deadline_seconds=5)

    serve(hook, test)
    assert totals(registry) == (2, 0)
    assert len(hook.requests) == 2
    headers, body = hook.requests[0]
    assert headers["Authorization"] == "Bearer t0ken"
    assert headers["Content-Type"] == "application/json"
    assert body["version"] == "4" and body["receiver"] == "ops" and body["status"] == "firing"
    assert [(a["labels"]["channel"], a["status"]) for a in body["alerts"]] == [
        ("web", "firing"),
        ("email", "resolved"),
    ]
    assert [a["labels"]["channel"] for a in hook.requests[1][1]["alerts"]] == ["chat"]


def test_json_format_one_post_per_alert_without_auth() -> None:
    hook = Hook()
    registry, sent, failed = counters()

    async def test(url: str) -> None:
        sender = WebhookSender(fast(url, format="json"), sent=sent, failed=failed)
        await sender.start()
        assert sender.submit([alert("web"), alert("chat"), alert("email")]) == 3
        await sender.stop(deadline_seconds=5)

    serve(hook, test)
    assert totals(registry) == (3, 0)
    assert all("Authorization" not in headers for headers, _ in hook.requests)
    bodies = [body for _, body in hook.requests]
    assert {b["kind"] for b in bodies} == {PLAIN_KIND}
    assert sorted(b["channel"] for b in bodies) == ["chat", "email", "web"]
    assert Alert.model_validate({k: v for k, v in bodies[0].items() if k != "kind"}) in {
        alert("web"),
        alert("chat"),
        alert("email"),
    }


def test_retries_with_backoff_until_the_server_recovers(caplog: pytest.LogCaptureFixture) -> None:
    hook = Hook(statuses=[503, 500])
    registry, sent, failed = counters()

    async def test(url: str) -> None:
        sender = WebhookSender(fast(url, max_attempts=3), sent=sent, failed=failed)
        await sender.start()
        sender.submit([alert()])
        await sender.stop(deadline_seconds=5)

    with caplog.at_level(logging.WARNING, logger="touchpoint.alerts"):
        serve(hook, test)
    assert len(hook.requests) == 3
    assert hook.requests[0][1] == hook.requests[2][1]  # the same notification each time
    assert totals(registry) == (1, 0)
    assert "attempt 1/3 failed (HTTP 503" in caplog.text
    assert "attempt 2/3 failed (HTTP 500" in caplog.text


def test_a_client_error_is_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    hook = Hook(statuses=[400])
    registry, sent, failed = counters()

    async def test(url: str) -> None:
        sender = WebhookSender(fast(url, max_attempts=5), sent=sent, failed=failed)
        await sender.start()
        sender.submit([alert()])
        await sender.stop(deadline_seconds=5)

    serve(hook, test)
    assert len(hook.requests) == 1
    assert totals(registry) == (0, 1)
    assert "HTTP 400 'nope', not retried" in caplog.text


def test_a_slow_server_never_blocks_submit_and_stop_keeps_its_deadline() -> None:
    hook = Hook(delay=3.0)
    registry, sent, failed = counters()

    async def test(url: str) -> None:
        sender = WebhookSender(fast(url, format="json"), sent=sent, failed=failed)
        await sender.start()
        began = time.monotonic()
        for _ in range(20):
            sender.submit([alert()])
        assert time.monotonic() - began < 0.1
        await asyncio.sleep(0.2)  # the first request is in flight
        began = time.monotonic()
        await sender.stop(deadline_seconds=0.3)
        assert time.monotonic() - began < 1.5

    serve(hook, test)
    assert totals(registry) == (0, 20)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_a_dead_url_is_counted_as_failed_and_nothing_escapes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry, sent, failed = counters()
    url = f"http://ops:pa55word@127.0.0.1:{free_port()}/hook?key=s3cret"
    config = fast(url, format="json", max_attempts=3)

    async def main() -> None:
        sender = WebhookSender(config, sent=sent, failed=failed)
        await sender.start()
        assert sender.submit([alert()]) == 1
        await sender.stop(deadline_seconds=5)
        assert sender.failed_count == 1 and sender.sent_count == 0

    with caplog.at_level(logging.WARNING, logger="touchpoint.alerts"):
        asyncio.run(main())
    assert totals(registry) == (0, 1)
    assert "gave up after 3 attempts" in caplog.text
    assert "127.0.0.1" in caplog.text
    assert "pa55word" not in caplog.text and "s3cret" not in caplog.text
