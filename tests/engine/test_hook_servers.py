"""The hook against Redis and Valkey as people run them (issue 11; cases 01, 02, 03, 04, 11, 13).

Every server of the matrix (make images: Redis 6.2, 7.0, 8.0, Valkey 8.0, 8.1) gets the canary and a run-time
fault healed; `make test` runs one member per family, `make test-matrix` all (marker `matrix`). Then: the
official image's layout (root start, privilege drop) with a redis.conf, and with `--user 0:0` while healthy;
a data dir that cannot be entered; a crash no known line explains; a container user against its ownvol volume.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
import redis

from tests.support.common import ROOT, SESSION, server_image
from tests.support.driver import create
from tests.support.engine import wait_for
from tests.support.fixtures_hook import fast_strategies, heal_report

pytestmark = pytest.mark.engine

# name -> (image, server command); the first of each family runs in `make test`, the rest under `make test-matrix`
SERVERS = {
    "redis-7.0": ("ownvol/redis:7", "redis-server"),
    "valkey-8.1": ("ownvol/valkey:8.1", "valkey-server"),
    "redis-6.2": ("ownvol/redis:6.2", "redis-server"),
    "redis-8.0": ("ownvol/redis:8.0", "redis-server"),
    "valkey-8.0": ("ownvol/valkey:8.0", "valkey-server"),
}
DEFAULT_MEMBERS = ("redis-7.0", "valkey-8.1")
OFFICIAL = {"redis": "ownvol/redis:7-official", "valkey": "ownvol/valkey:8.1-official"}


def by(name: str, kind: str):
    return lambda e: e["event"] == kind and e.get("container") == name


def client(port: int, password: str | None = None) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=3, decode_responses=True)


def server_args(command: str, port: int, data_dir: str = "/bound", aof: bool = True) -> list[str]:
    return [command, "--port", str(port), "--bind", "127.0.0.1", "--dir", data_dir,
            *(["--appendonly", "yes"] if aof else [])]


def drift_to_root(h, r: redis.Redis, data) -> tuple[int, float]:
    """The run-time fault, made while the hook is paused so the test sees it for itself: the data dir goes to
    root and a BGSAVE fails. (the hook's event mark, when the fault was in place)"""
    h.pause()
    try:
        os.chown(data, 0, 0)
        mark = h.mark()
        r.bgsave()
        wait_for(lambda: r.info("persistence")["rdb_last_bgsave_status"] == "err", 30, what="the BGSAVE to fail")
        return mark, time.time()
    finally:
        h.resume()


def matrix_params():
    return [pytest.param(name, marks=() if name in DEFAULT_MEMBERS else pytest.mark.matrix) for name in SERVERS]


@pytest.mark.parametrize("server", matrix_params())
def test_canary_and_runtime_fault_healed_on_every_server(server, hook, tracked, docker_client, host_dir, port,
                                                        tmp_path):
    """The canary (uid 999, AOF, root-owned bind, restart on-failure) and then the data dir chowned to root
    while it runs (BGSAVE fails, writes refused): both healed, each MTTR printed. No label but the hook's scope:
    Valkey is watched as it is (case 13)."""
    image, command = SERVERS[server]
    server_image(docker_client, image)
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    started = time.time()
    c = tracked.run(image, server_args(command, port), user="999:999", network_mode="host", labels=h.labels,
                    volumes={str(host_dir): {"bind": "/bound", "mode": "rw"}}, restart_policy={"Name": "on-failure"})
    assert set(c.labels) - set(tracked.labels) == set(h.labels), "no ownvol.watch or other label"
    h.wait_event(by(c.name, "watching"), 60, f"the hook to watch the {server} container")
    recovered = h.wait_event(by(c.name, "recovered"), 120, f"the {server} canary to be healed")
    heal_report(f"{server}: canary, start-up", recovered["ts"] - started)
    assert {"aof-dir-open", "aof-file-open"} & {e["pattern"] for e in h.of("detected", c.name)}, \
        [e for e in h.events if e.get("container") == c.name]
    r = client(port)
    assert r.set("k", "v") and r.info("persistence")["aof_enabled"] == 1
    assert (host_dir.stat().st_uid, host_dir.stat().st_gid) == (999, 999)
    h.wait_event(lambda e: by(c.name, "health")(e) and e["state"] == "healthy", 60, "healthy after the heal")

    mark, fault_at = drift_to_root(h, r, host_dir)
    recovered = h.wait_event(by(c.name, "recovered"), 120, f"the {server} run-time fault to be healed", after=mark)
    heal_report(f"{server}: run time, BGSAVE refused", recovered["ts"] - fault_at)
    assert r.set("k2", "v2") and r.info("persistence")["rdb_last_bgsave_status"] == "ok"
    assert host_dir.stat().st_uid == 999


@pytest.fixture
def official_name(docker_client):
    """The official-style Redis image under a `redis:` reference, as users run the official image (`redis:7`):
    a tag of this session's own, removed afterwards."""
    image = server_image(docker_client, OFFICIAL["redis"])
    tag = f"redis:ownvol-official-{SESSION}"
    docker_client.images.get(image).tag(tag)
    yield tag
    docker_client.images.remove(tag, noprune=True)


def test_official_image_with_a_redis_conf_is_healed_on_the_port_from_the_file(hook, tracked, official_name,
                                                                             tmp_path, port):
    """Case 01 on the official image's layout: no user, `redis-server /usr/local/etc/redis/redis.conf` whose
    dir and port the command line does not say; the entrypoint gives /data (its WORKDIR) to redis, but the
    data lives at /var/lib/redis, a root-owned bind: healed there, verified on the file's port."""
    conf = tmp_path / "redis.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir /var/lib/redis\nappendonly yes\n")
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 0, 0)
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    started = time.time()
    c = tracked.run(official_name, ["redis-server", "/usr/local/etc/redis/redis.conf"], network_mode="host",
                    labels=h.labels, restart_policy={"Name": "on-failure"},
                    volumes={str(conf): {"bind": "/usr/local/etc/redis/redis.conf", "mode": "ro"},
                             str(data): {"bind": "/var/lib/redis", "mode": "rw"}})
    recovered = h.wait_event(by(c.name, "recovered"), 120, "the official-style Redis to be healed")
    heal_report("official image, redis.conf dir and port", recovered["ts"] - started)
    repair = next(e for e in h.of("action", c.name) if e["action"] == "repair-ownership" and e["result"] == "ok")
    assert repair["detail"]["path"] == str(data) and repair["detail"]["owner"] == "999:999"
    assert repair["detail"]["owner_source"] in ("process", "profile redis")
    assert (data.stat().st_uid, data.stat().st_gid) == (999, 999)
    r = client(port)
    assert r.config_get("dir") == {"dir": "/var/lib/redis"} and r.set("k", "v")
    doctor = subprocess.run([str(ROOT / ".venv" / "bin" / "ownvol"), "doctor", c.name], capture_output=True,
                            text=True, timeout=60)
    assert f"redis://127.0.0.1:{port}/0" in doctor.stdout and "/var/lib/redis (CONFIG GET)" in doctor.stdout


