"""What changed for a volume plugin and a watcher between Docker 20.10 and the engines people run now (27 to 29),
each proven on the private engine under test (--engine 20, 26 or 28; `make test-matrix` runs all three).

Sources: the Engine API version history (docs.docker.com/reference/api/engine/version-history): v1.45 adds
`VolumeOptions.Subpath` to POST /containers/create; v1.52 (Docker 29) drops `status`, `id` and `from` from
GET /events; Docker 29 raises the engine's minimum API version to 1.44 (its release notes), so a client that pins
an older version is refused."""

from __future__ import annotations

import os
import time

import docker
import pytest
import redis

from tests.support.driver import NO_HOOK, create
from tests.support.engine import engine_version, redis_cmd, wait_for
from tests.support.fixtures_hook import heal_report
from tests.support.proxy import LEGACY_EVENT_FIELDS, EventsAsOf152

pytestmark = pytest.mark.engine


def api_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def test_the_hook_heals_the_canary_from_events_without_status_id_from(hook, plugin_engine, redis_image, host_dir,
                                                                     port):
    """API 1.52's events: the hook reads Action and Actor.ID. Every event it gets here went through a proxy that
    removes status, id and from, as Docker 29 sends them; the canary (uid 999, AOF, root-owned bind, restart
    on-failure) is still detected from its start and healed."""
    proxy = EventsAsOf152(plugin_engine.sock)
    try:
        h = hook(env={"DOCKER_HOST": proxy.host})
        started = time.time()
        c = plugin_engine.client().containers.run(
            redis_image, redis_cmd(port, data_dir="/bound"), detach=True, user="999:999", network_mode="host",
            volumes={str(host_dir): {"bind": "/bound", "mode": "rw"}}, labels=h.labels,
            restart_policy={"Name": "on-failure"})
        try:
            recovered = h.wait_event(lambda e: e["event"] == "recovered" and e.get("container") == c.name, 120,
                                     "the canary to be healed from 1.52-shaped events")
            heal_report(f"canary, events without status/id/from (dockerd {engine_version()})",
                        recovered["ts"] - started)
            assert redis.Redis(host="127.0.0.1", port=port, socket_timeout=3).ping()
            assert host_dir.stat().st_uid == 999
            mine = [e for e in proxy.events if (e.get("Actor") or {}).get("ID") == c.id]
            assert {"create", "start"} <= {e["Action"] for e in mine}, "the hook's event stream went through the proxy"
            assert not any(field in e for e in proxy.events for field in LEGACY_EVENT_FIELDS)
            assert any(e["event"] == "watching" and e["container"] == c.name for e in h.events)
        finally:
            c.remove(force=True)
    finally:
        proxy.close()


def test_clients_speak_the_engines_own_api_version(plugin_engine):
    """The docker SDK (docker-py 7: version=None is "auto", GET /version) talks the engine's own API version, and
    a path without a version (the hook's follower, hooks/follow.py) is served at it too; both are at least 1.44 on
    every engine from 25.0 on, so Docker 29's minimum (1.44) refuses neither. A client pinned below 1.44 (the 20.10
    `docker` CLI asks for 1.41) still works up to 28.5 (minimum 1.24) and is refused from 29 on."""
    client = plugin_engine.client()
    version = client.api.version(api_version=False)
    assert client.api.api_version == version["ApiVersion"]
    assert api_tuple(version["MinAPIVersion"]) <= (1, 24)
    unversioned = client.api.get(f"{client.api.base_url}/version")
    assert unversioned.json()["ApiVersion"] == version["ApiVersion"]
    pinned = docker.APIClient(base_url=plugin_engine.host, version="1.41")
    assert pinned.version(api_version=True)["ApiVersion"] == version["ApiVersion"]
    expected = {"20": "1.41", "26": "1.45", "28": "1.51"}[engine_version()]
    assert version["ApiVersion"] == expected, version
    if engine_version() != "20":
        assert api_tuple(client.api.api_version) >= (1, 44)


