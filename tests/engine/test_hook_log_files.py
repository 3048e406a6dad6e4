"""The hook reads json-file logs in the engine's own files (hooks/jsonfile.py) on the real engine: a failure is
detected with every logs request of the engine refused, one watch serves a container through its restarts
without reading an old line twice, and a container with another log driver is followed through the engine."""

from __future__ import annotations

import os

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
        assert c.attrs["RestartCount"] >= 1  # the same file held the failed run and the healed one
        # the old failure line, still in the file, was read once: one detection, one incident
        assert len(h.of("detected", c.name)) == 1, h.of("detected", c.name)
        assert len({e["incident"] for e in h.of("incident", c.name)}) == 1
        assert not h.of("follower-restarted", c.name) and not h.of("follower-stopped", c.name)
        # the hook never even asked the engine's logs endpoint (each such request would have been dropped)
        assert proxy.dropped == 0, proxy.tripped_on
    finally:
        proxy.close()


def test_a_run_time_failure_after_a_restart_is_read_once(hook, tracked, redis_image, host_dir, port, tmp_path):
    os.chown(host_dir, 999, 999)
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    c = run_redis(tracked, redis_image, port, host_dir, h.labels)
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=3)
    h.wait_event(lambda e: by(c.name, "health")(e) and e["state"] == "healthy", 60, "Redis healthy")
    c.restart(timeout=5)
    h.wait_event(lambda e: by(c.name, "health")(e) and e["state"] == "healthy" and e["previous"] != "healthy", 60,
                 "Redis healthy again after its restart")
    os.chown(host_dir, 0, 0)
    assert wait_for(lambda: r.ping(), 30, what="PONG")
    r.bgsave()
    h.wait_event(by(c.name, "recovered"), 90, "the BGSAVE failure healed")
    assert len(h.of("detected", c.name)) >= 1
    assert len({e["incident"] for e in h.of("incident", c.name)}) == 1, h.of("incident", c.name)


def test_a_container_with_another_log_driver_is_followed_through_the_engine(hook, tracked, redis_image, host_dir,
                                                                            port, tmp_path):
    os.chown(host_dir, 999, 999)
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    c = run_redis(tracked, redis_image, port, host_dir, h.labels)  # json-file, the engine's default: the control
    assert h.wait_event(by(c.name, "watching"), 30, "the json-file one watched")["logs"].startswith("file ")
    local_port, d = free_port(), tmp_path / "local"
    d.mkdir()
    os.chown(d, 999, 999)
    spec = redis_spec(local_port, d, h.labels)
    other = tracked.run(redis_image, spec.pop("command"), log_config=docker.types.LogConfig(type="local"), **spec)
    watching = h.wait_event(by(other.name, "watching"), 30, "the local-driver container watched")
    assert watching["logs"] == "engine (log driver local, not json-file)", watching
    wait_for(lambda: [s for s in h.status()["containers"] if s["name"] == other.name and s["following"]], 30,
             what="its log followed through the engine")
    logs = {s["name"]: s["logs"] for s in h.status()["containers"]}
    assert logs[other.name] == "engine" and logs[c.name].startswith("file /") and c.id in logs[c.name], logs
    h.wait_event(lambda e: by(other.name, "health")(e) and e["state"] == "healthy", 60, "Redis healthy")
    os.chown(d, 0, 0)
    redis.Redis(host="127.0.0.1", port=local_port, socket_timeout=3).bgsave()
    detected = h.wait_event(by(other.name, "detected"), 60, "the BGSAVE failure read through the engine")
    assert "Permission denied" in detected["message"], detected


def test_a_failure_after_the_engine_rotated_the_log_is_read_once(hook, tracked, redis_image, host_dir, port,
                                                                 tmp_path):
    """dockerd's own rotation (--log-opt max-size, max-file): the file is renamed and a new one made while the hook
    follows it; the failure logged after the rotations is read, once."""
    os.chown(host_dir, 999, 999)
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    spec = redis_spec(port, host_dir, h.labels, extra=("--enable-debug-command", "yes"))
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
    os.chown(host_dir, 0, 0)
    r.bgsave()
    detected = h.wait_event(by(c.name, "detected"), 60, "the BGSAVE failure read after the rotations")
    assert "Permission denied" in detected["message"], detected
    h.wait_event(by(c.name, "recovered"), 90, "healed")
    lines = [e["message"] for e in h.of("detected", c.name)]
    assert len(lines) == len(set(lines)), lines  # no line read twice across the rotations
    assert len({e["incident"] for e in h.of("incident", c.name)}) == 1, h.of("incident", c.name)
