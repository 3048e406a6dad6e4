"""Case 23 (issue 24 kind C): a named volume shared by Redis (999:1000) and another service whose entrypoint chowns
it to 101:102 at every start (cedar2025/Xboard#930). Every drift is healed, the breaker never stops the hook (the
repairs are verified: issue 27 defect 1), writes are never refused after a heal, and the conflict names the other
container."""

from __future__ import annotations

import time

import pytest
import redis

from ownvol.dockertime import timestamp_ns
from tests.support.common import new_name
from tests.support.engine import wait_for
from tests.support.fixtures_hook import heal_report

pytestmark = pytest.mark.engine

OFFICIAL = "ownvol/redis:7-official"
CHOWNS = 10
EVERY = 4.0  # seconds between two starts of the other service: ten within a minute


def by(name: str, kind: str):
    return lambda e: e["event"] == kind and e.get("container") == name


def chowned_at(app, since: float) -> float:
    """When the other service's entrypoint last finished its chown (its echo's engine timestamp, epoch seconds)."""
    lines = app.logs(timestamps=True, since=int(since) - 1).decode().splitlines()
    stamps = [line.split(" ", 1)[0] for line in lines if "chown redis:redis /data done" in line]
    assert stamps, lines
    return timestamp_ns(stamps[-1]) / 1e9


def test_a_volume_rechowned_by_another_service_at_every_start(hook, tracked, docker_client, redis_image, port):
    docker_client.images.get(OFFICIAL)
    volume = tracked.volume(new_name("vol"))
    docker_client.volumes.create(volume, labels=tracked.labels)
    h = hook()  # the packaged strategies: the breaker is the real one (8 actions in 600 s)
    db = tracked.run(redis_image, ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", "/data",
                                   "--save", "5", "1", "--appendonly", "yes"],
                     user="999:1000", network_mode="host", restart_policy={"Name": "unless-stopped"},
                     labels=h.labels, volumes={volume: {"bind": "/data", "mode": "rw"}})
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=3, decode_responses=True)
    wait_for(lambda: r.ping(), 30, what="Redis to answer")
    h.wait_event(lambda e: by(db.name, "health")(e) and e["state"] == "healthy", 30, "Redis to be seen healthy")

    app, heals = None, []
    for i in range(CHOWNS):
        mark, began = h.mark(), time.time()
        if app is None:
            app = tracked.run(OFFICIAL, ["sh", "-c", 'chown 101:102 /data && echo "xboard: chown redis:redis /data '
                                                     'done" && exec sleep infinity'],
                              network_mode="none", restart_policy={"Name": "unless-stopped"},
                              labels={"ownvol.watch": "false"}, volumes={volume: {"bind": "/data", "mode": "rw"}})
        else:
            app.restart(timeout=0)
        recovered = h.wait_event(by(db.name, "recovered"), 15, f"drift {i + 1} to be healed", after=mark)
        heals.append(recovered["ts"] - chowned_at(app, began))
        assert r.set(f"k{i}", f"v{i}") is True  # never MISCONF after the heal
        r.bgsave()
        wait_for(lambda: r.info("persistence")["rdb_bgsave_in_progress"] == 0, 10, what="the BGSAVE to end")
        assert r.info("persistence")["rdb_last_bgsave_status"] == "ok"
        time.sleep(max(0.0, began + EVERY - time.time()))

    for i, seconds in enumerate(heals):
        heal_report(f"case 23, foreign chown {i + 1} of {CHOWNS}", seconds)
    assert h.of("gave-up", db.name) == [] and h.of("suppressed", db.name) == []
    assert len(h.of("recovered", db.name)) >= CHOWNS
    shared = h.of("shared-volume", db.name)
    assert [e["repeats"] for e in shared][:3] == [2, 4, 8], shared
    assert all(e["foreign_owner"] == "101:102" and e["owner"] == "999:1000" for e in shared), shared
    assert [o["name"] for o in shared[0]["others"]] == [app.name], shared[0]
    assert app.name in shared[0]["message"] and "its own volume" in shared[0]["message"]
    mine = [c for c in h.status()["containers"] if c["name"] == db.name][0]
    assert mine["shared"]["foreign_owner"] == "101:102" and mine["shared"]["others"][0]["name"] == app.name
    doctor = h.cli("doctor", db.name, "--state-dir", str(h.state_dir))
    assert doctor.returncode == 0, doctor.stderr
    assert f"shared: {app.name} (running) at /data mount the same source" in doctor.stdout, doctor.stdout
    assert "conflict: the owner of" in doctor.stdout and "changed to 101:102" in doctor.stdout, doctor.stdout
    assert r.mget([f"k{i}" for i in range(CHOWNS)]) == [f"v{i}" for i in range(CHOWNS)]
