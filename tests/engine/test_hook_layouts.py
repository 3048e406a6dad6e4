"""Issue 24 kind B on the real engine and servers: a data dir the hook must find elsewhere than the container's
command says, or that does not exist yet.

- case 22: a bitnami-style image (built here FROM ownvol/redis:7: USER 1001 with no passwd entry, ENTRYPOINT
  entrypoint.sh, CMD run.sh that execs `redis-server /opt/bitnami/redis/etc/redis.conf`, `dir
  /bitnami/redis/data` in that file, on a root-owned bind): healed, then verified on the port the server listens
  on, which no command line says;
- case 19: PostgreSQL 17 with PGDATA=/var/lib/postgresql/17/docker under a root-owned bind at /var/lib/postgresql
  (PostgreSQL 18's own layout): the mount is repaired, the entrypoint creates PGDATA, initdb completes.

Each is repaired within 3 s of the first failing line of the container's log; Redis is healthy within those 3 s,
PostgreSQL once its initdb, which follows the repair, is done (its time is reported, not asserted: it is the
server's own start-up, seconds on a loaded machine).
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import time

import pytest
import redis

from ownvol.dockertime import state_time
from tests.support.common import ROOT, SESSION, server_image
from tests.support.databases import PASSWORD, pg_ready
from tests.support.engine import wait_for
from tests.support.fixtures_hook import fast_strategies, heal_report

pytestmark = pytest.mark.engine

HEAL_WITHIN = 3.0  # seconds from the first failing line to the recovered event (issue 24, "Done means")

RUN_SH = """#!/bin/sh
exec redis-server /opt/bitnami/redis/etc/redis.conf --daemonize no
"""
ENTRYPOINT_SH = """#!/bin/sh
echo "redis 00:00:00.00 INFO  ==> ** Starting Redis setup **"
sed -i "s/^port .*/port ${REDIS_PORT_NUMBER:-6379}/" /opt/bitnami/redis/etc/redis.conf
exec "$@"
"""
REDIS_CONF = "bind 127.0.0.1\nport 6379\ndir /bitnami/redis/data\nappendonly yes\n"
DOCKERFILE = """FROM {base}
USER root
COPY redis.conf /opt/bitnami/redis/etc/redis.conf
COPY run.sh entrypoint.sh /opt/bitnami/scripts/redis/
RUN mkdir -p /bitnami/redis/data && chown -R 1001:0 /opt/bitnami/redis/etc /bitnami/redis/data \\
    && chmod 0755 /opt/bitnami/scripts/redis/run.sh /opt/bitnami/scripts/redis/entrypoint.sh