def test_a_subpath_of_an_ownvol_volume_shows_the_subpaths_own_owner(ownvol_plugin, engine_client, ptracked,
                                                                    redis_image, unique_name, port):
    """volume-subpath (API 1.45, Docker 26+): the engine asks the driver to Mount the volume, then binds the subpath
    inside it; the driver's check (policy on-root-mismatch) looks at the volume's root. So the container sees the
    subpath as the host has it after that Mount: a root-owned subpath under a right root stays root-owned (seen
    0:0), a drifted root makes the driver walk the whole tree, the subpath included (seen 999:999), and a 999-owned
    subpath runs the canary's Redis with AOF."""
    if api_tuple(engine_client.api.api_version) < (1, 45):
        pytest.skip(f"dockerd {engine_version()} answers API {engine_client.api.api_version}: no volume subpath")
    name = unique_name("vol")
    create(engine_client, ownvol_plugin, ptracked, name, profile="redis")
    root = ownvol_plugin.data_dir(name)
    (root / "redis").mkdir(mode=0o755)
    os.chown(root / "redis", 999, 999)
    (root / "other").mkdir(mode=0o755)  # root:root, as made here

    def seen_in(subpath: str) -> list[str]:
        c = ptracked.run(redis_image, ["stat", "-c", "%u:%g %a", "/bound"], user="999:999", labels=NO_HOOK,
                         mounts=[docker.types.Mount("/bound", name, type="volume", subpath=subpath)])
        assert c.wait(timeout=60)["StatusCode"] == 0
        return c.logs().decode().split()

    def owner(path) -> str:
        return f"{path.stat().st_uid}:{path.stat().st_gid}"

    assert seen_in("other") == ["0:0", "755"] and owner(root / "other") == "0:0"
    os.chown(root, 0, 0)  # drift on the volume's root
    assert seen_in("other") == ["999:999", "755"]
    assert owner(root) == owner(root / "other") == "999:999", "the tree walked at Mount, the subpath included"

    c = ptracked.run(redis_image, redis_cmd(port, data_dir="/bound"), user="999:999", network_mode="host",
                     mounts=[docker.types.Mount("/bound", name, type="volume", subpath="redis")], labels=NO_HOOK)
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=3)
    wait_for(r.ping, 30, what="redis on a subpath to answer")
    assert r.set("k", "v") and r.info("persistence")["aof_enabled"] == 1
    assert owner(root / "redis" / "appendonlydir") == "999:999"
    assert c.attrs["HostConfig"]["Mounts"][0]["VolumeOptions"]["Subpath"] == "redis"


def test_the_container_lists_health_field(engine_client, ptracked, redis_image, port):
    """GET /containers/json gains a `Health` object (Status, FailingStreak) at API 1.52 (Docker 29); below it, as on
    20.10, 26.1 and 28.5 (API 1.51), a container's health shows only in the list's Status text, "Up ... (healthy)",
    and in inspect's State.Health. ownvol reads neither (the hook probes the server itself; docker-py's
    containers.list inspects each container), so nothing of ownvol changes with it: recorded, not relied on."""
    c = ptracked.run(redis_image, redis_cmd(port, appendonly=False), network_mode="host", labels=NO_HOOK,
                     healthcheck={"test": ["CMD", "redis-cli", "-p", str(port), "ping"], "interval": 500_000_000})
    wait_for(lambda: ptracked.client.containers.get(c.id).attrs["State"].get("Health", {}).get("Status")
             == "healthy", 60, what="the healthcheck to pass")
    [entry] = engine_client.api.containers(filters={"id": c.id})
    assert "(healthy)" in entry["Status"], entry["Status"]
    if api_tuple(engine_client.api.api_version) < (1, 52):
        assert "Health" not in entry, sorted(entry)
    else:
        assert entry["Health"]["Status"] == "healthy" and entry["Health"]["FailingStreak"] == 0
