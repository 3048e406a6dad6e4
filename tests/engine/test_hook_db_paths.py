"""Paths a database writes beside its data dir (issue 24 kind A), on the real engine with the real servers: the
MariaDB binary log on its own root-owned bind (case 20), its redo log (a line that names no file) and undo
directory (a crash with no known line) on theirs, PostgreSQL's unix socket directory and pg_wal (initdb
--waldir) on their own binds.

Each case has two halves: the hook names the right path, absolute in the container (the detection's or the
crash evidence's context `path`: what this branch builds), and the heal, where the repair acts on the mount
that holds that path (the mechanism of hooks/targets.py and actions.py that maps a path through the
container's mount table: the tests named `..._is_healed` need it). A healthy database with a root-owned
writable bind it never writes is never touched.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.support.common import server_image
from tests.support.databases import (
    MYSQL_DATA,
    PASSWORD,
    PGDATA,
    initialised_mariadb,
    mariadb_ready,
    mariadb_run,
    pg_ready,
    psql,
)
from tests.support.engine import wait_for
from tests.support.fixtures_hook import fast_strategies, heal_report

pytestmark = pytest.mark.engine

MARIADB = "ownvol/mariadb:11.8"
PG = "ownvol/postgres:17"
BINLOG = "/var/log/mysql"
WALDIR = "/var/lib/postgresql/wal"
SOCKETS = "/var/run/postgresql"


def by(name: str, kind: str):
    return lambda e: e["event"] == kind and e.get("container") == name


def owners(path: Path) -> dict[str, tuple[int, int]]:
    """Every entry's owner below path (path itself as "."): what a repair elsewhere must leave as it is."""
    found = {".": (path.stat().st_uid, path.stat().st_gid)}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            st = Path(root, name).lstat()
            found[str(Path(root, name).relative_to(path))] = (st.st_uid, st.st_gid)
    return found


def root_dir(path: Path) -> Path:
    """A directory as Docker creates a missing bind source: root's, mode 0755."""
    path.mkdir()
    os.chown(path, 0, 0)
    path.chmod(0o755)
    return path


def run_mariadb_with(tracked, image: str, port: int, data: Path, labels: dict, binds: dict[Path, str],
                     args: tuple[str, ...] = (), **kwargs):
    """MariaDB as 999 on data with more binds (host dir -> destination) and server arguments."""
    volumes = {str(data): {"bind": MYSQL_DATA, "mode": "rw"}}
    volumes.update({str(h): {"bind": d, "mode": "rw"} for h, d in binds.items()})
    return tracked.run(image, ["mariadbd", f"--port={port}", "--bind-address=127.0.0.1", *args], user="999:999",
                       network_mode="host", environment={"MARIADB_ROOT_PASSWORD": PASSWORD}, volumes=volumes,
                       labels=labels, **kwargs)


def run_postgres_with(tracked, image: str, port: int, data: Path, labels: dict, binds: dict[Path, str],
                      env: dict | None = None, **kwargs):
    volumes = {str(data): {"bind": PGDATA, "mode": "rw"}}
    volumes.update({str(h): {"bind": d, "mode": "rw"} for h, d in binds.items()})
    return tracked.run(image, ["postgres", "-p", str(port), "-c", "listen_addresses=127.0.0.1"], user="999:999",
                       network_mode="host", environment={"POSTGRES_PASSWORD": PASSWORD, **(env or {})},
                       volumes=volumes, labels=labels, **kwargs)


@pytest.fixture
def mariadb(docker_client) -> str:
    return server_image(docker_client, MARIADB)


@pytest.fixture
def postgres(docker_client) -> str:
    return server_image(docker_client, PG)


def case20(hook, tracked, image, host_dir, port, tmp_path):
    """Case 20: an existing MariaDB (999:999, 3 rows in kept.t) given --log-bin in /var/log/mysql, a bind
    whose source Docker created root 0755."""
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    initialised_mariadb(tracked, image, port, host_dir, h.labels, rows=3)
    logs = root_dir(tmp_path / "logs")
    before = owners(host_dir)
    started = time.time()
    c = run_mariadb_with(tracked, image, port, host_dir, h.labels, {logs: BINLOG},
                         (f"--log-bin={BINLOG}/mariadb-bin", "--server-id=1"),
                         restart_policy={"Name": "on-failure", "MaximumRetryCount": 5})
    return h, c, logs, before, started


