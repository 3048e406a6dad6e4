"""A path a server names beside its data dir, mapped through the container's own mount table (hooks/paths.py;
issue 24 kind A). The engine tests: tests/engine/test_hook_paths.py."""

from __future__ import annotations

import pytest

from ownvol.hook import paths
from ownvol.hook.services import by_family
from tests.unit.test_hook_facts import _View, attrs

DATA = {"Type": "bind", "Source": "/srv/c/data", "Destination": "/data", "RW": True}
NODES = {"Type": "bind", "Source": "/srv/c/node-conf", "Destination": "/node-conf", "RW": True}
CONF_FILE = {"Type": "bind", "Source": "/srv/c/sentinel.conf", "Destination": "/usr/local/etc/redis/sentinel.conf",
             "RW": True}
VOLUME = {"Type": "volume", "Name": "logs", "Source": "/var/lib/docker/volumes/logs/_data", "Destination": "/var/log/r",
          "Driver": "local", "RW": True}


def test_the_longest_mount_destination_that_holds_the_path_wins():
    nested = {"Type": "bind", "Source": "/srv/c/deep", "Destination": "/data/deep", "RW": True}
    assert paths.holding_mount([DATA, nested], "/data/deep/x/nodes.conf") is nested
    assert paths.holding_mount([DATA, nested], "/data/deeper/nodes.conf") is DATA
    assert paths.holding_mount([DATA, nested], "/datax/nodes.conf") is None


def test_a_file_the_server_creates_repairs_the_directory_that_holds_it_on_its_own_mount():
    plan = paths.plan([DATA, NODES], "/node-conf/nodes.conf", "create", "/data", 999, 999)
    assert plan.repairs and plan.target == "/node-conf" and plan.where == "/node-conf"
    assert (plan.mount.source, plan.mount.subpath, plan.mount.host_path) == ("/srv/c/node-conf", "", "/srv/c/node-conf")
    deeper = paths.plan([DATA, NODES], "/node-conf/a/b/nodes.conf", "create", "/data", 999, 999)
    assert deeper.mount.subpath == "a/b" and deeper.mount.host_path == "/srv/c/node-conf/a/b"


def test_a_directory_the_server_writes_in_is_repaired_itself_not_its_parent():
    detail = {"context": {"path": "/node-conf/wal", "directory": True}, "needs": "create"}
    assert paths.path_of_detection(detail, {}) == ("/node-conf/wal", "write-in", "")
    plan = paths.plan([DATA, NODES], "/node-conf/wal", "write-in", "/data", 999, 999)
    assert plan.repairs and plan.target == "/node-conf/wal" and plan.mount.subpath == "wal"
    unmounted = paths.plan([DATA], "/var/log/mysql", "write-in", "/data", 999, 999)
    assert not unmounted.repairs and "create files in" in unmounted.diagnosis


def test_a_relative_path_is_resolved_against_the_server_cwd():
    plan = paths.plan([DATA, NODES], "nodes-6379.conf", "create", "/data", 999, 999)
    assert plan.path == "/data/nodes-6379.conf" and plan.mount.source == "/srv/c/data" and plan.mount.subpath == ""
    up = paths.plan([DATA, NODES], "../node-conf/nodes.conf", "create", "/data", 999, 999)
    assert up.path == "/node-conf/nodes.conf" and up.mount.source == "/srv/c/node-conf"
    assert paths.resolve("x/../../etc/passwd", "/data") == "/etc/passwd"  # normalised, never below /


def test_a_path_on_no_mount_is_diagnosed_never_repaired():
    plan = paths.plan([DATA], "/var/run/redis/redis.sock", "create", "/data", 999, 999, "unixsocket")
    assert not plan.repairs and plan.mount is None
    assert "the image's own directory" in plan.diagnosis and "/var/run/redis" in plan.diagnosis
    assert "999:999" in plan.diagnosis and plan.as_dict()["plan"] == "diagnose"


def test_a_single_file_bind_the_server_writes_beside_is_diagnosed_mount_the_directory():
    plan = paths.plan([DATA, CONF_FILE], "/usr/local/etc/redis/sentinel.conf", "create", "/data", 999, 999,
                      "configfile", source_is_dir=lambda m: False)
    assert not plan.repairs
    assert plan.diagnosis.startswith("mount the directory, not the file")
    assert "Sentinel writes a temp file beside its config" in plan.diagnosis
    assert "/usr/local/etc/redis" in plan.diagnosis


def test_a_single_file_bind_the_server_only_reads_is_repaired_as_that_file_alone():
    acl = {"Type": "bind", "Source": "/srv/c/users.acl", "Destination": "/etc/redis/users.acl", "RW": True}
    plan = paths.plan([DATA, acl], "/etc/redis/users.acl", "read", "/data", 999, 999, source_is_dir=lambda m: False)
    assert plan.repairs and plan.mount.file and plan.mount.host_path == "/srv/c/users.acl"


