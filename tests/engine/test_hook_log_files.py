"""The hook reads json-file logs in the engine's own files (hooks/jsonfile.py) on the real engine: a failure is
detected with every logs request of the engine refused, one watch serves a container through its restarts
without reading an old line twice, and a container with another log driver is followed through the engine."""

from __future__ import annotations

import os
import signal
import time

import docker
import pytest
import redis

from tests.support.common import free_port
from tests.support.engine import wait_for
from tests.support.fixtures_hook import fast_strategies, redis_spec, run_redis
from tests.support.proxy import FailingProxy

pytestmark = pytest.mark.engine

LOGS_REQUEST = r"^GET (/v[0-9.]+)?/containers/[0-9a-f]+/logs\?"


def by(name: str, kind: str):
    return lambda e: e["event"] == kind and e.get("container") == name


def fail_next_run(h, c, data) -> float:
    """With the hook stopped (SIGSTOP), stop the container, give its data dir's tree to root, start it again, until its
    start-up failure is in its log; then let the hook go on. The line is in the file before the hook can probe or
    heal anything (a chown under a running server, or a stopped one, races the hook's probe: two CI runs lost it),
    and the hook reads it whoever opens the incident. Returns when the container was started again (epoch s)."""
    os.kill(h.proc.pid, signal.SIGSTOP)
    try:
        c.stop(timeout=5)
        for place, _, names in os.walk(data):  # the tree: the first run made appendonlydir and its files
            for path in [place, *(os.path.join(place, n) for n in names)]:
                os.lchown(path, 0, 0)
        started = time.time()
        c.start()
        assert wait_for(lambda: b"Permission denied" in c.logs(since=int(started) - 1), 30,
                        what="the start-up failure in the container's log")
    finally:
        os.kill(h.proc.pid, signal.SIGCONT)
    return started


def test_a_start_up_failure_is_read_from_the_file_with_the_engines_log_endpoint_refused(
        hook, tracked, redis_image, host_dir, port, tmp_path, docker_client):
    proxy = FailingProxy("/var/run/docker.sock", LOGS_REQUEST, every=True)
    try:
        h = hook(strategies=fast_strategies(tmp_path / "s.yaml"), env={"DOCKER_HOST": proxy.host})
        root = docker_client.info()["DockerRootDir"]
        c = run_redis(tracked, redis_image, port, host_dir, h.labels, restart=True)
        watching = h.wait_event(by(c.name, "watching"), 30, "the canary watched")
        detected = h.wait_event(by(c.name, "detected"), 60, "the start-up failure read from the log")
        assert "Permission denied" in detected["message"], detected
        h.wait_event(by(c.name, "recovered"), 90, "the canary healed")
        r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=3)
        assert wait_for(lambda: r.ping(), 30, what="PONG")
        c.reload()
        # the path the hook read is the one the engine says it writes, under the engine's own root
        assert c.attrs["LogPath"] == os.path.join(root, "containers", c.id, f"{c.id}-json.log")
        assert watching["logs"] == f"file {c.attrs['LogPath']}", watching
        # the same file held the failed run and the healed one (the hook may have restarted it early, which resets
        # RestartCount: the file says it)
        with open(c.attrs["LogPath"], errors="replace") as log:
            lines = log.read()
        assert "Permission denied" in lines and "Ready to accept connections" in lines.split("Permission denied")[-1]
        # the old failure line, still in the file, was read once: one detection, one incident
        assert len(h.of("detected", c.name)) == 1, h.of("detected", c.name)
        assert len({e["incident"] for e in h.of("incident", c.name)}) == 1
        assert not h.of("follower-restarted", c.name) and not h.of("follower-stopped", c.name)
        # the hook never even asked the engine's logs endpoint (each such request would have been dropped)
        assert proxy.dropped == 0, proxy.tripped_on
    finally:
        proxy.close()


def test_a_failure_of_a_later_run_is_read_from_the_same_file(hook, tracked, redis_image, host_dir, port, tmp_path):
    """One watch for the container's life: its second run's failure, appended to the file its healthy first run
    began, is read."""
    os.chown(host_dir, 999, 999)
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    c = run_redis(tracked, redis_image, port, host_dir, h.labels, restart=True)
    h.wait_event(lambda e: by(c.name, "health")(e) and e["state"] == "healthy", 60, "Redis healthy")
    again = fail_next_run(h, c, host_dir)
    detected = h.wait_event(by(c.name, "detected"), 60, "the second run's start-up failure read from the file")
    assert "Permission denied" in detected["message"] and detected["ts"] >= again, detected
    h.wait_event(by(c.name, "recovered"), 90, "healed")
    assert len({e["incident"] for e in h.of("incident", c.name)}) == 1, h.of("incident", c.name)


