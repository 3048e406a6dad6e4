"""Issue 24 kind A on the real engine and servers: the path a server cannot write is not its data dir.

- case 15: Redis Sentinel with its config dir on a root-owned bind: refused at start (`Sentinel config file ...
  is not writable`) and healed within 3 s of that line; at run time (the file its own, the directory root's: `Could
  not create tmp config file`) healed within 1 s; with its config a single-file bind, diagnosed (mount the
  directory, not the file), nothing touched;
- case 16: a cluster node's nodes.conf on its own root-owned bind: that mount is repaired, the data dir untouched;
- a log file and a unix socket on binds of their own; a socket path in the image's own directories: diagnosed;
- a healthy Sentinel and a healthy cluster node: never touched.

Times are from the first failing line of the container's log (the engine's timestamp) to the `recovered` event.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.support.common import ROOT, SESSION, free_port, server_image
from tests.support.engine import wait_for
from tests.support.fixtures_hook import fast_strategies, heal_report

from .test_hook_layouts import by, first_line_at

pytestmark = pytest.mark.engine

STARTUP_WITHIN = 3.0  # seconds from the first failing line to recovered, a start-up failure (issue 24)
RUNTIME_WITHIN = 1.0  # the same for a failure of a running server
OFFICIAL = "ownvol/redis:7-official"  # root start, the entrypoint drops to 999 (docker-library's way)


@pytest.fixture(scope="module")
def official(docker_client):
    """The official-style image under a `redis:` reference of this session's own, as users run the official image
    (`redis:7`: the hook knows its user from its profile while the crash-looping server is never seen running)."""
    tag = f"redis:ownvol-paths-{SESSION}"
    docker_client.images.get(server_image(docker_client, OFFICIAL)).tag(tag)
    yield tag
    docker_client.images.remove(tag, noprune=True)


def node_port() -> int:
    """A free port a cluster node can have: its bus is 10000 above it and must be a port too (src/cluster_legacy.c:
    a port above 55535 is refused)."""
    return wait_for(lambda: (p := free_port()) <= 55535 and p, 10, what="a free port below 55536")


def owned_dir(parent: Path, name: str, uid: int = 0, mode: int = 0o755) -> Path:
    d = parent / name
    d.mkdir()
    os.chown(d, uid, uid)
    d.chmod(mode)
    return d


def sentinel_conf(directory: Path, port: int, uid: int) -> Path:
    conf = directory / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {port + 1} 1\n"
                    "sentinel down-after-milliseconds mymaster 5000\n")
    os.chown(conf, uid, uid)
    conf.chmod(0o644)
    return conf


def stat_of(path: Path) -> tuple:
    st = os.stat(path)
    return st.st_uid, st.st_gid, st.st_mode, st.st_mtime_ns, st.st_ctime_ns


def doctor(name: str) -> str:
    return subprocess.run([str(ROOT / ".venv" / "bin" / "ownvol"), "doctor", name], capture_output=True, text=True,
                          timeout=60).stdout


def timeline(h, name: str, since: float) -> str:
    """The container's events from since on, a line each (seconds after since), for a failure's message."""
    return "\n".join(f"{e['ts'] - since:+.3f} {e['event']} {e.get('action', e.get('state', ''))} "
                     f"{e.get('result', '')} {str(e.get('detail', e.get('reasons', '')))[:160]}"
                     for e in list(h.events) if e.get("container") == name and e["ts"] >= since - 1)


def repair_of(h, name: str) -> dict:
    return next(e for e in h.of("action", name) if e["action"] == "repair-ownership" and e["result"] == "ok")


def run_redis(tracked, docker_client, h, port: int, args: list[str], binds: dict[Path, str], restart: bool = True):
    """ownvol/redis:7 as 999:999 on the host network, listening on 127.0.0.1:port, with more server arguments and
    binds (host path -> destination, read-write); restarted on failure (5 times) unless not restart."""
    policy = {"restart_policy": {"Name": "on-failure", "MaximumRetryCount": 5}} if restart else {}
    return tracked.run(server_image(docker_client, "ownvol/redis:7"),
                       ["redis-server", "--port", str(port), "--bind", "127.0.0.1", *args],
                       user="999:999", network_mode="host", labels=h.labels,
                       volumes={str(host): {"bind": bind, "mode": "rw"} for host, bind in binds.items()}, **policy)


def healed_within(h, c, what: str, line: str, label: str, within: float = STARTUP_WITHIN) -> dict:
    """c's `recovered` event (waited for up to 60 s: `what`), reported and asserted within `within` seconds of c's
    first log line holding `line`."""
    recovered = h.wait_event(by(c.name, "recovered"), 60, what)
    failed_at = first_line_at(c, line)
    heal_report(label, recovered["ts"] - failed_at)
    assert recovered["ts"] - failed_at <= within, timeline(h, c.name, failed_at)
    return recovered


def test_case_15_a_sentinel_refused_at_start_is_healed_on_its_config_dir(hook, tracked, official, tmp_path, port):
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    conf_dir = owned_dir(tmp_path, "conf")
    sentinel_conf(conf_dir, port, 0)
    c = tracked.run(official, ["redis-server", "/etc/ov/sentinel.conf", "--sentinel"],
                    network_mode="host", labels=h.labels, restart_policy={"Name": "on-failure", "MaximumRetryCount": 5},
                    volumes={str(conf_dir): {"bind": "/etc/ov", "mode": "rw"}})
    healed_within(h, c, "the Sentinel to be healed", "is not writable: Permission denied",
                  "case 15: Sentinel refused at start, config dir on a root-owned bind")
    repair = repair_of(h, c.name)
    assert repair["detail"]["path"] == str(conf_dir) and repair["detail"]["for"] == "/etc/ov/sentinel.conf"
    assert repair["detail"]["owner"] == "999:999" and (conf_dir.stat().st_uid, conf_dir.stat().st_gid) == (999, 999)
    s = redis.Redis(host="127.0.0.1", port=port, socket_timeout=3, decode_responses=True)
    assert s.execute_command("SENTINEL", "FLUSHCONFIG") == "OK"
    assert "sentinel myid" in (conf_dir / "sentinel.conf").read_text()


@pytest.mark.parametrize("family", ["redis", "valkey"])
def test_case_15_a_sentinel_that_cannot_save_at_run_time_is_healed_within_a_second(hook, tracked, official,
                                                                                  docker_client, tmp_path, port,
                                                                                  family):
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    conf_dir = owned_dir(tmp_path, "conf")
    sentinel_conf(conf_dir, port, 999)
    image = official if family == "redis" else server_image(docker_client, "ownvol/valkey:8.1-official")
    c = tracked.run(image, [f"{family}-server", "/etc/ov/sentinel.conf", "--sentinel"],
                    network_mode="host", labels=h.labels, restart_policy={"Name": "on-failure", "MaximumRetryCount": 5},
                    volumes={str(conf_dir): {"bind": "/etc/ov", "mode": "rw"}})
    recovered = healed_within(h, c, "the Sentinel's save to be healed", "Could not create tmp config file",
                              f"case 15: {family} Sentinel cannot save at run time, config dir root-owned",
                              RUNTIME_WITHIN)
    assert repair_of(h, c.name)["detail"]["path"] == str(conf_dir)
    c.reload()
    assert c.status == "running" and c.attrs["RestartCount"] == 0  # healed in place, never restarted
    assert "sentinel myid" in (conf_dir / "sentinel.conf").read_text()
    assert not [e for e in h.of("health", c.name) if e["state"] == "latent" and e["ts"] > recovered["ts"] + 0.5]


@pytest.mark.parametrize("owner", [1000, 999], ids=["refused-at-start", "cannot-save"])
def test_case_15_a_sentinel_config_that_is_a_single_file_bind_is_diagnosed_not_touched(hook, tracked, official,
                                                                                       tmp_path, port, owner):
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    conf_dir = owned_dir(tmp_path, "conf", uid=1000)
    conf = sentinel_conf(conf_dir, port, owner)
    before = stat_of(conf), stat_of(conf_dir)
    c = tracked.run(official,
                    ["redis-server", "/usr/local/etc/redis/sentinel.conf", "--sentinel"], network_mode="host",
                    labels=h.labels, volumes={str(conf): {"bind": "/usr/local/etc/redis/sentinel.conf", "mode": "rw"}})
    diagnosis = h.wait_event(by(c.name, "diagnosis"), 60, "the single-file bind to be diagnosed")
    assert diagnosis["message"].startswith("mount the directory, not the file"), diagnosis
    assert "Sentinel writes a temp file beside its config" in diagnosis["message"]
    assert diagnosis["path"] == "/usr/local/etc/redis/sentinel.conf" and diagnosis["target"] == "/usr/local/etc/redis"
    gave_up = h.wait_event(by(c.name, "gave-up"), 10, "the incident to end with the diagnosis")
    assert gave_up["actions"] == [] and "diagnosis, nothing done" in gave_up["why"]
    time.sleep(2)
    assert not h.of("action", c.name)
    assert (stat_of(conf), stat_of(conf_dir)) == before
    out = doctor(c.name)
    assert "path: /usr/local/etc/redis/sentinel.conf" in out and "mount the directory, not the file" in out, out


def test_case_16_nodes_conf_on_its_own_root_owned_bind_is_healed_the_data_dir_untouched(hook, tracked, docker_client,
                                                                                       tmp_path):
    port = node_port()
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    data = owned_dir(tmp_path, "data", uid=999)
    node_conf = owned_dir(tmp_path, "node-conf")
    before = stat_of(data)
    c = run_redis(tracked, docker_client, h, port,
                  ["--cluster-enabled", "yes", "--cluster-config-file", "/node-conf/nodes.conf", "--appendonly", "yes",
                   "--dir", "/data"], {data: "/data", node_conf: "/node-conf"})
    healed_within(h, c, "the cluster node to be healed", "in order to acquire a lock: Permission denied",
                  "case 16: nodes.conf on its own root-owned bind")
    repairs = [e for e in h.of("action", c.name) if e["action"] == "repair-ownership"]
    assert [e["detail"]["path"] for e in repairs] == [str(node_conf)], repairs
    assert repairs[0]["detail"]["for"] == "/node-conf/nodes.conf"
    assert (node_conf.stat().st_uid, node_conf.stat().st_gid) == (999, 999)
    assert stat_of(data)[:3] == before[:3]  # owner and mode as they were: never repaired
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=3, decode_responses=True)
    assert r.cluster("info")["cluster_state"] in ("fail", "ok")
    assert (node_conf / "nodes.conf").exists()


def test_case_16_a_cluster_node_that_cannot_save_nodes_conf_at_run_time_is_healed(hook, tracked, docker_client,
                                                                                 tmp_path):
    """nodes.conf's directory given to root under a running node: its next save (`CLUSTER ADDSLOTS`) fails and
    the node exits (`Fatal: can't update cluster config file.`, clusterSaveConfigOrDie); the directory is given
    back and the node runs again with the slot it was given."""
    port = node_port()
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    data = owned_dir(tmp_path, "data", uid=999)
    node_conf = owned_dir(tmp_path, "node-conf", uid=999)
    c = run_redis(tracked, docker_client, h, port,
                  ["--cluster-enabled", "yes", "--cluster-config-file", "/node-conf/nodes.conf", "--dir", "/data"],
                  {data: "/data", node_conf: "/node-conf"})
    h.wait_event(lambda e: by(c.name, "health")(e) and e["state"] == "healthy", 30, "the node healthy")
    for entry in (node_conf, node_conf / "nodes.conf"):
        os.chown(entry, 0, 0)
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=3, decode_responses=True)
    try:
        r.execute_command("CLUSTER", "ADDSLOTS", "1")  # replied, or the node exits first
    except redis.exceptions.ConnectionError:
        pass
    healed_within(h, c, "the node to be healed", "Fatal: can't update cluster config file.",
                  "case 16: nodes.conf's dir given to root at run time (the node exits)")
    repair = repair_of(h, c.name)
    assert repair["detail"]["path"] == str(node_conf) and repair["detail"]["for"] == "/node-conf/nodes.conf"
    assert node_conf.stat().st_uid == 999 and (node_conf / "nodes.conf").stat().st_uid == 999
    wait_for(lambda: r.execute_command("CLUSTER", "COUNTKEYSINSLOT", "1") == 0, 10, what="the node answering")


@pytest.mark.parametrize("setting,directory,line", [
    ("--logfile", "logs", "Can't open the log file"),
    ("--unixsocket", "sock", "Failed opening Unix socket"),
], ids=["logfile", "unixsocket"])
def test_a_log_file_or_socket_dir_on_its_own_root_owned_bind_is_healed(hook, tracked, docker_client, tmp_path, port,
                                                                       setting, directory, line):
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    data = owned_dir(tmp_path, "data", uid=999)
    own = owned_dir(tmp_path, directory)
    before = stat_of(data)
    name = "redis.log" if setting == "--logfile" else "redis.sock"
    c = run_redis(tracked, docker_client, h, port, ["--dir", "/data", setting, f"/{directory}/{name}"],
                  {data: "/data", own: f"/{directory}"})
    healed_within(h, c, f"the {directory} dir to be healed", line, f"{directory} dir on its own root-owned bind")
    repair = repair_of(h, c.name)
    assert repair["detail"]["path"] == str(own) and repair["detail"]["for"] == f"/{directory}/{name}"
    assert own.stat().st_uid == 999 and stat_of(data)[:3] == before[:3]
    assert (own / name).exists()


def test_a_socket_path_in_the_image_s_own_directories_is_only_diagnosed(hook, tracked, docker_client, tmp_path, port):
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    data = owned_dir(tmp_path, "data", uid=999)
    before = stat_of(data)
    c = run_redis(tracked, docker_client, h, port, ["--dir", "/data", "--unixsocket", "/usr/local/redis.sock"],
                  {data: "/data"}, restart=False)
    diagnosis = h.wait_event(by(c.name, "diagnosis"), 60, "the socket path to be diagnosed")
    assert diagnosis["target"] == "/usr/local" and "the image's own directory" in diagnosis["message"]
    assert "999:999" in diagnosis["message"]
    h.wait_event(by(c.name, "gave-up"), 10, "the incident to end with the diagnosis")
    assert not h.of("action", c.name) and stat_of(data) == before
    out = doctor(c.name)
    assert "path: /usr/local/redis.sock" in out and "on no mount" in out and "nothing done" in out, out


def test_a_healthy_sentinel_and_a_healthy_cluster_node_are_never_touched(hook, tracked, official, docker_client,
                                                                        tmp_path, port):
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    conf_dir = owned_dir(tmp_path, "conf", uid=999)
    sentinel_conf(conf_dir, port, 999)
    node_conf = owned_dir(tmp_path, "node-conf", uid=999)
    data = owned_dir(tmp_path, "data", uid=999)
    cluster_port = node_port()
    s = tracked.run(official, ["redis-server", "/etc/ov/sentinel.conf", "--sentinel"],
                    network_mode="host", labels=h.labels, volumes={str(conf_dir): {"bind": "/etc/ov", "mode": "rw"}})
    n = run_redis(tracked, docker_client, h, cluster_port,
                  ["--cluster-enabled", "yes", "--cluster-config-file", "/node-conf/nodes.conf", "--dir", "/data"],
                  {data: "/data", node_conf: "/node-conf"}, restart=False)
    for c in (s, n):
        h.wait_event(lambda e, c=c: e["event"] == "health" and e.get("container") == c.name and e["state"] == "healthy",
                     30, f"{c.name} healthy")
    before = [stat_of(p)[:3] for p in (conf_dir, node_conf, data)]
    time.sleep(5)
    for c in (s, n):
        assert not h.of("incident", c.name) and not h.of("action", c.name) and not h.of("diagnosis", c.name)
    assert [stat_of(p)[:3] for p in (conf_dir, node_conf, data)] == before
    wait_for(lambda: "sentinel myid" in (conf_dir / "sentinel.conf").read_text(), 5, what="the Sentinel's own save")


def test_an_acl_file_given_as_a_single_file_bind_is_repaired_as_that_file_alone(hook, tracked, docker_client,
                                                                                 tmp_path, port):
    """The server only reads its ACL file: on a single-file bind, that host file is the fix, and the only thing
    changed (its directory and a file beside it are not touched); the event says so."""
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    data = owned_dir(tmp_path, "data", uid=999)
    host = owned_dir(tmp_path, "etc")
    acl = host / "users.acl"
    acl.write_text("user default on nopass ~* +@all\n")
    acl.chmod(0o600)
    beside = host / "other.acl"
    beside.write_text("x\n")
    before = stat_of(host), stat_of(beside)
    c = run_redis(tracked, docker_client, h, port, ["--dir", "/data", "--aclfile", "/etc/redis/users.acl"],
                  {data: "/data", acl: "/etc/redis/users.acl"})
    healed_within(h, c, "the ACL file to be repaired", "Error loading ACLs, opening file",
                  "ACL file, a single-file bind the server only reads")
    repair = repair_of(h, c.name)
    assert repair["detail"]["path"] == str(acl) and repair["detail"]["file"] and repair["detail"]["changed"] == 1
    assert (acl.stat().st_uid, acl.stat().st_gid, acl.stat().st_mode & 0o777) == (999, 999, 0o600)
    assert (stat_of(host), stat_of(beside)) == before
