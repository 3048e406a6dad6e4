"""The paths a server writes beside its data dir (issue 24 kind A): the path each database message names
(context `path`) on the captured golden lines, the writes list each service's settings reader fills
(Settings.writes, links), a message's relative path made absolute (Service.locate), and every writable mount
of a container judged against the server's uid (health.mount_verdicts)."""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from ownvol.hook import patterns
from ownvol.hook.health import mount_verdicts, writable_mounts
from ownvol.hook.model import Target, resolve, writes_of
from ownvol.hook.services import by_family

GOLDEN = Path(__file__).parent.parent / "golden"


def detections(name: str) -> list[tuple[int, str, dict]]:
    family = name.split("-")[0]
    found = patterns.read_log((GOLDEN / name).read_text().splitlines(), by_family(family).catalogue)
    return [(n, d.pattern.id, d.context) for n, d in found]


@pytest.mark.parametrize("version", ["mariadb-10.11", "mariadb-11.8"])
def test_mariadb_captured_lines_name_the_path_beside_the_data_dir(version):
    binlog = detections(f"{version}/startup-binlog-dir-root-owned.log")
    assert [(p, c["path"], c["errno"]) for _, p, c in binlog] == [
        ("mariadb-file-open", "/var/log/mysql/mariadb-bin.index", "Permission denied")]
    assert [(p, c["path"]) for _, p, c in detections(f"{version}/startup-error-log-root-owned.log")] == [
        ("mariadb-log-file", "/var/log/mysql/error.log")]
    tmp = detections(f"{version}/startup-tmpdir-root-owned.log")
    assert {p for _, p, _ in tmp} == {"mariadb-file"}
    assert all(c["path"].startswith("/var/tmp/mariadb/") for _, _, c in tmp)
    socket = detections(f"{version}/startup-socket-dir-root-owned.log")
    assert [(p, c.get("path"), c["errno"]) for _, p, c in socket] == [
        ("mariadb-socket-bind", None, "Permission denied")]
    assert [(p, c["path"], c["errno"]) for _, p, c in detections(f"{version}/runtime-relay-log-root-owned.log")] == [
        ("mariadb-relay-log", "/var/log/mysql/relay-bin", "Permission denied")]
    redo = detections(f"{version}/startup-redo-dir-root-owned.log")
    assert [(p, "path" in c) for _, p, c in redo] == [("innodb-os-error-13", False)]


def test_mariadb_undo_tablespaces_it_cannot_open_are_no_known_line():
    """'Failed to open the undo tablespace undo002' is said of a missing file too, and names no errno: the
    crash check judges the mounts instead (executor.crash_evidence)."""
    assert detections("mariadb-11.8/startup-undo-dir-root-owned.log") == []


def test_mariadb_existing_patterns_carry_the_path_as_well_as_the_file_or_dir():
    for name, key in [("mariadb-11.8/startup-root-owned.log", "file"), ("mariadb-11.8/startup-root-locked.log", "dir"),
                      ("mariadb-11.8/startup-restored-as-root.log", "file")]:
        for _, _, context in detections(name):
            if key in context:
                assert context["path"] == context[key], (name, context)


@pytest.mark.parametrize("version", ["postgres-15", "postgres-17"])
def test_postgres_captured_lines_name_the_path_beside_the_data_dir(version):
    assert [(p, c["path"]) for _, p, c in detections(f"{version}/startup-waldir-root-owned.log")] == [
        ("pg-initdb", "/var/lib/postgresql/wal")]
    assert [(p, c["path"]) for _, p, c in detections(f"{version}/startup-wal-chowned.log")] == [
        ("pg-missing-dir", "pg_wal/archive_status")]
    socket = detections(f"{version}/startup-socket-dir-root-owned.log")
    assert [p for _, p, _ in socket] == ["pg-file"]
    assert socket[0][2]["path"].startswith("/var/run/postgresql/.s.PGSQL.")
    log = detections(f"{version}/startup-log-dir-root-owned.log")
    assert [p for _, p, _ in log] == ["pg-log-file"] and log[0][2]["path"].startswith("/var/log/postgresql/")
    tablespace = detections(f"{version}/runtime-tablespace-root-owned.log")
    assert [p for _, p, _ in tablespace] == ["pg-tablespace-dir", "pg-file", "pg-file"]
    assert tablespace[0][2]["path"] == "/srv/tblspc-new"
    assert all(c["path"].startswith("pg_tblspc/16385/") for _, _, c in tablespace[1:])