def test_case20_the_detection_names_the_binary_log_s_index_in_its_own_mount(hook, tracked, mariadb, host_dir,
                                                                             port, tmp_path):
    h, c, _, _, _ = case20(hook, tracked, mariadb, host_dir, port, tmp_path)
    detected = h.wait_event(lambda e: by(c.name, "detected")(e) and e["pattern"] == "mariadb-file-open", 60,
                            "the binary log's index to be recognised")
    assert detected["context"]["path"] == f"{BINLOG}/mariadb-bin.index"
    assert detected["error_type"] == "permission-denied"
    incident = h.wait_event(by(c.name, "incident"), 30, "an incident")
    assert incident["detail"]["context"]["path"] == f"{BINLOG}/mariadb-bin.index"


def test_case20_the_binary_log_s_mount_is_healed_and_the_data_dir_left_as_it_was(hook, tracked, mariadb, host_dir,
                                                                                  port, tmp_path):
    """Needs the path-to-mount repair (hooks/targets.py, actions.py): the binlog mount is given to 999:999,
    the data dir's owners stay as they were, the rows are there and the binary log is written."""
    h, c, logs, before, started = case20(hook, tracked, mariadb, host_dir, port, tmp_path)
    recovered = h.wait_event(by(c.name, "recovered"), 120, "MariaDB to be recovered")
    heal_report("case 20: MariaDB binary log on a root-owned bind", recovered["ts"] - started)
    assert (logs.stat().st_uid, logs.stat().st_gid) == (999, 999)
    wait_for(lambda: mariadb_ready(c), 60, what="MariaDB to answer")
    assert mariadb_run(c, "select count(*) from kept.t") == (0, "3")
    assert (logs / "mariadb-bin.index").exists()
    after = owners(host_dir)
    assert {k: v for k, v in after.items() if k in before} == before
    repairs = [e for e in h.of("action", c.name) if e["action"] == "repair-ownership" and e.get("result") == "ok"]
    assert repairs and all(str(host_dir) not in str(e.get("detail")) for e in repairs), repairs


def test_a_healthy_mariadb_with_a_root_owned_bind_it_never_writes_is_not_touched(hook, tracked, mariadb, host_dir,
                                                                                  port, tmp_path):
    """Its binary log on a bind of its own (999:999) and a writable bind no setting names (root's): healthy,
    no incident, nothing repaired."""
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    initialised_mariadb(tracked, mariadb, port, host_dir, h.labels, rows=3)
    logs = tmp_path / "logs"
    logs.mkdir()
    os.chown(logs, 999, 999)
    unused = root_dir(tmp_path / "unused")
    c = run_mariadb_with(tracked, mariadb, port, host_dir, h.labels, {logs: BINLOG, unused: "/srv/unused"},
                         (f"--log-bin={BINLOG}/mariadb-bin", "--server-id=1"))
    h.wait_event(lambda e: by(c.name, "health")(e) and e["state"] == "healthy", 90, "MariaDB healthy")
    time.sleep(5)
    assert not h.of("incident", c.name) and not h.of("action", c.name)
    assert (unused.stat().st_uid, unused.stat().st_gid) == (0, 0)
    status = h.status()
    assert [x["health"] for x in status["containers"] if x["name"] == c.name] == ["healthy"]


def moved_to_own_bind(hook, tracked, image, host_dir, port, tmp_path, pattern: str, name: str, setting: str):
    """An initialised MariaDB (3 rows in kept.t) whose data dir's files matching pattern (at least one) were moved
    to a bind of their own at /srv/NAME (root 0755, the files given to root), started with --SETTING=/srv/NAME:
    (the hook, the container, the bind's host directory, the time.time() it was started at)."""
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    initialised_mariadb(tracked, image, port, host_dir, h.labels, rows=3)
    bind = root_dir(tmp_path / name)
    moved = sorted(host_dir.glob(pattern))
    assert moved, f"no {pattern} in {host_dir}"
    for f in moved:
        shutil.move(str(f), str(bind / f.name))
        os.chown(bind / f.name, 0, 0)
    started = time.time()
    c = run_mariadb_with(tracked, image, port, host_dir, h.labels, {bind: f"/srv/{name}"},
                         (f"--{setting}=/srv/{name}",),
                         restart_policy={"Name": "on-failure", "MaximumRetryCount": 5})
    return h, c, bind, started


