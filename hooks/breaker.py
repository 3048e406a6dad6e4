"""A circuit breaker per container: at most N failed actions in a sliding window.

It stops actions that do not work: only an action whose verification did not find the server healthy is
counted, and a verified recovery of the container closes its count (hooks/recovery.py records and closes).
"""

from __future__ import annotations

from collections import defaultdict, deque


class Breaker:
    """At most max_actions failed actions per key (a container id) in any window of `window` seconds; times are the
    caller's clock (seconds). Each failure may carry what it was (a JSON-able dict: action, result, the verification's
    state and reasons) for the gave-up that the breaker causes."""

    def __init__(self, max_actions: int, window: float) -> None:
        self.max_actions = max_actions
        self.window = window
        self._failed: dict[str, deque[tuple[float, dict]]] = defaultdict(deque)

    def _trim(self, key: str, now: float) -> deque[tuple[float, dict]]:
        failed = self._failed[key]
        while failed and failed[0][0] <= now - self.window:
            failed.popleft()
        return failed

    def allow(self, key: str, now: float) -> bool:
        """Whether another action at `now` stays within the limit."""
        return len(self._trim(key, now)) < self.max_actions

    def record(self, key: str, at: float, what: dict | None = None) -> None:
        """An action at `at` that did not make the server healthy."""
        self._failed[key].append((at, what or {}))
        self._trim(key, at)

    def close(self, key: str) -> None:
        """The container was verified healthy after a recovery: the failures before it no longer count."""
        self._failed.pop(key, None)

    def count(self, key: str, now: float) -> int:
        return len(self._trim(key, now))

    def failures(self, key: str, now: float) -> list[dict]:
        """What the failures in the window were, oldest first (as recorded)."""
        return [what for _, what in self._trim(key, now)]