def test_every_new_capture_is_classified_permission_denied():
    expected = json.loads((GOLDEN / "expected.json").read_text())
    cases = {"mariadb": ("startup-binlog-dir-root-owned", "startup-error-log-root-owned", "startup-tmpdir-root-owned",
                         "startup-socket-dir-root-owned", "runtime-relay-log-root-owned"),
             "postgres": ("startup-waldir-root-owned", "startup-wal-chowned", "startup-socket-dir-root-owned",
                          "startup-log-dir-root-owned", "runtime-tablespace-root-owned")}
    new = [n for n in expected if n.split("/")[1].removesuffix(".log") in cases.get(n.split("-")[0], ())]
    assert len(new) == 20
    for name in new:
        assert expected[name]["detections"], name
        assert {d[2] for d in expected[name]["detections"]} == {"permission-denied"}, name


def test_writes_of_takes_directories_and_the_directory_of_files():
    got = writes_of("/var/lib/mysql", {"log-bin": "/var/log/mysql/mariadb-bin", "tmpdir": "/var/tmp/m",
                                      "log-error": "error.log", "relay-log": "relay/relay-bin", "socket": "",
                                      "innodb-undo-directory": "./"},
                    ("tmpdir", "innodb-undo-directory"))
    assert got == {"log-bin": "/var/log/mysql", "tmpdir": "/var/tmp/m", "relay-log": "/var/lib/mysql/relay"}
    assert writes_of("relative", {"log-bin": "x/y"}) == {}


def test_resolve_follows_the_data_dir_s_links():
    links = {"pg_wal": "/wal", "pg_tblspc/16385": "/srv/ts"}
    assert resolve("pg_wal/archive_status", "/pg", links) == "/wal/archive_status"
    assert resolve("pg_tblspc/16385/PG_17_1/5/16386", "/pg", links) == "/srv/ts/PG_17_1/5/16386"
    assert resolve("pg_tblspc/163850/x", "/pg", links) == "/pg/pg_tblspc/163850/x"
    assert resolve("base/5/1", "/pg", links) == "/pg/base/5/1"
    assert resolve("/abs/x", "/pg", links) == "/abs/x"
    assert resolve("./ibdata1", "/var/lib/mysql/", {}) == "/var/lib/mysql/ibdata1"


class View:
    def __init__(self, attrs: dict, files: dict[str, str] | None = None, container=None) -> None:
        self.attrs = attrs
        self.files = files or {}
        if container is not None:
            self.container = container

    def read_file(self, path: str) -> str | None:
        return self.files.get(path)

    def list_dir(self, path: str) -> list[str] | None:
        return None


def attrs(path: str, args=(), env=()) -> dict:
    return {"Path": path, "Args": list(args), "Config": {"Image": "x/y", "Env": list(env), "Labels": {}},
            "HostConfig": {"NetworkMode": "host"}, "Mounts": []}


def test_mariadb_settings_list_the_paths_it_writes_from_its_command_line_and_option_files():
    db = by_family("mariadb")
    files = {"/etc/mysql/my.cnf": "[mysqld]\nlog_bin = /var/log/mysql/mariadb-bin\ntmpdir=/t1:/t2\n"
                                  "innodb_log_group_home_dir = /redo\n[client]\nsocket=/nope/c.sock\n"}
    settings = db.configured(View(attrs("mariadbd", ["--log-error=/logs/error.log", "--relay-log", "relay",
                                                     "--innodb-undo-directory", "/undo", "--log-bin"]), files))
    assert settings.writes == {"log-bin": "/var/log/mysql", "tmpdir": "/t1", "tmpdir.2": "/t2",
                               "innodb-log-group-home-dir": "/redo", "log-error": "/logs",
                               "innodb-undo-directory": "/undo", "socket": "/run/mysqld"}
    assert db.configured(View(attrs("mariadbd"))).writes == {"socket": "/run/mysqld"}


def test_mariadb_path_flags_and_the_live_answer():
    by_family("mariadb")  # the built-in families registered in their order (services.BUILTIN) before one is imported
    from ownvol.hook.services.mariadb import LIVE_SQL, _live_row, path_flags

    assert path_flags(["--log_bin=/b/x", "--log-bin", "--server-id=1", "--tmpdir", "/t", "--socket=/s/m.sock"]) == {
        "log-bin": "/b/x", "tmpdir": "/t", "socket": "/s/m.sock"}
    assert "@@log_bin_basename" in LIVE_SQL and LIVE_SQL.startswith("SELECT 'datadir', @@datadir")
    row = "datadir\t/var/lib/mysql/\tlog_bin_basename\t/b/x\trelay_log_basename\tNULL\n"
    assert _live_row("Warning: x\n" + row) == {"datadir": "/var/lib/mysql/", "log_bin_basename": "/b/x",
                                               "relay_log_basename": "NULL"}


