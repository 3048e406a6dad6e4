"""The hook when the engine's socket fails in the middle of an action: the step fails with its reason and the
incident ends (gave-up, or healed by a later step); it never stays open with nobody working on it."""

from __future__ import annotations

import os

import pytest
import redis

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
    proxy = FailingProxy("/var/run/docker.sock", r"^GET /v[0-9.]+/containers/[0-9a-f]+/logs\?.*follow=1", once=True,
                         drops=2)
    try:
        os.chown(host_dir, 999, 999)
        h = hook(strategies=fast_strategies(tmp_path / "s.yaml"), env={"DOCKER_HOST": proxy.host})
        c = run_redis(tracked, redis_image, port, host_dir, h.labels)
        restarted = h.wait_event(lambda e: e["event"] == "follower-restarted" and e.get("container") == c.name, 60,
                                 "the dead follower to be restarted")
        assert b"/logs?" in proxy.tripped_on and "connect" in restarted["error"].lower(), restarted
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