def test_official_image_started_as_root_is_left_alone_while_healthy(hook, tracked, docker_client, tmp_path, port):
    """Case 11a: `--user 0:0` (compose `user: root`) on an image that drops to 999: Redis runs as 999 and owns
    its data. The hook takes no action for 30 s, the owner stays 999, BGSAVE still succeeds."""
    image = server_image(docker_client, OFFICIAL["redis"])
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 0, 0)
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    c = tracked.run(image, server_args("redis-server", port, data_dir="/data"), user="0:0", network_mode="host",
                    labels=h.labels, volumes={str(data): {"bind": "/data", "mode": "rw"}})
    h.wait_event(lambda e: by(c.name, "health")(e) and e["state"] == "healthy", 60, "the root-started Redis healthy")
    r = client(port)
    assert r.set("k", "v")
    top = docker_client.api.top(c.id, ps_args="-o pid,euid,comm")
    assert any(p[1] == "999" and p[2] == "redis-server" for p in top["Processes"]), top
    assert data.stat().st_uid == 999, "the entrypoint gave /data to redis (the user only, as the official one)"
    before = (data.stat().st_uid, data.stat().st_gid)
    mark = h.mark()
    r.bgsave()
    time.sleep(30)  # the window: nothing may happen to a healthy Redis in it
    assert [e for e in h.events[mark:] if e.get("container") == c.name and e["event"] in
            ("incident", "action", "detected", "recovered", "gave-up")] == []
    assert (data.stat().st_uid, data.stat().st_gid) == before
    assert r.info("persistence")["rdb_last_bgsave_status"] == "ok"
    assert r.bgsave() and wait_for(lambda: r.info("persistence")["rdb_bgsave_in_progress"] == 0, 30, what="BGSAVE")
    assert r.info("persistence")["rdb_last_bgsave_status"] == "ok" and r.set("k2", "v2")


