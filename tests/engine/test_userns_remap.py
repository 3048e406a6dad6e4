"""An engine with `--userns-remap=default` (case 08): uid 999 in a container is a subordinate host uid. The
driver owns a new volume by that host uid, so Redis with AOF works on it; the hook heals the canary (a
root-owned bind mount) by giving it to that host uid."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from pathlib import Path

import docker
import pytest
import redis

from tests.support.common import new_name
from tests.support.driver import NO_HOOK, status
from tests.support.engine import wait_for
from tests.support.fixtures_plugin import PluginEngine, PluginProcess

pytestmark = pytest.mark.engine
SUBIDS = ("/etc/subuid", "/etc/subgid")
REMAP_USER = "dockremap"  # what --userns-remap=default creates (dockerd(8))


def _exists(lookup, name: str) -> bool:
    try:
        lookup(name)
        return True
    except KeyError:
        return False


@pytest.fixture
def remapped(redis_image):
    """A plugin engine remapping user namespaces, its plugin, and the host's remap root uid. Whatever dockerd
    adds (the dockremap user and group, their subordinate ranges) is removed afterwards; /etc/subuid and
    /etc/subgid are restored byte for byte."""
    saved = {path: Path(path).read_bytes() if os.path.exists(path) else None for path in SUBIDS}
    had_user, had_group = _exists(pwd.getpwnam, REMAP_USER), _exists(grp.getgrnam, REMAP_USER)
    engine = PluginEngine(new_name("ueng"), extra_args=("--userns-remap=default",))
    plugin = None
    try:
        engine.start()
        engine.load_image(redis_image)
        plugin = PluginProcess(engine).start()
        base = int(os.path.basename(engine.client().info()["DockerRootDir"]).split(".")[0])
        yield engine, plugin, base
    finally:
        if plugin:
            plugin.destroy()
        engine.destroy()
        if not had_user and _exists(pwd.getpwnam, REMAP_USER):
            subprocess.run(["userdel", REMAP_USER], check=True)
        if not had_group and _exists(grp.getgrnam, REMAP_USER):
            subprocess.run(["groupdel", REMAP_USER], check=True)
        for path, content in saved.items():
            if content is None:
                Path(path).unlink(missing_ok=True)
            else:
                Path(path).write_bytes(content)


def redis_on_socket(sock_dir: str) -> list[str]:
    """Redis with AOF, reachable only on a unix socket (a remapped container cannot use the host's network)."""
    return ["--appendonly", "yes", "--port", "0", "--unixsocket", f"{sock_dir}/redis.sock", "--unixsocketperm", "777"]


def test_redis_with_aof_works_on_a_new_volume_and_the_canary_is_healed(remapped, hook, host_dir, tmp_path):
    engine, plugin, base = remapped
    client = engine.client()
    host = (base + 999, base + 999)
    name = new_name("vol")
    client.volumes.create(name, driver=plugin.name, driver_opts={"profile": "redis"})
    assert status(client, name)["host_owner"] == f"{host[0]}:{host[1]}"
    data = plugin.data_dir(name)
    assert (data.stat().st_uid, data.stat().st_gid) == host
    server = client.containers.run(
        "ownvol/redis:7", ["redis-server", "--dir", "/data", *redis_on_socket("/data")], user="999:999",
        network_mode="none", labels=NO_HOOK, detach=True,
        mounts=[docker.types.Mount("/data", name, type="volume", no_copy=True)])
    r = redis.Redis(unix_socket_path=str(data / "redis.sock"), socket_timeout=3)
    wait_for(r.ping, 30, what="Redis on the remapped volume")
    assert r.set("k", "v") and r.bgrewriteaof()
    wait_for(lambda: r.info("persistence")["aof_rewrite_in_progress"] == 0, 30, what="the AOF rewrite")
    info = r.info("persistence")
    assert (info["aof_enabled"], info["aof_last_bgrewrite_status"], info["aof_last_write_status"]) == (1, "ok", "ok")
    assert (data / "appendonlydir").stat().st_uid == host[0]
    server.remove(force=True)

    # the canary: a root-owned bind mount; the hook gives it to the host ids of 999:999
    h = hook(extra=("--repair-via", "local"), env={"DOCKER_HOST": engine.host})
    sock_dir = tmp_path / "sock"
    sock_dir.mkdir(mode=0o777)
    sock_dir.chmod(0o777)
    canary = client.containers.run(
        "ownvol/redis:7", ["redis-server", "--dir", "/bound", *redis_on_socket("/sock")], user="999:999",
        network_mode="none", detach=True, restart_policy={"Name": "on-failure"},
        labels={**h.labels, "ownvol.redis.url": f"unix://{sock_dir}/redis.sock"},
        volumes={str(host_dir): {"bind": "/bound", "mode": "rw"}, str(sock_dir): {"bind": "/sock", "mode": "rw"}})
    try:
        recovered = h.wait_event(lambda e: e["event"] == "recovered" and e.get("container") == canary.name, 120,
                                 "the canary to be healed")
        repair = [e for e in h.of("action", canary.name) if e["action"] == "repair-ownership"][0]
        assert repair["detail"]["owner"] == f"{host[0]}:{host[1]}" and "userns-remap" in \
            repair["detail"]["owner_source"]
        assert (host_dir.stat().st_uid, host_dir.stat().st_gid) == host and recovered["by"]
        assert redis.Redis(unix_socket_path=str(sock_dir / "redis.sock"), socket_timeout=3).ping()
    finally:
        canary.remove(force=True)
        client.volumes.get(name).remove()
