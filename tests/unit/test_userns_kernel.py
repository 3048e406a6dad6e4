"""The map the kernel applies (/proc/PID/uid_map, gid_map: user_namespaces(7)) and what the hook does with it."""

from __future__ import annotations

import os
import time
from dataclasses import replace

import pytest

from ownvol.hook import executor as executor_module
from ownvol.hook.actions import Context, repair_ownership
from ownvol.hook.executor import DockerExecutor
from ownvol.hook.model import DataMount
from ownvol.hook.targets import Target
from ownvol.userns import ALL_IDS, IdMap, UnknownMapping, listener_pid, parse_map, rootless

# what /proc/PID/uid_map of a rootless engine's container shows from the host (dockerd-rootless.sh as uid 1001 with
# `ovrl:100000:65536` and `ovrl:300000:65536` in /etc/subuid: rootlesskit maps 0 to the user, then each range)
ROOTLESS = "         0       1001          1\n         1     100000      65536\n     65537     300000      65536\n"


def test_the_initial_namespace_maps_every_id_to_itself():
    ranges = parse_map("         0          0 4294967295\n")
    mapping = IdMap(ranges, ranges)
    assert ranges == ((0, 0, ALL_IDS),) and mapping.identity
    assert mapping.host_ids(999, 999) == (999, 999) and mapping.inside_ids(100998, 5) == (100998, 5)


def test_a_remap_range_maps_both_ways():
    ranges = parse_map("0 100000 65536")
    mapping = IdMap(ranges, ranges)
    assert not mapping.identity
    assert mapping.host_ids(0, 0) == (100000, 100000)
    assert mapping.host_ids(999, 65535) == (100999, 165535)
    assert mapping.inside_ids(100999, 100000) == (999, 0)


def test_a_multi_line_map_rootless_engine():
    ranges = parse_map(ROOTLESS)
    assert ranges == ((0, 1001, 1), (1, 100000, 65536), (65537, 300000, 65536))
    mapping = IdMap(ranges, ranges)
    assert mapping.host_ids(0, 0) == (1001, 1001)  # the container's root is the user who runs the engine
    assert mapping.host_ids(999, 999) == (100998, 100998)  # inside 999 is the 999th id of the first range
    assert mapping.host_ids(65536, 65537) == (165535, 300000)  # the last id of one range, the first of the next
    assert mapping.inside_ids(100998, 300001) == (999, 65538)
    assert IdMap.parse(str(mapping)) == mapping


@pytest.mark.parametrize("uid, gid, words", [(131073, 0, "uid 131073 is unmapped"), (0, 200000, "gid 200000 is "
                                                                                                  "unmapped")])
def test_an_id_outside_every_range_is_unmapped(uid, gid, words):
    mapping = IdMap(parse_map(ROOTLESS), parse_map(ROOTLESS))
    with pytest.raises(UnknownMapping, match=words):
        mapping.host_ids(uid, gid)


@pytest.mark.parametrize("host", [0, 999, 1000, 165536, 299999])
def test_a_host_id_no_id_inside_is_is_unmapped(host):
    mapping = IdMap(parse_map(ROOTLESS), parse_map(ROOTLESS))
    with pytest.raises(UnknownMapping, match=f"host uid {host} is unmapped"):
        mapping.inside_ids(host, 1001)


@pytest.mark.parametrize("text, words", [
    ("0 1000", "is not `inside outside count`"),
    ("0 1000 1 7", "is not `inside outside count`"),
    ("0 -1 1", "is not `inside outside count`"),
    ("0 1000 0", "a range of 1 to"),
    ("0 4294967295 2", "a range of 1 to"),
    ("0 1000 10\n5 5000 10", "overlap inside"),
    ("0 1000 10\n10 1005 10", "overlap outside"),
])
def test_a_map_the_kernel_would_not_write_is_refused(text, words):
    with pytest.raises(ValueError, match=words):
        parse_map(text)


def test_an_empty_map_maps_nothing():
    assert parse_map("") == ()


def _fake_proc(tmp_path, pid: int, uid_map: str, gid_map: str, same_namespace: bool = False):
    (tmp_path / str(pid) / "ns").mkdir(parents=True)
    (tmp_path / "self" / "ns").mkdir(parents=True)
    (tmp_path / str(pid) / "ns" / "user").write_text("")
    if same_namespace:
        os.link(tmp_path / str(pid) / "ns" / "user", tmp_path / "self" / "ns" / "user")
    else:
        (tmp_path / "self" / "ns" / "user").write_text("")
    (tmp_path / str(pid) / "uid_map").write_text(uid_map)
    (tmp_path / str(pid) / "gid_map").write_text(gid_map)
    return str(tmp_path)


def test_a_process_map_is_read_from_its_files(tmp_path):
    proc = _fake_proc(tmp_path, 42, ROOTLESS, "0 1001 1\n1 100000 65536\n")
    mapping = IdMap.from_process(42, proc)
    assert mapping.host_ids(999, 999) == (100998, 100998)
    assert mapping.uids == parse_map(ROOTLESS) and mapping.gids == ((0, 1001, 1), (1, 100000, 65536))


def test_a_process_in_our_own_namespace_is_the_identity(tmp_path):
    """Its uid_map would name the parent namespace's ids, which are not ours (user_namespaces(7))."""
    proc = _fake_proc(tmp_path, 42, ROOTLESS, ROOTLESS, same_namespace=True)
    assert IdMap.from_process(42, proc).identity


