"""The protocol and the volumes service through the WSGI app, on a real disk, without the engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import replace

import pytest

from ownvol import ownership
from ownvol.driver import binds
from ownvol.driver.app import MEDIA_TYPE, create_app
from ownvol.driver.mounts import WALK_INTERRUPTED, WALKING
from ownvol.driver.options import parse_defaults
from ownvol.driver.settings import from_env
from ownvol.driver.store import Store
from ownvol.driver.volumes import Volumes


@pytest.fixture
def env(tmp_path):
    (tmp_path / "adopt").mkdir()
    return {"OWNVOL_ROOT": str(tmp_path / "state"), "OWNVOL_ALLOWED_ROOTS": str(tmp_path / "adopt")}


class Driver:
    def __init__(self, settings):
        self.settings = settings
        self.volumes = Volumes(settings, Store(settings.db_path))
        self.client = create_app(settings, self.volumes).test_client()

    def post(self, endpoint, body=None, raw=None):
        data = raw if raw is not None else json.dumps(body if body is not None else {})
        r = self.client.post(endpoint, data=data, headers={"Accept": "application/vnd.docker.plugins.v1.2+json"})
        assert r.mimetype == MEDIA_TYPE
        return r.status_code, r.get_json()

    def ok(self, method, **body):
        status, reply = self.post(f"/VolumeDriver.{method}", body)
        assert (status, reply["Err"]) == (200, ""), reply
        return reply

    def err(self, method, **body):
        status, reply = self.post(f"/VolumeDriver.{method}", body)
        assert status != 200 and reply["Err"], reply
        return reply["Err"]


@pytest.fixture
def driver(env):
    return Driver(from_env(env))


def test_activate_and_capabilities(driver):
    assert driver.post("/Plugin.Activate", raw="null") == (200, {"Implements": ["VolumeDriver"], "Err": ""})
    assert driver.post("/VolumeDriver.Capabilities", raw="") == (200, {"Capabilities": {"Scope": "local"}, "Err": ""})


def test_create_gives_a_directory_with_owner_and_mode(driver):
    driver.ok("Create", Name="v", Opts={"uid": "1234", "gid": "4321", "mode": "0750"})
    st = os.stat(driver.settings.volumes_dir + "/v")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 4321, 0o750)
    status = driver.ok("Get", Name="v")["Volume"]["Status"]
    assert {k: status[k] for k in ("uid", "gid", "mode", "policy", "profile", "state", "mounts")} == {
        "uid": 1234, "gid": 4321, "mode": "0750", "policy": "on-root-mismatch", "profile": "", "state": "ok",
        "mounts": 0}
    assert set(status) >= {"path", "created", "last_check", "last_check_result", "last_repair"}


def test_create_again_same_options_is_fine_different_is_refused(driver):
    driver.ok("Create", Name="v", Opts={"profile": "redis"})
    driver.ok("Create", Name="v", Opts={"profile": "redis"})
    assert "already exists with uid=999 gid=999" in driver.err("Create", Name="v", Opts={"uid": "1"})


@pytest.mark.parametrize("raw,words", [
    ("{bad", "not valid JSON"), ("[1]", "must be a JSON object"), ('"x"', "must be a JSON object"),
    ("{}", "Name is required"), ('{"Name": 5}', "Name must be a string"), ('{"Name": ""}', "Name must not be empty"),
    ('{"Name": "../../etc"}', "not a valid volume name"), ('{"Name": "a/b"}', "not a valid volume name"),
    ('{"Name": "v", "Opts": "uid=1"}', "Opts must be an object"),
    ('{"Name": "v", "Opts": {"colour": "red"}}', "unknown option 'colour'; valid options: gid, mode, ownership, path"),
    ('{"Name": "v", "Opts": {"uid": "x"}}', "option uid"), ('{"Name": "v", "Opts": {"mode": "8"}}', "option mode"),
    ('{"Name": "v", "Opts": {"profile": "x"}}', "option profile"),
    ('{"Name": "v", "Opts": {"policy": "x"}}', "option policy"),
    ('{"Name": "v", "Opts": {"path": "/etc/x"}}', "option path"),
    ('{"Name": "v", "Opts": {"path": "/srv/x"}}', "option path"),
    ("\xff\xfe", "not valid JSON"),
])
def test_every_bad_create_gets_an_err_and_leaves_nothing(driver, raw, words):
    status, reply = driver.post("/VolumeDriver.Create", raw=raw.encode("latin-1"))
    assert status == 400 and words in reply["Err"], reply
    assert "Traceback" not in reply["Err"]
    assert driver.ok("List")["Volumes"] == []
    assert not os.path.exists(driver.settings.volumes_dir) or os.listdir(driver.settings.volumes_dir) == []


def test_protocol_errors(driver):
    assert driver.post("/VolumeDriver.Mount", {"Name": "v"})[1]["Err"] == "ID is required"
    assert driver.post("/VolumeDriver.Mount", {"Name": "v", "ID": 3})[1]["Err"] == "ID must be a string, got int"
    assert driver.err("Get", Name="nope") == "no such volume: nope"
    assert driver.err("Mount", Name="nope", ID="m") == "no such volume: nope"
    assert driver.err("Remove", Name="nope") == "no such volume: nope"
    status, reply = driver.post("/Nope", {})
    assert status == 404 and "unknown endpoint /Nope" in reply["Err"]
    r = driver.client.get("/VolumeDriver.List")
    assert r.status_code == 405 and "takes POST" in r.get_json()["Err"]
    status, reply = driver.post("/VolumeDriver.Create", raw="x" * 100_000)
    assert status == 413 and "larger than" in reply["Err"]


def test_internal_errors_are_an_err_without_traceback(driver, monkeypatch):
    monkeypatch.setattr(driver.volumes, "list", lambda: 1 / 0)
    status, reply = driver.post("/VolumeDriver.List")
    assert status == 500 and reply == {"Err": "internal error: ZeroDivisionError: division by zero"}


def test_unmount_of_unknown_id_or_volume_is_quiet(driver):
    driver.ok("Create", Name="v")
    driver.ok("Unmount", Name="v", ID="never-mounted")
    driver.ok("Unmount", Name="gone", ID="x")


def test_mount_references_and_remove_while_mounted(driver):
    driver.ok("Create", Name="v")
    path = driver.ok("Mount", Name="v", ID="m1")["Mountpoint"]
    assert path == driver.settings.volumes_dir + "/v"
    driver.ok("Mount", Name="v", ID="m1")
    driver.ok("Mount", Name="v", ID="m2")
    assert driver.ok("Get", Name="v")["Volume"]["Status"]["mounts"] == 3
    assert "in use: mounted 3 time(s) (mount IDs m1, m2)" in driver.err("Remove", Name="v")
    assert os.path.isdir(path)
    for mid in ("m1", "m1", "m2"):
        driver.ok("Unmount", Name="v", ID=mid)
    driver.ok("Remove", Name="v")
    assert not os.path.exists(path) and driver.ok("List")["Volumes"] == []


def test_mount_repairs_drift_per_policy(driver):
    driver.ok("Create", Name="v")
    path = driver.settings.volumes_dir + "/v"
    os.makedirs(path + "/appendonlydir")
    os.chown(path + "/appendonlydir", 0, 0)
    driver.ok("Mount", Name="v", ID="m")
    status = driver.ok("Get", Name="v")["Volume"]["Status"]
    assert status["last_check_result"] == "ok" and status["last_repair"] is None  # root right: no walk
    driver.ok("Unmount", Name="v", ID="m")
    os.chown(path, 0, 0)
    driver.ok("Mount", Name="v", ID="m")
    st = os.stat(path + "/appendonlydir")
    assert (st.st_uid, st.st_gid) == (999, 999)
    status = driver.ok("Get", Name="v")["Volume"]["Status"]
    assert status["last_check_result"].startswith("owner 0:0, want 999:999; walked")
    assert status["last_repair"]["changed"] == 2 and status["last_repair"]["seconds"] >= 0


def test_policy_never_reports_and_leaves_alone(driver):
    driver.ok("Create", Name="v", Opts={"policy": "never"})
    path = driver.settings.volumes_dir + "/v"
    os.chown(path, 0, 0)
    driver.ok("Mount", Name="v", ID="m")
    assert os.stat(path).st_uid == 0
    assert "not repaired (policy never)" in driver.ok("Get", Name="v")["Volume"]["Status"]["last_check_result"]


def test_policy_always_walks_every_mount(driver):
    driver.ok("Create", Name="v", Opts={"policy": "always"})
    path = driver.settings.volumes_dir + "/v"
    open(path + "/f", "w").close()
    driver.ok("Mount", Name="v", ID="m")
    assert os.stat(path + "/f").st_uid == 999
    assert driver.ok("Get", Name="v")["Volume"]["Status"]["last_repair"]["changed"] == 1


def test_a_mount_looks_at_the_root_once_whether_it_walks_or_not(driver, monkeypatch):
    """One inspect_root per Mount: a Mount with nothing to do, one that walks and repairs, and one of a volume
    other mounts hold (liveness unknown: root checked only) each look at the root once."""
    from ownvol import ownership

    looks = []
    real = ownership.inspect_root
    monkeypatch.setattr(ownership, "inspect_root", lambda *a, **k: looks.append(a[0]) or real(*a, **k))
    driver.ok("Create", Name="v")
    path = driver.settings.volumes_dir + "/v"
    looks.clear()
    driver.ok("Mount", Name="v", ID="m1")
    assert len(looks) == 1
    os.chown(path, 0, 0)
    driver.ok("Mount", Name="v", ID="m2")  # held by m1 (liveness unknown): checked only
    assert len(looks) == 2 and os.stat(path).st_uid == 0
    assert "not repaired (held by other mounts (liveness unknown))" in \
        driver.ok("Get", Name="v")["Volume"]["Status"]["last_check_result"]
    for mid in ("m1", "m2"):
        driver.ok("Unmount", Name="v", ID=mid)
    driver.ok("Mount", Name="v", ID="m3")  # walks and repairs
    assert len(looks) == 3 and os.stat(path).st_uid == 999
    assert driver.ok("Get", Name="v")["Volume"]["Status"]["last_repair"]["changed"] == 1


def test_a_data_directory_deleted_by_hand(driver):
    driver.ok("Create", Name="v")
    os.rmdir(driver.settings.volumes_dir + "/v")
    status = driver.ok("Get", Name="v")["Volume"]["Status"]
    assert "data directory" in status["state"] and "missing" in status["state"]
    assert driver.ok("List")["Volumes"][0]["Name"] == "v"
    assert "is missing" in driver.err("Mount", Name="v", ID="m")
    assert driver.ok("Get", Name="v")["Volume"]["Status"]["mounts"] == 0
    driver.ok("Remove", Name="v")


def test_adopting_a_host_directory(driver, env, tmp_path):
    host = tmp_path / "adopt" / "proj" / "redis-data"
    host.mkdir(parents=True)
    (host / "appendonlydir").mkdir()
    (host / "appendonlydir" / "x.aof").write_text("data")
    driver.ok("Create", Name="v", Opts={"path": str(host)})
    assert os.stat(host / "appendonlydir" / "x.aof").st_uid == 999  # adopted whole, not only the root
    assert driver.ok("Mount", Name="v", ID="m")["Mountpoint"] == str(host)
    assert "overlaps volume v" in driver.err("Create", Name="w", Opts={"path": str(host / "appendonlydir")})
    driver.ok("Unmount", Name="v", ID="m")
    driver.ok("Remove", Name="v")
    assert (host / "appendonlydir" / "x.aof").read_text() == "data"  # never deleted
    fresh = tmp_path / "adopt" / "new" / "dir"
    driver.ok("Create", Name="w", Opts={"path": str(fresh)})
    assert os.stat(fresh).st_uid == 999


def test_adoption_refuses_a_symlinked_path(driver, tmp_path):
    os.symlink("/etc", tmp_path / "adopt" / "link")
    err = driver.err("Create", Name="v", Opts={"path": str(tmp_path / "adopt" / "link" / "x")})
    assert "option path" in err and "is a symlink" in err
    assert not os.path.exists("/etc/x")


def test_managed_directory_left_over_without_a_volume_is_not_taken(driver):
    os.makedirs(driver.settings.volumes_dir + "/v")
    assert "already exists but belongs to no volume" in driver.err("Create", Name="v")
    assert driver.ok("List")["Volumes"] == [] and os.path.isdir(driver.settings.volumes_dir + "/v")


def test_recover_finishes_interrupted_creates_and_removes(driver):
    driver.ok("Create", Name="half-made")
    driver.ok("Create", Name="half-gone")
    store = driver.volumes.store
    with store.transaction():
        store.set_state("half-made", "creating")
        store.set_state("half-gone", "removing")
    assert driver.ok("List")["Volumes"] == []
    done = driver.volumes.recover()
    assert len(done) == 2
    assert store.all() == [] and os.listdir(driver.settings.volumes_dir) == []
    driver.ok("Create", Name="half-made")


def test_a_mount_killed_mid_walk_loses_its_reference_and_the_next_mount_walks(driver, monkeypatch):
    """The worker whose Mount walks is SIGKILLed after the root was repaired (ownership.repair does the root first):
    its caller got no answer, so at the next start recover drops that Mount's reference, and the next Mount walks
    the tree although the root now looks right."""
    driver.ok("Create", Name="v")
    path = driver.settings.volumes_dir + "/v"
    os.makedirs(path + "/deep/er")
    open(path + "/deep/er/f", "w").close()
    subprocess.run(["chown", "-R", "0:0", path], check=True)

    def stuck(root, uid, gid, mode=None, **kwargs):
        os.chown(root, uid, gid)
        while True:
            time.sleep(1)

    monkeypatch.setattr(ownership, "repair", stuck)
    pid = os.fork()
    if pid == 0:
        try:
            driver.post("/VolumeDriver.Mount", {"Name": "v", "ID": "killed"})
        finally:
            os._exit(0)
    store = driver.volumes.store
    deadline = time.monotonic() + 30
    while not store.metas(WALKING) and time.monotonic() < deadline:
        time.sleep(0.01)
    while os.stat(path).st_uid != 999 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    monkeypatch.undo()
    assert store.mount_ids("v") == {"killed": 1}
    assert (os.stat(path).st_uid, os.stat(path + "/deep/er/f").st_uid) == (999, 0)

    done = driver.volumes.recover()
    assert [d for d in done if "interrupted by the driver's death" in d] and store.metas(WALKING) == []
    assert store.mount_ids("v") == {}
    assert driver.ok("Get", Name="v")["Volume"]["Status"]["last_check_result"].startswith(WALK_INTERRUPTED)
    driver.ok("Mount", Name="v", ID="next")
    assert os.stat(path + "/deep/er/f").st_uid == 999 and store.mount_ids("v") == {"next": 1}
    assert "walked" in driver.ok("Get", Name="v")["Volume"]["Status"]["last_check_result"]
    assert store.metas(WALKING) == []


def test_a_name_whose_holder_died_is_usable_at_once(driver):
    """A 'creating' or 'removing' row whose worker died (its flock on the name gone with it) is finished by the
    next request for that name, without a plugin restart."""
    for name in ("made", "gone", "mounted"):
        driver.ok("Create", Name=name)
    store = driver.volumes.store
    with store.transaction():
        store.set_state("made", "creating")
        store.set_state("gone", "removing")
        store.set_state("mounted", "removing")
    driver.ok("Create", Name="made", Opts={"uid": "1234"})
    assert os.stat(driver.settings.volumes_dir + "/made").st_uid == 1234
    driver.ok("Remove", Name="gone")
    assert "no such volume" in driver.err("Mount", Name="mounted", ID="m")
    assert [r.name for r in store.all()] == ["made"]
    assert sorted(os.listdir(driver.settings.volumes_dir)) == ["made"]


def test_a_live_holder_of_a_name_is_waited_for(driver):
    import fcntl
    import multiprocessing
    import time

    store = driver.volumes.store
    started = multiprocessing.Event()

    def hold() -> None:
        with store.name_lock("v"):
            open(os.path.join(driver.settings.volumes_dir, "v", "marker"), "w").close()
            started.set()
            time.sleep(1)
            with store.transaction():
                store.set_state("v", "ready")

    driver.ok("Create", Name="v")
    with store.transaction():
        store.set_state("v", "creating")
    store.close()
    child = multiprocessing.get_context("fork").Process(target=hold)
    child.start()
    started.wait(10)
    lock = os.open(os.path.join(driver.settings.root, "locks", "v"), os.O_RDWR)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = False
        except BlockingIOError:
            held = True
    finally:
        os.close(lock)
    assert held
    driver.ok("Create", Name="v")  # waits for the holder, which finished the create: nothing undone
    child.join(10)
    assert store.get("v").state == "ready" and os.path.exists(driver.settings.volumes_dir + "/v/marker")


@pytest.fixture
def bound_driver(env, tmp_path):
    d = Driver(replace(from_env(env), mount_root=str(tmp_path / "mnt")))
    yield d
    for entry in (tmp_path / "mnt").iterdir() if (tmp_path / "mnt").exists() else ():
        binds.unbind(str(entry))


def test_mount_root_binds_at_first_mount_and_unbinds_at_last(bound_driver, tmp_path):
    d = bound_driver
    d.ok("Create", Name="v")
    target = str(tmp_path / "mnt" / "v")
    assert d.ok("Mount", Name="v", ID="m1")["Mountpoint"] == target
    assert binds.is_mounted(target)
    d.ok("Mount", Name="v", ID="m2")
    open(target + "/through-the-bind", "w").close()
    assert os.path.exists(d.settings.volumes_dir + "/v/through-the-bind")
    d.ok("Unmount", Name="v", ID="m1")
    assert binds.is_mounted(target)
    d.ok("Unmount", Name="v", ID="m2")
    assert not binds.is_mounted(target) and not os.path.exists(target)


def test_mount_root_binds_come_back_in_line_at_start(bound_driver, tmp_path):
    d = bound_driver
    d.ok("Create", Name="v")
    d.ok("Create", Name="w")
    target_v, target_w = str(tmp_path / "mnt" / "v"), str(tmp_path / "mnt" / "w")
    d.ok("Mount", Name="v", ID="m1")
    d.ok("Mount", Name="w", ID="m1")
    binds.unbind(target_v)  # e.g. a host reboot: the reference is in the store, the bind is gone
    with d.volumes.store.transaction():
        d.volumes.store.drop_ref("w", "m1")  # and a bind with no reference left
    d.volumes.recover()
    assert binds.is_mounted(target_v) and not binds.is_mounted(target_w)
    d.ok("Unmount", Name="v", ID="m1")
    assert not binds.is_mounted(target_v)


def test_default_profile_setting(env):
    d = Driver(from_env({**env, "OWNVOL_DEFAULT_PROFILE": "postgres-alpine"}))
    d.ok("Create", Name="v")
    st = os.stat(d.settings.volumes_dir + "/v")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (70, 70, 0o700)
    assert d.settings.defaults == parse_defaults(profile="postgres-alpine")
