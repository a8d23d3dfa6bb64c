"""Drop-off spike detection (pure): per stage, and per stage and channel when the channel
has the volume, each complete window is judged against a robust baseline.

The observed rate is the drop-off rate over the last ``span_windows`` complete windows
(drop-offs / outcomes). The baseline is the median of the previous ``baseline_windows``
observed rates (those taken while not firing); the scale is the larger of 1.4826 x their
median absolute deviation and the binomial standard error at the baseline rate, so a quiet
history does not make every blip significant. An alert fires when the relative increase,
the z-score and the volume are all at or above their thresholds for ``confirm``
consecutive evaluations; it resolves after
``resolve_after`` consecutive evaluations below half of either threshold (hysteresis). No
decision is taken while ingest lags behind (``max_ingest_lag``), while the baseline is
warming up, or at low volume: the status says so instead.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from pipeline.metrics_windows import Windows, utc
from schemas.events import CHANNELS
from schemas.metrics import ALL, Alert, AlertStatus


@dataclass(frozen=True)
class AlertConfig:
    span_windows: int = 5
    baseline_windows: int = 60
    min_baseline: int = 15
    relative_increase: float = 0.5
    zscore: float = 3.0
    min_volume: int = 30
    confirm: int = 2
    """Consecutive evaluations over both thresholds needed to fire."""
    resolve_after: int = 2
    max_ingest_lag: float = 60.0


@dataclass
class Series:
    history: deque[float]
    firing: Alert | None = None
    calm: int = 0
    hot: int = 0
    """Consecutive evaluations over both thresholds (while not firing)."""
    since: int | None = None
    """The first window with volume: the span must fill before the history starts."""


@dataclass(frozen=True)
class Reading:
    rate: float
    baseline: float
    relative: float
    z: float
    volume: int


@dataclass
class Detector:
    config: AlertConfig
    stages: tuple[str, ...]
    timeouts: Mapping[str, float | None]
    width: int
    series: dict[tuple[str, str], Series] = field(default_factory=dict)

    def evaluate(
        self, start: int, windows: Windows, lag: float, now: datetime
    ) -> tuple[list[Alert], list[AlertStatus]]:
        """Judge the window that starts at ``start`` (just complete) for every series."""
        alerts: list[Alert] = []
        statuses: list[AlertStatus] = []
        for stage in self.stages:
            if self.timeouts.get(stage) is None:
                continue  # a stage nobody drops off from
            total = 0
            for channel in (ALL, *CHANNELS):
                entries, conversions = self._span(windows, start, stage, channel)
                if channel == ALL:
                    total = entries
                elif entries < self.config.min_volume or entries == total:
                    continue  # too thin, or the stage's only channel (judged as "all")
                status, alert = self._judge(start, stage, channel, entries, conversions, lag, now)
                statuses.append(status)
                if alert is not None:
                    alerts.append(alert)
        return alerts, statuses

    def _span(self, windows: Windows, start: int, stage: str, channel: str) -> tuple[int, int]:
        """(entries, conversions) over the span ending with window ``start``."""
        entries = conversions = 0
        for i in range(self.config.span_windows):
            agg = windows.aggs.get((start - i * self.width, stage, channel, ALL))
            if agg is not None:
                entries += agg.entries
                conversions += agg.conversions
        return entries, conversions

    def _judge(
        self, start: int, stage: str, channel: str, entries: int, conversions: int,
        lag: float, now: datetime,
    ) -> tuple[AlertStatus, Alert | None]:  # fmt: skip
        cfg = self.config
        series = self.series.setdefault(
            (stage, channel), Series(deque(maxlen=cfg.baseline_windows))
        )
        rate = max(0.0, 1.0 - conversions / entries) if entries else None
        base = dict(stage=stage, channel=channel, window_start=utc(start), volume=entries)
        if lag > cfg.max_ingest_lag:
            return self._status(base, series, rate, None, "ingest_lag"), None
        if rate is None or entries < cfg.min_volume:
            return self._status(base, series, rate, None, "low_volume"), None
        if series.since is None:
            series.since = start
        if start - series.since < cfg.span_windows * self.width:
            return self._status(base, series, rate, None, "warming_up"), None
        if len(series.history) < cfg.min_baseline:
            series.history.append(rate)
            return self._status(base, series, rate, None, "warming_up"), None
        reading = self._reading(series, rate, entries)
        alert = self._decide(series, reading, start, stage, channel, now)
        return self._status(base, series, rate, reading, ""), alert

    def _reading(self, series: Series, rate: float, volume: int) -> Reading:
        history = list(series.history)
        median = statistics.median(history)
        mad = statistics.median(abs(x - median) for x in history)
        p = min(max(median, 0.01), 0.99)
        scale = max(1.4826 * mad, math.sqrt(p * (1 - p) / volume))
        relative = rate / median - 1 if median > 0 else (math.inf if rate > 0 else 0.0)
        return Reading(rate, median, relative, (rate - median) / scale, volume)

    def _decide(
        self, series: Series, r: Reading, start: int, stage: str, channel: str, now: datetime
    ) -> Alert | None:
        cfg = self.config
        spike = r.relative >= cfg.relative_increase and r.z >= cfg.zscore
        if series.firing is None:
            series.hot = series.hot + 1 if spike else 0
            if series.hot >= cfg.confirm:
                series.firing, series.calm = self._alert("firing", r, start, stage, channel, now), 0
                return series.firing
            if not spike:
                series.history.append(r.rate)
            return None
        calm = r.relative < cfg.relative_increase / 2 or r.z < cfg.zscore / 2
        series.calm = series.calm + 1 if calm else 0
        if series.calm < cfg.resolve_after:
            return None
        fired, series.firing = series.firing, None
        resolved = self._alert("resolved", r, start, stage, channel, now)
        return resolved.model_copy(
            update={"alert_id": fired.alert_id, "started_at": fired.started_at}
        )

    def _alert(
        self, state: str, r: Reading, start: int, stage: str, channel: str, now: datetime
    ) -> Alert:
        at = utc(start)
        where = stage if channel == ALL else f"{stage} via {channel}"
        summary = (
            f"drop-off at {where} {'spiked' if state == 'firing' else 'back to normal'}: "
            f"{r.rate:.1%} of {r.volume} outcomes vs baseline {r.baseline:.1%} "
            f"({r.relative:+.0%}, z={r.z:.1f}) in the {self.config.span_windows} windows "
            f"to {utc(start + self.width):%H:%M}Z"
        )
        return Alert(
            alert_id=f"dropoff:{stage}:{channel}:{at:%Y-%m-%dT%H:%MZ}", state=state,
            stage=stage, channel=channel, window_start=at, dropoff_rate=r.rate,
            baseline_rate=r.baseline, relative_increase=min(r.relative, 1e6), zscore=r.z,
            volume=r.volume, started_at=at, evaluated_at=now, summary=summary,
        )  # fmt: skip

    @staticmethod
    def _status(
        base: dict[str, object], series: Series, rate: float | None, r: Reading | None,
        suppressed: str,
    ) -> AlertStatus:  # fmt: skip
        return AlertStatus.model_validate(
            {
                **base, "dropoff_rate": rate, "baseline_rate": r.baseline if r else None,
                "zscore": r.z if r else None, "firing": series.firing is not None,
                "suppressed": suppressed,
            }
        )  # fmt: skip
