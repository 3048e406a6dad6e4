"""The hook against real PostgreSQL and MariaDB containers (images/postgres, images/mariadb): start-up and
run-time ownership faults healed with the data kept, the wrong mode of a PostgreSQL data dir healed, a
read-only data dir left alone with the reason. One version per family here; the trixie ones under
`make test-matrix` (marker `matrix`)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import docker
import pytest

from tests.support.common import free_port, server_image
from tests.support.databases import (
    MYSQL_DATA,
    PASSWORD,
    PGDATA,
    initialised_mariadb,
    initialised_postgres,
    mariadb_run,
    psql,
    run_mariadb,
    run_postgres,
)
from tests.support.engine import wait_for
from tests.support.fixtures_hook import fast_strategies, heal_report

pytestmark = pytest.mark.engine

PG = [pytest.param("ownvol/postgres:17", id="pg17"),
      pytest.param("ownvol/postgres:15", id="pg15", marks=pytest.mark.matrix)]
MARIADB = [pytest.param("ownvol/mariadb:11.8", id="mariadb11.8"),
           pytest.param("ownvol/mariadb:10.11", id="mariadb10.11", marks=pytest.mark.matrix)]


@pytest.fixture
def image(request, docker_client) -> str:
    return server_image(docker_client, request.param)


def by(name: str, kind: str):
    return lambda e: e["event"] == kind and e.get("container") == name


def tree(path: Path) -> dict[str, tuple]:
    """Every entry's owner, mode and content digest: what 'untouched' means."""
    found = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = Path(root, name)
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
            found[str(p.relative_to(path))] = (st.st_uid, st.st_gid, st.st_mode, digest)
    st = path.lstat()
    found["."] = (st.st_uid, st.st_gid, st.st_mode, "")
    return found


@pytest.mark.parametrize("image", PG, indirect=True)
def test_postgres_on_a_root_owned_bind_is_healed_and_takes_a_write(hook, tracked, image, host_dir, port):
    """`user: 999:999` on a root-owned bind: initdb cannot chmod it and exits; repaired, started, written to."""
    h = hook(strategies=fast_strategies(host_dir.parent / "s.yaml"))
    started = time.time()
    c = run_postgres(tracked, image, port, host_dir, h.labels, restart_policy={"Name": "on-failure"})
    detected = h.wait_event(lambda e: by(c.name, "detected")(e) and e["pattern"] == "pg-initdb", 60,
                            "initdb's own message to be recognised")
    assert detected["error_type"] == "permission-denied"
    recovered = h.wait_event(by(c.name, "recovered"), 120, "PostgreSQL to be recovered")
    heal_report(f"{image} start-up, root-owned bind", recovered["ts"] - started)
    assert psql(c, port, "create table t(i int); insert into t values (1); select count(*) from t") == "1"
    assert (host_dir.stat().st_uid, host_dir.stat().st_mode & 0o777) == (999, 0o700)
    repair = [e for e in h.of("action", c.name) if e["action"] == "repair-ownership"]
    assert repair and repair[0]["detail"]["owner"] == "999:999"


@pytest.mark.parametrize("image", PG, indirect=True)
def test_postgres_data_dir_of_mode_0777_is_healed(hook, tracked, image, host_dir, port):
    """Right owner, mode 0777, the server run without the entrypoint (which would chmod it): PostgreSQL
    refuses it; the hook gives the directory (alone) mode 0700 and the rows are there."""
    h = hook(strategies=fast_strategies(host_dir.parent / "s.yaml"))
    initialised_postgres(tracked, image, port, host_dir, h.labels)
    host_dir.chmod(0o777)
    inner = host_dir / "base"
    inner_mode = inner.stat().st_mode
    started = time.time()
    c = run_postgres(tracked, image, port, host_dir, h.labels, restart_policy={"Name": "on-failure"},
                     entrypoint=["postgres"], command=["-p", str(port), "-c", "listen_addresses=127.0.0.1"])
    detected = h.wait_event(lambda e: by(c.name, "detected")(e) and e["pattern"] == "pg-wrong-mode", 60,
                            "the wrong mode to be recognised")
    assert detected["subject"] == "data-dir-mode"
    recovered = h.wait_event(by(c.name, "recovered"), 120, "PostgreSQL to be recovered")
    heal_report(f"{image} start-up, data dir mode 0777", recovered["ts"] - started)
    assert host_dir.stat().st_mode & 0o7777 == 0o700 and inner.stat().st_mode == inner_mode
    assert psql(c, port, "select count(*) from kept") == "500"


