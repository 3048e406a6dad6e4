"""The hook when the engine's socket fails in the middle of an action: the step fails with its reason and the
incident ends (gave-up, or healed by a later step); it never stays open with nobody working on it."""

from __future__ import annotations

import os

import pytest
import redis

from tests.support.common import free_port
from tests.support.engine import wait_for
from tests.support.fixtures_hook import fast_strategies, run_redis
from tests.support.proxy import FailingProxy

pytestmark = pytest.mark.engine


@pytest.fixture
def proxy():
    p = FailingProxy("/var/run/docker.sock", r"^POST /v[0-9.]+/containers/create")
    yield p
    p.close()


def test_the_engine_socket_failing_mid_action_ends_the_incident(hook, tracked, redis_image, host_dir, port, proxy,
                                                                tmp_path):
    # the repair goes through a helper container: its create is the request on which the socket drops
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"), extra=("--repair-via", "helper"),
             env={"DOCKER_HOST": proxy.host})
    c = run_redis(tracked, redis_image, port, host_dir, h.labels, restart=False)
    incident = h.wait_event(lambda e: e["event"] == "incident" and e.get("container") == c.name, 60,
                            "the canary's incident")
    ended = h.wait_event(lambda e: e["event"] in ("gave-up", "recovered") and e.get("incident") == incident["incident"],
                         90, "the incident to end")
    assert proxy.tripped_on.startswith(b"POST ") and b"/containers/create" in proxy.tripped_on
    raised = [e for e in h.of("action-raised", c.name) if e["action"] == "repair-ownership"]
    assert raised and "Connection" in raised[0]["error"], h.of("action", c.name)
    first = [e for e in h.of("action", c.name) if e["incident"] == incident["incident"]][0]
    assert (first["action"], first["result"]) == ("repair-ownership", "failed")
    assert ended["event"] == "gave-up"
    proxy.heal()
    assert h.status()["open_incidents"] == []


def test_a_follower_whose_log_stream_dies_is_restarted(hook, tracked, redis_image, host_dir, port, tmp_path):
    proxy = FailingProxy("/var/run/docker.sock", r"^GET (/v[0-9.]+)?/containers/[0-9a-f]+/logs\?.*follow=1", once=True)
    try:
        os.chown(host_dir, 999, 999)
        # the engine's log stream, which this test breaks; no drift watch: it sees the chown below and repairs within
        # 0.1 s, and a BGSAVE sent after that succeeds and logs nothing (two CI rehearsals under load)
        h = hook(strategies=fast_strategies(tmp_path / "s.yaml"), env={"DOCKER_HOST": proxy.host},
                 extra=("--log-files", "off", "--drift-watch", "off"))
        c = run_redis(tracked, redis_image, port, host_dir, h.labels)
        restarted = h.wait_event(lambda e: e["event"] == "follower-restarted" and e.get("container") == c.name, 60,
                                 "the dead follower to be restarted")
        assert b"/logs?" in proxy.tripped_on and "Connection" in restarted["error"]
        wait_for(lambda: [s for s in h.status()["containers"] if s["name"] == c.name and s["following"]], 30,
                 what="the container followed again")
        # the restarted follower reads the log: a persistence failure is still detected
        h.wait_event(lambda e: e["event"] == "health" and e.get("container") == c.name and e["state"] == "healthy",
                     60, "Redis healthy")
        os.chown(host_dir, 0, 0)
        redis.Redis(host="127.0.0.1", port=port, socket_timeout=3).bgsave()
        h.wait_event(lambda e: e["event"] == "detected" and e.get("container") == c.name, 60,
                     "the BGSAVE failure read from the log")
    finally:
        proxy.close()


def test_twenty_logs_followed_by_one_reader_and_a_failure_in_one_is_detected(hook, tracked, redis_image, tmp_path):
    # no drift watch: it sees the chown below and repairs within 0.1 s, and a BGSAVE sent after that logs nothing
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"), extra=("--drift-watch", "off"))
    dirs, ports, containers = [], [], []
    for i in range(20):
        d = tmp_path / f"data{i}"
        d.mkdir()
        os.chown(d, 999, 999)
        dirs.append(d)
        ports.append(free_port())
        containers.append(run_redis(tracked, redis_image, ports[-1], d, h.labels))
    names = {c.name for c in containers}
    wait_for(lambda: {s["name"] for s in h.status()["containers"] if s["following"] and s["health"] == "healthy"}
             >= names, 120, what="all 20 followed and healthy")
    threads = len(os.listdir(f"/proc/{h.proc.pid}/task"))
    assert threads < 20, f"{threads} threads in the hook for 20 followed logs"
    failing = containers[13]
    os.chown(dirs[13], 0, 0)
    redis.Redis(host="127.0.0.1", port=ports[13], socket_timeout=3).bgsave()
    # `detected` is emitted for a log line only (the probe, woken by the same lines, may open the incident first)
    detected = h.wait_event(lambda e: e["event"] == "detected" and e.get("container") in names, 60,
                            "the BGSAVE failure read from one of the 20 logs")
    assert detected["container"] == failing.name, detected
    h.wait_event(lambda e: e["event"] == "incident" and e.get("container") == failing.name, 30,
                 "the incident of the failing one")
    assert not [e for e in h.events if e["event"] in ("detected", "incident") and e.get("container") in names
                and e.get("container") != failing.name]
