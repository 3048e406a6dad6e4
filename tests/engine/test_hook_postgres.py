"""PostgreSQL's own hazards against the real server (images/postgres): no restart while it is in recovery (a
standby; one that rejects connections while it replays WAL) or holds write transactions not yet durable, the
hook waits and then refuses, and says so; `postmaster.pid` of another live server is never "healed"; the
official-style `-root` images (start as root, drop to postgres) healed at start-up and at run time, to the
running server's own uid. One version here, the other under `make test-matrix`."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from ownvol.hook.actions import HAZARD_WAIT
from ownvol.hook.executor import DockerExecutor
from tests.engine.test_hook_databases import PG, by
from tests.support.common import server_image
from tests.support.databases import PGDATA, initialised_postgres, pg_ready, psql, run_postgres
from tests.support.engine import wait_for
from tests.support.fixtures_hook import fast_strategies, heal_report

pytestmark = pytest.mark.engine

PG_ROOT = [pytest.param("ownvol/postgres:17-root", id="pg17-root"),
           pytest.param("ownvol/postgres:15-root", id="pg15-root", marks=pytest.mark.matrix)]


@pytest.fixture
def image(request, docker_client) -> str:
    return server_image(docker_client, request.param)


def standby(tracked, image: str, port: int, data, labels: dict, *extra: str):
    """The initialised data dir started as a standby (standby.signal, no primary): in recovery for good."""
    signal = data / "standby.signal"
    signal.touch(mode=0o600)
    os.chown(signal, 999, 999)
    return run_postgres(tracked, image, port, data, labels,
                        command=["postgres", "-p", str(port), "-c", "listen_addresses=127.0.0.1", *extra])


def restart_refused(docker_client, c) -> dict:
    """The hook's restart action on c, run here as the hook runs it: it must refuse and leave c running as it was."""
    c.reload()
    started = c.attrs["State"]["StartedAt"]
    result = DockerExecutor(lambda: docker_client).run(c.id, "restart")
    c.reload()
    assert result.result == "skipped", result
    assert c.status == "running" and c.attrs["State"]["StartedAt"] == started
    assert result.detail["why"].startswith(f"refused after waiting {HAZARD_WAIT:g}s: ")
    return result.detail


@pytest.mark.parametrize("image", PG, indirect=True)
def test_a_standby_in_recovery_is_healthy_and_never_restarted(tracked, docker_client, image, host_dir, port):
    initialised_postgres(tracked, image, port, host_dir, {})
    c = standby(tracked, image, port, host_dir, {"ownvol.watch": "false"})
    wait_for(lambda: pg_ready(c, port), 60, what="the standby to accept read-only connections")
    assert psql(c, port, "select pg_is_in_recovery()") == "t"
    health = DockerExecutor(lambda: docker_client).health(c.id)
    assert psql(c, port, "select pg_is_in_recovery()") == "t"
    assert health.healthy and health.persistence == {"write": "read-only: in recovery (a standby)"}, health
    detail = restart_refused(docker_client, c)
    assert detail["refused"] == "PostgreSQL is in recovery: a restart would begin its recovery again"


@pytest.mark.parametrize("image", PG, indirect=True)
def test_a_server_rejecting_connections_in_recovery_is_never_restarted(tracked, docker_client, image, host_dir,
                                                                        port):
    """A standby with hot_standby off rejects every connection while it replays WAL (pg_isready exits 1), as a
    server in crash recovery does: the hook cannot ask it anything, and must not interrupt it."""
    initialised_postgres(tracked, image, port, host_dir, {})
    c = standby(tracked, image, port, host_dir, {"ownvol.watch": "false"}, "-c", "hot_standby=off")
    wait_for(lambda: c.exec_run(["pg_isready", "-q", "-p", str(port)]).exit_code == 1, 60,
             what="the standby to listen and reject connections (pg_isready exit 1)")
    detail = restart_refused(docker_client, c)
    assert detail["refused"] == "PostgreSQL is starting up or in recovery: a restart would begin its recovery again"


