"""Alert webhook payloads (Alertmanager version 4 and plain JSON), config validation, and
the sender's never-raise queueing (no network: delivery is in the integration tests)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from pipeline.alert_webhook import (
    ALERTNAME,
    PLAIN_KIND,
    ZERO_TIME,
    WebhookConfig,
    WebhookSender,
    alertmanager_payload,
    fingerprint,
    plain_payload,
    redact_url,
    rfc3339,
)
from schemas.metrics import Alert

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EXTERNAL = "http://dash.example:8080/"
PINNED_FINGERPRINT = "fb8afd37d2385278"
"""purchase/web's fingerprint: receivers deduplicate on it, so it must not change."""


def alert(
    state: str = "firing", stage: str = "purchase", channel: str = "web", minute: int = 0, **kw: Any
) -> Alert:
    started = T0
    fields: dict[str, Any] = {
        "alert_id": f"dropoff:{stage}:{channel}:{started:%Y-%m-%dT%H:%MZ}",
        "state": state,
        "stage": stage,
        "channel": channel,
        "window_start": T0 + timedelta(minutes=minute),
        "dropoff_rate": 0.24,
        "baseline_rate": 0.1,
        "relative_increase": 1.4,
        "zscore": 4.56,
        "volume": 812,
        "started_at": started,
        "evaluated_at": T0 + timedelta(minutes=minute + 3),
        "summary": f"drop-off at {stage} via {channel} spiked",
    }
    return Alert.model_validate(fields | kw)


# --- Alertmanager payload --------------------------------------------------------------------


def test_firing_payload_has_alertmanagers_shape() -> None:
    payload = alertmanager_payload([alert()], "ops", EXTERNAL)
    assert set(payload) == {
        "version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels",
        "commonLabels", "commonAnnotations", "externalURL", "alerts",
    }  # fmt: skip
    assert payload["version"] == "4"
    assert payload["status"] == "firing"
    assert payload["receiver"] == "ops"
    assert payload["externalURL"] == EXTERNAL
    assert payload["truncatedAlerts"] == 0
    assert payload["groupLabels"] == {"alertname": ALERTNAME}
    assert payload["groupKey"] == '{}:{alertname="TouchpointDropoffSpike"}'
    (entry,) = payload["alerts"]
    labels = {"alertname": ALERTNAME, "stage": "purchase", "channel": "web", "severity": "critical"}
    assert entry["labels"] == labels == payload["commonLabels"]
    assert entry["annotations"] == payload["commonAnnotations"]
    assert entry["annotations"]["summary"] == "drop-off at purchase via web spiked"
    description = entry["annotations"]["description"]
    for number in ("24.0%", "10.0%", "+140%", "4.6", "812 outcomes"):
        assert number in description, (number, description)
    assert entry["status"] == "firing"
    assert entry["startsAt"] == "2026-03-01T12:00:00Z"
    assert entry["endsAt"] == ZERO_TIME == "0001-01-01T00:00:00Z"
    assert entry["generatorURL"].startswith(EXTERNAL + "?")
    assert "stage=purchase" in entry["generatorURL"] and "channel=web" in entry["generatorURL"]
    assert re.fullmatch(r"[0-9a-f]{16}", entry["fingerprint"])
    assert json.loads(json.dumps(payload)) == payload  # JSON-able as is


def test_resolved_alert_ends_at_its_resolving_window_in_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    resolved = alert(
        "resolved", minute=14, window_start=datetime(2026, 3, 1, 14, 14, tzinfo=plus_two)
    )
    payload = alertmanager_payload([resolved], "ops", EXTERNAL)
    (entry,) = payload["alerts"]
    assert payload["status"] == entry["status"] == "resolved"
    assert entry["startsAt"] == "2026-03-01T12:00:00Z"
    assert entry["endsAt"] == "2026-03-01T12:14:00Z"
    assert "back to normal" in entry["annotations"]["description"]


def test_a_group_is_firing_while_any_alert_fires_and_shares_only_common_labels() -> None:
    payload = alertmanager_payload(
        [alert("firing", "purchase", "web"), alert("resolved", "consideration", "email", 5)],
        "ops",
        EXTERNAL,
    )
    assert payload["status"] == "firing"
    assert [a["status"] for a in payload["alerts"]] == ["firing", "resolved"]
    assert payload["commonLabels"] == {"alertname": ALERTNAME, "severity": "critical"}
    assert payload["commonAnnotations"] == {}
    resolved_only = alertmanager_payload(
        [alert("resolved", minute=9), alert("resolved", channel="all", minute=9)], "ops", EXTERNAL
    )
    assert resolved_only["status"] == "resolved"


def test_fingerprint_is_a_stable_hash_of_the_labels() -> None:
    labels = {"alertname": ALERTNAME, "stage": "purchase", "channel": "web", "severity": "critical"}
    assert fingerprint(labels) == fingerprint(dict(reversed(list(labels.items()))))
    assert fingerprint(labels) != fingerprint(labels | {"channel": "email"})
    # one fingerprint per (stage, channel), across episodes and states
    prints = {
        alertmanager_payload([a], "ops", EXTERNAL)["alerts"][0]["fingerprint"]
        for a in (alert(), alert("resolved", minute=7), alert(minute=60, alert_id="other"))
    }
    assert prints == {fingerprint(labels)}


def test_fingerprint_does_not_change_between_releases() -> None:
    labels = {"alertname": ALERTNAME, "stage": "purchase", "channel": "web", "severity": "critical"}
    assert fingerprint(labels) == PINNED_FINGERPRINT