@pytest.mark.parametrize("image", PG, indirect=True)
def test_postgres_data_dir_chowned_under_it_is_healed_without_data_loss(hook, tracked, image, host_dir, port):
    """The whole data dir given to root while the server runs: new sessions fail; repaired live, rows kept."""
    h = hook(strategies=fast_strategies(host_dir.parent / "s.yaml"))
    initialised_postgres(tracked, image, port, host_dir, h.labels)
    c = run_postgres(tracked, image, port, host_dir, h.labels, restart_policy={"Name": "on-failure"})
    h.wait_event(lambda e: by(c.name, "health")(e) and e["state"] == "healthy", 60, "PostgreSQL healthy")
    mark = h.mark()
    started = time.time()
    subprocess.run(["chown", "-R", "0:0", str(host_dir)], check=True)
    h.wait_event(by(c.name, "incident"), 60, "the run-time fault to open an incident", after=mark)
    recovered = h.wait_event(by(c.name, "recovered"), 120, "PostgreSQL to be recovered", after=mark)
    heal_report(f"{image} run time, data dir chowned to root", recovered["ts"] - started)
    assert psql(c, port, "select count(*) from kept") == "500"
    assert psql(c, port, "insert into kept values (501); select count(*) from kept") == "501"


def mariadb_start_ups_learnt(state_dir: Path, count: int = 3) -> Path:
    """A hook's journal that has seen `count` MariaDB start-ups whose repair-ownership was verified too early
    (its initialisation outlasted the verification, as under load in the heal-db bench) and a restart after
    it verified: what that hook learnt of permission-denied."""
    from ownvol.hook.journal import Journal

    state_dir.mkdir()
    journal = Journal(state_dir / "journal.sqlite")
    for i in range(count):
        incident = journal.open_incident(f"seen-{i}", f"mariadb-{i}", "permission-denied", "log",
                                         {"service": "mariadb", "phase": "startup"}, time.time())
        journal.start_action(incident.id, 0, "repair-ownership")
        journal.finish_action(incident.id, 0, "ok", False, {})
        journal.start_action(incident.id, 1, "restart")
        journal.finish_action(incident.id, 1, "ok", True, {})
        journal.close_incident(incident.id, "resolved", "verified healthy after restart")
    journal.close()
    return state_dir


@pytest.mark.parametrize("image", PG, indirect=True)
def test_mariadb_start_ups_do_not_put_a_restart_first_for_a_running_postgres(hook, tracked, image, host_dir, port,
                                                                              tmp_path):
    """The heal-db bench's missed runs: its hook had learnt from MariaDB start-ups that repair-ownership
    'fails' for permission-denied and put restart first for every family; a PostgreSQL restarted onto its
    root-owned data dir PANICs at the shutdown checkpoint, cannot start again, and stays down. What one
    family's incidents teach orders that family's plans only: repair-ownership comes first, no restart."""
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"), state_dir=mariadb_start_ups_learnt(tmp_path / "st"))
    initialised_postgres(tracked, image, port, host_dir, h.labels)
    # on-failure as in the run-time test above: a server that dies of the chown itself (its WAL writer's
    # PANIC) is the other way the bench's runs ended down, and not this test's subject
    c = run_postgres(tracked, image, port, host_dir, h.labels, restart_policy={"Name": "on-failure"})
    h.wait_event(lambda e: by(c.name, "health")(e) and e["state"] == "healthy", 60, "PostgreSQL healthy")
    mark = h.mark()
    subprocess.run(["chown", "-R", "0:0", str(host_dir)], check=True)
    recovered = h.wait_event(by(c.name, "recovered"), 60, "PostgreSQL to be recovered", after=mark)
    actions = [(e["step"], e["action"]) for e in h.of("action", c.name) if e["incident"] == recovered["incident"]]
    assert actions == [(0, "repair-ownership")], actions
    assert psql(c, port, "insert into kept values (501); select count(*) from kept") == "501"


