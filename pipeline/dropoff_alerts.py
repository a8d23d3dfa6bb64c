"""Drop-off spike detection (pure): per stage, and per stage and channel when the channel
has the volume, each complete window is judged against a robust baseline.

A drop-off is decided only when the stage's timeout has passed, so the detector watches
what moves at once: conversions. Over the last ``fast_span_windows`` and the last
``span_windows`` windows it compares the conversions observed with those expected from the
recent entries (:mod:`pipeline.dropoff_baseline`). From their ratio it derives the current
drop-off rate (``1 - converting x ratio / usual ratio``) against the baseline rate, and a
z-score of the deficit against the usual ratio (the median over the last
``baseline_windows`` normal evaluations): Poisson (:func:`deficit_z`), or against the
ratios' own spread (1.4826 x their median absolute deviation) when that is wider and gives
less. An alert fires when, in either span, the relative
increase, the z-score and the volume (expected conversions) are all at or above their
thresholds for ``confirm`` consecutive evaluations; the short span finds a doubling within
two windows at a few dozen conversions per minute, the long one smaller increases. It
resolves after ``resolve_after`` consecutive evaluations where every span is below half of
either threshold (hysteresis). No decision is taken while ingest lags behind
(``max_ingest_lag``), while the baseline is warming up, or at low volume: the status says
so instead. Windows judged abnormal stay out of the baseline.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from pipeline.dropoff_baseline import History, Kernel
from pipeline.metrics_windows import Windows, utc
from schemas.events import CHANNELS
from schemas.metrics import ALL, Alert, AlertStatus


@dataclass(frozen=True)
class AlertConfig:
    span_windows: int = 5
    """The long evaluation span (windows): finds small increases."""
    fast_span_windows: int = 2
    """The short evaluation span (windows): finds large increases within two windows."""
    baseline_windows: int = 60
    min_baseline: int = 15
    max_lag_windows: int = 30
    """Conversions up to this many windows after the entry's window are expected."""
    relative_increase: float = 0.5
    zscore: float = 4.0
    min_volume: int = 30
    """Least expected conversions in a span to judge it."""
    confirm: int = 1
    """Consecutive evaluations over both thresholds needed to fire."""
    resolve_after: int = 2
    max_ingest_lag: float = 60.0

    @property
    def spans(self) -> tuple[int, ...]:
        return tuple(sorted({self.fast_span_windows, self.span_windows}))


@dataclass
class Series:
    history: History
    kernel: Kernel
    ratios: dict[int, deque[float]]
    """Per span: observed / expected conversions of the normal evaluations."""
    firing: Alert | None = None
    calm: int = 0
    hot: int = 0
    """Consecutive evaluations over both thresholds (while not firing)."""


