"""The driver under the faults of real hosts, through its socket (no engine needed): storage that refuses
chown (an immutable directory, a read-only bind), policy=never on a root-owned tree, workers killed in the
middle of Create and Remove. Cases 07 and the SECURITY.md known limit of killed workers."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.fixtures_plugin import OWNVOL

pytestmark = pytest.mark.engine


def snapshot(top: Path) -> dict[str, tuple[int, int, int]]:
    """Owner and mode of top and everything below it (links not followed)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [".", *dirnames, *filenames]:
            st = os.lstat(os.path.join(dirpath, name))
            found[os.path.join(dirpath, name)] = (st.st_uid, st.st_gid, st.st_mode)
    return found


def root_owned_tree(top: Path, files: int = 5) -> Path:
    (top / "appendonlydir").mkdir(parents=True)
    for k in range(files):
        (top / "appendonlydir" / f"f{k}").write_text("x")
    os.symlink("/etc/shadow", top / "link")
    for path in [top, *top.rglob("*")]:
        os.lchown(path, 0, 0)
    top.chmod(0o750)
    return top


@contextmanager
def immutable(path: Path):
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@contextmanager
def read_only_bind(path: Path):
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_policy_never_on_a_root_owned_tree_changes_no_owner_anywhere(bare_plugin):
    plugin = bare_plugin()
    tree = root_owned_tree(plugin.adopt / "db")
    before = snapshot(tree)
    plugin.call("Create", Name="never", Opts={"profile": "redis", "policy": "never", "path": str(tree)})
    assert snapshot(tree) == before
    status = plugin.call("Get", Name="never")["Volume"]["Status"]
    assert status["last_check_result"] == \
        "mismatch, not repaired (policy never): owner 0:0, want 999:999; mode 0750, want 0755"
    plugin.call("Mount", Name="never", ID="m1")
    plugin.call("Unmount", Name="never", ID="m1")
    assert snapshot(tree) == before
    plugin.call("Remove", Name="never")


@pytest.mark.parametrize("refusal", ["immutable", "read-only bind"])
def test_storage_that_refuses_chown_is_a_clear_err_and_nothing_changes(bare_plugin, refusal):
    plugin = bare_plugin()
    share = root_owned_tree(plugin.adopt / "share")
    guard = immutable if refusal == "immutable" else read_only_bind
    words = "Operation not permitted (EPERM)" if refusal == "immutable" else "Read-only file system (EROFS)"
    before = snapshot(share)
    with guard(share):
        err = plugin.err("Create", Name="nfs", Opts={"profile": "redis", "path": str(share)})
        assert f"option path: giving (policy on-root-mismatch) to 999:999 mode 0755: {share} failed: {words}" in err
        assert "policy=never" in err and "internal error" not in err
        assert snapshot(share) == before
        assert plugin.call("List")["Volumes"] == []
        # the control: options that match the directory as it is
        plugin.call("Create", Name="asis", Opts={"uid": "0", "gid": "0", "mode": "0750", "policy": "never",
                                                 "path": str(share)})
        assert plugin.call("Get", Name="asis")["Volume"]["Status"]["last_check_result"] == "ok"
    plugin.call("Remove", Name="asis")
    # at Mount: an adopted volume whose root went wrong and then refuses chown
    plugin.call("Create", Name="later", Opts={"profile": "redis", "path": str(share)})
    os.chown(share, 1234, 1234)
    before = snapshot(share)
    with guard(share):
        err = plugin.err("Mount", Name="later", ID="m1")
        assert f"volume later: giving to 999:999 mode 0755: {share} failed: {words}" in err
        status = plugin.call("Get", Name="later")["Volume"]["Status"]
        assert status["last_check_result"].startswith("failed: giving to 999:999") and words in \
            status["last_check_result"]
        assert status["mounts"] == 0
        assert snapshot(share) == before
    plugin.call("Remove", Name="later")


def workers(plugin) -> list[int]:
    with open(f"/proc/{plugin.proc.pid}/task/{plugin.proc.pid}/children") as f:
        return [int(p) for p in f.read().split()]


