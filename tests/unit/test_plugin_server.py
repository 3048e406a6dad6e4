"""The real server (`ownvol driver`, gunicorn with several workers) on a socket no engine looks at."""

from __future__ import annotations

import json
import os
import queue
import select
import signal
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from ownvol.driver import serve
from ownvol.driver.serve import UnixHTTPConnection
from ownvol.driver.store import CHECKPOINT_EVERY
from tests.support.sqlite_file import rows_in_the_file_alone


def test_socket_is_root_only_and_replies_are_plugin_json(bare_plugin):
    plugin = bare_plugin()
    st = os.stat(plugin.socket)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    assert plugin.post("/Plugin.Activate", b"") == (200, {"Implements": ["VolumeDriver"], "Err": ""})
    status, reply = plugin.post("/VolumeDriver.Create", b'{"Name": "v", "Opts": {"mode": "9"}}')
    assert status == 400 and reply == {"Err": "option mode: '9' is not an octal mode from 0 to 7777 (for example 0755)"}


def test_a_second_server_on_the_same_socket_is_refused(bare_plugin):
    import subprocess

    plugin = bare_plugin()
    for name in ("driver", "plugin"):  # plugin: the hidden alias of its former name
        second = subprocess.run([".venv/bin/ownvol", name], env=plugin.env, capture_output=True, text=True, timeout=60)
        assert second.returncode != 0 and "already answers" in second.stderr
    plugin.call("List")


def test_references_stay_right_under_concurrent_requests(bare_plugin):
    plugin = bare_plugin(mount_root=True, OWNVOL_WORKERS="4")
    plugin.call("Create", Name="v", Opts={})
    ids = [f"m{i % 10}" for i in range(60)]
    with ThreadPoolExecutor(12) as pool:
        mountpoints = set(pool.map(lambda i: plugin.call("Mount", Name="v", ID=i)["Mountpoint"], ids))
    assert mountpoints == {str(plugin.mount_root / "v")}
    assert plugin.call("Get", Name="v")["Volume"]["Status"]["mounts"] == 60
    assert plugin.is_mounted(plugin.mount_root / "v")
    with ThreadPoolExecutor(12) as pool:
        list(pool.map(lambda i: plugin.call("Unmount", Name="v", ID=i), ids))
    assert plugin.call("Get", Name="v")["Volume"]["Status"]["mounts"] == 0
    assert not plugin.is_mounted(plugin.mount_root / "v")


def test_concurrent_creates_of_one_name_make_one_volume(bare_plugin):
    plugin = bare_plugin(OWNVOL_WORKERS="4")
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: plugin.post("/VolumeDriver.Create", {"Name": "v", "Opts": {"uid": "5"}}),
                                range(16)))
    errs = [r["Err"] for _, r in replies if r["Err"]]
    assert all("being created" in e for e in errs), errs
    assert [v["Name"] for v in plugin.call("List")["Volumes"]] == ["v"]
    assert os.stat(plugin.data_dir("v")).st_uid == 5


def test_path_and_get_agree_with_mount(bare_plugin):
    plugin = bare_plugin()
    plugin.call("Create", Name="v", Opts={})
    path = plugin.call("Path", Name="v")["Mountpoint"]
    volume = plugin.call("Get", Name="v")["Volume"]
    mounted = plugin.call("Mount", Name="v", ID="x")["Mountpoint"]
    assert path == volume["Mountpoint"] == mounted == str(plugin.data_dir("v"))
    assert volume["CreatedAt"].endswith("Z") and volume["Status"]["created"] == volume["CreatedAt"]