def test_official_valkey_without_a_user_heals_its_drifted_workdir(hook, tracked, docker_client, tmp_path, port):
    """Case 11b on the Valkey family: no user, the entrypoint drops to valkey (999); the data dir drifts to root
    while it runs: repaired to the uid of the running valkey-server (no label, no user, no profile needed)."""
    image = server_image(docker_client, OFFICIAL["valkey"])
    data = tmp_path / "data"
    data.mkdir()
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    c = tracked.run(image, server_args("valkey-server", port, data_dir="/data", aof=False), network_mode="host",
                    labels=h.labels, volumes={str(data): {"bind": "/data", "mode": "rw"}})
    h.wait_event(lambda e: by(c.name, "health")(e) and e["state"] == "healthy", 60, "Valkey healthy")
    r = client(port)
    assert r.set("k", "v")
    mark, fault_at = drift_to_root(h, r, data)
    recovered = h.wait_event(by(c.name, "recovered"), 120, "the drifted Valkey to be healed", after=mark)
    heal_report("official-style Valkey, no user, run time", recovered["ts"] - fault_at)
    repair = next(e for e in h.of("action", c.name) if e["action"] == "repair-ownership" and e["result"] == "ok")
    assert (repair["detail"]["owner"], repair["detail"]["owner_source"]) == ("999:999", "process")
    assert data.stat().st_uid == 999 and r.set("k2", "v2")


def test_a_data_dir_that_cannot_be_entered_is_healed(hook, tracked, tmp_path, port, redis_image):
    """Case 04: root-owned 0750: Redis 7 dies in its config loader (a FATAL CONFIG FILE ERROR block)."""
    data = tmp_path / "data"
    data.mkdir(mode=0o750)
    os.chown(data, 0, 0)
    data.chmod(0o750)
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    started = time.time()
    c = tracked.run(redis_image, server_args("redis-server", port), user="999:999", network_mode="host",
                    working_dir="/tmp", labels=h.labels, volumes={str(data): {"bind": "/bound", "mode": "rw"}},
                    restart_policy={"Name": "on-failure"})
    detected = h.wait_event(by(c.name, "detected"), 60, "the config loader's block to be recognised")
    assert detected["pattern"] == "config-fatal" and detected["context"]["dir"] == "/bound"
    recovered = h.wait_event(by(c.name, "recovered"), 120, "the un-enterable data dir to be healed")
    heal_report("data dir 0750 root, config-time crash", recovered["ts"] - started)
    assert data.stat().st_uid == 999 and client(port).set("k", "v")


def test_a_crash_no_line_explains_is_healed_on_the_owner_evidence(hook, tracked, tmp_path, port, redis_image):
    """A server that exits at start-up without any line the catalogue knows, its data mount owned by root:
    an incident on that evidence (saying no known line matched); repaired; its restart policy starts it."""
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 0, 0)
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    started = time.time()
    script = f"touch /bound/.w 2>/dev/null || exit 3; exec redis-server --port {port} --bind 127.0.0.1 --dir /bound"
    c = tracked.run(redis_image, ["sh", "-c", script], user="999:999", network_mode="host", labels=h.labels,
                    volumes={str(data): {"bind": "/bound", "mode": "rw"}}, restart_policy={"Name": "on-failure"})
    incident = h.wait_event(by(c.name, "incident"), 60, "an incident on the crash's evidence")
    assert incident["origin"] == "exit" and "no known line matched" in incident["detail"]["message"]
    recovered = h.wait_event(by(c.name, "recovered"), 120, "the unexplained crash to be healed")
    heal_report("crash without a known line", recovered["ts"] - started)
    assert data.stat().st_uid == 999 and client(port).ping()
    assert not h.of("detected", c.name)


