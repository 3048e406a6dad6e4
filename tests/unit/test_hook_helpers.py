"""Whose a repair helper is (hooks/repair_helpers.py): the labels naming its hook, and whether that hook still runs,
told from real processes here and from a /proc tree written out for the pid namespaces this machine cannot show."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

from ownvol.hook.repair_helpers import (
    INIT_PIDNS,
    HookProcess,
    helper_labels,
    own_container,
    owner_alive,
    start_time,
    this_process,
)


def child() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def as_owner(pid: int) -> HookProcess:
    return dataclasses.replace(this_process(), instance="another", pid=pid, start=start_time(pid))


def test_labels_name_this_process_and_read_back():
    labels = helper_labels("redis-1", "abc123")
    assert labels["ownvol.role"] == "repair-helper" and labels["ownvol.watch"] == "false"
    assert labels["ownvol.repair.for"] == "redis-1" and labels["ownvol.repair.container"] == "abc123"
    me = HookProcess.from_labels(labels)
    assert me == this_process() and me.pid == os.getpid()
    assert me.start == Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]


def test_labels_without_a_field_name_no_hook():
    labels = helper_labels("redis-1", "abc123")
    del labels["ownvol.helper.start"]
    assert HookProcess.from_labels(labels) is None
    assert HookProcess.from_labels({**helper_labels("r", "i"), "ownvol.helper.pid": "one"}) is None


def test_a_running_hook_is_alive_and_a_killed_one_gone():
    proc = child()
    try:
        owner = as_owner(proc.pid)
        assert owner_alive(owner, this_process())[0] is True
    finally:
        proc.kill()
        proc.wait()
    alive, why = owner_alive(owner, this_process())
    assert alive is False and str(proc.pid) in why


def test_a_reused_pid_is_not_the_hook():
    proc = child()
    try:
        owner = dataclasses.replace(as_owner(proc.pid), start=str(int(start_time(proc.pid)) - 1))
        assert owner_alive(owner, this_process())[0] is False
    finally:
        proc.kill()
        proc.wait()


def test_another_boot_an_unknown_start_or_an_unseen_namespace_cannot_be_told():
    me = this_process()
    assert owner_alive(dataclasses.replace(me, instance="x", boot="another-boot"), me)[0] is None
    assert owner_alive(dataclasses.replace(me, instance="x", start=""), me)[0] is None
    inside = dataclasses.replace(me, pidns="pid:[4026532999]")  # this hook in a container of its own
    assert owner_alive(dataclasses.replace(me, instance="x", pidns="pid:[4026533000]"), inside)[0] is None


def fake_proc(root: Path, processes: dict[int, tuple[str, str, int]]) -> Path:
    """A /proc with, per host pid, (pid namespace, start time, pid in that namespace)."""
    for pid, (pidns, start, nspid) in processes.items():
        d = root / str(pid)
        (d / "ns").mkdir(parents=True)
        (d / "stat").write_text(f"{pid} (python3) S " + " ".join(["0"] * 18 + [start, "0"]) + "\n")
        (d / "status").write_text(f"Name:\tpython3\nNSpid:\t{pid}\t{nspid}\n")
        os.symlink(pidns, d / "ns" / "pid")
    return root


def test_from_the_initial_namespace_a_container_hook_is_found_by_namespace_pid_and_start(tmp_path):
    me = dataclasses.replace(this_process(), pidns=INIT_PIDNS)
    owner = dataclasses.replace(me, instance="x", pidns="pid:[4026532100]", pid=7, start="5000")
    proc = fake_proc(tmp_path, {4100: ("pid:[4026532100]", "4990", 1), 4107: ("pid:[4026532100]", "5000", 7)})
    assert owner_alive(owner, me, str(proc))[0] is True
    assert owner_alive(dataclasses.replace(owner, start="5001"), me, str(proc))[0] is False
    assert owner_alive(dataclasses.replace(owner, pidns="pid:[4026532101]"), me, str(proc))[0] is False



def test_the_own_container_is_read_from_the_bound_etc_files_only():
    cid = "4f" * 32
    inside = (f"612 560 0:52 / / ro,relatime - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X\n"
              f"640 612 254:1 /srv/docker/containers/{cid}/resolv.conf /etc/resolv.conf rw,relatime - ext4 "
              f"/dev/vda1 rw\n")
    assert own_container(inside) == cid
    assert own_container(f"25 1 254:1 /srv/docker/containers/{cid}/hostname /mnt/elsewhere rw - ext4 /dev/vda1 rw\n") \
        == ""
