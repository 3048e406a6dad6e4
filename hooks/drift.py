"""Drift: the moment a watched container's data dir changes owner or mode, wake a probe of that container.

A server that logs nothing when its data dir is chowned under it (MariaDB) is otherwise only found by the
next periodic probe. One inotify instance (inotify(7)) watches each running container's data dir on the
host for IN_ATTRIB, which fires on a chown or chmod of the directory or of an entry directly in it
(`chown -R` fires it for each). An event never repairs anything: it only wakes a probe of that container
(debounced: a burst of events wakes one probe at once and one more once the burst is over, and never two
within MIN_GAP), and the probe decides from the running server as it does on its interval.

The path is resolved as the repair resolves it (hooks/data_path.py data_path: no symlink followed below the
mount's source) and watched with IN_DONT_FOLLOW | IN_ONLYDIR, so a data dir swapped for a symlink is
never followed either. Where this process cannot see the engine's paths (a hook in a container, a remote
engine) or the watch cannot be made, the container is left to the periodic probe and why() says so.
"""

from __future__ import annotations

import os
import select
import stat
import threading
import time
from collections.abc import Callable

from inotify_simple import INotify, flags

from ownvol.ownership import OwnershipError

from .data_path import data_path
from .model import DataMount

MASK = flags.ATTRIB | flags.DONT_FOLLOW | flags.ONLYDIR
DEBOUNCE = 0.5  # seconds of quiet that end a burst of events (the trailing wake)
MIN_GAP = 1.0  # seconds at least between two wakes of one container: its own chmods cannot drive probes faster


def _refusal(mount: DataMount | None, reachable: bool) -> str | None:
    if not reachable:
        return ("the engine's host paths are not this process's (a hook in a container, a remote engine) or repairs "
                "go through the helper (--repair-via helper)")
    if mount is None:
        return "its data dir is not on a bind mount or volume"
    return None


def watchable(mount: DataMount | None, reachable: bool) -> str | None:
    """None when a hook here could watch the data dir (reachable: this process sees the engine's host paths),
    else why not; what `ownvol doctor` shows. Resolves the path as DriftWatch.add does, makes no watch."""
    why = _refusal(mount, reachable)
    if why is not None or mount is None:
        return why
    try:
        with data_path(mount) as path:
            if not stat.S_ISDIR(os.stat(path, follow_symlinks=False).st_mode):
                return f"{mount.host_path} is not a directory"
    except (OwnershipError, OSError) as exc:
        return f"cannot watch {mount.host_path}: {exc}"
    return None


