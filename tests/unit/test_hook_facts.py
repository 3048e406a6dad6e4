"""How the hook decides each fact (docs/hook.md "How the hook decides each fact"): the owner's order, settings from a
config file as the server reads it, the process table, the owner conflict with an ownvol volume."""

from __future__ import annotations

import io
import os

from ownvol.dockertime import timestamp_ns
from ownvol.hook.actions import ActionResult
from ownvol.hook.health import can_write, owner_of
from ownvol.hook.model import DataMount, Target
from ownvol.hook.services import by_family, plan_of, service_for
from ownvol.hook.targets import StartFacts, owner, server_process
from ownvol.hook.telemetry import Telemetry
from ownvol.hook.watcher import Watched, Watcher
from tests.support.fakes import FakeExecutor, engine, events


class _Api:
    def __init__(self, image_user="", volume=None):
        self.image_user, self.volume = image_user, volume

    def inspect_image(self, image_id):
        return {"Config": {"User": self.image_user}}

    def inspect_volume(self, name):
        return {"Status": self.volume or {}}


class _Client:
    def __init__(self, **kw):
        self.api = _Api(**kw)


class _Container:
    id = "c1"

    def __init__(self, processes=None):
        self.processes = processes

    def top(self, ps_args=None):
        return {"Titles": ["PID", "EUID", "EGID", "COMMAND", "COMMAND"], "Processes": self.processes or []}


def attrs(user="", image="ownvol/redis:7-official", labels=None, path="docker-entrypoint.sh", args=("redis-server",),
          workdir="/data", network="host", mounts=()):
    return {"Id": "c1", "Path": path, "Args": list(args), "Image": f"id-of-{image}",
            "Config": {"User": user, "Image": image, "Labels": labels or {}, "WorkingDir": workdir, "Env": []},
            "HostConfig": {"NetworkMode": network}, "Mounts": list(mounts), "State": {"Status": "exited"}}


def decide(a, client=None, process=None, last_run=None, mount=None):
    service = service_for(a)
    cached = StartFacts(service, service.configured(_View(a)), process=process)
    return owner(client or _Client(), _Container(), a, mount, cached, last_run)


class _View:
    def __init__(self, attrs, files=None, dirs=None):
        self.attrs, self.files, self.dirs = attrs, files or {}, dirs or {}

    def read_file(self, path):
        return self.files.get(path)

    def list_dir(self, path):
        return self.dirs.get(path)


def test_the_running_server_process_wins_over_a_root_user():
    """Case 11a: `--user 0:0` on an image whose entrypoint drops to 999: the owner is 999, not root."""
    assert decide(attrs(user="0:0"), process=(7, 999, 999)) == (999, 999, "process")


def test_a_root_start_is_not_a_fact_and_the_order_after_the_process():
    a = attrs(user="0:0")
    assert decide(a) == (None, None, "unknown")
    assert decide(a, last_run=lambda cid: (999, 999)) == (999, 999, "last-healthy-run")
    assert decide(attrs(user="root", labels={"ownvol.uid": "1001", "ownvol.gid": "0"})) == (1001, 0, "label")
    assert decide(attrs(user="1000:1000")) == (1000, 1000, "user")
    assert decide(attrs(image="redis:7.4")) == (999, 999, "profile redis")
    assert decide(attrs(image="docker.io/valkey/valkey:8.1-alpine")) == (999, 1000, "profile valkey-alpine")
    assert decide(attrs(image="bitnami/redis:7"), client=_Client(image_user="1001:0")) == (1001, 0, "image")
    assert decide(attrs(image="bitnami/redis:7"), client=_Client(image_user="root")) == (None, None, "unknown")
    mount = DataMount("volume", "/v", "/data", "", "vol", "ownvol")
    status = {"uid": 999, "gid": 999, "mode": "0755", "policy": "on-root-mismatch"}
    assert decide(attrs(), client=_Client(volume=status), mount=mount) == (999, 999, "ownvol-volume")
    renamed = DataMount("volume", "/v", "/data", "", "vol", "ovt-driver")
    assert decide(attrs(), client=_Client(volume=status), mount=renamed) == (999, 999, "ownvol-volume")
    assert decide(attrs(), client=_Client(volume={"uid": 5, "gid": 5}), mount=renamed) == (None, None, "unknown")


def test_the_server_process_is_found_in_the_process_table():
    redis = by_family("redis")
    table = [["10", "0", "0", "docker-entrypoi", "/bin/sh /usr/local/bin/docker-entrypoint.sh redis-server"],
             ["12", "999", "999", "redis-server", "redis-server 127.0.0.1:6379"]]
    assert server_process(_Container(table), redis) == (12, 999, 999)
    assert server_process(_Container(table[:1]), redis) is None
    valkey = by_family("valkey")
    assert server_process(_Container([["3", "999", "1000", "valkey-server", "valkey-server *:6379"]]), valkey) == (
        3, 999, 1000)


