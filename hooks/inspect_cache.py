"""The probes' kept inspects: each watched container's inspect until an engine event says it may have changed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import docker
from docker.models.containers import Container

# Seconds a container's inspect is kept for its probes while no engine event names it (InspectCache): every change
# of what a probe reads from it (its state, restart count, pid, health, restart policy, name) is an event of moby's
# (daemon/monitor.go, start.go, update.go, rename.go, health.go), so this only bounds what a lost event could hide.
INSPECT_TTL = 300.0


class InspectCache:
    """Each watched container's inspect (docker-py's model) as the last probe read it, until an engine event about
    that container (forget), the event stream's reconnection (clear) or INSPECT_TTL seconds: an idle container's
    probe asks the engine nothing (bench: watcher_cpu_pct_200, the inspect was 41 % of the hook's samples). A
    generation per container keeps an inspect begun before an event from being stored after it. Bounded.

    Only while `followed` (an event stream is read that forgets: the watcher sets it once its stream is open and
    clears it when the stream ends) is anything kept; otherwise every get asks the engine."""

    LIMIT = 4096

    def __init__(self, ttl: float = INSPECT_TTL) -> None:
        self.ttl = ttl
        self._kept: dict[str, tuple[Container, float]] = {}
        self._generation: dict[str, int] = {}
        self._epoch = 0
        self._lock = threading.Lock()
        self.followed = False

    def get(self, container_id: str, inspect: Callable[[str], Container]) -> Container:
        """The kept model of container_id when fresh, else inspect(container_id), kept unless an event came
        meanwhile; raises what inspect raises (docker.errors.NotFound: forgotten)."""
        now = time.monotonic()
        with self._lock:
            kept = self._kept.get(container_id) if self.followed else None
            if kept is not None and now - kept[1] < self.ttl:
                return kept[0]
            seen = (self._epoch, self._generation.get(container_id, 0))
        try:
            container = inspect(container_id)
        except docker.errors.NotFound:
            self.forget(container_id)
            raise
        with self._lock:
            if self.followed and seen == (self._epoch, self._generation.get(container_id, 0)):
                if len(self._kept) >= self.LIMIT:
                    self._kept.clear()
                self._kept[container_id] = (container, now)
        return container

    def young(self, container_id: str, age: float) -> tuple[Container, float] | None:
        """The kept model of container_id and the time.monotonic() its inspect was asked, when that was less than
        age seconds ago and no event has come about the container since; else None (nothing is asked)."""
        with self._lock:
            kept = self._kept.get(container_id) if self.followed else None
        if kept is None or time.monotonic() - kept[1] >= age:
            return None
        return kept

    def forget(self, container_id: str) -> None:
        """An event about the container: its next probe inspects it again."""
        with self._lock:
            self._kept.pop(container_id, None)
            if len(self._generation) >= self.LIMIT:
                self._generation.clear()
                self._epoch += 1
            self._generation[container_id] = self._generation.get(container_id, 0) + 1

    def clear(self, followed: bool = False) -> None:
        """Events may have been missed (the stream reconnects, or ends): every probe inspects again; followed: an
        event stream is open from now on that forgets (what is inspected from now is kept), else none is."""
        with self._lock:
            self._kept.clear()
            self._epoch += 1
            self.followed = followed
