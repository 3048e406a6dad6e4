"""hooks/drift.py on a real inotify in a tmp dir: a chown/chmod wakes one probe of its container (debounced),
watches come and go with their containers, no symlink is followed, the descriptor does not leak; and the
watcher's probe loop probes only the container poked."""

from __future__ import annotations

import errno
import io
import os
import threading
import time

import pytest

from ownvol.hook.drift import DriftWatch, watchable
from ownvol.hook.model import DataMount, Health
from ownvol.hook.telemetry import Telemetry
from ownvol.hook.watcher import ProbeWake, Watched, Watcher
from tests.support.fakes import IdleRecovery


class Wakes:
    """wake() for DriftWatch: the container ids woken, in order; until() waits for a condition on them."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, container_id: str) -> None:
        with self._cond:
            self.ids.append(container_id)
            self._cond.notify_all()

    def until(self, predicate, timeout: float = 20.0) -> list[str]:
        with self._cond:
            assert self._cond.wait_for(lambda: predicate(self.ids), timeout), f"wakes so far: {self.ids}"
            return list(self.ids)


def bind(path) -> DataMount:
    return DataMount("bind", str(path), "/data", "")


@pytest.fixture
def drift():
    made: list[DriftWatch] = []

    def make(debounce: float = 0.2) -> tuple[DriftWatch, Wakes]:
        wakes = Wakes()
        made.append(DriftWatch(wakes, debounce))
        return made[-1], wakes

    yield make
    for d in made:
        d.close()


def test_a_chmod_of_the_dir_or_an_entry_wakes_its_container_only(drift, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "ibdata1").write_text("x")
    watch, wakes = drift()
    assert watch.add("A", bind(a), True) is None and watch.add("B", bind(b), True) is None
    assert watch.why("A") == f"on: {a}"
    os.chmod(a / "ibdata1", 0o600)
    assert wakes.until(lambda ids: ids) == ["A"]
    os.chmod(b, 0o700)
    assert wakes.until(lambda ids: "B" in ids) == ["A", "B"]


def test_a_burst_of_events_wakes_once_at_once_and_once_when_it_is_over(drift, tmp_path):
    """A `chown -R` of many entries fires an event per entry: one wake at the first, one after the last. (The
    first wake is awaited before the rest: a watch thread that reads the whole burst in one batch wakes once, all
    of it already done, which is right but not what this test is about.)"""
    for i in range(1000):
        (tmp_path / f"f{i}").write_text("")
    watch, wakes = drift(debounce=1.0)
    watch.add("A", bind(tmp_path), True)
    os.chmod(tmp_path / "f0", 0o600)
    assert wakes.until(lambda ids: ids) == ["A"]
    for i in range(1, 1000):
        os.chmod(tmp_path / f"f{i}", 0o600)
    os.chmod(tmp_path, 0o700)
    assert wakes.until(lambda ids: len(ids) >= 2) == ["A", "A"]
    assert watch._timeout_ms() is None  # nothing pending: the burst ended with the trailing wake
    assert wakes.ids == ["A", "A"]


def test_a_container_s_own_chmods_cannot_drive_its_probes_faster_than_the_gap(drift, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    watch, wakes = drift(debounce=0.0)
    watch.gap = 3600.0
    watch.add("A", bind(a), True), watch.add("B", bind(b), True)
    os.chmod(a, 0o700)
    assert wakes.until(lambda ids: ids) == ["A"]
    os.chmod(a, 0o750)  # within the gap: held back
    os.chmod(b, 0o700)  # read after it
    assert wakes.until(lambda ids: "B" in ids) == ["A", "B"]
    assert watch._timeout_ms() > 3_000_000  # A's wake waits for the end of its gap


def test_watches_come_and_go_with_their_containers(drift, tmp_path):
    shared, other = tmp_path / "shared", tmp_path / "other"
    shared.mkdir(), other.mkdir()
    watch, wakes = drift()
    watch.add("A", bind(shared), True)
    watch.add("B", bind(shared), True)  # the same volume in two containers: one kernel watch
    watch.add("C", bind(other), True)
    assert watch.count() == 2
    watch.remove("A")
    assert watch.count() == 2 and not watch.watching("A") and watch.watching("B")
    os.chmod(shared, 0o700)
    assert wakes.until(lambda ids: ids) == ["B"]
    watch.remove("B")
    assert watch.count() == 1
    os.chmod(shared, 0o750)
    os.chmod(other, 0o700)  # read after the chmod of shared: had shared still been watched, its wake came first
    assert wakes.until(lambda ids: len(ids) >= 2) == ["B", "C"]


def test_stopped_containers_lose_their_watch_and_running_ones_get_it(drift, tmp_path):
    watch, _ = drift()
    target = {"mount": bind(tmp_path).as_dict()}
    watch.observe("A", "running", target, True)
    assert watch.watching("A")
    watch.observe("A", "exited", target, True)
    assert not watch.watching("A") and watch.why("A").startswith("off: the container is exited")
    assert watch.count() == 0
    watch.observe("A", "running", target, True)
    assert watch.watching("A")


def test_a_removed_data_dir_turns_the_watch_off(drift, tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    watch, wakes = drift()
    watch.add("A", bind(gone), True)
    gone.rmdir()
    deadline = time.monotonic() + 20
    while watch.watching("A") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert watch.why("A").startswith("off: its data dir was removed") and watch.count() == 0


def test_no_symlink_is_followed_and_unreachable_paths_say_why(drift, tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "vol").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "vol" / "data")
    link = DataMount("volume", str(tmp_path / "vol"), "/data", "data")
    watch, wakes = drift()
    why = watch.add("A", link, True)
    assert why and "symlink" in why and watch.count() == 0
    assert "symlink" in (watchable(link, True) or "")
    os.symlink(tmp_path / "real", tmp_path / "top")
    assert watch.add("B", bind(tmp_path / "top"), True) is not None  # IN_DONT_FOLLOW on the source's last part
    assert "not this process's" in watch.add("C", bind(tmp_path / "real"), False)
    assert "not this process's" in watch.why("C") and "periodic probe" in watch.why("C")
    assert watchable(bind(tmp_path / "real"), True) is None
    assert watch.count() == 0 and wakes.ids == []


def test_the_inotify_descriptor_does_not_leak(tmp_path):
    before = set(os.listdir("/proc/self/fd"))
    for _ in range(20):
        watch = DriftWatch(lambda cid: None)
        watch.add("A", bind(tmp_path), True)
        watch.close()
    assert set(os.listdir("/proc/self/fd")) <= before


def test_a_poke_wakes_only_its_container_and_set_wakes_all():
    wake = ProbeWake()
    wake.poke("A")
    assert wake.is_set() and wake.take() == (False, {"A"}) and not wake.is_set()
    wake.poke("A")
    wake.set()
    assert wake.take() == (True, {"A"})


class _Probes:
    """An executor whose health() records who was probed (in a Wakes)."""

    def __init__(self) -> None:
        self.probed = Wakes()

    def health(self, cid: str) -> Health:
        self.probed(cid)
        return Health("healthy", [], "running", "PONG")


def test_the_probe_loop_probes_only_the_container_poked():
    probes = _Probes()
    watcher = Watcher(lambda: None, {}, IdleRecovery(), Telemetry(out=io.StringIO()), probes, interval=3600)
    watcher.watched = {c: Watched(c, c) for c in ("A", "B", "C")}
    thread = threading.Thread(target=watcher._probe_loop, daemon=True)
    thread.start()
    try:
        watcher.probe_soon("B")
        assert probes.probed.until(lambda ids: ids) == ["B"]
        watcher._wake.set()
        probed = probes.probed.until(lambda ids: len(ids) >= 4)
        assert probed[0] == "B" and sorted(probed[1:4]) == ["A", "B", "C"]
    finally:
        watcher.stop()
        thread.join(10)


def test_the_hook_runs_without_a_drift_watch_when_inotify_refuses(tmp_path, monkeypatch):
    """inotify_init1 fails with EMFILE once fs.inotify.max_user_instances is used up (inotify_init(2)): the hook
    still starts, every container's drift watch is off with that reason, and the periodic probe remains."""
    from ownvol.hook import assembly
    from ownvol.hook import drift as drift_module

    def refuse():
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(drift_module, "INotify", refuse)
    out = io.StringIO()
    monkeypatch.setattr(assembly, "Telemetry", lambda webhook=None: Telemetry(out=out, webhook=webhook))
    watcher, recovery, telemetry, board, drift = assembly.build(assembly.Options(state_dir=str(tmp_path)))
    assert isinstance(drift, str) and "Too many open files" in drift and "max_user_instances" in drift
    assert any('"drift-watch-off"' in line for line in out.getvalue().splitlines())
    assert not watcher.on_forget