def test_proc_status_when_the_engine_has_no_process_table(tmp_path):
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "status").write_text("Name:\tredis-server\nUid:\t999\t998\t998\t998\nGid:\t997\t996\t996\t996\n")
    (tmp_path / "42" / "cmdline").write_bytes(b"redis-server\0*:6379\0")
    assert server_process(_Container(), by_family("redis"), 42, str(tmp_path)) == (42, 998, 996)


def _proc(root, pid, name, cmdline, uid, gid, children=(), cgroup="0::/docker/c1\n"):
    d = root / str(pid)
    (d / "task" / str(pid)).mkdir(parents=True)
    (d / "task" / str(pid) / "children").write_text("".join(f"{c} " for c in children))
    (d / "status").write_text(f"Name:\t{name}\nUid:\t0\t{uid}\t{uid}\t{uid}\nGid:\t0\t{gid}\t{gid}\t{gid}\n")
    (d / "cmdline").write_bytes(cmdline)
    (d / "cgroup").write_text(cgroup)


class _NoTable(_Container):
    def top(self, ps_args=None):
        raise AssertionError("the engine's process table was asked")


def test_the_server_process_below_the_containers_init_is_read_from_proc(tmp_path):
    """A wrapper as the container's init (tini, then the official entrypoint's sh) with the server below it: the
    lowest pid that is the server, read from /proc (children files), the engine not asked; a zombie server
    (empty cmdline) is still found by its name, as ps finds it."""
    redis = by_family("redis")
    _proc(tmp_path, 40, "tini", b"/sbin/tini\0--\0docker-entrypoint.sh\0", 0, 0, children=(41,))
    _proc(tmp_path, 41, "docker-entrypoi", b"/bin/sh\0/usr/local/bin/docker-entrypoint.sh\0redis-server\0", 0, 0,
          children=(57, 43))
    _proc(tmp_path, 57, "redis-server", b"redis-server *:6379\0", 999, 999)
    _proc(tmp_path, 43, "redis-server", b"", 999, 1000)  # a zombie: no cmdline
    assert server_process(_NoTable(), redis, 40, str(tmp_path)) == (43, 999, 1000)
    assert server_process(_NoTable(), by_family("valkey"), 40, str(tmp_path)) is None
    (tmp_path / "43" / "task" / "43" / "children").unlink()  # exited between the two reads: skipped
    assert server_process(_NoTable(), redis, 40, str(tmp_path)) == (57, 999, 999)
    assert server_process(_NoTable(), redis, 39, str(tmp_path)) is None  # the container's init has exited


def test_a_pid_that_is_not_the_containers_is_not_read_from_proc(tmp_path):
    """The engine's pid names another process here (another pid namespace), or the kernel has no children files:
    the engine's process table answers."""
    redis = by_family("redis")
    table = [["7", "999", "999", "redis-server", "redis-server *:6379"]]
    _proc(tmp_path, 40, "redis-server", b"redis-server *:6379\0", 1234, 1234, cgroup="0::/user.slice/other\n")
    assert server_process(_Container(table), redis, 40, str(tmp_path)) == (7, 999, 999)
    _proc(tmp_path, 50, "redis-server", b"redis-server *:6379\0", 1234, 1234)
    (tmp_path / "50" / "task" / "50" / "children").unlink()
    assert server_process(_Container(table), redis, 50, str(tmp_path)) == (7, 999, 999)


def test_dir_and_port_from_the_config_file_the_command_line_names():
    """Case 01: `redis-server /usr/local/etc/redis/redis.conf` with dir and port in the file."""
    a = attrs(path="redis-server", args=["/usr/local/etc/redis/redis.conf", "--appendonly", "yes"])
    conf = 'port 16401\nbind 127.0.0.1\ndir "/var/lib/redis"\nrequirepass "s e"\n'
    s = by_family("redis").configured(_View(a, {"/usr/local/etc/redis/redis.conf": conf}))
    assert (s.data_dir, s.address, s.password) == ("/var/lib/redis", "redis://127.0.0.1:16401/0", "s e")
    assert s.origins["dir"] == "/usr/local/etc/redis/redis.conf:3" and s.origins["port"].endswith(":1")


def test_the_official_entrypoint_forms_and_shell_wrappers():
    redis = by_family("redis")
    conf = {"/etc/r.conf": "port 7000\n"}
    for a in (attrs(args=["/etc/r.conf"]), attrs(args=["redis-server", "/etc/r.conf"]),
              attrs(path="sh", args=["-c", "exec redis-server /etc/r.conf && echo done"])):
        assert redis.configured(_View(a, conf)).address == "redis://127.0.0.1:7000/0", a
    no_file = redis.configured(_View(attrs(args=["redis-server"])))
    assert (no_file.data_dir, no_file.origins["dir"], no_file.address) == ("/data", "WORKDIR",
                                                                           "redis://127.0.0.1:6379/0")
    missing = redis.configured(_View(attrs(args=["redis-server", "/nope.conf"])))
    assert missing.problems == ("cannot read config file /nope.conf",)