USER 1001
ENTRYPOINT ["/opt/bitnami/scripts/redis/entrypoint.sh"]
CMD ["/opt/bitnami/scripts/redis/run.sh"]
"""


@pytest.fixture(scope="module")
def bitnami_image(docker_client):
    """The bitnami-style image under a `bitnamilegacy/redis:` reference of this session's own (recognised by its
    repository, as the real one is), removed afterwards."""
    base = server_image(docker_client, "ownvol/redis:7")
    files = {"Dockerfile": DOCKERFILE.format(base=base), "run.sh": RUN_SH, "entrypoint.sh": ENTRYPOINT_SH,
             "redis.conf": REDIS_CONF}
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    tag = f"bitnamilegacy/redis:ownvol-{SESSION}"
    docker_client.images.build(fileobj=context, custom_context=True, tag=tag, network_mode="none", rm=True,
                               forcerm=True)
    yield tag
    docker_client.images.remove(tag, noprune=True)


def by(name: str, kind: str):
    return lambda e: e["event"] == kind and e.get("container") == name


def first_line_at(container, text: str) -> float:
    """Epoch seconds of the first line of the container's log that holds text (the engine's timestamp)."""
    def found() -> float | None:
        for line in container.logs(timestamps=True).decode(errors="replace").splitlines():
            stamp, _, rest = line.partition(" ")
            if text in rest:
                return state_time(stamp)
        return None
    return wait_for(found, 30, what=f"the line {text!r}")


def repaired_at(action: dict) -> float:
    """Epoch seconds when a repair action's change was in place: the event comes after its verification
    (`seconds` is both, `detail.seconds` the repair alone)."""
    return action["ts"] - action["seconds"] + action["detail"]["seconds"]


def doctor(name: str) -> str:
    return subprocess.run([str(ROOT / ".venv" / "bin" / "ownvol"), "doctor", name], capture_output=True, text=True,
                          timeout=60).stdout


def test_case_22_a_wrapper_script_s_server_is_healed_on_its_own_port(hook, tracked, bitnami_image, host_dir,
                                                                      port):
    h = hook(strategies=fast_strategies(host_dir.parent / "s.yaml"))
    c = tracked.run(bitnami_image, network_mode="host", labels=h.labels, restart_policy={"Name": "unless-stopped"},
                    environment={"REDIS_PORT_NUMBER": str(port), "ALLOW_EMPTY_PASSWORD": "yes"},
                    volumes={str(host_dir): {"bind": "/bitnami/redis/data", "mode": "rw"}})
    recovered = h.wait_event(by(c.name, "recovered"), 60, "the bitnami-style Redis to be healed")
    failed_at = first_line_at(c, "Can't open or create append-only dir")
    repair = next(e for e in h.of("action", c.name) if e["action"] == "repair-ownership" and e["result"] == "ok")
    heal_report("case 22: wrapper script, bitnami layout, repaired", repaired_at(repair) - failed_at)
    heal_report("case 22: wrapper script, bitnami layout, healthy", recovered["ts"] - failed_at)
    assert recovered["ts"] - failed_at <= HEAL_WITHIN
    assert repair["detail"]["path"] == str(host_dir) and repair["detail"]["owner"] == "1001:0"
    assert (host_dir.stat().st_uid, host_dir.stat().st_gid) == (1001, 0)
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=3, decode_responses=True)
    assert r.config_get("dir") == {"dir": "/bitnami/redis/data"} and r.set("k", "v")
    out = doctor(c.name)
    assert f"redis://127.0.0.1:{port}/0" in out and "/bitnami/redis/data (CONFIG GET)" in out, out
    assert f"listens on 127.0.0.1:{port}" in out and f"mount: bind {host_dir}" in out, out


def test_case_22_the_only_writable_mount_is_the_data_mount_while_the_server_is_unseen(tracked, bitnami_image,
                                                                                     host_dir, port):
    """Not running (crash-looping before the hook sees its process): the dir is not known from the command, the
    container's one writable bind is taken, and doctor says why."""
    c = tracked.run(bitnami_image, network_mode="none", labels={"ownvol.hook": f"nobody-{SESSION}"},
                    environment={"REDIS_PORT_NUMBER": str(port)},
                    volumes={str(host_dir): {"bind": "/bitnami/redis/data", "mode": "rw"}})
    wait_for(lambda: c.reload() or c.status == "exited", 30, what="the server to exit")
    out = doctor(c.name)
    assert "data: /bitnami/redis/data (the container's only writable bind or volume)" in out, out
    assert f"mount: bind {host_dir}" in out and "is taken as the data mount" in out, out