@pytest.mark.parametrize("image", PG, indirect=True)
def test_postgres_on_a_read_only_data_dir_gives_up_with_the_reason_and_touches_nothing(hook, tracked, image,
                                                                                       host_dir, port):
    h = hook(strategies=fast_strategies(host_dir.parent / "s.yaml"))
    initialised_postgres(tracked, image, port, host_dir, h.labels)
    before = tree(host_dir)
    c = run_postgres(tracked, image, port, host_dir, h.labels, mode="ro")
    gave_up = h.wait_event(by(c.name, "gave-up"), 90, "the hook to give up")
    # the strategy's "no action is safe for read-only-filesystem", or, where the line names a path (PostgreSQL 17),
    # the path's diagnosis: "... is on the read-only mount ...: no owner makes it writable"
    assert "read-only" in gave_up["why"], gave_up["why"]
    assert not h.of("action", c.name)
    assert tree(host_dir) == before


@pytest.mark.parametrize("image", MARIADB, indirect=True)
def test_mariadb_on_a_root_owned_bind_is_healed_and_takes_a_write(hook, tracked, image, host_dir, port):
    h = hook(strategies=fast_strategies(host_dir.parent / "s.yaml"))
    started = time.time()
    c = run_mariadb(tracked, image, port, host_dir, h.labels, restart_policy={"Name": "on-failure"})
    detected = h.wait_event(lambda e: by(c.name, "detected")(e) and e["pattern"].startswith("mariadb-"), 60,
                            "MariaDB's own message to be recognised")
    assert detected["error_type"] == "permission-denied"
    recovered = h.wait_event(by(c.name, "recovered"), 180, "MariaDB to be recovered")
    heal_report(f"{image} start-up, root-owned bind", recovered["ts"] - started)
    code, out = mariadb_run(c, "create database w; create table w.t(i int) engine=innodb; insert into w.t values (7); "
                               "select i from w.t")
    assert code == 0 and out == "7", out
    assert host_dir.stat().st_uid == 999
    doctor = h.cli("doctor", c.name, "--json")
    assert doctor.returncode == 0, doctor.stderr
    assert '"service": "mariadb"' in doctor.stdout and '"state": "healthy"' in doctor.stdout
    assert "/var/lib/mysql" in doctor.stdout and "ownvol-test" not in doctor.stdout


@pytest.mark.parametrize("image", PG, indirect=True)
def test_doctor_shows_a_postgres_container_s_facts_and_plan(hook, tracked, image, host_dir, port):
    h = hook()
    c = run_postgres(tracked, image, port, host_dir, h.labels)
    wait_for(lambda: c.reload() or c.status == "exited", 60, what="initdb to fail")
    out = h.cli("doctor", c.name, "--json")
    assert out.returncode == 0, out.stderr
    assert '"service": "postgres"' in out.stdout and PGDATA in out.stdout
    assert '"repair-ownership"' in out.stdout and "ownvol-test" not in out.stdout


def drift_of(h, name: str) -> str:
    """The container's drift watch as `ownvol status --json` shows it ("on: PATH", "off: why")."""
    status = json.loads(h.cli("status", "--addr", f"127.0.0.1:{h.port}", "--json").stdout or "{}")
    return next((x.get("drift", "") for x in status.get("containers", []) if x["name"] == name), "")


def rows_then_chowned(h, c, host_dir: Path) -> tuple[int, float]:
    """Two rows in kept.t, then the data dir (the tree) given to root under the running server: (the hook's
    event mark, the time of the chown)."""
    assert mariadb_run(c, "create database kept; create table kept.t(i int) engine=innodb; "
                          "insert into kept.t values (1), (2)")[0] == 0
    mark = h.mark()
    started = time.time()
    subprocess.run(["chown", "-R", "0:0", str(host_dir)], check=True)
    return mark, started


