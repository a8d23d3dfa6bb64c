"""What the drop-off detector expects (pure): conversions expected from recent entries.

A drop-off is only known when the stage's timeout has passed (30 minutes for a checkout),
far too late for an alert. What moves at once when customers start abandoning is the
*conversions*: a checkout that fails at 12:03 is a missing conversion at 12:03, whenever the
customer entered the stage. So each (stage, channel) series keeps, per complete window, its
entries and its conversions by *lag* (windows since the entry's window), and learns the
conversion kernel ``h[j]``: the share of a window's entries that convert ``j`` windows later,
over the baseline windows. The conversions expected over the last ``k`` windows are then
``E = sum over those windows w and lags j <= J of h[j] * entries[w - j]``, and the reading
compares the observed conversions ``O`` with ``E``. ``O`` and ``E`` are counted over the
same customers (those who entered in the last ``J`` windows), so the test is nested and
shifts in the arrival rate do not move it. Conversions after ``J`` windows are left out of
both.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

Lags = tuple[int, ...]
"""Conversions of one window by lag 0..J."""


@dataclass(frozen=True, slots=True)
class Expectation:
    observed: int
    expected: float
    converting: float
    """Share of entries converting within the lags the kernel covers (baseline)."""
    learned: int
    """Conversions the kernel was learned from."""


@dataclass
class Kernel:
    """The conversion kernel of one series, learned over the last ``size`` windows."""

    lags: int
    size: int
    seen: deque[tuple[Lags, Lags]] = field(init=False)
    """Per baseline window: its conversions by lag, and the entries of the cohort of each lag."""
    converted: list[int] = field(init=False)
    entered: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.seen = deque()
        self.converted = [0] * (self.lags + 1)
        self.entered = [0] * (self.lags + 1)

    def __len__(self) -> int:
        return len(self.seen)

    def learn(self, conversions: Lags, cohorts: Lags) -> None:
        """Add one window to the baseline (the oldest leaves once ``size`` are held)."""
        self.seen.append((conversions, cohorts))
        self._add(conversions, cohorts, 1)
        if len(self.seen) > self.size:
            self._add(*self.seen.popleft(), -1)

    def _add(self, conversions: Lags, cohorts: Lags, sign: int) -> None:
        for j in range(self.lags + 1):
            self.converted[j] += sign * conversions[j]
            self.entered[j] += sign * cohorts[j]

    def rate(self, j: int) -> float:
        return self.converted[j] / self.entered[j] if self.entered[j] else 0.0


@dataclass
class History:
    """The windows of one series the detector has seen complete: entries and conversions by
    lag, as they were when the window completed."""

    lags: int
    keep: int
    windows: dict[int, tuple[int, Lags]] = field(default_factory=dict)

    def record(self, start: int, entries: int, by_lag: dict[int, int], width: int) -> None:
        self.windows[start] = (entries, tuple(by_lag.get(j, 0) for j in range(self.lags + 1)))
        horizon = start - self.keep * width
        for old in [s for s in self.windows if s < horizon]:
            del self.windows[old]

    def conversions(self, start: int) -> Lags:
        held = self.windows.get(start)
        return held[1] if held is not None else (0,) * (self.lags + 1)

    def cohorts(self, start: int, width: int) -> Lags:
        """Entries of the window ``j`` windows before ``start``, for every lag ``j``."""
        return tuple(self._entries(start - j * width) for j in range(self.lags + 1))

    def _entries(self, start: int) -> int:
        held = self.windows.get(start)
        return held[0] if held is not None else 0

    def expect(self, kernel: Kernel, start: int, span: int, width: int) -> Expectation:
        """Observed and expected conversions over the ``span`` windows ending at ``start``."""
        observed, expected = 0, 0.0
        rates = [kernel.rate(j) for j in range(self.lags + 1)]
        for i in range(span):
            w = start - i * width
            observed += sum(self.conversions(w))
            cohorts = self.cohorts(w, width)
            expected += sum(r * n for r, n in zip(rates, cohorts, strict=True))
        return Expectation(observed, expected, min(sum(rates), 1.0), sum(kernel.converted))
