"""Rootless Docker (case 25): a dockerd run by a user through docker.io's dockerd-rootless.sh, inside rootlesskit's
user namespace. Container uid 999 is the host's subordinate id BASE+998 there (BASE the user's first subordinate
id), which ownvol reads from the map the kernel applies (/proc/PID/uid_map), not from a setting.

The engine, its user and its subordinate ids are made here and undone after (tests/support/rootless.py); its
containers run with `--network none` and Redis answers on a unix socket in a shared directory."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import docker
import pytest
import redis

from ownvol.driver.serve import answers
from tests.support.common import ROOT
from tests.support.driver import status
from tests.support.engine import wait_for
from tests.support.fixtures_hook import heal_report
from tests.support.process import stop_child
from tests.support.rootless import SUBIDS, RootlessEngine, missing

pytestmark = pytest.mark.engine
_count = iter(range(1000))


@pytest.fixture(scope="module")
def rootless(redis_image, ownvol_image):
    """A rootless engine with the Redis and ownvol images loaded; after it, nothing of it is left (no process,
    mount, user) and /etc/subuid and /etc/subgid are as they were, byte for byte."""
    why = missing()
    if why:
        pytest.skip(f"no rootless engine here: {why}")
    before = {path: Path(path).read_bytes() if os.path.exists(path) else None for path in SUBIDS}
    engine = RootlessEngine(f"ovrl{os.getpid() % 100000}x{next(_count)}")
    try:
        engine.start()
        engine.load_image(redis_image)
        engine.load_image(ownvol_image)
        yield engine
    finally:
        engine.destroy()
    assert engine.leftovers() == []
    assert {path: Path(path).read_bytes() if os.path.exists(path) else None for path in SUBIDS} == before


def _dirs(engine: RootlessEngine, owner: tuple[int, int]) -> tuple[Path, Path]:
    """A data dir owned by owner (host ids, mode 0755) and a socket dir anyone may write, under the engine's own
    directory (a bind source must be reachable by the engine's user)."""
    n = next(_count)
    data, sock = engine.base_dir / f"data{n}", engine.base_dir / f"sock{n}"
    data.mkdir(mode=0o755)
    os.chown(data, *owner)
    sock.mkdir()
    sock.chmod(0o777)
    return data, sock


def _redis(engine: RootlessEngine, labels: dict, data: Path, sock: Path):
    """Redis 7 as uid 999 with AOF in /data, on a unix socket in /sock only, restarted on failure."""
    return engine.client().containers.run(
        "ownvol/redis:7", ["redis-server", "--dir", "/data", "--appendonly", "yes", "--port", "0",
                           "--unixsocket", "/sock/redis.sock", "--unixsocketperm", "777"],
        user="999:999", network_mode="none", detach=True, restart_policy={"Name": "on-failure"},
        labels={**labels, "ownvol.redis.url": f"unix://{sock}/redis.sock"},
        volumes={str(data): {"bind": "/data", "mode": "rw"}, str(sock): {"bind": "/sock", "mode": "rw"}})


def test_the_engine_maps_container_ids_to_the_users_subordinate_ids(rootless):
    """What the kernel shows from the host for a container of the rootless engine (the facts the rest relies on)."""
    client = rootless.client()
    assert "name=rootless" in " ".join(client.info()["SecurityOptions"])
    sleeper = client.containers.run("ownvol/redis:7", ["sleep", "60"], user="999:999", network_mode="none",
                                    detach=True)
    try:
        pid = client.api.inspect_container(sleeper.id)["State"]["Pid"]
        uid_map = Path(f"/proc/{pid}/uid_map").read_text().split()
        assert uid_map == [str(n) for n in (0, rootless.uid, 1, 1, rootless.subid_base, 65536)]
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        assert status["Uid"].split()[1] == str(rootless.subordinate(999))
    finally:
        sleeper.remove(force=True)


def test_case25_the_hook_gives_a_root_owned_bind_to_the_mapped_host_id(rootless, hook):
    """Redis as uid 999 crashes on a bind owned by the host's root; the hook on the host, pointed at the rootless
    engine, reads 999's host id from the container's uid_map and gives the bind to it: Redis heals."""
    host = (rootless.subordinate(999), rootless.subordinate(999))
    data, sock = _dirs(rootless, (0, 0))
    h = hook(extra=("--repair-via", "local"), env={"DOCKER_HOST": rootless.host})
    server = _redis(rootless, h.labels, data, sock)
    try:
        detected = h.wait_event(lambda e: e["event"] == "detected" and e.get("container") == server.name, 60,
                                "the crash on the root-owned bind")
        recovered = h.wait_event(lambda e: e["event"] == "recovered" and e.get("container") == server.name, 120,
                                 "Redis to be healed")
        repair = [e for e in h.of("action", server.name) if e["action"] == "repair-ownership"]
        assert [e["result"] for e in repair] == ["ok"]
        detail = repair[0]["detail"]
        assert detail["owner"] == f"{host[0]}:{host[1]}" and "under rootless" in detail["owner_source"]
        assert (detail["route"], detail["found"]) == ("local", "0:0")
        assert (data.stat().st_uid, data.stat().st_gid) == host
        r = redis.Redis(unix_socket_path=str(sock / "redis.sock"), socket_timeout=3)
        assert r.set("k", "v") and r.get("k") == b"v"
        assert (data / "appendonlydir").stat().st_uid == host[0]
        heal_report("case 25 rootless, hook local", recovered["ts"] - detected["ts"])
        doctor = subprocess.run([str(ROOT / ".venv" / "bin" / "ownvol"), "doctor", server.name], capture_output=True,
                                text=True, timeout=120, env={**os.environ, "DOCKER_HOST": rootless.host})
        assert doctor.returncode == 0, doctor.stderr
        assert f"owner wanted: {host[0]}:{host[1]} (process (host ids of 999:999 under rootless" in doctor.stdout
    finally:
        server.remove(force=True)


def test_the_helper_gives_the_users_own_dir_and_refuses_the_hosts_roots(rootless, hook, ownvol_image):
    """--repair-via helper: the helper is root in the engine's namespace (the user), so it chowns to the
    container's ids, which the kernel maps to the subordinate ids: a dir of the user's own is healed. A dir of the
    host's root is not the user's to give: the repair fails, says why, and the dir is left as it was."""
    host = (rootless.subordinate(999), rootless.subordinate(999))
    h = hook(extra=("--repair-via", "helper"), env={"DOCKER_HOST": rootless.host, "OWNVOL_IMAGE": ownvol_image})
    own, sock = _dirs(rootless, (rootless.uid, rootless.gid))
    server = _redis(rootless, h.labels, own, sock)
    try:
        h.wait_event(lambda e: e["event"] == "recovered" and e.get("container") == server.name, 120,
                     "Redis on the user's own dir to be healed")
        repair = [e for e in h.of("action", server.name) if e["action"] == "repair-ownership"][0]["detail"]
        assert (repair["route"], repair["owner"]) == ("helper", f"{host[0]}:{host[1]}")
        assert (own.stat().st_uid, own.stat().st_gid) == host
        assert redis.Redis(unix_socket_path=str(sock / "redis.sock"), socket_timeout=3).ping()
    finally:
        server.remove(force=True)

    roots, sock = _dirs(rootless, (0, 0))
    server = _redis(rootless, h.labels, roots, sock)
    try:
        failed = h.wait_event(lambda e: e["event"] == "action" and e.get("container") == server.name
                              and e["action"] == "repair-ownership", 120, "the helper's repair of root's dir")
        assert failed["result"] == "failed" and "Operation not permitted" in failed["detail"]["error"]
        assert "rootless engine's user namespace" in failed["detail"]["why"]
        assert (roots.stat().st_uid, roots.stat().st_gid) == (0, 0)
    finally:
        server.remove(force=True)


@pytest.fixture
def driver(rootless):
    """`ownvol driver` as the host's root, its socket given to the engine's user (OWNVOL_SOCKET_OWNER) in a host
    directory that is the engine's /run/docker/plugins (where a rootless engine looks for plugin sockets: its own
    mount namespace's /run, a copy rootlesskit makes; a bind mount made there as the namespace's root), its
    volumes under the engine's directory: (name, its root, its process)."""
    name = f"ovrld{os.getpid() % 100000}x{next(_count)}"
    root, plugins = rootless.base_dir / name, rootless.base_dir / f"{name}.plugins"
    plugins.mkdir(mode=0o700)
    os.chown(plugins, rootless.uid, rootless.gid)
    subprocess.run(["nsenter", "-t", str(rootless.dockerd_pid()), "-U", "-m", "--", "sh", "-c",
                    f"mkdir -p /run/docker/plugins && mount --bind {plugins} /run/docker/plugins"], check=True)
    env = {**os.environ, "OWNVOL_DRIVER_NAME": name, "OWNVOL_ROOT": str(root), "OWNVOL_WORKERS": "2",
           "OWNVOL_ALLOWED_ROOTS": str(rootless.base_dir / "adopt"), "OWNVOL_MOUNT_ROOT": "",
           "OWNVOL_SOCKET": str(plugins / f"{name}.sock"), "OWNVOL_SOCKET_OWNER": f"{rootless.uid}:{rootless.gid}"}
    log_path = rootless.base_dir / f"{name}.log"
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "ownvol"), "driver"], env=env,
                            stdout=open(log_path, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: proc.poll() is not None or answers(env["OWNVOL_SOCKET"]), 30, what=f"driver {name}")
        assert proc.poll() is None, log_path.read_text()
        st = os.stat(env["OWNVOL_SOCKET"])
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (rootless.uid, rootless.gid, 0o600)
        yield name, root, proc
    finally:
        client = rootless.client()
        for c in client.containers.list(all=True):
            c.remove(force=True)
        for v in client.volumes.list(filters={"driver": name}):
            v.remove(force=True)
        stop_child(proc, timeout=30, kill_group=True)
        print(log_path.read_text()[-3000:])