@pytest.mark.parametrize("image", PG, indirect=True)
def test_open_write_transactions_are_waited_for_then_refused(tracked, docker_client, image, host_dir, port):
    """A transaction that has written and not committed: its work is not durable until it commits; the hook
    waits HAZARD_WAIT seconds for it, then refuses to restart, and the row it would have cut off is not lost
    by the hook (it is the client's to commit or roll back)."""
    initialised_postgres(tracked, image, port, host_dir, {})
    c = run_postgres(tracked, image, port, host_dir, {"ownvol.watch": "false"})
    wait_for(lambda: pg_ready(c, port), 60, what="PostgreSQL to accept connections")
    c.exec_run(["psql", "-XAtq", "-p", str(port), "-U", "postgres", "-c",
                "begin; insert into kept values (0); select pg_sleep(120)"], detach=True)
    wait_for(lambda: psql(c, port, "select count(*) from pg_stat_activity where backend_xid is not null") == "1",
             30, what="the write transaction to be open")
    detail = restart_refused(docker_client, c)
    assert detail["refused"] == "1 write transaction(s) in progress: not durable until they commit"
    assert psql(c, port, "select count(*) from pg_stat_activity where backend_xid is not null") == "1"


@pytest.mark.parametrize("image", PG, indirect=True)
def test_postmaster_pid_of_another_live_server_is_never_removed(hook, tracked, image, host_dir, port):
    """A second server on the data dir of a running one, in its process namespace (so it sees the first
    alive): PostgreSQL refuses to start (`lock file "postmaster.pid" already exists`). The hook gives up with
    the reason and acts on nothing: the lock file, the data and the first server are as they were."""
    h = hook(strategies=fast_strategies(host_dir.parent / "s.yaml"))
    initialised_postgres(tracked, image, port, host_dir, h.labels)
    first = run_postgres(tracked, image, port, host_dir, h.labels)
    h.wait_event(lambda e: by(first.name, "health")(e) and e["state"] == "healthy", 60, "the first server healthy")
    lock = (host_dir / "postmaster.pid").read_text()
    second = run_postgres(tracked, image, port + 1, host_dir, h.labels, pid_mode=f"container:{first.id}",
                          command=["postgres", "-p", str(port + 1), "-c", "listen_addresses=127.0.0.1"])
    detected = h.wait_event(lambda e: by(second.name, "detected")(e) and e["pattern"] == "pg-lock-held", 60,
                            "the lock file's message to be recognised")
    assert detected["error_type"] == "data-dir-in-use"
    gave_up = h.wait_event(by(second.name, "gave-up"), 60, "the hook to give up")
    assert "no action is safe for data-dir-in-use on postgres" in gave_up["why"]
    assert not h.of("action", second.name) and not h.of("action", first.name)
    assert (host_dir / "postmaster.pid").read_text() == lock
    assert psql(first, port, "select count(*) from kept") == "500"


@pytest.mark.parametrize("image", PG_ROOT, indirect=True)
def test_root_image_with_a_user_on_a_root_owned_bind_is_healed(hook, tracked, image, host_dir, port):
    """The official-style image run with `user: 999:999` (its entrypoint cannot chown as root then): initdb
    fails on the root-owned bind; repaired to that user (never the image's root), started, written to."""
    h = hook(strategies=fast_strategies(host_dir.parent / "s.yaml"))
    started = time.time()
    c = run_postgres(tracked, image, port, host_dir, h.labels, restart_policy={"Name": "on-failure"})
    h.wait_event(lambda e: by(c.name, "detected")(e) and e["pattern"] == "pg-initdb", 60, "initdb's message")
    recovered = h.wait_event(by(c.name, "recovered"), 120, "PostgreSQL to be recovered")
    heal_report(f"{image} start-up, root-owned bind", recovered["ts"] - started)
    repair = next(e for e in h.of("action", c.name) if e["action"] == "repair-ownership")
    # the container's user, or its process already started again as that user (the policy's restart)
    assert repair["detail"]["owner"] == "999:999" and repair["detail"]["owner_source"] in ("user", "process"), repair
    assert psql(c, port, "create table t(i int); insert into t values (1); select count(*) from t") == "1"