def test_a_container_with_another_log_driver_is_followed_through_the_engine(hook, tracked, redis_image, host_dir,
                                                                            port, tmp_path):
    os.chown(host_dir, 999, 999)
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    c = run_redis(tracked, redis_image, port, host_dir, h.labels)  # json-file, the engine's default: the control
    assert h.wait_event(by(c.name, "watching"), 30, "the json-file one watched")["logs"].startswith("file ")
    local_port, d = free_port(), tmp_path / "local"
    d.mkdir()
    os.chown(d, 0, 0)  # a start-up failure: Redis logs it at every start until the owner is repaired
    spec = redis_spec(local_port, d, h.labels, restart=True)
    other = tracked.run(redis_image, spec.pop("command"), log_config=docker.types.LogConfig(type="local"), **spec)
    watching = h.wait_event(by(other.name, "watching"), 30, "the local-driver container watched")
    assert watching["logs"] == "engine (log driver local, not json-file)", watching
    wait_for(lambda: [s for s in h.status()["containers"] if s["name"] == other.name and s["following"]], 30,
             what="its log followed through the engine")
    logs = {s["name"]: s["logs"] for s in h.status()["containers"]}
    assert logs[other.name] == "engine" and logs[c.name].startswith("file /") and c.id in logs[c.name], logs
    detected = h.wait_event(by(other.name, "detected"), 60, "the start-up failure read through the engine")
    assert "Permission denied" in detected["message"], detected
    h.wait_event(by(other.name, "recovered"), 90, "healed")


def test_a_failure_after_the_engine_rotated_the_log_is_read(hook, tracked, redis_image, host_dir, port,
                                                                 tmp_path):
    """dockerd's own rotation (--log-opt max-size, max-file): the file is renamed and a new one made while the hook
    follows it; the failure logged after the rotations is read."""
    os.chown(host_dir, 999, 999)
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    spec = redis_spec(port, host_dir, h.labels, restart=True, extra=("--enable-debug-command", "yes"))
    c = tracked.run(redis_image, spec.pop("command"), **spec,
                    log_config=docker.types.LogConfig(type="json-file", config={"max-size": "2k", "max-file": "3"}))
    assert h.wait_event(by(c.name, "watching"), 30, "the canary watched")["logs"].startswith("file ")
    h.wait_event(lambda e: by(c.name, "health")(e) and e["state"] == "healthy", 60, "Redis healthy")
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=3)
    for i in range(60):  # 60 lines of ~100 bytes each in the log: rotated more than once at 2 KB
        r.execute_command("DEBUG", "LOG", f"filler line {i} " + "x" * 60)
    c.reload()
    log = c.attrs["LogPath"]
    assert wait_for(lambda: os.path.exists(log + ".1"), 10, what="the engine to rotate the log")
    again = fail_next_run(h, c, host_dir)
    detected = h.wait_event(by(c.name, "detected"), 60, "the start-up failure read after the rotations")
    assert "Permission denied" in detected["message"] and detected["ts"] >= again, detected
    h.wait_event(by(c.name, "recovered"), 90, "healed")
    assert len({e["incident"] for e in h.of("incident", c.name)}) == 1, h.of("incident", c.name)


def test_a_failure_logged_just_before_the_hook_connected_is_read(hook, tracked, redis_image, host_dir, port, tmp_path):
    """A running container's log is read from where the replayed events begin (the whole second the hook connected
    in) less 2 s: a failure logged while the hook restarted is read at its pick-up (a CI run lost a Valkey's
    start-up failure logged just before the hook connected)."""
    os.chown(host_dir, 999, 999)
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"), extra=("--drift-watch", "off", "--interval", "3600"))
    c = run_redis(tracked, redis_image, port, host_dir, h.labels)
    h.wait_event(lambda e: by(c.name, "health")(e) and e["state"] == "healthy", 60, "Redis healthy")
    h.stop()
    os.chown(host_dir, 0, 0)
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=3)
    asked = time.time()
    r.bgsave()
    assert wait_for(lambda: b"Permission denied" in c.logs(since=int(asked) - 1), 30, what="the failure logged")
    logged = time.time()
    hook(like=h)
    connected = h.wait_event(lambda e: e["event"] == "engine-connected", 30, "the hook connected")["ts"]
    if connected - logged > 1.5:
        pytest.skip(f"the hook took {connected - logged:.1f} s to connect: past the window this test is about")
    detected = h.wait_event(by(c.name, "detected"), 30, "the failure logged before the hook connected")
    assert "Permission denied" in detected["message"], detected
    h.wait_event(by(c.name, "recovered"), 90, "healed")