class Archive:
    """A container whose engine answers HEAD and GET of its archive API as dockerd does: a path's stat (a link's
    linkTarget) in a header, and a directory's links as links."""

    id = "c" * 64

    def __init__(self, stats: dict[str, str], links: dict[str, dict[str, str]]) -> None:
        self.stats, self.links = stats, links  # path -> linkTarget ("" for a directory); dir -> its links
        self.client = SimpleNamespace(api=self)

    def _url(self, pathfmt: str, *args) -> str:
        return pathfmt.format(*args)

    def head(self, url: str, params: dict, timeout: float):
        path = params["path"]
        if path not in self.stats:
            return SimpleNamespace(ok=False, headers={})
        stat = {"name": path.rsplit("/", 1)[-1], "linkTarget": self.stats[path]}
        return SimpleNamespace(ok=True, headers={"X-Docker-Container-Path-Stat":
                                                 base64.b64encode(json.dumps(stat).encode()).decode()})

    def get_archive(self, path: str):
        import docker
        if path not in self.links:
            raise docker.errors.NotFound("no such path")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, target in self.links[path].items():
                info = tarfile.TarInfo(name)
                if target:
                    info.type, info.linkname = tarfile.SYMTYPE, target
                else:
                    info.type = tarfile.DIRTYPE
                tar.addfile(info)
        return iter([buf.getvalue()]), {}


def test_postgres_settings_list_sockets_log_dir_and_the_data_dir_s_links():
    pg = by_family("postgres")
    container = Archive({"/pg/pg_wal": "/wal", "/pg/pg_tblspc": ""},
                        {"/pg/pg_tblspc": {"pg_tblspc": "", "pg_tblspc/16385": "/srv/ts"}})
    conf = {"/pg/postgresql.conf": "unix_socket_directories = '/run/a, @abstract, /run/b'\nlog_directory = 'log'\n"}
    settings = pg.configured(View(attrs("postgres", ["-D", "/pg"]), conf, container))
    assert settings.links == {"pg_wal": "/wal", "pg_tblspc/16385": "/srv/ts"}
    assert settings.writes == {"unix_socket_directories": "/run/a", "unix_socket_directories.2": "/run/b",
                               "log_directory": "/pg/log", "pg_wal": "/wal", "pg_tblspc/16385": "/srv/ts"}
    plain = pg.configured(View(attrs("postgres", ["-k", "/sock", "-c", "log_directory=/logs"], ["PGDATA=/d"])))
    assert (plain.writes, plain.links) == ({"unix_socket_directories": "/sock", "log_directory": "/logs"}, {})
    assert pg.configured(View(attrs("postgres"))).writes == {"unix_socket_directories": "/var/run/postgresql"}
    in_place = Archive({"/pg/pg_wal": ""}, {})  # pg_wal a directory: never read (it streams every segment)
    assert pg.configured(View(attrs("postgres", ["-D", "/pg"]), {}, in_place)).links == {}


def test_redis_settings_list_its_logfile_socket_and_cluster_config():
    redis = by_family("redis")
    conf = {"/r.conf": "dir /data\nlogfile /var/log/redis/redis.log\nunixsocket /run/redis/redis.sock\n"
                       "cluster-enabled yes\ncluster-config-file nodes-6379.conf\n"}
    settings = redis.configured(View(attrs("redis-server", ["/r.conf"]), conf))
    assert settings.writes == {"logfile": "/var/log/redis", "unixsocket": "/run/redis"}
    assert redis.configured(View(attrs("redis-server", ["--cluster-enabled", "yes", "--dir", "/data",
                                                        "--cluster-config-file", "/conf/nodes.conf"]))).writes == {
        "cluster-config-file": "/conf"}
    assert redis.configured(View(attrs("redis-server"))).writes == {}


def target(**kw) -> Target:
    base = dict(id="c" * 64, name="db", image="x", status="exited", labels={}, redis_url=None, password=None,
                data_dir="/var/lib/mysql", mount=None, uid=999, gid=999, owner_source="user", aof_fallback=False)
    return Target(**{**base, **kw})