@pytest.mark.parametrize("image", MARIADB, indirect=True)
def test_mariadb_data_dir_chowned_under_it_is_healed_through_its_own_probe(hook, tracked, image, host_dir, port,
                                                                           ownvol_image):
    """A hook that cannot see the host path (repairs through the helper) has only the server's word: MariaDB
    keeps writing into the files it holds open, so only the probe's scratch schema, a directory the server
    must create in its data dir, shows the data dir taken from it at run time."""
    h = hook(strategies=fast_strategies(host_dir.parent / "s.yaml"),
             extra=("--repair-via", "helper", "--helper-image", ownvol_image))
    os.chown(host_dir, 999, 999)
    c = run_mariadb(tracked, image, port, host_dir, h.labels)
    h.wait_event(lambda e: by(c.name, "health")(e) and e["state"] == "healthy", 120, "MariaDB healthy")
    assert "off: the engine's host paths are not this process's" in drift_of(h, c.name)
    mark, started = rows_then_chowned(h, c, host_dir)
    incident = h.wait_event(by(c.name, "incident"), 60, "the probe to open an incident", after=mark)
    assert "ownvol_probe" in incident["detail"]["message"] and "errno: 13" in incident["detail"]["message"], incident
    assert "Operating system error" not in c.logs().decode(), "the probe made InnoDB stat files it cannot reach"
    recovered = h.wait_event(by(c.name, "recovered"), 120, "MariaDB to be recovered", after=mark)
    heal_report(f"{image} run time, data dir chowned to root, helper route", recovered["ts"] - started)
    repair = next(e for e in h.of("action", c.name) if e["action"] == "repair-ownership")
    assert repair["detail"]["route"] == "helper" and repair["detail"]["owner"] == "999:999", repair
    code, out = mariadb_run(c, "create database w; insert into kept.t values (3); select count(*) from kept.t")
    assert code == 0 and out == "3", out
    assert "ownvol_probe" not in mariadb_run(c, "show databases")[1]


@pytest.mark.parametrize("image", PG, indirect=True)
def test_postgres_that_dies_of_a_run_time_chown_is_started_again_whatever_its_policy(hook, tracked, image,
                                                                                    host_dir, port):
    """Restart policy `no`, the data dir chowned to root under the running server, which dies of it (the next
    WAL segment cannot be opened: PANIC) before a lagging hook (paused here) reads the line: it was
    running when the incident opened, so the hook starts it again after the repair (the state the incident
    found), and every row written before is there."""
    h = hook(strategies=fast_strategies(host_dir.parent / "s.yaml"))
    initialised_postgres(tracked, image, port, host_dir, h.labels)
    c = run_postgres(tracked, image, port, host_dir, h.labels)
    h.wait_event(lambda e: by(c.name, "health")(e) and e["state"] == "healthy", 60, "PostgreSQL healthy")
    mark = h.mark()
    h.pause()
    try:
        # a session opened before the chown (a new session could not even start on the root-owned catalog)
        # switches to the next WAL segment and commits a transaction id after it: the segment, root's now,
        # cannot be opened, whoever writes it PANICs, and the postmaster cannot read pg_control to start again
        # and PANICs too (the container exits 139). The session waits in pg_sleep until the chown is made,
        # then its sleep is cancelled (SIGINT to its backend: a query cancel; psql goes on to the next -c)
        c.exec_run(["psql", "-XAtq", "-p", str(port), "-U", "postgres", "-c", "select pg_sleep(60)", "-c",
                    "select pg_switch_wal()", "-c", "select txid_current()"], detach=True)
        backend = wait_for(lambda: psql(c, port, "select pid from pg_stat_activity where query = "
                                                 "'select pg_sleep(60)'"), 10, what="the session to be open")
        started = time.time()
        subprocess.run(["chown", "-R", "0:0", str(host_dir)], check=True)
        try:
            c.exec_run(["sh", "-c", f"kill -INT {int(backend)}"])
        except docker.errors.APIError:
            pass  # the server died of the chown already (another of its processes opened a file first)
        wait_for(lambda: c.reload() or c.status == "exited", 30, what="PostgreSQL to die of the chown")
        assert c.attrs["State"]["ExitCode"] not in (0, 130, 143), c.attrs["State"]
    finally:
        h.resume()
    recovered = h.wait_event(by(c.name, "recovered"), 60, "PostgreSQL to be recovered", after=mark)
    heal_report(f"{image} run time, died of it, restart policy no", recovered["ts"] - started)
    started_again = [e for e in h.of("action", c.name) if e["action"] == "restart" and e["result"] == "ok"]
    assert started_again and started_again[-1]["detail"]["how"] == "start", h.of("action", c.name)
    assert "it was running when the incident opened" in started_again[-1]["detail"]["why"]
    c.reload()
    assert c.status == "running" and c.attrs["HostConfig"]["RestartPolicy"]["Name"] in ("", "no")
    assert psql(c, port, "select count(*) from kept") == "500"