def mariadb_healed_on(h, c, started: float, bind: Path, label: str) -> None:
    """c recovered within 150 s (the time from started reported as label), bind and every entry in it 999:999's,
    and the 3 rows of kept.t there."""
    recovered = h.wait_event(by(c.name, "recovered"), 150, "MariaDB to be recovered")
    heal_report(label, recovered["ts"] - started)
    assert {(p.stat().st_uid, p.stat().st_gid) for p in [bind, *bind.iterdir()]} == {(999, 999)}
    wait_for(lambda: mariadb_ready(c), 60, what="MariaDB to answer")
    assert mariadb_run(c, "select count(*) from kept.t") == (0, "3")


def undo_on_its_own_bind(hook, tracked, image, host_dir, port, tmp_path):
    """An initialised MariaDB whose undo tablespaces were moved to a bind of their own and given to root (a
    restore run as root): it dies at start with 'Failed to open the undo tablespace', a line the catalogue
    does not hold (it says so for a missing file too)."""
    return moved_to_own_bind(hook, tracked, image, host_dir, port, tmp_path, "undo0*", "undo", "innodb-undo-directory")


def test_a_crash_with_no_known_line_names_the_undo_directory_s_mount(hook, tracked, mariadb, host_dir, port,
                                                                     tmp_path):
    h, c, undo, _ = undo_on_its_own_bind(hook, tracked, mariadb, host_dir, port, tmp_path)
    evidence = h.wait_event(by(c.name, "crash-evidence"), 90, "the crash to be judged")
    assert evidence["owner"]["mount"] == "/srv/undo"
    assert evidence["owner"]["needed_by"] == ["innodb-undo-directory"]
    assert evidence["owner"]["context"] == {"path": "/srv/undo", "directory": True}
    incident = h.wait_event(by(c.name, "incident"), 30, "an incident")
    assert incident["origin"] == "exit" and incident["detail"]["context"] == {"path": "/srv/undo", "directory": True}
    assert "mount /srv/undo (innodb-undo-directory)" in incident["detail"]["message"]


def test_a_crash_with_no_known_line_is_healed_on_the_undo_directory_s_mount(hook, tracked, mariadb, host_dir,
                                                                            port, tmp_path):
    """Needs the path-to-mount repair (hooks/targets.py, actions.py)."""
    h, c, undo, started = undo_on_its_own_bind(hook, tracked, mariadb, host_dir, port, tmp_path)
    mariadb_healed_on(h, c, started, undo, "MariaDB undo directory on a root-owned bind, no known line")


def redo_on_its_own_bind(hook, tracked, image, host_dir, port, tmp_path):
    """An initialised MariaDB whose redo log was moved to a bind of its own (innodb-log-group-home-dir) and
    given to root: InnoDB's 'Operating system error number 13 in a file operation.', which names no file."""
    return moved_to_own_bind(hook, tracked, image, host_dir, port, tmp_path, "ib_logfile0", "redo",
                             "innodb-log-group-home-dir")


def test_innodb_error_13_naming_no_file_is_about_the_redo_log_s_unwritable_directory(hook, tracked, mariadb,
                                                                                     host_dir, port, tmp_path):
    h, c, _, _ = redo_on_its_own_bind(hook, tracked, mariadb, host_dir, port, tmp_path)
    detected = h.wait_event(lambda e: by(c.name, "detected")(e) and e["pattern"] == "innodb-os-error-13", 60,
                            "InnoDB's error 13 to be recognised")
    assert "path" not in detected["context"]
    incident = h.wait_event(by(c.name, "incident"), 30, "an incident")
    assert incident["detail"]["context"]["path"] == "/srv/redo"
    # the line's report (located: executor.unwritable) or, when the container's death was handled before the
    # line was read from its log, the crash check: either names the redo log's directory and its setting
    if incident["origin"] == "log":
        assert incident["detail"]["context"]["path_from"].startswith("setting innodb-log-group-home-dir")
    else:
        assert incident["origin"] == "exit"
        assert incident["detail"]["owner"]["needed_by"] == ["innodb-log-group-home-dir"]


def test_the_redo_log_s_mount_is_healed(hook, tracked, mariadb, host_dir, port, tmp_path):
    """Needs the path-to-mount repair (hooks/targets.py, actions.py)."""
    h, c, redo, started = redo_on_its_own_bind(hook, tracked, mariadb, host_dir, port, tmp_path)
    mariadb_healed_on(h, c, started, redo, "MariaDB redo log on a root-owned bind")


