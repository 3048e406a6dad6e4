"""Symlink and hard-link attacks on every repair path: the walk itself, the driver's Create and Mount,
the hook's repair on the host and through its helper container.

An attacker inside a volume plants links to host files and directories (absolute, relative ones that
climb out, a hard link a host hand made), and swaps entries for links while the repair walks: a
separate process doing it as fast as it can, or a root container doing it in a loop. Whatever the
timing, no host file or directory outside the volume changes owner or mode.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from ownvol.hook.data_path import data_path
from ownvol.hook.model import DataMount
from ownvol.ownership import OwnershipError, inspect_root, repair, tree_owned_by
from tests.support.driver import NO_HOOK, create, status
from tests.support.engine import redis_cmd, wait_for
from tests.support.fixtures_hook import fast_strategies, heal_report, run_redis
from tests.support.hostile import Swapper, make_decoys, snapshot

TREE_ROUNDS = 3000
FLAT_ROUNDS = 60000  # the hard-link swap: a flat root walks ~20k times a second; a by-name chown is caught in ~8k

# What a root container does inside its volume, at /v: swap the directory d for the symlink .dl, and the file
# f for the hard link .hl (both planted beforehand), over and over, giving the real ones back to root:root.
SWAP_LOOP = """
cd /v || exit 1
touch .swapping
while :; do
  mv -T d .d 2>/dev/null; mv -T .dl d 2>/dev/null; mv -T d .dl 2>/dev/null; mv -T .d d 2>/dev/null
  chown 0:0 d 2>/dev/null
  mv -T f .f 2>/dev/null; mv -T .hl f 2>/dev/null; mv -T f .hl 2>/dev/null; mv -T .f f 2>/dev/null
  chown 0:0 f 2>/dev/null