@pytest.mark.parametrize("image", MARIADB, indirect=True)
def test_mariadb_data_dir_chowned_under_it_wakes_its_probe_at_once(hook, tracked, image, host_dir, port):
    """MariaDB logs nothing when its data dir is given to root under it; with `--interval 60` the periodic
    probe is not what finds it: the drift watch (inotify on the host path) wakes that container's probe,
    which opens the incident; healed with the rows written before."""
    h = hook(strategies=fast_strategies(host_dir.parent / "s.yaml"), extra=("--interval", "60"))
    os.chown(host_dir, 999, 999)
    c = run_mariadb(tracked, image, port, host_dir, h.labels)
    wait_for(lambda: mariadb_run(c, "select 1") == (0, "1"), 120, what="MariaDB to answer")

    wait_for(lambda: drift_of(h, c.name) == f"on: {host_dir}", 120, what="the hook to watch the data dir")
    doctor = h.cli("doctor", c.name)
    assert f"drift watch: on: {host_dir}" in doctor.stdout, doctor.stdout + doctor.stderr
    mark, started = rows_then_chowned(h, c, host_dir)
    woke = h.wait_event(by(c.name, "drift"), 60, "the drift watch to wake the probe", after=mark)
    incident = h.wait_event(by(c.name, "incident"), 60, "the woken probe to open an incident", after=mark)
    assert h.events.index(woke) < h.events.index(incident) and incident["origin"] == "health", incident
    recovered = h.wait_event(by(c.name, "recovered"), 120, "MariaDB to be recovered", after=mark)
    heal_report(f"{image} run time, data dir chowned to root, drift watch", recovered["ts"] - started)
    assert host_dir.stat().st_uid == 999
    code, out = mariadb_run(c, "create database w; insert into kept.t values (3); select count(*) from kept.t")
    assert code == 0 and out == "3", out


@pytest.mark.parametrize("image", MARIADB, indirect=True)
def test_mariadb_tablespace_it_could_not_open_at_start_is_healed_with_its_rows(hook, tracked, image, host_dir, port):
    """One table's file given to root while the server was down (a file copied in as root): InnoDB's
    `Operating system error number 13`, and the server starts without the table. Repaired, then restarted (its
    probe sees the tablespace unopened until a restart), every row written before is there. A repair made while
    InnoDB is still starting (milliseconds after the line) can come before InnoDB's next open of the file: the
    table is then opened, the verification finds it healthy and nothing restarts it; every row is there too."""
    h = hook(strategies=fast_strategies(host_dir.parent / "s.yaml"))
    initialised_mariadb(tracked, image, port, host_dir, h.labels)
    os.chown(host_dir / "kept" / "t.ibd", 0, 0)
    started = time.time()
    c = run_mariadb(tracked, image, port, host_dir, h.labels)
    detected = h.wait_event(lambda e: by(c.name, "detected")(e) and e["pattern"] == "innodb-os-error-13", 90,
                            "InnoDB's error 13 to be recognised")
    assert detected["error_type"] == "permission-denied" and detected["phase"] == "startup"
    recovered = h.wait_event(by(c.name, "recovered"), 120, "MariaDB to be recovered")
    heal_report(f"{image} start-up, a tablespace root's (InnoDB error 13)", recovered["ts"] - started)
    actions = [(e["action"], e["result"]) for e in h.of("action", c.name)]
    assert actions in ([("repair-ownership", "ok"), ("restart", "ok")], [("repair-ownership", "ok")]), actions
    assert (host_dir / "kept" / "t.ibd").stat().st_uid == 999
    code, out = mariadb_run(c, "select count(*), sum(i) from kept.t")
    assert code == 0 and out == "500\t125250", out