def test_a_directory_mounted_at_the_path_itself_is_the_target():
    wal = {"Type": "volume", "Name": "wal", "Source": "/v/wal/_data", "Destination": "/pg/data/pg_wal", "RW": True}
    pgdata = {"Type": "volume", "Name": "pg", "Source": "/v/pg/_data", "Destination": "/pg/data", "RW": True}
    plan = paths.plan([pgdata, wal], "pg_wal", "create", "/pg/data", 999, 999)
    assert plan.repairs and plan.target == "/pg/data/pg_wal" and plan.mount.source == "/v/wal/_data"


def test_a_read_only_mount_and_a_tmpfs_are_diagnosed():
    ro = {**NODES, "RW": False}
    assert "read-only" in paths.plan([ro], "/node-conf/nodes.conf", "create", "/", 999, 999).diagnosis
    tmpfs = {"Type": "tmpfs", "Source": "", "Destination": "/node-conf"}
    assert "a tmpfs mount" in paths.plan([tmpfs], "/node-conf/nodes.conf", "create", "/", 999, 999).diagnosis


@pytest.mark.parametrize("source", ["/etc/redis", "/usr/local/etc", "/var/log", "/"])
def test_a_bind_of_a_host_system_path_is_refused(source):
    bind = {"Type": "bind", "Source": source, "Destination": "/conf", "RW": True}
    plan = paths.plan([bind], "/conf/sentinel.conf", "create", "/", 999, 999)
    assert not plan.repairs and "never gives the host's own directories" in plan.diagnosis


def test_the_path_of_a_detection_from_its_context_or_the_setting_it_names():
    settings = {"configfile": "/etc/ov/sentinel.conf", "unixsocket": "/sock/r.sock"}
    assert paths.path_of_detection({"context": {"path": "/n/nodes.conf"}, "needs": "create"}, settings) == (
        "/n/nodes.conf", "create", "")
    assert paths.path_of_detection({"context": {}, "path_of": "configfile", "needs": "create"}, settings) == (
        "/etc/ov/sentinel.conf", "create", "configfile")
    assert paths.path_of_detection({"context": {"path": "/x/binlog.index"}}, {}) == ("/x/binlog.index", "create", "")
    assert paths.path_of_detection({"context": {"path": "/etc/ov/sentinel.conf"}}, settings) == (
        "/etc/ov/sentinel.conf", "create", "configfile")  # the setting that holds it, for the diagnosis's words
    assert paths.path_of_detection({"context": {"dir": "/data"}}, settings) is None
    assert paths.path_of_detection({"context": {}, "path_of": "logfile"}, settings) is None


def test_redis_settings_carry_the_config_socket_log_acl_and_cluster_paths_and_sentinel_role():
    redis = by_family("redis")
    a = attrs(args=["redis-server", "sentinel.conf", "--sentinel", "--unixsocket", "/sock/r.sock"], workdir="/etc/ov")
    settings = redis.configured(_View(a, {"/etc/ov/sentinel.conf": "port 26379\n"}))
    assert settings.role == "sentinel" and settings.persists is False
    assert settings.paths["configfile"] == "/etc/ov/sentinel.conf" and settings.paths["unixsocket"] == "/sock/r.sock"
    cluster = redis.configured(_View(attrs(args=["redis-server", "--cluster-enabled", "yes", "--logfile", "/l/r.log",
                                                "--aclfile", "/a/u.acl"]), {}))
    assert cluster.role == "" and cluster.paths == {"cluster-config-file": "nodes.conf", "logfile": "/l/r.log",
                                                     "aclfile": "/a/u.acl"}
    sentinel = redis.configured(_View(attrs(args=["redis-sentinel", "/etc/s.conf"]), {"/etc/s.conf": "port 26379\n"}))
    assert sentinel.role == "sentinel" and sentinel.paths["configfile"] == "/etc/s.conf"


def _target(mount, data_dir="/data", mounts=(DATA, NODES), **kw):
    from ownvol.hook.model import Target
    return Target(id="c1", name="c", image="redis:7", status="exited", labels={}, redis_url=None, password=None,
                  data_dir=data_dir, mount=mount, uid=999, gid=999, owner_source="user", aof_fallback=False,
                  data_modes=(0o755,), mounts=tuple(mounts), **kw)