@pytest.mark.parametrize("image", PG_ROOT, indirect=True)
def test_root_image_chowned_at_run_time_is_healed_to_its_server_s_uid(hook, tracked, docker_client, image,
                                                                       host_dir, port):
    """Started as root (the image's USER), the server dropped to postgres: the data dir chowned to root under
    it is given back to the uid the server process really runs as, never to the image's root; rows kept."""
    h = hook(strategies=fast_strategies(host_dir.parent / "s.yaml"))
    initialised_postgres(tracked, image, port, host_dir, h.labels)
    c = run_postgres(tracked, image, port, host_dir, h.labels, user="")
    h.wait_event(lambda e: by(c.name, "health")(e) and e["state"] == "healthy", 60, "PostgreSQL healthy")
    assert docker_client.images.get(image).attrs["Config"].get("User") in ("", "root", "0", None)
    mark = h.mark()
    started = time.time()
    subprocess.run(["chown", "-R", "0:0", str(host_dir)], check=True)
    recovered = h.wait_event(by(c.name, "recovered"), 60, "PostgreSQL to be recovered", after=mark)
    heal_report(f"{image} run time, data dir chowned to root", recovered["ts"] - started)
    repair = next(e for e in h.of("action", c.name) if e["action"] == "repair-ownership")
    assert repair["detail"].get("owner") == "999:999" and repair["detail"]["owner_source"] == "process", \
        "\n".join(str(e) for e in h.events)
    assert (host_dir.stat().st_uid, host_dir.stat().st_gid) == (999, 999)
    assert psql(c, port, "select count(*) from kept") == "500"


@pytest.mark.parametrize("image", PG, indirect=True)
def test_the_data_dir_comes_from_the_running_server_else_its_configuration(hook, tracked, image, host_dir, port):
    """A server that answers is asked (`SHOW data_directory` through its own psql); a stopped one is read as it
    would read its settings (here PGDATA); `ownvol doctor` names the source."""
    h = hook()
    initialised_postgres(tracked, image, port, host_dir, h.labels)
    c = run_postgres(tracked, image, port, host_dir, h.labels)
    wait_for(lambda: pg_ready(c, port), 60, what="PostgreSQL to accept connections")
    running = h.cli("doctor", c.name)
    assert running.returncode == 0, running.stderr
    assert f"data: {PGDATA} (SHOW data_directory)" in running.stdout, running.stdout
    c.stop(timeout=30)
    stopped = h.cli("doctor", c.name)
    assert f"data: {PGDATA} (env PGDATA)" in stopped.stdout, stopped.stdout


@pytest.mark.parametrize("image", PG, indirect=True)
def test_a_server_stopped_by_someone_during_its_incident_is_never_started(hook, tracked, image, host_dir, port):
    """Restart policy `always`, the data dir chowned to root under the running server, then `docker stop` (the
    engine's kill and stop events; the server's shutdown checkpoint PANICs on pg_control, the line the hook
    reads): the repair is made, but the container someone stopped stays stopped, and the hook says why."""
    h = hook(strategies=fast_strategies(host_dir.parent / "s.yaml"))
    initialised_postgres(tracked, image, port, host_dir, h.labels)
    c = run_postgres(tracked, image, port, host_dir, h.labels, restart_policy={"Name": "always"})
    h.wait_event(lambda e: by(c.name, "health")(e) and e["state"] == "healthy", 60, "PostgreSQL healthy")
    mark = h.mark()
    h.pause()
    try:
        subprocess.run(["chown", "-R", "0:0", str(host_dir)], check=True)
        c.stop(timeout=10)
    finally:
        h.resume()
    gave_up = h.wait_event(by(c.name, "gave-up"), 60, "the hook to give up", after=mark)
    restarts = [e for e in h.of("action", c.name) if e["action"] == "restart"]
    assert restarts and all(e["result"] == "skipped" for e in restarts), restarts
    assert "stopped by someone: the engine's kill event" in restarts[0]["detail"]["why"], restarts
    assert "never started" in restarts[0]["detail"]["why"] and gave_up["incident"] == restarts[0]["incident"]
    c.reload()
    assert c.status == "exited"
