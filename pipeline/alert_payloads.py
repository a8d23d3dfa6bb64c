"""What the pipeline POSTs for a drop-off alert: Alertmanager's webhook JSON (version 4), built
as Alertmanager itself would (:func:`alertmanager_payload`), or the plain
:class:`~schemas.metrics.Alert` record (:func:`plain_payload`). Pure; the delivery is
:mod:`pipeline.alert_webhook`.

Times are event time: ``startsAt`` is the window start of the firing evaluation, ``endsAt``
that of the resolving one (Alertmanager's zero time while firing).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

from schemas.metrics import Alert

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