def test_an_empty_notification_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one alert"):
        alertmanager_payload([], "ops", EXTERNAL)


def test_severity_and_external_url_are_the_callers() -> None:
    payload = alertmanager_payload([alert()], "ops", "http://d/?team=a", severity="warning")
    (entry,) = payload["alerts"]
    assert entry["labels"]["severity"] == "warning"
    assert entry["generatorURL"].startswith("http://d/?team=a&stage=purchase")
    assert alertmanager_payload([alert()], "ops", "")["alerts"][0]["generatorURL"] == ""


def test_rfc3339() -> None:
    assert (
        rfc3339(datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)) == "2026-01-02T03:04:05.600000Z"
    )


# --- plain JSON ------------------------------------------------------------------------------


def test_plain_payload_is_the_record_with_a_kind() -> None:
    original = alert()
    payload = plain_payload(original)
    assert payload["kind"] == PLAIN_KIND == "touchpoint.dropoff_alert"
    assert json.loads(json.dumps(payload)) == payload
    assert payload["window_start"] == "2026-03-01T12:00:00Z"
    record = {k: v for k, v in payload.items() if k != "kind"}
    assert set(record) == set(Alert.model_fields)
    assert Alert.model_validate(record) == original


# --- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"url": "ftp://hooks.example/x"}, "http"),
        ({"url": "http:///no-host"}, "http"),
        ({"url": "hooks.example/x"}, "http"),
        ({"url": "http://hooks.example:99999/x"}, "[Pp]ort"),
        ({"format": "xml"}, "format"),
        ({"token": ""}, "token"),
        ({"token": "abc def"}, "token"),
        ({"token": "abc\r\nX-Evil: 1"}, "token"),
        ({"url": "https://u:p@hooks.example/x", "token": "t"}, "credentials"),
        ({"timeout_seconds": 0}, "timeout"),
        ({"backoff_seconds": -1}, "backoff"),
        ({"backoff_seconds": 10, "max_backoff_seconds": 1}, "backoff"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"queue_size": 0}, "queue_size"),
    ],
)
def test_config_is_validated(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WebhookConfig(**({"url": "https://hooks.example/x"} | overrides))


def test_config_is_frozen_and_hides_its_token() -> None:
    config = WebhookConfig("https://hooks.example/x", format="json", token="s3cret")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.url = "https://elsewhere.example/"  # type: ignore[misc]
    assert "s3cret" not in repr(config)
    assert config.format == "json" and config.max_attempts >= 1


def test_backoff_doubles_up_to_the_maximum() -> None:
    config = WebhookConfig("https://h.example/", backoff_seconds=0.5, max_backoff_seconds=3)
    assert [config.backoff(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_redact_url_keeps_no_credentials() -> None:
    assert redact_url("https://user:pw@hooks.example:8443/a/b?key=s3cret#x") == (
        "https://hooks.example:8443/a/b"
    )
    assert redact_url("http://[::1]:9/h") == "http://[::1]:9/h"


# --- sender without a network ----------------------------------------------------------------


def counters() -> tuple[CollectorRegistry, Counter, Counter]:
    registry = CollectorRegistry()
    sent = Counter("hook_sent", "sent", registry=registry)
    failed = Counter("hook_failed", "failed", registry=registry)
    return registry, sent, failed


def test_submit_queues_one_request_per_notification_or_per_alert() -> None:
    alerts = [alert(), alert(channel="email")]
    am = WebhookSender(WebhookConfig("http://127.0.0.1:9/h"))
    assert am.submit(alerts) == 1 and am.pending == 1
    assert am.submit([]) == 0 and am.pending == 1
    plain = WebhookSender(WebhookConfig("http://127.0.0.1:9/h", format="json"))
    assert plain.submit(alerts) == 2 and plain.pending == 2


def test_a_full_queue_drops_and_counts_without_raising(caplog: pytest.LogCaptureFixture) -> None:
    registry, sent, failed = counters()
    sender = WebhookSender(
        WebhookConfig("http://u:pw@127.0.0.1:9/h?k=s3cret", format="json", queue_size=2),
        sent=sent,
        failed=failed,
    )
    assert sender.submit([alert(channel=c) for c in ("web", "chat", "email")]) == 2
    assert sender.failed_count == 1 and registry.get_sample_value("hook_failed_total") == 1
    assert "queue is full" in caplog.text and "dropoff:purchase:email" in caplog.text
    assert "s3cret" not in caplog.text and "pw" not in caplog.text
    assert registry.get_sample_value("hook_sent_total") == 0


def test_counters_must_be_incrementable_as_given() -> None:
    registry = CollectorRegistry()
    by_code = Counter("hook_failed", "failed", ["code"], registry=registry)
    with pytest.raises(ValueError, match="label"):
        WebhookSender(WebhookConfig("http://127.0.0.1:9/h"), failed=by_code)
    WebhookSender(WebhookConfig("http://127.0.0.1:9/h"), failed=by_code.labels(code="any"))


def test_stop_without_start_fails_what_is_queued_and_refuses_more() -> None:
    registry, sent, failed = counters()
    sender = WebhookSender(WebhookConfig("http://127.0.0.1:9/h"), sent=sent, failed=failed)

    async def main() -> None:
        sender.submit([alert()])
        await sender.stop(deadline_seconds=0.1)
        assert sender.submit([alert()]) == 0

    asyncio.run(main())
    assert sender.pending == 0
    assert sender.failed_count == 2 and registry.get_sample_value("hook_failed_total") == 2