@pytest.mark.parametrize("image", MARIADB[:1], indirect=True)
def test_mariadb_probe_authenticates_and_the_server_logs_no_access_denied(hook, tracked, image, host_dir, port):
    """The probe's mariadb-admin and mariadb run as root@localhost with the container's own password (read
    inside it): after several probes the server has logged no `Access denied`, and the password is in no
    event and no log of the hook."""
    h = hook()
    os.chown(host_dir, 999, 999)
    c = run_mariadb(tracked, image, port, host_dir, h.labels)
    h.wait_event(lambda e: by(c.name, "health")(e) and e["state"] == "healthy", 120, "MariaDB healthy")

    def scratch_schemas_made() -> int:
        code, out = mariadb_run(c, "show global status like 'Com_create_db'")
        return int(out.split()[-1]) if code == 0 else 0

    wait_for(lambda: scratch_schemas_made() >= 3, 60, what="three probes")
    logs = c.logs().decode()
    assert "Access denied" not in logs, [line for line in logs.splitlines() if "Access denied" in line]
    doctor = h.cli("doctor", c.name, "--json")
    assert '"dir": "SELECT @@datadir"' in doctor.stdout and f'"data_dir": "{MYSQL_DATA}"' in doctor.stdout
    assert PASSWORD not in repr(h.events) + doctor.stdout + (h.state_dir / "hook.stderr").read_text()


@pytest.mark.parametrize("image", [pytest.param("ownvol/mariadb:11.8-root", id="mariadb11.8-root")], indirect=True)
def test_official_style_mariadb_the_owner_is_the_running_server_s_uid(hook, tracked, image, host_dir, port):
    """The -root variant starts as root (the container's user) and drops to mysql: at start-up its entrypoint
    gives the root-owned bind to mysql itself and the hook leaves the healthy server alone; its owner is the
    server process's real uid, not the container's root. At run time the data dir chowned to root under it is
    healed to that uid, rows kept. Root's password from MARIADB_ROOT_PASSWORD_FILE."""
    h = hook(strategies=fast_strategies(host_dir.parent / "s.yaml"))
    secret = host_dir.parent / "root-password"
    secret.write_text(PASSWORD)
    assert host_dir.stat().st_uid == 0
    c = tracked.run(image, ["mariadbd", f"--port={port}", "--bind-address=127.0.0.1"], network_mode="host",
                    environment={"MARIADB_ROOT_PASSWORD_FILE": "/run/secrets/root"}, labels=h.labels,
                    volumes={str(host_dir): {"bind": MYSQL_DATA, "mode": "rw"},
                             str(secret): {"bind": "/run/secrets/root", "mode": "ro"}})
    h.wait_event(lambda e: by(c.name, "health")(e) and e["state"] == "healthy", 120, "MariaDB healthy")
    assert not h.of("incident", c.name) and not h.of("action", c.name)
    doctor = h.cli("doctor", c.name, "--json")
    assert '"owner": "999:999"' in doctor.stdout and '"owner_source": "process"' in doctor.stdout, doctor.stdout
    mark, started = rows_then_chowned(h, c, host_dir)
    recovered = h.wait_event(by(c.name, "recovered"), 120, "MariaDB to be recovered", after=mark)
    heal_report(f"{image} run time, data dir chowned to root", recovered["ts"] - started)
    repair = next(e for e in h.of("action", c.name) if e["action"] == "repair-ownership")
    assert repair["detail"]["owner"] == "999:999", repair
    code, out = mariadb_run(c, "create database w; insert into kept.t values (3); select count(*) from kept.t")
    assert code == 0 and out == "3", out
    assert "Access denied" not in c.logs().decode()


@pytest.mark.parametrize("image", MARIADB[:1], indirect=True)
def test_mariadb_galera_node_is_probed_without_the_scratch_schema(hook, tracked, image, host_dir, port):
    """A one-node Galera cluster (wsrep_on=ON, group communication on 127.0.0.1): the scratch schema's DDL
    would be replicated to every node, so the probe leaves the write check out and says so (doctor)."""
    h = hook()
    os.chown(host_dir, 999, 999)
    group = free_port()
    c = run_mariadb(tracked, image, port, host_dir, h.labels, command=[
        "mariadbd", f"--port={port}", "--bind-address=127.0.0.1", "--wsrep_on=ON", "--wsrep-new-cluster",
        "--wsrep_provider=/usr/lib/galera/libgalera_smm.so", "--wsrep_cluster_address=gcomm://",
        "--wsrep_node_address=127.0.0.1", f"--wsrep_provider_options=gmcast.listen_addr=tcp://127.0.0.1:{group}",
        "--binlog_format=ROW", "--innodb_autoinc_lock_mode=2"])
    healthy = h.wait_event(lambda e: by(c.name, "health")(e) and e["state"] == "healthy", 120, "MariaDB healthy")
    assert mariadb_run(c, "select @@wsrep_on")[1] == "1"
    doctor = h.cli("doctor", c.name)
    assert doctor.returncode == 0, doctor.stderr
    assert "write check: not checked: a Galera node (wsrep_on=ON)" in doctor.stdout, doctor.stdout
    assert mariadb_run(c, "show global status like 'Com_create_db'")[1].split()[-1] == "0", healthy