def test_locate_makes_a_relative_path_absolute_and_fills_a_setting_s_directory():
    pg, db = by_family("postgres"), by_family("mariadb")
    t = target(data_dir="/pg", links={"pg_wal": "/wal"})
    assert pg.locate("pg-missing-dir", {"path": "pg_wal/archive_status"}, t) == {
        "path": "/wal/archive_status", "named": "pg_wal/archive_status"}
    assert pg.locate("pg-file", {"path": "/run/x.lock"}, t) == {"path": "/run/x.lock"}
    socket = db.locate("mariadb-socket-bind", {"errno": "Permission denied"}, target(writes={"socket": "/run/m"}))
    assert socket == {"errno": "Permission denied", "path": "/run/m", "directory": True,
                      "path_from": "setting socket"}
    assert db.locate("innodb-os-error-13", {}, target(writes={"socket": "/run/m"})) == {}
    redo = target(writes={"innodb-log-group-home-dir": "/redo", "tmpdir": "/tmp"})
    assert db.locate("innodb-os-error-13", {"errnum": "13"}, redo, {"innodb-log-group-home-dir": "/redo"}) == {
        "errnum": "13", "path": "/redo", "directory": True,
        "path_from": "setting innodb-log-group-home-dir, a directory the server's uid cannot write"}
    assert db.locate("innodb-os-error-13", {}, redo, {"data dir": "/var/lib/mysql"}) == {}


def mounts(tmp_path: Path, spec: dict[str, tuple[int, int, bool]]) -> list[dict]:
    """Mounts entries of binds of tmp dirs: destination -> (uid, gid, rw)."""
    found = []
    for dest, (uid, gid, rw) in spec.items():
        source = tmp_path / dest.strip("/").replace("/", "-")
        source.mkdir()
        os.chown(source, uid, gid)
        found.append({"Type": "bind", "Source": str(source), "Destination": dest, "RW": rw})
    return found


def test_every_writable_mount_is_judged_and_only_those_a_setting_names_are_candidates(tmp_path):
    m = mounts(tmp_path, {"/var/lib/mysql": (999, 999, True), "/var/log/mysql": (0, 0, True),
                          "/etc/mysql/conf.d": (0, 0, True), "/ro": (0, 0, False)})
    m.append({"Type": "tmpfs", "Source": "", "Destination": "/run/mysqld", "RW": True})
    t = target(writes={"log-bin": "/var/log/mysql", "socket": "/run/mysqld", "tmpdir": "/var/log/mysql/tmp"})
    assert [x["Destination"] for x in writable_mounts(m)] == ["/var/lib/mysql", "/var/log/mysql",
                                                              "/etc/mysql/conf.d"]
    verdicts = {(v["destination"], v["path"]): v for v in mount_verdicts(t, m, True)}
    assert set(verdicts) == {("/var/lib/mysql", "/var/lib/mysql"), ("/var/log/mysql", "/var/log/mysql"),
                             ("/etc/mysql/conf.d", "/etc/mysql/conf.d")}
    data, binlog, conf = verdicts.values()
    assert (data["ok"], data["needed_by"]) == (True, ["data dir"])
    assert (binlog["ok"], binlog["candidate"], binlog["needed_by"]) == (False, True, ["log-bin", "tmpdir"])
    assert binlog["problem"] == "owner 0:0 mode 0755: 999:999 cannot write there"
    assert (conf["ok"], conf["candidate"], conf["needed_by"]) == (False, False, [])
    assert mount_verdicts(target(uid=0, gid=0), m, True) == [] and mount_verdicts(t, m, False) == []


def test_a_setting_s_directory_not_made_yet_is_judged_at_its_nearest_existing_one(tmp_path):
    m = mounts(tmp_path, {"/srv": (999, 999, True)})
    (tmp_path / "srv" / "logs").mkdir()
    os.chown(tmp_path / "srv" / "logs", 0, 0)
    t = target(data_dir="/data", writes={"log_directory": "/srv/logs/pg/new"})
    [verdict] = mount_verdicts(t, m, True)
    assert (verdict["path"], verdict["wanted"], verdict["ok"]) == ("/srv/logs", "/srv/logs/pg/new", False)
    assert verdict["host_path"] == str(tmp_path / "srv" / "logs")


def test_the_crash_context_names_what_the_server_must_create_or_the_directory_it_writes_in():
    from ownvol.hook.executor import _crash_context

    assert _crash_context("/srv/logs", "/srv/logs/pg/new") == {"path": "/srv/logs/pg"}
    assert _crash_context("/srv/undo", "/srv/undo") == {"path": "/srv/undo", "directory": True}