def test_case_19_pgdata_below_a_root_owned_mount_is_created_after_the_mount_is_repaired(hook, tracked, docker_client,
                                                                                       host_dir, port):
    image = server_image(docker_client, "ownvol/postgres:17")
    pgdata = "/var/lib/postgresql/17/docker"
    h = hook(strategies=fast_strategies(host_dir.parent / "s.yaml"))
    started = time.time()
    c = tracked.run(image, ["postgres", "-p", str(port), "-c", "listen_addresses=127.0.0.1"], network_mode="host",
                    environment={"POSTGRES_PASSWORD": PASSWORD, "PGDATA": pgdata}, labels=h.labels,
                    restart_policy={"Name": "on-failure"},
                    volumes={str(host_dir): {"bind": "/var/lib/postgresql", "mode": "rw"}})
    recovered = h.wait_event(by(c.name, "recovered"), 90, "PostgreSQL's mount to be repaired")
    failed_at = first_line_at(c, "mkdir: cannot create directory")
    repair = next(e for e in h.of("action", c.name) if e["action"] == "repair-ownership" and e["result"] == "ok")
    # the server's own start-up (initdb) follows the repair: the hook's part is the repair in place
    heal_report("case 19: PGDATA below a root-owned mount, repaired", repaired_at(repair) - failed_at)
    heal_report("case 19: PGDATA below a root-owned mount, initdb done and healthy", recovered["ts"] - failed_at)
    assert repaired_at(repair) - failed_at <= HEAL_WITHIN
    assert repair["detail"]["path"] == str(host_dir) and repair["detail"]["owner"] == "999:999"
    wait_for(lambda: pg_ready(c, port), 60, what="pg_isready to answer")
    print(f"\nPG ready {time.time() - started:.1f}s after the start")
    assert (host_dir / "17" / "docker" / "PG_VERSION").exists()
    out = doctor(c.name)
    assert f"data: {pgdata}" in out and f"mount: bind {host_dir}" in out, out


def test_case_19_by_hand_doctor_names_the_mount_and_ownvol_repair_heals_it(tracked, docker_client, host_dir, port):
    """No hook watching, the container exited: doctor shows the data dir, the mount and why the repair is at the
    mount's root; `ownvol repair` (which failed with ENOENT on the missing PGDATA) repairs it and starts it."""
    image = server_image(docker_client, "ownvol/postgres:17")
    pgdata = "/var/lib/postgresql/17/docker"
    c = tracked.run(image, ["postgres", "-p", str(port), "-c", "listen_addresses=127.0.0.1"], network_mode="host",
                    environment={"POSTGRES_PASSWORD": PASSWORD, "PGDATA": pgdata},
                    labels={"ownvol.hook": f"nobody-{SESSION}"},
                    volumes={str(host_dir): {"bind": "/var/lib/postgresql", "mode": "rw"}})
    wait_for(lambda: c.reload() or c.status == "exited", 30, what="the entrypoint to fail")
    out = doctor(c.name)
    assert f"data: {pgdata} (env PGDATA)" in out and f"mount: bind {host_dir} at /var/lib/postgresql" in out, out
    assert f"repair path: {host_dir} ({pgdata} does not exist yet: /var/lib/postgresql, its nearest" in out, out
    state = host_dir.parent / "by-hand"
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "ownvol"), "repair", c.name, "--state-dir", str(state),
                           "--db", str(state / "journal.sqlite"), "--repair-via", "local"], capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (host_dir.stat().st_uid, host_dir.stat().st_gid) == (999, 999)
    wait_for(lambda: pg_ready(c, port), 60, what="pg_isready to answer")


def test_the_server_below_an_init_is_found_in_proc_as_the_engine_lists_it(tracked, redis_image, port):
    """`--init` (docker-init as the container's pid 1) and a wrapper shell that keeps running with redis-server
    below it, as uid 999: the server found through /proc (the children below the container's main pid) is the one
    the engine's process table (`docker top`) names, with the same ids (the tests' engine shares this host's pid
    namespace)."""
    from ownvol.hook.services import by_family
    from ownvol.hook.targets import _below, server_process

    container = tracked.run(redis_image, ["sh", "-c", f"redis-server --port {port} --bind 127.0.0.1 --save '' & wait"],
                            init=True, user="999:999", network_mode="host", labels={"ownvol.watch": "false"})
    client = redis.Redis(port=port, socket_timeout=1)
    wait_for(lambda: _answers(client), 20, "redis below sh below docker-init to answer")
    container.reload()
    pid = container.attrs["State"]["Pid"]
    assert len(_below(pid, "/proc") or []) >= 3, "docker-init, sh and redis-server"
    from_proc = server_process(container, by_family("redis"), pid, "/proc")
    from_engine = server_process(container, by_family("redis"))  # no pid: the engine's process table
    assert from_proc is not None and from_proc == from_engine and from_proc[1:] == (999, 999)
    assert from_proc[0] != pid


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.exceptions.RedisError:
        return False