@dataclass(frozen=True)
class Reading:
    span: int
    rate: float
    baseline: float
    relative: float
    z: float
    volume: int
    ratio: float
    observed: int
    expected: float


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
            timeout = self.timeouts.get(stage)
            if timeout is None:
                continue  # a stage nobody drops off from
            total = -1.0
            for channel in (ALL, *CHANNELS):
                series = self._series(stage, channel, timeout)
                agg = windows.aggs.get((start, stage, channel, ALL))
                entries, lags = (agg.entries, agg.lags) if agg is not None else (0, {})
                series.history.record(start, entries, lags, self.width)
                volume = series.history.expect(
                    series.kernel, start, self.config.span_windows, self.width
                ).expected
                if channel == ALL:
                    total = volume
                elif volume < self.config.min_volume or volume == total:
                    self._learn(series, start)
                    continue  # too thin, or the stage's only channel (judged as "all")
                status, alert = self._judge(series, start, stage, channel, lag, now)
                statuses.append(status)
                if alert is not None:
                    alerts.append(alert)
        return alerts, statuses

    def _series(self, stage: str, channel: str, timeout: float) -> Series:
        series = self.series.get((stage, channel))
        if series is None:
            cfg = self.config
            lags = max(0, min(cfg.max_lag_windows, int(timeout // self.width)))
            series = self.series[(stage, channel)] = Series(
                History(lags, lags + max(cfg.spans)),
                Kernel(lags, cfg.baseline_windows),
                {k: deque(maxlen=cfg.baseline_windows) for k in cfg.spans},
            )
        return series

    def _learn(self, series: Series, start: int) -> None:
        h = series.history
        series.kernel.learn(h.conversions(start), h.cohorts(start, self.width))

    def _judge(
        self, series: Series, start: int, stage: str, channel: str, lag: float, now: datetime
    ) -> tuple[AlertStatus, Alert | None]:
        cfg = self.config
        readings = [self._reading(series, start, k) for k in cfg.spans]
        longest = readings[-1]
        base = dict(stage=stage, channel=channel, window_start=utc(start))
        if lag > cfg.max_ingest_lag:
            return self._status(base, series, longest, "ingest_lag"), None
        judged = [r for r in readings if r.volume >= cfg.min_volume]
        if not judged:
            self._learn(series, start)
            return self._status(base, series, longest, "low_volume"), None
        if len(series.kernel) < cfg.min_baseline or any(
            len(series.ratios[r.span]) < cfg.min_baseline for r in judged
        ):
            self._normal(series, start, judged)
            return self._status(base, series, longest, "warming_up"), None
        scored = [self._score(series, r) for r in judged]
        alert = self._decide(series, scored, start, stage, channel, now)
        shown = max(scored, key=lambda r: r.z)
        return self._status(base, series, shown, ""), alert

    def _reading(self, series: Series, start: int, span: int) -> Reading:
        e = series.history.expect(series.kernel, start, span, self.width)
        ratio = e.observed / e.expected if e.expected > 0 else 1.0
        baseline = 1.0 - e.converting
        rate = min(1.0, max(0.0, 1.0 - e.converting * ratio))
        return Reading(span, rate, baseline, 0.0, 0.0, round(e.expected), ratio, e.observed,
                       e.expected)  # fmt: skip

    def _score(self, series: Series, r: Reading) -> Reading:
        """The relative increase of the drop-off rate and the z-score of the conversion
        deficit against the span's history (median and MAD, floored by Poisson noise)."""
        history = series.ratios[r.span]
        center = statistics.median(history)
        mad = statistics.median(abs(x - center) for x in history)
        learned = max(sum(series.kernel.converted), 1)
        rate = min(1.0, max(0.0, 1.0 - (1.0 - r.baseline) * r.ratio / max(center, 1e-9)))
        relative = rate / r.baseline - 1 if r.baseline > 0 else (math.inf if rate > 0 else 0.0)
        z = deficit_z(r.observed, r.expected * center, learned)
        if mad > 0:  # the history's own spread, when wider than counting noise, decides
            z = min(z, (center - r.ratio) / (1.4826 * mad), key=abs)
        return replace(r, rate=rate, relative=relative, z=z)

    def _normal(self, series: Series, start: int, readings: list[Reading]) -> None:
        """A window judged normal: it joins the baseline (kernel and ratio history)."""
        for r in readings:
            series.ratios[r.span].append(r.ratio)
        self._learn(series, start)

    def _decide(
        self, series: Series, readings: list[Reading], start: int, stage: str, channel: str,
        now: datetime,
    ) -> Alert | None:  # fmt: skip
        cfg = self.config
        spikes = [r for r in readings if r.relative >= cfg.relative_increase and r.z >= cfg.zscore]
        if series.firing is None:
            series.hot = series.hot + 1 if spikes else 0
            if series.hot >= cfg.confirm:
                top = max(spikes, key=lambda r: r.z)
                series.firing, series.calm = (
                    self._alert("firing", top, start, stage, channel, now),
                    0,
                )
                return series.firing
            if not spikes:
                self._normal(series, start, readings)
            return None
        calm = all(r.relative < cfg.relative_increase / 2 or r.z < cfg.zscore / 2 for r in readings)
        series.calm = series.calm + 1 if calm else 0
        if series.calm < cfg.resolve_after:
            return None
        fired, series.firing = series.firing, None
        resolved = self._alert("resolved", readings[-1], start, stage, channel, now)
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
            f"{r.rate:.1%} vs baseline {r.baseline:.1%} ({r.relative:+.0%}, z={r.z:.1f}); "
            f"{r.observed} conversions where {r.expected:.0f} were expected in the {r.span} "
            f"windows to {utc(start + self.width):%H:%M}Z"
        )
        return Alert(
            alert_id=f"dropoff:{stage}:{channel}:{at:%Y-%m-%dT%H:%MZ}", state=state,
            stage=stage, channel=channel, window_start=at, dropoff_rate=r.rate,
            baseline_rate=r.baseline, relative_increase=min(r.relative, 1e6), zscore=r.z,
            volume=r.volume, started_at=at, evaluated_at=now, summary=summary,
        )  # fmt: skip

    @staticmethod
    def _status(
        base: dict[str, object], series: Series, r: Reading, suppressed: str
    ) -> AlertStatus:
        scored = not suppressed
        return AlertStatus.model_validate(
            {
                **base, "dropoff_rate": r.rate, "baseline_rate": r.baseline if scored else None,
                "zscore": r.z if scored else None, "volume": r.volume,
                "firing": series.firing is not None, "suppressed": suppressed,
            }
        )  # fmt: skip


def deficit_z(observed: float, usual: float, learned: int) -> float:
    """How many standard deviations ``observed`` conversions fall short of the ``usual``
    count: the signed root of the Poisson deviance (exact in the tail, where the normal
    approximation overstates how often a deficit happens by chance), widened by the noise
    of a baseline learned from ``learned`` conversions. Positive for a deficit."""
    if usual <= 0:
        return 0.0
    deviance = (
        2 * (observed * math.log(observed / usual) - observed + usual)
        if observed > 0
        else 2 * usual
    )
    root = math.copysign(math.sqrt(max(deviance, 0.0)), usual - observed)
    return root / math.sqrt(1 + usual / max(learned, 1))
