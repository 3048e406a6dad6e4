"""The hook under faults: its engine restarting mid-incident, a Redis that never answers, the hook killed
in the middle of a repair walk, and twenty Redis containers failing at once beside one it cannot heal.

(tests/test_hook_recovery.py has the engine restart before any incident, a read-only mount giving up
alone, and a hook killed between two actions; these go where those stop.)
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from tests.support.common import free_port
from tests.support.engine import redis_cmd, wait_for
from tests.support.fakes import FakeExecutor, engine, events
from tests.support.fixtures_hook import fast_strategies, heal_report, run_redis


def by(name: str, kind: str):
    return lambda e: e["event"] == kind and e.get("container") == name


def client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=3, decode_responses=True)


@pytest.mark.engine
def test_an_engine_restart_in_the_middle_of_an_incident(hook, private_engine, redis_image, host_dir, port, tmp_path):
    """The engine goes down between two actions of an incident (and the container with it) and comes back:
    the hook reconnects, follows the container again and still ends the incident healed."""
    engine = private_engine
    engine.start()
    engine.load_image(redis_image)
    strategies = fast_strategies(tmp_path / "s.yaml", types={
        "permission-denied": {"actions": ["restart", "repair-ownership"], "attempts": 3, "delay": 8, "backoff": 1,
                              "max_delay": 8}})
    h = hook(strategies=strategies, env={"DOCKER_HOST": engine.host})
    started = time.time()
    c = engine.client().containers.run(redis_image, redis_cmd(port, data_dir="/bound"), detach=True, user="999:999",
                                       network_mode="host", labels=h.labels,
                                       volumes={str(host_dir): {"bind": "/bound", "mode": "rw"}},
                                       restart_policy={"Name": "unless-stopped"})
    first = h.wait_event(lambda e: by(c.name, "action")(e) and e["step"] == 0, 60, "the incident's first action")
    mark = h.mark()
    engine.restart()  # in the 8 s before the next action
    h.wait_event(lambda e: e["event"] == "engine-connected" and e["reconnect"], 120, "the reconnect", after=mark)
    recovered = h.wait_event(by(c.name, "recovered"), 180, "the incident to end healed after the restart")
    heal_report("canary, engine restarted mid-incident", recovered["ts"] - started)
    assert recovered["incident"] == first["incident"] and h.proc.poll() is None
    assert client(port).ping() and (host_dir.stat().st_uid, host_dir.stat().st_gid) == (999, 999)


class Blackhole:
    """A TCP listener on 127.0.0.1 that takes every connection and never says a word."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._take, daemon=True).start()

    def _take(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for s in self.held:
            s.close()


@pytest.mark.engine
def test_a_redis_that_never_answers_holds_up_no_one(hook, tracked, redis_image, host_dir, port, tmp_path):
    """One watched Redis is reached at an address where connections hang unanswered: it is reported
    unreachable and left alone (no action on what cannot be diagnosed), while a canary beside it is healed."""
    hole = Blackhole()
    try:
        h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
        quiet_dir = tmp_path / "quiet"
        quiet_dir.mkdir()
        os.chown(quiet_dir, 999, 999)
        quiet = run_redis(tracked, redis_image, free_port(), quiet_dir,
                          {**h.labels, "ownvol.redis.url": f"redis://127.0.0.1:{hole.port}/0"})
        h.wait_event(lambda e: by(quiet.name, "health")(e) and e["state"] == "unreachable", 60,
                     "the silent Redis to be reported unreachable")
        started = time.time()
        canary = run_redis(tracked, redis_image, port, host_dir, h.labels, restart=True)
        recovered = h.wait_event(by(canary.name, "recovered"), 120, "the canary to be healed beside it")
        heal_report("canary beside a Redis that never answers", recovered["ts"] - started)
        assert client(port).ping()
        assert h.status()["containers"]  # /status answers too
        assert not [e for e in h.events if e.get("container") == quiet.name and e["event"] in ("incident", "action")]
        quiet.reload()
        assert quiet.status == "running" and quiet.attrs["RestartCount"] == 0
    finally:
        hole.close()


def _started_unfinished(db, action: str) -> bool:
    if not os.path.exists(db):
        return False
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        return conn.execute("SELECT count(*) FROM actions WHERE action = ? AND finished_at IS NULL",
                            (action,)).fetchone()[0] > 0


@pytest.mark.engine
def test_the_hook_killed_in_the_middle_of_a_repair_walk(hook, tracked, redis_image, host_dir, port, tmp_path):
    """SIGKILL while the repair walks a tree of 40 000 files: the next hook finds the action interrupted,
    does not repeat it at that step, and ends the incident healed."""
    for d in range(40):
        sub = host_dir / f"d{d}"
        sub.mkdir()
        for f in range(1000):
            (sub / f"f{f}").touch()
    strategies = fast_strategies(tmp_path / "s.yaml", types={
        "permission-denied": {"actions": ["repair-ownership", "restart"], "attempts": 2}})
    h = hook(strategies=strategies)
    started = time.time()
    c = run_redis(tracked, redis_image, port, host_dir, h.labels, restart=True)
    wait_for(lambda: _started_unfinished(h.db, "repair-ownership"), 60, interval=0.002,
             what="the repair walk to start")
    h.kill()
    assert not h.of("action", c.name), "the walk ended before the kill: make the tree bigger"

    h2 = hook(like=h)
    resumed = h2.wait_event(by(c.name, "resumed"), 30, "the incident to resume")
    assert resumed["done"] == ["0:repair-ownership:interrupted"], resumed
    recovered = h2.wait_event(by(c.name, "recovered"), 120, "the resumed incident to end healed")
    heal_report("canary, hook killed mid-walk", recovered["ts"] - started)
    steps = [e["step"] for e in h2.of("action", c.name)]
    assert all(s > 0 for s in steps), steps
    assert client(port).ping()


def test_a_failure_line_read_after_the_container_was_verified_healthy_opens_nothing(tmp_path):
    """Twenty containers failing at once make the hook lag: a crash line of an earlier run, read only after
    the container was healed and verified, must not open a second incident (whose first action could be a
    restart of a healthy Redis). A line written after the verdict is a new failure."""
    ex = FakeExecutor(heals="repair-ownership")
    rec, out = engine(tmp_path, ex)
    rec.clock = lambda: 1000.0
    first = rec.report("c1", "r", "permission-denied", "log", {"message": "crash"}, detected_at=990.0, background=False)
    assert rec.journal.incident(first.id).status == "resolved" and ex.ran == ["repair-ownership"]
    assert rec.report("c1", "r", "permission-denied", "log", {"message": "read late"}, detected_at=995.0) is None
    assert [e["logged"] for e in events(out) if e["event"] == "stale"] == [995.0] and ex.ran == ["repair-ownership"]
    rec.clock = lambda: 1010.0
    again = rec.report("c1", "r", "permission-denied", "log", {"message": "new crash"}, detected_at=1005.0,
                       background=False)
    assert again is not None and ex.ran == ["repair-ownership", "repair-ownership"]


@pytest.mark.engine
@pytest.mark.load
def test_twenty_redis_failing_at_once_and_one_that_cannot_be_healed(hook, tracked, redis_image, tmp_path):
    """Twenty canaries start together on root-owned mounts, beside one on a read-only mount: each of the
    twenty is healed with at most one restart by the hook, and the breaker stops the hook on the one it
    cannot heal; that one keeps crashing under its restart policy and the hook only records it."""
    strategies = fast_strategies(tmp_path / "s.yaml", breaker={"max_actions": 4, "window": 600},
                                 types={"read-only-filesystem": {"actions": ["repair-ownership", "restart"],
                                                                 "attempts": 4}})
    h = hook(strategies=strategies)
    dirs = []
    for i in range(21):
        d = tmp_path / f"data{i}"
        d.mkdir()
        os.chown(d, 0, 0)
        dirs.append(d)
    ports = [free_port() for _ in dirs]
    started = time.time()
    with ThreadPoolExecutor(8) as pool:
        containers = list(pool.map(lambda i: run_redis(tracked, redis_image, ports[i], dirs[i], h.labels,
                                                       restart=True, read_only=i == 20), range(21)))
    canaries, stuck = containers[:20], containers[20]

    gave_up = h.wait_event(by(stuck.name, "gave-up"), 300, "the breaker to stop the hook on the read-only one")
    assert gave_up["why"].startswith("circuit breaker"), gave_up
    times = []
    for c in canaries:
        recovered = h.wait_event(by(c.name, "recovered"), 300, f"{c.name} to be healed")
        times.append(recovered["ts"] - started)
    heal_report("20 canaries at once, the last one", max(times))
    for c, p in zip(canaries, ports[:20], strict=True):
        assert client(p).ping()
        hook_restarts = [e for e in h.of("action", c.name) if e["action"] == "restart" and e["result"] == "ok"]
        assert len(hook_restarts) <= 1, (c.name, hook_restarts)
        assert len(h.of("incident", c.name)) == 1, [e for e in h.events if e.get("container") == c.name][-12:]

    mark = h.mark()
    for _ in range(2):  # it keeps failing under Docker's own policy: seen, recorded, not acted on
        h.wait_event(by(stuck.name, "suppressed"), 120, "a repeat to be suppressed", after=mark)
        mark = h.mark()
    acted = [e for e in h.of("action", stuck.name) if e["result"] != "skipped"]
    assert len(acted) == 4 and all(e["ts"] <= gave_up["ts"] for e in h.of("action", stuck.name)), acted
    assert len(h.of("incident", stuck.name)) == 1
    assert all(len(h.of("incident", c.name)) == 1 for c in canaries), "a healed canary failed again"
