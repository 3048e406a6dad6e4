"""Data mounts filling up: free space sampled at every health probe, its growth over the last hour, the
hours until full at that rate, and a `latent` event before the server's first "No space left on device".

The estimate is a least-squares line through the window's samples of used space (size - free), so one
large write or delete between two probes moves it no more than its share of the hour.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from .telemetry import Telemetry

WINDOW = 3600.0  # seconds of samples the growth is estimated over
MIN_SPAN = 60.0  # seconds the samples must span before any estimate is made
MIN_SAMPLES = 3
DEFAULT_THRESHOLD_HOURS = 24.0


@dataclass(frozen=True)
class Outlook:
    """One data mount's space: bytes now, growth of used space in bytes per second (None: too few samples
    yet; negative: shrinking), seconds until full at that rate (None: not growing or not known)."""

    path: str
    free_bytes: int
    size_bytes: int
    growth_bytes_per_second: float | None
    seconds_until_full: float | None

    @property
    def hours_until_full(self) -> float | None:
        return None if self.seconds_until_full is None else self.seconds_until_full / 3600

    def as_dict(self) -> dict:
        return {"path": self.path, "free_bytes": self.free_bytes, "size_bytes": self.size_bytes,
                "growth_bytes_per_second": self.growth_bytes_per_second,
                "hours_until_full": self.hours_until_full}


def growth(samples: Sequence[tuple[float, int]], min_span: float = MIN_SPAN) -> float | None:
    """Growth of used space in bytes per second from samples (time in seconds, free bytes): minus the
    least-squares slope of free space over time. None with fewer than MIN_SAMPLES samples or when they
    span less than min_span seconds."""
    if len(samples) < MIN_SAMPLES or samples[-1][0] - samples[0][0] < min_span:
        return None
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_f = sum(f for _, f in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return None
    slope = sum((t - mean_t) * (f - mean_f) for t, f in samples) / var
    return -slope


def seconds_until_full(free_bytes: int, growth_bytes_per_second: float | None) -> float | None:
    """free / growth when used space grows; None when it does not (or is not known)."""
    if growth_bytes_per_second is None or growth_bytes_per_second <= 0:
        return None
    return free_bytes / growth_bytes_per_second


class Forecast:
    """Per watched container, the last hour of its data mount's free space, and the outlook from it."""

    def __init__(self, window: float = WINDOW, min_span: float = MIN_SPAN) -> None:
        self.window = window
        self.min_span = min_span
        self._samples: dict[str, deque[tuple[float, int]]] = {}
        self._paths: dict[str, str] = {}
        self._outlooks: dict[str, Outlook] = {}
        self._lock = threading.Lock()

    def observe(self, container: str, path: str, free_bytes: int, size_bytes: int, at: float) -> Outlook:
        """Add a sample (at: seconds since the epoch) and return the outlook. A different path (the
        container now mounts another source) starts the history again."""
        with self._lock:
            samples = self._samples.setdefault(container, deque())
            if self._paths.get(container) != path:
                samples.clear()
                self._paths[container] = path
            samples.append((at, free_bytes))
            while samples and samples[0][0] < at - self.window:
                samples.popleft()
            rate = growth(list(samples), self.min_span)
            outlook = Outlook(path, free_bytes, size_bytes, rate, seconds_until_full(free_bytes, rate))
            self._outlooks[container] = outlook
            return outlook

    def outlook(self, container: str) -> Outlook | None:
        with self._lock:
            return self._outlooks.get(container)

    def forget(self, container: str) -> None:
        with self._lock:
            self._samples.pop(container, None)
            self._paths.pop(container, None)
            self._outlooks.pop(container, None)


class SpaceWatch:
    """The forecast told: gauges per container, and one `latent` event (kind "filling") each time a data
    mount's hours until full falls under threshold_hours."""

    def __init__(self, telemetry: Telemetry, threshold_hours: float = DEFAULT_THRESHOLD_HOURS,
                 forecast: Forecast | None = None) -> None:
        self.telemetry = telemetry
        self.threshold_hours = threshold_hours
        self.forecast = forecast or Forecast()
        self._filling: set[str] = set()

    def observe(self, container: str, disk: dict | None, at: float) -> Outlook | None:
        """disk as health.disk_usage() gives it; None (not reachable from here) records nothing."""
        if not disk:
            return None
        outlook = self.forecast.observe(container, disk["path"], disk["free_bytes"], disk["size_bytes"], at)
        self.telemetry.metrics.set_space(container, outlook.free_bytes, outlook.size_bytes,
                                         outlook.growth_bytes_per_second,
                                         math.inf if outlook.seconds_until_full is None else outlook.seconds_until_full)
        filling = self.filling(outlook)
        if filling and container not in self._filling:
            self.telemetry.emit("latent", container=container, kind="filling", path=outlook.path,
                                free_bytes=outlook.free_bytes,
                                growth_bytes_per_second=round(outlook.growth_bytes_per_second or 0, 3),
                                hours_until_full=round(outlook.hours_until_full or 0, 2),
                                threshold_hours=self.threshold_hours,
                                message=f"the data mount fills in {outlook.hours_until_full:.1f} h at the last "
                                        f"hour's rate: writes will fail with 'No space left on device'")
        if filling:
            self._filling.add(container)
        else:
            self._filling.discard(container)
        return outlook

    def filling(self, outlook: Outlook | None) -> bool:
        """Whether outlook says full within threshold_hours."""
        hours = outlook.hours_until_full if outlook else None
        return hours is not None and hours < self.threshold_hours

    def forget(self, container: str) -> None:
        self.forecast.forget(container)
        self._filling.discard(container)