@pytest.mark.parametrize("image", MARIADB, indirect=True)
def test_mariadb_innodb_error_13_at_run_time_is_recognised_and_healed_with_the_rows(hook, tracked, image, host_dir,
                                                                                    port):
    """The data dir chowned to root under the running server, then what a monitoring agent reads
    (information_schema.INNODB_SYS_TABLESPACES): InnoDB logs `Operating system error number 13` from that
    connection's thread, recognised as a run-time error; healed, every row written before is there."""
    h = hook(strategies=fast_strategies(host_dir.parent / "s.yaml"))
    os.chown(host_dir, 999, 999)
    c = run_mariadb(tracked, image, port, host_dir, h.labels)
    h.wait_event(lambda e: by(c.name, "health")(e) and e["state"] == "healthy", 120, "MariaDB healthy")
    assert mariadb_run(c, "create database kept; create table kept.t(i int) engine=innodb; "
                          "insert into kept.t select seq from kept.seq_1_to_500")[0] == 0
    mark = h.mark()
    h.pause()  # the line is written before the hook's next probe could see the fault its own way
    try:
        started = time.time()
        subprocess.run(["chown", "-R", "0:0", str(host_dir)], check=True)
        mariadb_run(c, "select count(*) from information_schema.INNODB_SYS_TABLESPACES")
        wait_for(lambda: "error number 13" in c.logs().decode(), 30, what="InnoDB's error 13 in the server's log")
    finally:
        h.resume()
    detected = h.wait_event(lambda e: by(c.name, "detected")(e) and e["pattern"] == "innodb-os-error-13-runtime", 60,
                            "InnoDB's run-time error 13 to be recognised", after=mark)
    assert detected["phase"] == "runtime" and detected["error_type"] == "permission-denied", detected
    recovered = h.wait_event(by(c.name, "recovered"), 120, "MariaDB to be recovered", after=mark)
    heal_report(f"{image} run time, InnoDB error 13", recovered["ts"] - started)
    assert host_dir.stat().st_uid == 999
    code, out = mariadb_run(c, "create database w; select count(*), sum(i) from kept.t")
    assert code == 0 and out == "500\t125250", out


@pytest.mark.parametrize("image", MARIADB[:1], indirect=True)
def test_mariadb_data_dir_from_the_server_s_own_option_reader_when_sql_refuses(hook, tracked, image, host_dir, port):
    """A datadir set in an option file, and a label password the server refuses: the data dir is the one
    mariadbd's own reader finds (`my_print_defaults --mysqld` in the container), and doctor says so."""
    h = hook()
    os.chown(host_dir, 999, 999)
    cnf = host_dir.parent / "zz-datadir.cnf"
    cnf.write_text("[mariadbd]\ndatadir=/srv/db\n")
    c = tracked.run(image, ["mariadbd", f"--port={port}", "--bind-address=127.0.0.1"], user="999:999",
                    network_mode="host", environment={"MARIADB_ROOT_PASSWORD": PASSWORD},
                    labels={**h.labels, "ownvol.mariadb.password": "not-the-password"},
                    volumes={str(host_dir): {"bind": "/srv/db", "mode": "rw"},
                             str(cnf): {"bind": "/etc/mysql/conf.d/zz-datadir.cnf", "mode": "ro"}})
    wait_for(lambda: c.reload() or mariadb_run(c, "select @@datadir") == (0, "/srv/db/"), 90,
             what="MariaDB to run on /srv/db")
    doctor = h.cli("doctor", c.name, "--json")
    assert doctor.returncode == 0, doctor.stderr
    assert '"dir": "my_print_defaults --mysqld"' in doctor.stdout and '"data_dir": "/srv/db"' in doctor.stdout, \
        doctor.stdout
    assert "not-the-password" not in doctor.stdout