def test_workers_killed_in_create_and_remove_free_their_names_at_once(bare_plugin):
    """A worker SIGKILLed in the middle of a Create (adopting a tree of 1000 files, so there is a middle) or of
    a Remove (a managed volume of 1000 files to delete) leaves its name usable by the very next request,
    without a plugin restart. The kill lands when the store shows the name 'creating' or 'removing'."""
    plugin = bare_plugin()
    tree = plugin.adopt / "tree"
    tree.mkdir()
    for k in range(1000):
        (tree / f"f{k}").write_text("")
    db = sqlite3.connect(f"file:{plugin.root / 'ownvol.db'}?mode=ro", uri=True, timeout=30)
    landed = 0
    for round_ in range(8):
        name = ("a", "b")[round_ % 2]
        adopted = round_ % 4 < 2
        for path in [tree, *tree.iterdir()]:
            os.chown(path, 0, 0)
        if not adopted:  # a managed volume with files in it, to be removed
            plugin.call("Create", Name=name)
            for k in range(1000):
                (plugin.data_dir(name) / f"f{k}").write_text("")
        method, body = ("Create", {"Name": name, "Opts": {"path": str(tree)}}) if adopted else \
            ("Remove", {"Name": name})
        sender = threading.Thread(target=_send, args=(plugin, method, body))
        sender.start()
        state = "creating" if adopted else "removing"
        if wait_for_state(db, name, state, sender):
            for pid in workers(plugin):
                os.kill(pid, signal.SIGKILL)
            # landed only if the name is still mid-operation after the kill: the worker may have finished
            # between the read and the kill, and then there is nothing interrupted to finish
            row = db.execute("SELECT state FROM volumes WHERE name = ?", (name,)).fetchone()
            landed += bool(row and row[0] == state)
        sender.join(60)
        # the next requests for the name, at once: no "being created", no restart
        for attempt in ("Create", "Remove", "Create", "Remove"):
            body = {"Name": name, "Opts": {"path": str(tree)}} if attempt == "Create" else {"Name": name}
            _, reply = _answered(plugin, f"/VolumeDriver.{attempt}", body)
            assert reply["Err"] == "", (round_, attempt, reply)
        assert os.stat(tree / "f0").st_uid == 999 and not plugin.data_dir(name).exists()
    db.close()
    assert landed >= 6, f"only {landed} kills landed inside a Create or Remove"
    assert plugin.log().count("finished the interrupted") >= landed


def wait_for_state(db: sqlite3.Connection, name: str, state: str, sender: threading.Thread) -> bool:
    while sender.is_alive():
        row = db.execute("SELECT state FROM volumes WHERE name = ?", (name,)).fetchone()
        if row and row[0] == state:
            return True
    return False


def _send(plugin, method: str, body: dict) -> None:
    try:
        plugin.post(f"/VolumeDriver.{method}", body)
    except OSError:
        pass  # its worker was killed


def _answered(plugin, endpoint: str, body: dict) -> tuple[int, dict]:
    """A request sent until a worker takes it (gunicorn respawns the killed ones within a second or so)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return plugin.post(endpoint, body)
        except (ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def ownvol_volumes(plugin, *args: str, answer: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([OWNVOL, "volumes", "--socket", plugin.socket, *args], input=answer, capture_output=True,
                          text=True, timeout=60)


def test_ownvol_volumes_lists_releases_and_rebinds(bare_plugin):
    plugin = bare_plugin()
    plugin.call("Create", Name="held")
    plugin.call("Mount", Name="held", ID="m1")
    table = ownvol_volumes(plugin).stdout
    assert "held" in table and "unknown" in table and "m1" in table  # no engine activated it: cannot check
    assert "Aborted" in ownvol_volumes(plugin, "--release", "held", answer="n\n").stderr
    assert plugin.call("Get", Name="held")["Volume"]["Status"]["mounts"] == 1
    assert "released 1 mount ID(s)" in ownvol_volumes(plugin, "--release", "held", "--yes").stdout
    plugin.call("Remove", Name="held")
    assert "event=references-released volume=held ids=m1 liveness=unknown" in plugin.log()

    data = plugin.adopt / "moved"
    data.mkdir()
    plugin.call("Create", Name="moved", Opts={"path": str(data)})
    (plugin.adopt / "restored").mkdir()
    data.rmdir()
    (plugin.adopt / "restored").rename(data)  # another directory at the same path
    err = plugin.err("Mount", Name="moved", ID="m1")
    assert "is not the one it was created with: it was inode" in err and "replaced by another directory?" in err
    assert "--rebind moved" in err
    assert "data is now inode" in ownvol_volumes(plugin, "--rebind", "moved", "--yes").stdout
    plugin.call("Mount", Name="moved", ID="m1")
    assert os.stat(data).st_uid == 999