def test_a_valkey_container_is_valkey_without_labels():
    a = attrs(image="valkey/valkey:8.1", path="docker-entrypoint.sh", args=["valkey-server", "--port", "7001"])
    assert service_for(a).family == "valkey"
    assert service_for(a).configured(_View(a)).address == "redis://127.0.0.1:7001/0"


def target(uid, gid, source, mount):
    return Target("c1", "c", "img", "running", {}, None, None, "/data", mount, uid, gid, source, False)


def test_a_running_server_is_judged_only_against_its_process_uid(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 1234, 1234)
    mount = DataMount("bind", str(data), "/data", "")
    mine = (data.stat().st_uid, data.stat().st_gid)
    other = (mine[0] + 1, mine[1] + 1)
    assert owner_of(target(*other, "user", mount), True, running=True) is None
    assert owner_of(target(*other, "process", mount), True, running=True)["ok"] is False
    assert owner_of(target(*mine, "process", mount), True, running=True)["ok"] is True
    assert owner_of(target(*other, "user", mount), True, running=False)["ok"] is False
    assert owner_of(target(0, 0, "process", mount), True, running=True) is None


class _ConflictExecutor(FakeExecutor):
    def run(self, cid, action, incident=None):
        super().run(cid, action, incident)
        detail = {"conflict": {"volume": "v", "volume_owner": "999:999", "container_owner": "1000:1000",
                               "owner_source": "user"}} if action == "repair-ownership" else {}
        return ActionResult("ok", detail)


def test_a_user_volume_conflict_gets_one_repair_then_a_conflict_event(tmp_path):
    """Case 03: the second incident makes no repair; it says conflict and gives up."""
    executor = _ConflictExecutor(heals="repair-ownership")
    rec, out = engine(tmp_path, executor)
    rec.report("c1", "c", "persistence-failed", "log", {"message": "x"}, background=False)
    repairs = executor.ran.count("repair-ownership")
    assert [e["event"] for e in events(out)][-1] == "recovered"
    rec.report("c1", "c", "persistence-failed", "log", {"message": "y"}, background=False)
    assert repairs == 1 and executor.ran.count("repair-ownership") == 1
    conflicts = [e for e in events(out) if e["event"] == "conflict"]
    assert len(conflicts) == 1 and conflicts[0]["volume_owner"] == "999:999"
    assert "-o uid=1000 -o gid=1000" in conflicts[0]["message"]
    assert [e["why"] for e in events(out) if e["event"] == "gave-up"][-1].startswith("conflict:")


def test_a_service_plan_replaces_the_strategies_file_plan(tmp_path, monkeypatch):
    """A service definition's own plan (hooks/services Service.plan) is what an incident of its family runs."""
    redis_service = by_family("redis")
    monkeypatch.setattr(type(redis_service), "plan", lambda self, error_type: ("restart",))
    executor = FakeExecutor(heals="restart")
    rec, _ = engine(tmp_path, executor)
    rec.plans = plan_of
    rec.report("c1", "c", "persistence-failed", "log", {"message": "x", "service": "redis"}, background=False)
    assert executor.ran == ["restart"]
    rec.report("c2", "c", "persistence-failed", "log", {"message": "x", "service": "unknown"}, background=False)
    assert executor.ran[1:] == ["repair-ownership"]


class _Stopped:
    def __init__(self, code, started="2026-11-30T01:00:00.000000000Z", finished="2026-11-30T01:00:02.000000000Z",
                 restarts=0, error=""):
        self.attrs = {"State": {"ExitCode": code, "StartedAt": started, "FinishedAt": finished, "Error": error},
                      "RestartCount": restarts}

    def reload(self):
        pass


class _Reports:
    def __init__(self):
        self.reports = []

    def busy(self, cid):
        return False

    def report(self, *args, **kw):
        self.reports.append(args)


class _Evidence:
    def crash_evidence(self, cid):
        return {"path": "/srv/d", "ok": False, "problem": "owner 0:0, want 999:999"}


def crash(container, exit_code=None, last_detection_ns=0):

    reports = _Reports()
    watcher = Watcher(lambda: None, {}, reports, Telemetry(out=io.StringIO()), _Evidence())
    watcher.crashed(container, Watched("c1", "c", last_detection_ns=last_detection_ns), exit_code)
    return reports.reports


def test_a_start_up_crash_no_line_explains_is_reported_on_the_owner_evidence():
    [report] = crash(_Stopped(1), "1")
    assert report[2:4] == ("permission-denied", "exit") and "no known line matched" in report[4]["message"]