done
"""


def _tree(root) -> None:
    for d in ("d", "d/sub", "other", "other/deep"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i in range(12):
        (root / "d" / f"f{i}").write_text("x")
        (root / "other" / f"g{i}").write_text("x")
    (root / "d" / "sub" / "h").write_text("x")
    (root / "f").write_text("the file whose name is swapped")


def plant(root, decoys) -> None:
    """The attacker's links in a volume: to host files and directories, absolute and climbing out, to /,
    a hard link to a host file (made by a host hand: a container cannot link across mounts), and the
    parked intruders .dl and .hl for SWAP_LOOP."""
    _tree(root)
    climb = "../" * 12
    for name, target in (("link-file", decoys / "passwd"), ("link-dir", decoys / "etc"), ("link-root", "/"),
                         ("link-climb", f"{climb}{str(decoys).lstrip('/')}/etc"), (".dl", decoys / "etc"),
                         ("other/deep/link-shadow", decoys / "etc" / "shadow")):
        os.symlink(target, root / name)
    os.link(decoys / "passwd", root / "hard-link")
    os.link(decoys / "etc" / "shadow", root / ".hl")
    for p in [root, *root.rglob("*")]:
        os.chown(p, 0, 0, follow_symlinks=False)


def test_a_directory_swapped_for_a_symlink_during_the_walk_is_never_entered(tmp_path, walk_loop):
    """A racing process swaps a directory for a symlink to a host directory, and a file for a symlink to a
    host file, thousands of times while repairs walk; the host entries keep their owner."""
    decoys = make_decoys(tmp_path / "host")
    vol, park = tmp_path / "vol", tmp_path / "park"
    _tree(vol)
    park.mkdir()
    os.symlink(decoys / "etc", park / "dir-link")
    os.symlink(decoys / "passwd", park / "file-link")
    before = snapshot(decoys)
    with Swapper(vol, "d", park / "dir-link", park / "d"), Swapper(vol, "f", park / "file-link", park / "f"):
        for i in range(TREE_ROUNDS):
            owner = 999 + i % 2  # a different owner every round: every entry is re-owned every time
            repair(str(vol), owner, owner)
    assert snapshot(decoys) == before
    repair(str(vol), 999, 999)  # and once the racing stops, the volume is whole and repairable
    assert tree_owned_by(str(vol), 999, 999) == []


def test_a_file_swapped_for_a_hard_link_to_a_host_file_is_never_reowned(tmp_path, walk_loop):
    """Between the look at a file (one link, wrong owner) and its chown, the name becomes a hard link to a
    host file: the chown must land on the inode that was looked at, never on the host file."""
    decoys = make_decoys(tmp_path / "host")
    vol, park = tmp_path / "vol", tmp_path / "park"
    vol.mkdir()
    park.mkdir()
    (vol / "f").write_text("x")
    os.link(decoys / "etc" / "shadow", park / "hard-link")
    before = snapshot(decoys)
    with Swapper(vol, "f", park / "hard-link", park / "f"):
        for i in range(FLAT_ROUNDS):
            repair(str(vol), 999 + i % 2, 999 + i % 2)
            if os.lstat(decoys / "etc" / "shadow").st_uid != 0:
                break
    assert snapshot(decoys) == before, f"a host file re-owned through a swapped hard link, round {i}"


def test_the_driver_adopts_and_mounts_a_tree_of_links_under_a_racing_swap(bare_plugin, tmp_path):
    """Create (adopting a directory full of links) and 300 Mounts with policy=always walking it, through the
    real plugin, while a process swaps entries for links: nothing outside the volume changes."""
    plugin = bare_plugin(OWNVOL_WORKERS="2")
    decoys = make_decoys(tmp_path / "host")
    adopted = plugin.adopt / "redis-data"
    adopted.mkdir()
    plant(adopted, decoys)
    park = tmp_path / "park"
    park.mkdir()
    os.symlink(decoys / "etc", park / "dir-link")
    before = snapshot(decoys)
    with Swapper(adopted, "d", park / "dir-link", park / "d"):
        plugin.call("Create", Name="v", Opts={"path": str(adopted), "policy": "always"})
        for i in range(300):
            plugin.call("Mount", Name="v", ID=f"m{i}")
            plugin.call("Unmount", Name="v", ID=f"m{i}")
    assert snapshot(decoys) == before
    st = plugin.call("Get", Name="v")["Volume"]["Status"]
    assert st["last_repair"] is not None and "hard-linked" in st["last_check_result"]
    assert os.lstat(adopted / "link-dir").st_uid == 999 and os.lstat(adopted / "hard-link").st_uid == 0


def test_the_hooks_way_to_a_data_dir_follows_no_link_below_the_mount(tmp_path):
    """What the hook repairs is mount source + the data dir's path below the mount: no component of that
    path may be a symlink (the container owns them), nor climb out."""
    decoys = make_decoys(tmp_path / "host")
    source = tmp_path / "source"
    (source / "a" / "data").mkdir(parents=True)
    os.symlink(decoys / "etc", source / "b")
    os.symlink(decoys / "etc" / "data", source / "a" / "linked")
    with data_path(DataMount("bind", str(source), "/bound", "a/data")) as path:
        assert repair(path, 999, 999).changed == 1 and os.stat(source / "a" / "data").st_uid == 999
    for sub, words in (("b/data", f"{source}/b is a symlink"), ("a/linked", f"{source}/a/linked is a symlink"),
                       ("../host/etc/data", "not below its mount"), ("a/missing/x", "a/missing does not exist")):
        with pytest.raises(OwnershipError, match=words):
            with data_path(DataMount("bind", str(source), "/bound", sub)) as path:
                inspect_root(path, 999, 999)
                repair(path, 999, 999)
    assert os.stat(decoys / "etc" / "data").st_uid == 0


def _swapping(container, path) -> None:
    wait_for(lambda: (path / ".swapping").exists(), 60, what="the attacker to start swapping")
    container.reload()
    assert container.status == "running", container.logs()


@pytest.mark.engine
def test_the_driver_preflight_under_a_container_swapping_links(ownvol_plugin, engine_client, ptracked, redis_image,
                                                              unique_name, tmp_path):
    """A directory swapped for a symlink to the host and a file for a hard link to a host file, in a loop, in an
    ownvol volume (policy=always). While a root container that does it holds the volume, Mounts check the root
    only and walk nothing; while a host process does it (no mount holds the volume), Mounts walk the tree under
    it, through the socket and through the engine. Nothing outside the volume changes."""
    decoys = make_decoys(tmp_path / "host")
    name = unique_name("vol")
    create(engine_client, ownvol_plugin, ptracked, name, policy="always")
    data = ownvol_plugin.data_dir(name)
    plant(data, decoys)
    before = snapshot(decoys)
    attacker = ptracked.run(redis_image, ["sh", "-c", SWAP_LOOP], user="0:0", network_mode="none", labels=NO_HOOK,
                            volumes={name: {"bind": "/v", "mode": "rw"}})
    _swapping(attacker, data)
    walked = status(engine_client, name)["last_repair"]
    for i in range(20):
        ownvol_plugin.call("Mount", Name=name, ID=f"held-{i}")
        ownvol_plugin.call("Unmount", Name=name, ID=f"held-{i}")
    st = status(engine_client, name)
    assert st["last_repair"] == walked and "held by a live mount" in st["last_check_result"]
    attacker.remove(force=True)
    (data / ".swapping").unlink()
    host_attacker = subprocess.Popen(["sh", "-c", SWAP_LOOP.replace("cd /v", f"cd {data}")])
    try:
        wait_for(lambda: (data / ".swapping").exists(), 60, what="the host attacker to start swapping")
        for i in range(40):
            ownvol_plugin.call("Mount", Name=name, ID=f"probe-{i}")
            ownvol_plugin.call("Unmount", Name=name, ID=f"probe-{i}")
        user = ptracked.run(redis_image, ["sh", "-c", "touch /v/written-as-999"], user="999:999",
                            network_mode="none", labels=NO_HOOK, volumes={name: {"bind": "/v", "mode": "rw"}})
        assert user.wait(timeout=60)["StatusCode"] == 0, user.logs()

        def a_walk_undoes_the_attack() -> bool:
            ownvol_plugin.call("Mount", Name=name, ID="probe-last")
            ownvol_plugin.call("Unmount", Name=name, ID="probe-last")
            st = status(engine_client, name)
            return st["last_repair"]["changed"] >= 1 and "hard-linked" in st["last_check_result"]

        # The attacker chowns at its own pace (a shell loop of mv): a walk right after another may find nothing to
        # give back yet (a CI rehearsal's last Mount changed 0), so Mounts go on until one walk met both.
        wait_for(a_walk_undoes_the_attack, 60, interval=0.2,
                 what="a Mount's walk to give back the attacker's chown and skip its hard link")
    finally:
        host_attacker.kill()
        host_attacker.wait()
    assert snapshot(decoys) == before


def by(name: str, kind: str):
    return lambda e: e["event"] == kind and e.get("container") == name


@pytest.mark.engine
@pytest.mark.parametrize("route", ["local", "helper"])
def test_the_hook_heals_a_canary_whose_mount_is_full_of_swapping_links(hook, tracked, redis_image, host_dir, port,
                                                                      tmp_path, ownvol_image, route):
    """The canary (root-owned bind mount) healed by the hook, here or through its helper container, while a
    root container swaps links in the same mount: the host's files keep their owner."""
    decoys = make_decoys(tmp_path / "host")
    plant(host_dir, decoys)
    before = snapshot(decoys)
    extra = ("--repair-via", route) + (("--helper-image", ownvol_image) if route == "helper" else ())
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"), extra=extra)
    attacker = tracked.run(redis_image, ["sh", "-c", SWAP_LOOP], user="0:0", network_mode="none",
                           labels={"ownvol.watch": "false"}, volumes={str(host_dir): {"bind": "/v", "mode": "rw"}})
    _swapping(attacker, host_dir)
    started = time.time()
    c = run_redis(tracked, redis_image, port, host_dir, h.labels, restart=True)
    recovered = h.wait_event(by(c.name, "recovered"), 180, "the canary to be healed")
    heal_report(f"canary among swapping links, {route}", recovered["ts"] - started)
    attacker.remove(force=True)
    assert snapshot(decoys) == before
    repairs = [e for e in h.of("action", c.name) if e["action"] == "repair-ownership"]
    assert repairs and all(e["detail"]["route"] == route for e in repairs)
    assert (host_dir.stat().st_uid, host_dir.stat().st_gid) == (999, 999)