class DriftWatch:
    """IN_ATTRIB watches on data dirs, keyed by container id; wake(container_id) is called from this object's own
    thread for each (debounced) change. One inotify descriptor and one thread for every container, blocked in
    poll(2) while nothing changes. debounce: seconds of quiet that end a burst; gap: seconds at least between two
    wakes of one container."""

    def __init__(self, wake: Callable[[str], None], debounce: float = DEBOUNCE, gap: float = MIN_GAP) -> None:
        self.wake = wake
        self.debounce = debounce
        self.gap = gap
        self._inotify = INotify()
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._lock = threading.Lock()
        self._wds: dict[int, set[str]] = {}  # watch descriptor -> the containers whose data dir it is
        self._watch: dict[str, tuple[int, str]] = {}  # container id -> (watch descriptor, host path)
        self._off: dict[str, str] = {}  # container id -> why it has no watch
        self._quiet_until: dict[str, float] = {}  # container id -> monotonic end of its current burst
        self._woken: dict[str, float] = {}  # container id -> monotonic time of its last wake
        self._pending: set[str] = set()  # containers with events since their last wake
        self.wakes = 0
        self._thread = threading.Thread(target=self._run, name="drift", daemon=True)
        self._thread.start()

    # --- watches --------------------------------------------------------------------------------
    def add(self, container_id: str, mount: DataMount | None, reachable: bool) -> str | None:
        """Watch the container's data dir (mount.host_path, reached by data_path); None when watched, else why
        not (also kept for why()). reachable: whether this process sees the engine's host paths. A container
        already watched is left as it is."""
        with self._lock:
            if container_id in self._watch:
                return None
        why = _refusal(mount, reachable)
        if why is None and mount is not None:
            try:
                with data_path(mount) as path:
                    wd = self._inotify.add_watch(path, MASK)
            except (OwnershipError, OSError) as exc:
                why = f"cannot watch {mount.host_path}: {exc}"
        with self._lock:
            if why is not None:
                self._off[container_id] = why
                return why
            assert mount is not None  # _refusal gives a reason for a container without a data mount
            self._off.pop(container_id, None)
            self._wds.setdefault(wd, set()).add(container_id)
            self._watch[container_id] = (wd, mount.host_path)
        return None

    def remove(self, container_id: str, why: str | None = None) -> None:
        """Stop watching the container's data dir (the descriptor's watch is removed once no container shares it);
        why, when given, is what why() says afterwards, else the container is forgotten."""
        with self._lock:
            wd, _ = self._watch.pop(container_id, (None, ""))
            self._quiet_until.pop(container_id, None)
            self._woken.pop(container_id, None)
            self._pending.discard(container_id)
            if why:
                self._off[container_id] = why
            else:
                self._off.pop(container_id, None)
            if wd is None:
                return
            sharing = self._wds.get(wd, set())
            sharing.discard(container_id)
            if sharing:
                return
            self._wds.pop(wd, None)
        try:
            self._inotify.rm_watch(wd)
        except OSError:
            pass  # the kernel removed it already (the directory is gone: IN_IGNORED)

    def observe(self, container_id: str, status: str, target: dict | None, reachable: bool) -> None:
        """After a probe (Watcher.on_probe): watch a running container's data dir (target: Target.as_dict() of the
        probe's facts), drop the watch of one that is not running."""
        if status != "running":
            self.remove(container_id, f"the container is {status}")
            return
        if target is not None and not self.watching(container_id):
            mount = target.get("mount")
            self.add(container_id, DataMount(**mount) if mount else None, reachable)

    def watching(self, container_id: str) -> bool:
        with self._lock:
            return container_id in self._watch

    def why(self, container_id: str) -> str:
        """"on: PATH" when the container's data dir is watched, else "off: why" (the periodic probe finds it)."""
        with self._lock:
            if container_id in self._watch:
                return f"on: {self._watch[container_id][1]}"
            why = self._off.get(container_id, "not watched yet")
        return f"off: {why}; the periodic probe finds it"

    def count(self) -> int:
        """How many kernel watches are held."""
        with self._lock:
            return len(self._wds)

    def close(self) -> None:
        """Stop the thread; it closes the inotify descriptor (every watch goes with it) and its pipe."""
        try:
            os.write(self._stop_w, b"x")
        except OSError:
            return
        self._thread.join(timeout=5)

    # --- events ---------------------------------------------------------------------------------
    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._inotify.fileno(), select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        try:
            while True:
                ready = poller.poll(self._timeout_ms())
                if any(fd == self._stop_r for fd, _ in ready):
                    return
                if ready:
                    self._events(self._inotify.read(timeout=0))
                self._trailing()
        finally:
            self._inotify.close()
            os.close(self._stop_r)
            os.close(self._stop_w)

    def _timeout_ms(self) -> int | None:
        """Until the next pending burst ends; None (block) when no burst is pending."""
        with self._lock:
            ends = [self._due_at(c) for c in self._pending]
        if not ends:
            return None
        return max(0, int((min(ends) - time.monotonic()) * 1000) + 1)

    def _events(self, events) -> None:
        now, due = time.monotonic(), []
        with self._lock:
            touched: set[str] = set()
            for event in events:
                if event.mask & flags.Q_OVERFLOW:
                    touched.update(self._watch)
                elif event.mask & flags.IGNORED:
                    for cid in self._wds.pop(event.wd, set()):
                        self._watch.pop(cid, None)
                        self._off[cid] = "its data dir was removed or unmounted"
                else:
                    touched.update(self._wds.get(event.wd, ()))
            for cid in touched:
                if now >= self._due_at(cid):
                    due.append(cid)
                else:
                    self._pending.add(cid)
                self._quiet_until[cid] = now + self.debounce
        self._fire(due)

    def _trailing(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [c for c in self._pending if self._due_at(c) <= now]
            self._pending.difference_update(due)
        self._fire(due)

    def _due_at(self, container_id: str) -> float:
        """When the container may be woken next: its burst over, and gap seconds after its last wake."""
        return max(self._quiet_until.get(container_id, 0.0), self._woken.get(container_id, -self.gap) + self.gap)

    def _fire(self, due: list[str]) -> None:
        now = time.monotonic()
        with self._lock:
            for cid in due:
                self._woken[cid] = now
        for cid in due:
            self.wakes += 1
            self.wake(cid)