@pytest.mark.parametrize("uid_map, gid_map, words", [
    ("", "0 1001 1", "maps no uid yet"),
    ("0 1001 1", "", "maps no gid yet"),
    ("0 1001", "0 1001 1", "cannot be read: line 1"),
])
def test_a_process_map_that_cannot_be_used_is_unknown(tmp_path, uid_map, gid_map, words):
    with pytest.raises(UnknownMapping, match=words):
        IdMap.from_process(42, _fake_proc(tmp_path, 42, uid_map, gid_map))
    with pytest.raises(UnknownMapping, match="cannot be read"):
        IdMap.from_process(43, str(tmp_path))


def test_the_real_processes_map():
    """This process's and its child's map are the identity (the same namespace), read from the real /proc."""
    import subprocess
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert IdMap.from_process(os.getpid()).identity and IdMap.from_process(child.pid).identity
    finally:
        child.kill()
        child.wait()


def test_a_rootless_engine_is_told_by_docker_info():
    assert rootless({"SecurityOptions": ["name=seccomp,profile=default", "name=rootless"]})
    assert not rootless({"SecurityOptions": ["name=seccomp,profile=default", "name=userns"]})
    assert not rootless({})


def test_the_listener_of_a_unix_socket(tmp_path):
    import socket
    path = str(tmp_path / "s.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    try:
        assert listener_pid(path) == os.getpid()
    finally:
        server.close()
    assert listener_pid(str(tmp_path / "none.sock")) is None


def _rootless_executor(monkeypatch, kernel: IdMap) -> DockerExecutor:
    executor = DockerExecutor(client=lambda: None)
    executor._idmap, executor._idmap_at, executor._rootless = None, time.monotonic(), True
    executor._maps["c0ffee"] = (4242, kernel)
    monkeypatch.setattr(executor_module, "engine_paths_reachable", lambda: True)
    return executor


TARGET = Target("c0ffee", "case25", "ownvol/redis:7", "restarting", {}, None, None, "/data", None, 999, 999, "user",
                False)


def test_a_rootless_containers_configured_owner_is_mapped_through_the_kernels_map(monkeypatch):
    kernel = IdMap(parse_map(ROOTLESS), parse_map(ROOTLESS))
    host = _rootless_executor(monkeypatch, kernel)._in_host_ids(TARGET)
    assert (host.uid, host.gid, host.remapped, host.engine_ids) == (100998, 100998, True, (999, 999))
    assert host.owner_source.startswith("user, host ids of 999:999 under rootless")


def test_a_rootless_servers_process_owner_is_in_host_ids_and_checked_against_the_map(monkeypatch):
    """A process's ids are read from this host's /proc (targets._look_for_server): host ids, not mapped again;
    host ids no id inside is (0:0 here) make the owner unknown, never 0."""
    kernel = IdMap(parse_map(ROOTLESS), parse_map(ROOTLESS))
    executor = _rootless_executor(monkeypatch, kernel)
    process = replace(TARGET, owner_source="process", uid=100998, gid=100998, server_pid=4242)
    seen = executor._in_host_ids(process)
    assert (seen.uid, seen.gid, seen.remapped, seen.engine_ids) == (100998, 100998, True, (999, 999))
    assert seen.owner_source.startswith("process (host ids of 999:999 under rootless")
    unmapped = executor._in_host_ids(replace(process, uid=0, gid=0))
    assert (unmapped.uid, unmapped.gid, unmapped.remapped) == (None, None, False)
    assert "host uid 0 is unmapped" in unmapped.notes[-1] and "nothing is repaired" in unmapped.notes[-1]
    monkeypatch.setattr(executor_module, "engine_paths_reachable", lambda: False)
    unseen = executor._in_host_ids(process)
    assert unseen.uid is None and "this host's /proc cannot tell them" in unseen.notes[-1]


def test_a_rootless_engine_whose_map_cannot_be_read_repairs_nothing(monkeypatch):
    executor = _rootless_executor(monkeypatch, IdMap.identity_map())
    executor._maps.clear()
    monkeypatch.setattr(executor_module, "engine_paths_reachable", lambda: False)
    seen = executor._in_host_ids(TARGET)
    assert (seen.uid, seen.gid, seen.owner_source) == (None, None, "unknown under rootless")
    assert "rootless (docker info: name=rootless)" in seen.notes[-1]
    skipped = repair_ownership(Context(None, replace(seen, mount=DataMount("bind", "/srv/x", "/data", ""))))
    assert skipped.result == "skipped" and "never repairs to a guess (the engine maps ids (rootless): the engine " \
        "is rootless" in skipped.detail["why"]


def test_an_engine_whose_kernel_map_is_the_identity_keeps_the_ids(monkeypatch):
    executor = _rootless_executor(monkeypatch, IdMap.identity_map())
    assert executor._in_host_ids(TARGET) == TARGET


def test_a_rootless_container_never_seen_running_takes_the_engines_own_map(monkeypatch):
    """Down between restarts (State.Pid 0) and never read: a rootless engine's containers share its namespace, so
    the map of dockerd, the listener on the engine's socket (SO_PEERCRED), is theirs."""
    kernel = IdMap(parse_map(ROOTLESS), parse_map(ROOTLESS))
    executor = _rootless_executor(monkeypatch, kernel)
    executor._maps.clear()
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/user/1001/docker.sock")
    asked: list = []
    monkeypatch.setattr(executor_module.userns, "listener_pid", lambda path: asked.append(path) or 777)
    monkeypatch.setattr(executor_module.IdMap, "from_process",
                        staticmethod(lambda pid, proc="/proc": asked.append(pid) or kernel))
    host = executor._in_host_ids(TARGET, pid=0)
    assert asked == ["/run/user/1001/docker.sock", 777]
    assert (host.uid, host.gid, host.engine_ids) == (100998, 100998, (999, 999))