def test_what_is_not_an_unexplained_start_up_crash():
    assert crash(_Stopped(137)) == []  # docker stop / kill: a signal
    assert crash(_Stopped(0)) == []
    assert crash(_Stopped(1, finished="2026-11-30T01:05:00.000000000Z")) == []  # ran five minutes, no restart
    spoke = timestamp_ns("2026-11-30T01:00:01.000000000Z")
    assert crash(_Stopped(1), last_detection_ns=spoke) == []  # a known line of this run already opened one
    assert len(crash(_Stopped(1, finished="2026-11-30T01:05:00.000000000Z", restarts=3))) == 1  # crash-looping
    assert len(crash(_Stopped(128, error="chdir to cwd: permission denied"))) == 1  # the engine could not start it


def test_a_server_that_can_write_its_data_dir_is_not_judged_by_the_group():
    """The official entrypoint chowns WORKDIR to the user only: 999:0 0755 is fine for a server running 999:999."""
    assert can_write(999, 0, 0o755, 999, 999)
    assert not can_write(0, 0, 0o755, 999, 999)
    assert not can_write(999, 999, 0o555, 999, 999)
    assert can_write(0, 999, 0o775, 999, 999) and not can_write(0, 999, 0o755, 999, 999)
    assert can_write(0, 0, 0o777, 999, 999) and not can_write(0, 0, 0o750, 999, 999)


def test_engine_events_wait_only_for_their_own_container():
    """dispatch: a container whose event handling is stuck (dockerd answering nothing about it while it
    starts) holds up none of another container's events, and each container's events keep their order."""
    import threading

    watcher = Watcher(lambda: None, {}, _Reports(), Telemetry(out=io.StringIO()), _Evidence())
    stuck, handled, b_done, done = threading.Event(), [], threading.Event(), threading.Event()

    def on_event(event):
        if event["id"] == "a" and event["Action"] == "start":
            assert stuck.wait(10)
        handled.append((event["id"], event["Action"]))
        if event["id"] == "b" and event["Action"] == "destroy":
            b_done.set()
        if len(handled) == 5:
            done.set()

    watcher.on_event = on_event
    for cid, action in [("a", "start"), ("a", "die"), ("b", "start"), ("b", "die"), ("b", "destroy")]:
        watcher.dispatch({"id": cid, "Action": action})
    assert b_done.wait(10)
    assert handled == [("b", "start"), ("b", "die"), ("b", "destroy")]
    stuck.set()
    assert done.wait(10)
    assert handled[3:] == [("a", "start"), ("a", "die")]
    assert not watcher.events.pending()


def test_the_address_under_host_networking_follows_the_bind_rules():
    """Loopback when the server listens there (redis.conf's `bind 127.0.0.1 -::1` included), else the first address
    it must have bound (no `-`), else the first; IPv6 any is reached on ::1 (Redis binds it V6ONLY)."""
    redis = by_family("redis")
    a = attrs(path="redis-server", args=["/r.conf"])
    cases = {"bind 127.0.0.1 -::1": "127.0.0.1", "bind * -::*": "127.0.0.1", "": "127.0.0.1",
             "bind -::1 10.0.0.7": "10.0.0.7", "bind -::1": "[::1]", "bind ::": "[::1]", "bind -0.0.0.0": "127.0.0.1"}
    for line, host in cases.items():
        assert redis.configured(_View(a, {"/r.conf": f"port 7000\n{line}\n"})).address == f"redis://{host}:7000/0", line


def test_whether_a_redis_persists_from_its_config():
    """AOF on, or any save point (the defaults when `save` is not configured); `save ""` with AOF off: nothing."""
    redis = by_family("redis")
    a = attrs(path="redis-server", args=["/r.conf", "--port", "7000"])
    for conf, persists in (("", True), ('save ""\n', False), ('save ""\nappendonly yes\n', True),
                           ("save 60 1\n", True), ('save 60 1\nsave ""\n', False)):
        assert redis.configured(_View(a, {"/r.conf": conf})).persists is persists, conf
    cmd = attrs(path="redis-server", args=["--save", "", "--appendonly", "no"])
    assert redis.configured(_View(cmd)).persists is False


def test_a_container_user_the_image_lacks_leaves_the_owner_unknown():
    """Not the image's profile or USER: the engine cannot start the container as that user at all."""
    a = attrs(user="nosuchuser", image="ownvol/redis:7-official")
    uid, gid, source = owner(_Client(image_user="redis"), _Container(), a, None,
                             StartFacts(by_family("redis"), by_family("redis").configured(_View(a)),
                                        passwd="redis:x:999:999::/data:/bin/sh\n", group="redis:x:999:\n"))
    assert (uid, gid) == (None, None) and "'nosuchuser' is not in the image's /etc/passwd" in source
