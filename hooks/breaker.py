"""A circuit breaker per container: at most N actions in a sliding window."""

from __future__ import annotations

from collections import defaultdict, deque


class Breaker:
    """At most max_actions actions per key (a container id) in any window of `window` seconds; times are the caller's
    clock (seconds)."""

    def __init__(self, max_actions: int, window: float) -> None:
        self.max_actions = max_actions
        self.window = window
        self._times: dict[str, deque[float]] = defaultdict(deque)

    def _trim(self, key: str, now: float) -> deque[float]:
        times = self._times[key]
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def allow(self, key: str, now: float) -> bool:
        """Whether another action at `now` stays within the limit."""
        return len(self._trim(key, now)) < self.max_actions

    def record(self, key: str, at: float) -> None:
        self._times[key].append(at)
        self._trim(key, at)

    def count(self, key: str, now: float) -> int:
        return len(self._trim(key, now))