def test_a_stopped_container_with_restart_policy_no_is_not_started(hook, tracked, tmp_path, port, redis_image):
    """Repaired, but policy `no` and no ownvol.start label: the hook says it did not start it."""
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 0, 0)
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    c = tracked.run(redis_image, server_args("redis-server", port), user="999:999", network_mode="host",
                    labels=h.labels, volumes={str(data): {"bind": "/bound", "mode": "rw"}})
    h.wait_event(by(c.name, "gave-up"), 120, "the incident to end")
    actions = {e["action"]: e for e in h.of("action", c.name)}
    assert actions["repair-ownership"]["result"] == "ok" and data.stat().st_uid == 999
    assert actions["restart"]["result"] == "skipped" and "ownvol.start=true" in actions["restart"]["detail"]["why"]
    assert tracked.client.containers.get(c.id).status == "exited"
    # nor restarted at once as its server said it exits (the hook reads nothing that waits for the exit, so it
    # is asked while the container still runs): policy "no" would not start it again
    assert not h.of("early-start", c.name)


def test_a_container_user_against_its_ownvol_volume_gets_one_repair_and_a_conflict(
        hook, ownvol_plugin, plugin_engine, engine_client, ptracked, redis_image, unique_name, port, tmp_path):
    """Case 03: `--user 1000:1000` with a restart policy on a volume made for 999:999. The hook repairs once;
    the driver restores 999 at the next mount; the hook then says `conflict` (both owners, the fix) and stops."""
    name = unique_name("conflict")
    create(engine_client, ownvol_plugin, ptracked, name, profile="redis")
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"), env={"DOCKER_HOST": plugin_engine.host})
    c = ptracked.run(redis_image, server_args("redis-server", port), user="1000:1000", network_mode="host",
                     labels=h.labels, volumes={name: {"bind": "/bound", "mode": "rw"}},
                     restart_policy={"Name": "unless-stopped"})
    ended = h.wait_event(lambda e: by(c.name, "conflict")(e) or by(c.name, "recovered")(e), 180,
                         "the conflict to be reported")
    if ended["event"] == "recovered":
        # the policy's start came 100 ms after the exit and its Mount found 999:999 before the hook's repair gave
        # the data to 1000:1000 (a busy machine): that run is healthy. The driver restores 999 at the next Mount.
        c.restart(timeout=10)
    conflict = h.wait_event(by(c.name, "conflict"), 180, "the conflict to be reported")
    assert (conflict["container_owner"], conflict["volume_owner"], conflict["volume"]) == ("1000:1000", "999:999",
                                                                                           name)
    assert "-o uid=1000 -o gid=1000" in conflict["message"]
    h.wait_event(lambda e: by(c.name, "gave-up")(e) and e["why"].startswith("conflict:"), 60, "the hook to stop")
    repairs = [e for e in h.of("action", c.name) if e["action"] == "repair-ownership" and e["result"] == "ok"]
    assert len(repairs) == 1 and len(h.of("conflict", c.name)) == 1
    doctor = subprocess.run([str(ROOT / ".venv" / "bin" / "ownvol"), "doctor", c.name], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "DOCKER_HOST": plugin_engine.host})
    line = next(x for x in doctor.stdout.splitlines() if x.startswith("note: conflict"))
    assert "1000:1000" in line and "999:999" in line and "-o uid=1000" in line


def test_explain_reads_a_real_crash_log(tracked, redis_image, tmp_path, port):
    """`ownvol explain -` on `docker logs` of a real Redis that could not enter its data dir."""
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 0, 0)
    data.chmod(0o700)
    c = tracked.run(redis_image, server_args("redis-server", port), user="999:999", network_mode="none",
                    working_dir="/tmp", labels={"ownvol.watch": "false"},
                    volumes={str(data): {"bind": "/bound", "mode": "rw"}})
    wait_for(lambda: tracked.client.containers.get(c.id).status == "exited", 30, what="Redis to exit")
    logs = subprocess.run(["docker", "logs", c.id], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True).stdout  # `docker logs C 2>&1 | ownvol explain -`: the block is on stderr
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "ownvol"), "explain", "--json", "-"], input=logs,
                         capture_output=True, text=True, timeout=60)
    found = [json.loads(x) for x in out.stdout.splitlines()]
    assert [(f["pattern"], f["error_type"], f["phase"]) for f in found] == [
        ("config-fatal", "permission-denied", "startup")]
    assert "FATAL CONFIG FILE ERROR" in found[0]["line"]

