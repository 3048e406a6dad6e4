"""Issue 24 kind B, the pure logic: a server's argv and sockets from /proc, its settings from its own process
(a wrapper script's server, case 22), the container's only writable mount, and the nearest existing directory of
a data dir that does not exist yet (case 19). The engine tests: tests/engine/test_hook_layouts.py."""

from __future__ import annotations

import os
import socket

from ownvol.hook.model import DataMount, ServerProcess
from ownvol.hook.services import by_family
from ownvol.hook.targets import (
    StartFacts,
    _only_mount_instead,
    host_dir_state,
    listening_sockets,
    nearest_existing,
    only_writable_mount,
    process_argv,
    process_gone,
    read_process,
)
from tests.unit.test_hook_facts import _View, attrs


def test_argv_of_a_process_from_its_cmdline():
    assert process_argv(b"redis-server\0/etc/r.conf\0--port\0\0") == ("redis-server", "/etc/r.conf", "--port", "")
    assert process_argv(b"redis-server *:6379\0") == ("redis-server *:6379",)
    assert process_argv(b"") == ()
    assert ServerProcess(1, ("redis-server *:6379",), "/").retitled
    assert not ServerProcess(1, ("redis-server", "/etc/r.conf"), "/").retitled
    assert not ServerProcess(1, ("redis-server",), "/").retitled


TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:3F0A 00000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 4242 1 0
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 7777 1 0
   2: 0100007F:3F0A 0100007F:9C40 01 00000000:00000000 00:00000000 00000000   999        0 4243 1 0
"""
TCP6 = ("  sl  local_address remote_address st tx_queue rx_queue\n"
        "   0: 00000000000000000000000001000000:3F0A 00000000000000000000000000000000:0000 0A "
        "00000000:00000000 00:00000000 00000000   999        0 5151 1 0\n")


def test_the_listening_sockets_of_a_process_are_its_own_in_listen_state():
    assert listening_sockets(TCP, {4242, 4243}) == [("127.0.0.1", 16138)]
    assert listening_sockets(TCP6, {5151}) == [("::1", 16138)]
    assert listening_sockets(TCP, set()) == []


def test_read_process_sees_this_process_s_own_listening_socket(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        found = read_process(os.getpid())
    assert found is not None and found.cwd == str(tmp_path) and found.argv
    assert ("127.0.0.1", port) in found.listening
    assert read_process(2 ** 22 + 1) is None


WRAPPER = dict(path="/opt/bitnami/scripts/redis/entrypoint.sh", args=["/opt/bitnami/scripts/redis/run.sh"],
               image="bitnamilegacy/redis:7.4", workdir="", user="1001")


def test_a_wrapper_script_s_server_is_configured_from_its_own_argv_and_cwd():
    redis = by_family("redis")
    view = _View(attrs(**WRAPPER), {"/opt/bitnami/redis/etc/redis.conf": "port 16422\ndir /bitnami/redis/data\n"})
    assert redis.configured(view).origins["dir"] == "default"
    s = redis.from_process(view, ServerProcess(7, ("redis-server", "etc/redis.conf", "--daemonize", "no"),
                                               "/opt/bitnami/redis"))
    assert s is not None and (s.data_dir, s.address) == ("/bitnami/redis/data", "redis://127.0.0.1:16422/0")
    assert s.origins["dir"] == "/opt/bitnami/redis/etc/redis.conf:2" and s.origins["argv"] == "/proc/7/cmdline"


def test_a_retitled_server_is_reached_on_the_socket_it_listens_on():
    redis = by_family("redis")
    view = _View(attrs(**WRAPPER))
    s = redis.from_process(view, ServerProcess(7, ("redis-server 127.0.0.1:16422",), "/", (("127.0.0.1", 16422),)))
    assert s is not None and s.address == "redis://127.0.0.1:16422/0"
    assert s.origins["address"] == "process 7 listens on 127.0.0.1:16422"
    anywhere = redis.from_process(view, ServerProcess(7, ("redis-server *:7000",), "/", (("0.0.0.0", 7000),)))
    assert anywhere is not None and anywhere.address == "redis://127.0.0.1:7000/0"
    assert redis.from_process(view, ServerProcess(7, ("redis-server *:7000",), "/")) is None
    labelled = _View(attrs(**WRAPPER, labels={"ownvol.redis.url": "redis://127.0.0.1:1/0"}))
    assert redis.from_process(labelled, ServerProcess(7, ("redis-server *:7000",), "/", (("0.0.0.0", 7000),))) \
        is None


def test_the_only_writable_mount():
    bind = {"Type": "bind", "Source": "/srv/a", "Destination": "/bitnami/redis/data", "RW": True}
    ro = {"Type": "bind", "Source": "/srv/conf", "Destination": "/etc/x", "RW": False}
    tmpfs = {"Type": "tmpfs", "Destination": "/tmp", "RW": True}
    assert only_writable_mount({"Mounts": [bind, ro, tmpfs]}) == bind
    assert only_writable_mount({"Mounts": [bind, {**bind, "Destination": "/other"}]}) is None
    assert only_writable_mount({"Mounts": [ro]}) is None and only_writable_mount({}) is None


def test_a_missing_data_dir_is_repaired_at_its_nearest_existing_directory_on_the_mount(tmp_path):
    source = tmp_path / "pg"
    source.mkdir()
    mount = DataMount("bind", str(source), "/var/lib/postgresql", "17/docker")
    assert nearest_existing(mount, host_dir_state(str(source))).subpath == ""
    (source / "17").mkdir()
    assert nearest_existing(mount, host_dir_state(str(source))).subpath == "17"
    (source / "17" / "docker").mkdir()
    assert nearest_existing(mount, host_dir_state(str(source))) == mount
    at_root = DataMount("bind", str(source), "/data", "")
    assert nearest_existing(at_root, host_dir_state(str(source))) == at_root


def test_the_walk_stops_at_a_link_or_a_file_and_leaves_the_path_to_data_path(tmp_path):
    source = tmp_path / "pg"
    source.mkdir()
    (source / "17").symlink_to("/etc")
    (source / "f").write_text("")
    for sub in ("17/docker", "f/docker"):
        mount = DataMount("bind", str(source), "/var/lib/postgresql", sub)
        assert nearest_existing(mount, host_dir_state(str(source))) == mount


class _NoApi:
    api = None


def test_a_wrapper_s_data_dir_is_the_only_writable_mount_else_unknown_and_said():
    bind = {"Type": "bind", "Source": "/srv/a", "Destination": "/bitnami/redis/data", "RW": True}
    redis = by_family("redis")
    for mounts, expected in (([bind], "/bitnami/redis/data"), ([bind, {**bind, "Destination": "/b"}], "/"),
                             ([], "/")):
        a = attrs(**WRAPPER, mounts=mounts)
        origins, notes = {"dir": "default"}, []
        directory, mount = _only_mount_instead(_NoApi(), a, StartFacts(redis, redis.configured(_View(a))), "/",
                                               origins, notes)
        assert directory == expected and (mount is not None) == (expected != "/")
        assert ("no single writable bind or volume" in notes[0]) == (expected == "/")
    official = attrs(mounts=[bind])
    origins, notes = {"dir": "WORKDIR"}, []
    assert _only_mount_instead(_NoApi(), official, StartFacts(redis, redis.configured(_View(official))), "/data",
                               origins, notes) == ("/data", None) and not notes


def test_a_server_process_that_has_exited_is_looked_for_again(tmp_path):
    (tmp_path / "41").mkdir()
    assert not process_gone(41, str(tmp_path))
    assert process_gone(42, str(tmp_path))