def postgres_healed_on(h, c, started: float, port: int, bind: Path, label: str) -> None:
    """c recovered within 120 s (the time from started reported as label), bind 999's, and PostgreSQL answering
    on port."""
    recovered = h.wait_event(by(c.name, "recovered"), 120, "PostgreSQL to be recovered")
    heal_report(label, recovered["ts"] - started)
    assert bind.stat().st_uid == 999
    wait_for(lambda: pg_ready(c, port), 60, what="PostgreSQL to answer")


def pg_sockets_on_their_own_bind(hook, tracked, image, host_dir, port, tmp_path):
    """PostgreSQL whose unix socket directory (/var/run/postgresql) is a bind Docker created (root 0755)."""
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    os.chown(host_dir, 999, 999)
    sockets = root_dir(tmp_path / "sockets")
    started = time.time()
    c = run_postgres_with(tracked, image, port, host_dir, h.labels, {sockets: SOCKETS},
                          restart_policy={"Name": "on-failure", "MaximumRetryCount": 5})
    return h, c, sockets, started


def test_postgres_the_detection_names_the_socket_s_lock_file(hook, tracked, postgres, host_dir, port, tmp_path):
    h, c, _, _ = pg_sockets_on_their_own_bind(hook, tracked, postgres, host_dir, port, tmp_path)
    detected = h.wait_event(lambda e: by(c.name, "detected")(e) and e["pattern"] == "pg-file", 90,
                            "the socket's lock file to be recognised")
    assert detected["context"]["path"] == f"{SOCKETS}/.s.PGSQL.{port}.lock"


def test_postgres_socket_directory_is_healed(hook, tracked, postgres, host_dir, port, tmp_path):
    """Needs the path-to-mount repair (hooks/targets.py, actions.py)."""
    h, c, sockets, started = pg_sockets_on_their_own_bind(hook, tracked, postgres, host_dir, port, tmp_path)
    postgres_healed_on(h, c, started, port, sockets, "PostgreSQL socket directory on a root-owned bind")
    assert psql(c, port, "select 1") == "1"


def pg_wal_chowned(hook, tracked, image, host_dir, port, tmp_path):
    """PostgreSQL initialised with pg_wal on a bind of its own (initdb --waldir), that bind's tree given to
    root between runs: the startup process cannot re-create pg_wal/archive_status, a path relative to the
    data dir whose pg_wal is a link to the bind."""
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    os.chown(host_dir, 999, 999)
    wal = tmp_path / "wal"
    wal.mkdir()
    os.chown(wal, 999, 999)
    env = {"POSTGRES_INITDB_ARGS": f"--waldir={WALDIR}"}
    first = run_postgres_with(tracked, image, port, host_dir, {**h.labels, "ownvol.watch": "false"}, {wal: WALDIR},
                              env)
    wait_for(lambda: pg_ready(first, port), 60, what="PostgreSQL to accept connections")
    psql(first, port, "create table kept(i int); insert into kept select generate_series(1, 500)")
    first.stop(timeout=30)
    first.remove()
    assert os.readlink(host_dir / "pg_wal") == WALDIR
    for root, dirs, files in os.walk(wal):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.lchown(name, 0, 0)
    started = time.time()
    c = run_postgres_with(tracked, image, port, host_dir, h.labels, {wal: WALDIR}, env,
                          restart_policy={"Name": "on-failure", "MaximumRetryCount": 5})
    return h, c, wal, started


def test_postgres_pg_wal_on_its_own_bind_the_incident_names_the_wal_directory(hook, tracked, postgres, host_dir,
                                                                              port, tmp_path):
    h, c, _, _ = pg_wal_chowned(hook, tracked, postgres, host_dir, port, tmp_path)
    detected = h.wait_event(lambda e: by(c.name, "detected")(e) and e["pattern"] == "pg-missing-dir", 90,
                            "the missing WAL directory to be recognised")
    assert detected["context"]["path"] == "pg_wal/archive_status"
    incident = h.wait_event(by(c.name, "incident"), 30, "an incident")
    assert incident["detail"]["context"]["path"] == f"{WALDIR}/archive_status"
    assert incident["detail"]["context"]["named"] == "pg_wal/archive_status"


def test_postgres_pg_wal_on_its_own_bind_is_healed(hook, tracked, postgres, host_dir, port, tmp_path):
    """Needs the path-to-mount repair (hooks/targets.py, actions.py)."""
    h, c, wal, started = pg_wal_chowned(hook, tracked, postgres, host_dir, port, tmp_path)
    postgres_healed_on(h, c, started, port, wal, "PostgreSQL pg_wal on a bind given to root")
    assert psql(c, port, "select count(*) from kept") == "500"