def test_each_reply_closes_its_connection_and_a_client_that_keeps_one_connects_again(bare_plugin):
    """dockerd's plugin client would reuse its connection (Go's http.Transport); a reply saying `Connection: close`
    makes it connect again for the next request (a free worker takes it, serve.py). Requests one after the other
    through one client, as dockerd sends them, are each answered, each on a connection of its own."""
    plugin = bare_plugin()
    plugin.call("Create", Name="kept", Opts={})
    conn = UnixHTTPConnection(plugin.socket, timeout=30)
    try:
        replies, sockets = [], []
        for i in range(5):
            conn.request("POST", "/VolumeDriver.Mount", body=json.dumps({"Name": "kept", "ID": f"m{i}"}))
            sockets.append(conn.sock)
            response = conn.getresponse()
            replies.append((response.status, json.loads(response.read()), response.getheader("Connection")))
    finally:
        conn.close()
    assert all(status == 200 and reply["Err"] == "" and header == "close" for status, reply, header in replies)
    assert len(set(map(id, sockets))) == 5, "a connection served two requests"
    assert plugin.call("Get", Name="kept")["Volume"]["Status"]["mounts"] == 5


def test_a_mount_that_walks_keeps_no_other_request_waiting(bare_plugin):
    """Two workers: while one's Mount walks (and repairs) 20,000 wrongly owned files, a Get on another connection
    is answered by the other, and the Mount's own reply comes after."""
    plugin = bare_plugin(OWNVOL_WORKERS="2")
    plugin.call("Create", Name="big", Opts={"profile": "redis"})
    data = plugin.data_dir("big")
    for d in range(20):
        os.mkdir(data / f"d{d}")
        for f in range(1000):
            os.close(os.open(data / f"d{d}" / f"f{f}", os.O_CREAT | os.O_WRONLY, 0o600))
    os.chown(data, 0, 0)  # the root is wrong: the Mount walks
    walking = UnixHTTPConnection(plugin.socket, timeout=120)
    other = UnixHTTPConnection(plugin.socket, timeout=120)
    try:
        walking.request("POST", "/VolumeDriver.Mount", body=json.dumps({"Name": "big", "ID": "w"}))
        other.request("POST", "/VolumeDriver.Get", body=json.dumps({"Name": "big"}))
        got = json.loads(other.getresponse().read())
        mount_waiting = not select.select([walking.sock], [], [], 0)[0]
        mounted = json.loads(walking.getresponse().read())
    finally:
        walking.close()
        other.close()
    assert got["Err"] == "" and mounted == {"Mountpoint": str(data), "Err": ""}
    assert mount_waiting, "the Get was answered only after the walk"
    assert os.stat(data / "d19" / "f999").st_uid == 999
    assert plugin.call("Get", Name="big")["Volume"]["Status"]["last_repair"]["changed"] >= 20_000