def test_the_executor_aims_the_repair_at_the_mount_that_holds_the_path():
    from ownvol.hook.executor import DockerExecutor
    from ownvol.hook.model import DataMount
    data = DataMount("bind", "/srv/c/data", "/data", "")
    executor = DockerExecutor(lambda: None, repair_via="helper")
    aimed = executor.for_path(_target(data), {"context": {"path": "/node-conf/nodes.conf"}, "needs": "create"})
    assert aimed.mount.source == "/srv/c/node-conf" and aimed.data_dir == "/node-conf"
    assert aimed.data_modes == () and aimed.path_plan["plan"] == "repair"
    # a path in the data dir: repaired as the data dir always is (its whole mount, its modes)
    inside = executor.for_path(_target(data), {"context": {"path": "nodes-6379.conf"}, "needs": "create"})
    assert inside.mount == data and inside.data_modes == (0o755,) and inside.data_dir == "/data"
    deeper = executor.for_path(_target(data), {"context": {"path": "/data/sub/x.ibd"}})
    assert deeper.mount == data and deeper.data_dir == "/data"
    # no path named: the target as it is
    assert executor.for_path(_target(data), {"context": {"dir": "appendonlydir"}}) == _target(data)
    # on no mount: the plan is a diagnosis and the mount is left as it is
    socket = executor.for_path(_target(data, paths={"unixsocket": "/run/r.sock"}),
                               {"context": {}, "path_of": "unixsocket", "needs": "create"})
    assert socket.mount == data and socket.path_plan["plan"] == "diagnose"


def test_an_incident_the_executor_diagnoses_ends_with_the_diagnosis_and_no_action(tmp_path):
    from tests.support.fakes import FakeExecutor, engine, events

    class Diagnosing(FakeExecutor):
        def diagnosis(self, cid, detail):
            return {"path": "/run/r.sock", "target": "/run", "where": "", "plan": "diagnose",
                    "diagnosis": "mount a directory at /run"} if detail.get("path_of") else None

    ex = Diagnosing(heals="repair-ownership")
    rec, out = engine(tmp_path, ex)
    inc = rec.report("c1", "r", "persistence-failed", "log", {"path_of": "unixsocket", "context": {}},
                     background=False)
    assert ex.ran == [] and rec.journal.incident(inc.id).status == "gave-up"
    seen = events(out)
    diagnosis = next(e for e in seen if e["event"] == "diagnosis")
    assert diagnosis["message"] == "mount a directory at /run" and diagnosis["path"] == "/run/r.sock"
    assert "diagnosis, nothing done" in seen[-1]["why"] and seen[-1]["actions"] == []
    # a detection with a plan to run is recovered as before
    other = rec.report("c2", "r", "persistence-failed", "log", {}, background=False)
    assert ex.ran == ["repair-ownership"] and rec.journal.incident(other.id).status == "resolved"


def test_a_single_file_bind_is_repaired_as_that_file_alone(tmp_path):
    import os

    from ownvol.hook import actions
    from ownvol.hook.model import DataMount
    acl = tmp_path / "users.acl"
    acl.write_text("user default on nopass ~* +@all\n")
    os.chown(acl, 0, 0)
    acl.chmod(0o600)
    sibling = tmp_path / "other"
    sibling.write_text("x")
    os.chown(sibling, 0, 0)
    mount = DataMount("bind", str(acl), "/etc/redis/users.acl", "", file=True)
    target = _target(mount, path_plan={"path": "/etc/redis/users.acl", "plan": "repair", "target":
                                       "/etc/redis/users.acl"})
    result = actions.repair_ownership(actions.Context(None, target, repair_via="local"))
    assert result.ok and result.detail["file"] and result.detail["changed"] == 1, result.detail
    assert result.detail["path"] == str(acl) and result.detail["for"] == "/etc/redis/users.acl"
    assert (acl.stat().st_uid, acl.stat().st_gid, acl.stat().st_mode & 0o777) == (999, 999, 0o600)
    assert (sibling.stat().st_uid, sibling.stat().st_gid) == (0, 0)
    again = actions.repair_ownership(actions.Context(None, target, repair_via="local"))
    assert again.detail["changed"] == 0
    diagnosed = actions.repair_ownership(actions.Context(None, _target(mount, path_plan={
        "plan": "diagnose", "diagnosis": "mount the directory, not the file"}), repair_via="local"))
    assert diagnosed.result == "skipped" and diagnosed.detail["why"] == "mount the directory, not the file"


def test_doctor_shows_the_path_the_mount_and_the_plan(capsys):
    from ownvol.hook.commands import _echo_path_plan
    repair = paths.plan([DATA, NODES], "/node-conf/nodes.conf", "create", "/data", 999, 999)
    _echo_path_plan(repair.as_dict(), "999:999")
    diagnose = paths.plan([DATA], "/usr/local/redis.sock", "create", "/data", 999, 999, "unixsocket")
    _echo_path_plan(diagnose.as_dict(), "999:999")
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "path: /node-conf/nodes.conf (the server must create files in /node-conf), on the mount /node-conf",
        "path plan: repair /srv/c/node-conf (bind /srv/c/node-conf at /node-conf) for 999:999",
        "path: /usr/local/redis.sock (the server must create files in /usr/local), on no mount",
        f"path plan: nothing done; {diagnose.diagnosis}"]