def test_explain_classifies_every_captured_failing_log_with_its_family_s_catalogue():
    from click.testing import CliRunner

    from ownvol.hook.commands import explain

    expected = json.loads((GOLDEN / "expected.json").read_text())
    for name, entry in expected.items():
        if entry["origin"] != "captured" or not entry["detections"]:
            continue
        out = CliRunner().invoke(explain, ["--json", str(GOLDEN / name)])
        found = [json.loads(line) for line in out.output.splitlines()]
        assert [[f["line_number"], f["pattern"], f["error_type"]] for f in found] == entry["detections"], name
        assert {f["service"] for f in found} <= {entry.get("service", "redis")}, name


class _Stopped:
    def __init__(self) -> None:
        self.attrs = {"State": {"ExitCode": 1, "StartedAt": "2026-11-30T01:00:00.000000000Z",
                                "FinishedAt": "2026-11-30T01:00:01.000000000Z", "Error": ""}, "RestartCount": 1}

    def reload(self) -> None:
        pass


class _Recovery:
    def __init__(self) -> None:
        self.reports: list[tuple] = []

    def busy(self, cid):
        return False

    def report(self, *args, **kw):
        self.reports.append(args)


class _Executor:
    def __init__(self, evidence: dict | None, t: Target | None = None, unwritable: dict | None = None) -> None:
        self.evidence, self.t, self.unwritable_dirs = evidence, t, unwritable or {}
        self.asked: list[tuple[bool, bool]] = []  # (kept, ask_server) of each target()

    def crash_evidence(self, cid):
        return self.evidence

    def target(self, cid, kept=False, ask_server=True):
        self.asked.append((kept, ask_server))
        return None, self.t

    def unwritable(self, cid):
        return self.unwritable_dirs


def watcher_with(executor):
    from ownvol.hook.telemetry import Telemetry
    from ownvol.hook.watcher import Watcher

    out = io.StringIO()
    recovery = _Recovery()
    return Watcher(lambda: None, {}, recovery, Telemetry(out=out), executor), recovery, out


def test_a_crash_on_a_setting_s_mount_is_reported_with_its_directory():
    from ownvol.hook.watcher import Watched

    evidence = {"path": "/host/undo", "ok": False, "problem": "owner 0:0 mode 0755: 999:999 cannot write there",
                "mount": "/srv/undo", "context": {"path": "/srv/undo"}, "needed_by": ["innodb-undo-directory"]}
    watcher, recovery, _ = watcher_with(_Executor(evidence))
    watcher.crashed(_Stopped(), Watched("c1", "db", service="mariadb"), "1")
    [report] = recovery.reports
    assert report[2:4] == ("permission-denied", "exit") and report[4]["context"] == {"path": "/srv/undo"}
    assert "mount /srv/undo (innodb-undo-directory) /host/undo: owner 0:0" in report[4]["message"]


def test_a_crash_on_a_mount_no_setting_names_is_reported_never_repaired():
    from ownvol.hook.watcher import Watched

    unneeded = [{"destination": "/etc/mysql/conf.d", "ok": False, "candidate": False, "needed_by": []}]
    watcher, recovery, out = watcher_with(_Executor({"ok": True, "unneeded": unneeded}))
    watcher.crashed(_Stopped(), Watched("c1", "db", service="mariadb"), "1")
    assert recovery.reports == []
    [event] = [json.loads(line) for line in out.getvalue().splitlines() if '"crash-evidence"' in line]
    assert event["unneeded"] == unneeded and "never repaired" in event["why"]


def test_the_watcher_locates_a_relative_path_and_a_line_that_names_none():
    from ownvol.hook.watcher import Watched

    t = target(data_dir="/pg", links={"pg_wal": "/wal"}, writes={"innodb-log-group-home-dir": "/redo"})
    executor = _Executor(None, t, {"innodb-log-group-home-dir": "/redo"})
    watcher, _, _ = watcher_with(executor)
    pg = watcher._located(Watched("c1", "pg", service="postgres"),
                          {"pattern": "pg-missing-dir", "context": {"path": "pg_wal/archive_status"}})
    assert pg["context"] == {"path": "/wal/archive_status", "named": "pg_wal/archive_status"}
    db = watcher._located(Watched("c1", "db", service="mariadb"),
                          {"pattern": "innodb-os-error-13", "context": {}, "fatal": True})
    assert db["context"]["path"] == "/redo"
    # the probes' kept inspect each time; the server asked its settings unless its line says it exits
    assert executor.asked == [(True, True), (True, False)]
    absolute = {"pattern": "mariadb-file-open", "context": {"path": "/var/log/mysql/mariadb-bin.index"}}
    assert watcher._located(Watched("c1", "db", service="mariadb"), absolute) is absolute