def test_the_driver_owns_a_volume_by_the_mapped_host_ids_and_refuses_unmapped_ones(rootless, driver):
    """The engine activates the driver; the driver reads the engine's own uid_map (dockerd runs in rootlesskit's
    user namespace, which its containers share) and owns a Redis volume by 999's subordinate host id: Redis as
    999 writes its AOF there. An owner outside the map is refused, with why; nothing is made."""
    name, root, _ = driver
    host = (rootless.subordinate(999), rootless.subordinate(999))
    client = rootless.client()
    client.volumes.create("v1", driver=name, driver_opts={"profile": "redis"})
    assert status(client, "v1")["host_owner"] == f"{host[0]}:{host[1]}"
    data = root / "volumes" / "v1"
    assert (data.stat().st_uid, data.stat().st_gid) == host
    client.containers.run(
        "ownvol/redis:7", ["redis-server", "--dir", "/data", "--appendonly", "yes", "--port", "0",
                           "--unixsocket", "/data/redis.sock", "--unixsocketperm", "777"],
        user="999:999", network_mode="none", detach=True,
        mounts=[docker.types.Mount("/data", "v1", type="volume", no_copy=True)])
    r = redis.Redis(unix_socket_path=str(data / "redis.sock"), socket_timeout=3)
    wait_for(r.ping, 30, what="Redis on the rootless engine's ownvol volume")
    assert r.set("k", "v") and r.bgrewriteaof()
    wait_for(lambda: r.info("persistence")["aof_rewrite_in_progress"] == 0, 30, what="the AOF rewrite")
    info = r.info("persistence")
    assert (info["aof_last_bgrewrite_status"], info["aof_last_write_status"]) == ("ok", "ok")
    assert (data / "appendonlydir").stat().st_uid == host[0]

    with pytest.raises(docker.errors.APIError, match="uid 70000 is unmapped"):
        client.volumes.create("v2", driver=name, driver_opts={"uid": "70000", "gid": "70000"})
    assert not (root / "volumes" / "v2").exists()