@pytest.mark.engine
def test_the_hook_never_follows_a_symlink_above_the_data_dir(hook, tracked, redis_image, host_dir, port, tmp_path):
    """Redis keeps its data in /bound/a/data; someone with the volume swaps /bound/a for a symlink to a host
    directory that has a `data` of its own. The hook sees the data dir's owner is wrong and repairs it:
    below the mount, never through the link."""
    decoys = make_decoys(tmp_path / "host")
    (host_dir / "a" / "data").mkdir(parents=True)
    for p in (host_dir, host_dir / "a", host_dir / "a" / "data"):
        os.chown(p, 999, 999)
    before = snapshot(decoys)
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"), extra=("--repair-via", "local"))
    c = tracked.run(redis_image, redis_cmd(port, data_dir="/bound/a/data"), user="999:999", network_mode="host",
                    volumes={str(host_dir): {"bind": "/bound", "mode": "rw"}}, labels=h.labels)
    h.wait_event(lambda e: by(c.name, "health")(e) and e["state"] == "healthy", 60, "Redis healthy")
    swap = f"mv -T /bound/a /bound/a.old && ln -s {decoys}/etc /bound/a"
    attacker = tracked.run(redis_image, ["sh", "-c", swap], user="0:0", network_mode="none",
                           labels={"ownvol.watch": "false"}, volumes={str(host_dir): {"bind": "/bound", "mode": "rw"}})
    assert attacker.wait(timeout=60)["StatusCode"] == 0, attacker.logs()
    action = h.wait_event(lambda e: by(c.name, "action")(e) and e["action"] == "repair-ownership", 60,
                          "the hook to act on the data dir's owner")
    assert snapshot(decoys) == before, action
    assert action["result"] == "failed" and "symlink" in action["detail"]["error"], action