def _children(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return {int(p) for p in f.read().split()}
    except OSError:
        return set()


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_workers_do_not_outlive_their_arbiter_and_a_driver_started_after_takes_over(bare_plugin):
    """The arbiter alone killed (SIGKILL): its workers stop within seconds instead of serving the socket
    unsupervised, and a driver started at once serves it (issue 27, defect 3)."""
    from ownvol.driver.serve import answers
    from tests.support.engine import wait_for

    plugin = bare_plugin()
    plugin.call("Create", Name="kept", Opts={})
    arbiter = plugin.proc.pid
    workers = wait_for(lambda: len(_children(arbiter)) == 2 and _children(arbiter), 30, what="two workers")
    os.kill(arbiter, signal.SIGKILL)
    plugin.proc.wait()
    plugin.proc = None
    plugin.start()  # answered at once while orphans serve: the new driver's own start is waited for below
    wait_for(lambda: not any(_running(pid) for pid in workers), 5, what="the dead arbiter's workers to stop")
    wait_for(lambda: plugin.proc.poll() is None and len(_children(plugin.proc.pid)) == 2 and answers(plugin.socket),
             30, what="the new driver")
    assert [v["Name"] for v in plugin.call("List")["Volumes"]] == ["kept"]
    assert _children(plugin.proc.pid).isdisjoint(workers)


_ORPHAN = """
import os, socket, sys
listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listening.bind(sys.argv[1])
listening.listen(8)
child = os.fork()
if child:  # the arbiter that listened dies; its worker serves on
    print(child, flush=True)
    os._exit(0)
devnull = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(devnull, fd)
body = b'{"Implements": ["VolumeDriver"], "Err": ""}'
head = b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\nConnection: close\\r\\n\\r\\n" % len(body)
while True:  # one request a connection (a head, then Content-Length bytes), answered 200 whatever it asks
    conn, _ = listening.accept()
    with conn, conn.makefile("rb") as reader:
        length = 0
        try:
            for line in iter(reader.readline, b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                if line == b"\\r\\n":
                    reader.read(length)
                    conn.sendall(head + body)
                    break
        except OSError:
            pass
"""


def test_a_driver_takes_over_a_socket_that_only_orphans_serve(bare_plugin):
    """A socket answered by a process whose listener died (a worker of a killed arbiter, of any version) is
    taken over: the orphan is stopped and the new driver serves. A live driver is still refused (above)."""
    import subprocess
    import sys

    from ownvol.driver.serve import answers
    from tests.support.engine import wait_for

    plugin = bare_plugin()
    plugin.stop()
    if os.path.exists(plugin.socket):
        os.unlink(plugin.socket)
    started = subprocess.run([sys.executable, "-c", _ORPHAN, plugin.socket], capture_output=True, text=True,
                             timeout=30, check=True)
    orphan = int(started.stdout)
    try:
        assert answers(plugin.socket) and _running(orphan)
        plugin.start()  # answered at once by the orphan: the new driver's own start is waited for below
        wait_for(lambda: not _running(orphan), 30, what="the orphan to be stopped")
        wait_for(lambda: plugin.proc.poll() is None and answers(plugin.socket), 30, what="the new driver")
        assert plugin.call("List")["Volumes"] == []
        assert "event=orphans-stopped" in plugin.log()
    finally:
        if _running(orphan):
            os.kill(orphan, signal.SIGKILL)


def test_the_served_store_checkpoints_after_a_reply_not_inside_a_commit(bare_plugin, tmp_path):
    """One worker: after CHECKPOINT_EVERY commits of its own (a Create commits twice, a Mount once) the next reply
    is followed by a checkpoint, which leaves the references counted so far in the database file itself; the
    references counted after it are in the WAL only, SQLite's own checkpoint off."""
    plugin = bare_plugin(OWNVOL_WORKERS="1")
    plugin.call("Create", Name="v", Opts={})
    mounts = CHECKPOINT_EVERY + 40
    for i in range(mounts):
        plugin.call("Mount", Name="v", ID=f"m{i}")
    deadline = time.monotonic() + 10
    while True:
        rows = rows_in_the_file_alone(plugin.root / "ownvol.db", tmp_path,
                                      "SELECT COUNT(*) FROM mounts WHERE volume = 'v'")
        in_file = rows[0][0] if rows else 0
        if in_file or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert CHECKPOINT_EVERY - 2 <= in_file < mounts, in_file
    assert plugin.call("Get", Name="v")["Volume"]["Status"]["mounts"] == mounts


@pytest.mark.parametrize("queued", [False, True])
def test_a_worker_stopped_before_gunicorn_s_own_handlers_stops_at_once(queued):
    """serve._forked, in a forked child as gunicorn's post_fork runs it: the arbiter's SIGTERM handler the child
    inherited (which only queues the signal, so a worker met by a stop before its own handlers served on for the
    whole graceful timeout) gives way to SIGTERM's default, and a SIGTERM it had already queued ends the child."""
    pid = os.fork()
    if pid == 0:
        try:
            arbiter = SimpleNamespace(SIG_QUEUE=queue.SimpleQueue(), pid=os.getppid())
            signal.signal(signal.SIGTERM, lambda sig, frame: arbiter.SIG_QUEUE.put_nowait(sig))
            if queued:
                os.kill(os.getpid(), signal.SIGTERM)  # before post_fork: queued by the arbiter's handler
            serve._forked(arbiter)
            if not queued:
                os.kill(os.getpid(), signal.SIGTERM)  # after it
            time.sleep(5)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, status
