"""ownvol.ownership.repair's forked walkers against one walker: the same counts, errors and final owners and
modes, on a generated tree with symlinks (to files and directories outside it), hard links, fifos, modes its
owner cannot use and an entry the kernel refuses to re-own (immutable, chattr +i) in one walker's share."""

from __future__ import annotations

import os
import random
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from ownvol import ownership
from ownvol.ownership import RepairReport, repair, tree_owned_by

pytestmark = pytest.mark.usefixtures("walk_loop")  # each test with the compiled loop and the Python one


@pytest.fixture
def forks(monkeypatch) -> list[int]:
    """os.fork counted: one item a fork the repair made."""
    made: list[int] = []
    fork = os.fork

    def counted() -> int:
        made.append(1)
        return fork()

    monkeypatch.setattr(os, "fork", counted)
    return made


@pytest.fixture
def small_units(monkeypatch) -> None:
    """Units of 8 entries: the generated trees (a few hundred entries) are shared among the walkers, and their
    directories cut into several chunks, as a volume of millions of files is with the real size."""
    monkeypatch.setattr(ownership, "_CHUNK", 8)


def _generate(root: Path, outside: Path, seed: int) -> None:
    """root: 8 subtrees of random depth with files, symlinks (inside, outside, dangling), hard links to a file
    outside, fifos and unusable modes; all root:root."""
    rng = random.Random(seed)
    root.mkdir()
    for i in range(8):
        d = root / f"d{i}"
        for depth in range(rng.randint(1, 4)):
            d = d / f"s{depth}"
            d.mkdir(parents=True, exist_ok=True)
            for j in range(rng.randint(0, 12)):
                f = d / f"f{j}"
                f.write_text("x")
                if rng.random() < 0.2:
                    f.chmod(0o400)
            if rng.random() < 0.5:
                os.symlink(outside / "secret", d / "to-outside-file")
                os.symlink(outside, d / "to-outside-dir")
                os.symlink("nowhere", d / "dangling")
            if rng.random() < 0.3:
                os.link(outside / "secret", d / "hard")
            if rng.random() < 0.3:
                os.mkfifo(d / "fifo")
            if rng.random() < 0.2:
                d.chmod(0o500)


def _state(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path below root (links not followed): (uid, gid, mode)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            found[os.path.relpath(os.path.join(dirpath, name), root)] = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
    return found


def _outcome(report) -> dict:
    return {**{k: v for k, v in report.counts().items() if k not in ("errors", "modes")},
            "errors": sorted(report.errors), "modes": sorted(report.modes)}


@pytest.mark.parametrize("usable", [False, True])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_parallel_walk_equals_serial(tmp_path, seed, usable, small_units, forks):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("x")
    trees = {w: tmp_path / f"w{w}" for w in (1, 2, 3)}
    for tree in trees.values():
        _generate(tree, outside, seed)
    reports = {w: repair(str(tree), 999, 998, 0o750, workers=w, usable=usable) for w, tree in trees.items()}
    assert len(forks) == 1 + 2  # the second walker of workers=2, the second and third of workers=3
    assert _outcome(reports[1])["visited"] > 20
    assert _outcome(reports[2]) == _outcome(reports[1]) == _outcome(reports[3])
    assert _state(trees[2]) == _state(trees[1]) == _state(trees[3])
    assert os.lstat(outside / "secret").st_uid == 0 and os.lstat(outside).st_uid == 0


@pytest.mark.skipif(shutil.which("chattr") is None, reason="chattr (e2fsprogs) is not installed")
def test_errors_in_each_walker_are_reported_as_by_one_walker(tmp_path, small_units, forks):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("x")
    trees = {w: tmp_path / f"w{w}" for w in (1, 2)}
    stuck = []
    for tree in trees.values():
        _generate(tree, outside, 4)
        for i in range(8):  # one in every subtree: in the parent's share and in the forked walker's
            target = tree / f"d{i}" / "s0" / "stuck"
            target.write_text("x")
            if subprocess.run(["chattr", "+i", str(target)], capture_output=True).returncode != 0:
                pytest.skip("this filesystem has no immutable flag")
            stuck.append(target)
    try:
        reports = {w: repair(str(tree), 999, 998, workers=w) for w, tree in trees.items()}
    finally:
        for target in stuck:
            subprocess.run(["chattr", "-i", str(target)], check=True)
    assert reports[1].errors == ["stuck: Operation not permitted"] * 8 and forks == [1]
    assert _outcome(reports[2]) == _outcome(reports[1])
    assert _state(trees[2]) == _state(trees[1])


def _wide(root: Path, dirs: int, files: int) -> None:
    """root: `dirs` directories of `files` empty files each, all root:root."""
    for i in range(dirs):
        (root / f"d{i:03d}").mkdir(parents=True)
        for j in range(files):
            (root / f"d{i:03d}" / f"f{j}").touch()


def test_a_walker_slowed_down_takes_fewer_units(tmp_path, monkeypatch):
    """The walkers take units from one queue: the forked one, made slow here, walks fewer than a quarter of them
    (none at all when the parent has emptied the queue before it starts), where a fixed split would give it half."""
    root = tmp_path / "vol"
    _wide(root, 40, 3)
    walked_by = tmp_path / "walked-by"
    parent = os.getpid()
    walk_batch = ownership._walk_batch

    def slow_child(batch, *args):
        with open(walked_by, "a") as log:
            log.write(f"{os.getpid() == parent}\n")
        if os.getpid() != parent:
            time.sleep(0.05)
        walk_batch(batch, *args)

    monkeypatch.setattr(ownership, "_walk_batch", slow_child)
    report = repair(str(root), 999, 999, workers=2)
    walkers = walked_by.read_text().split()
    assert len(walkers) == 40 and walkers.count("False") < 10
    assert report.changed == 1 + 40 * 4 and tree_owned_by(str(root), 999, 999) == []


@pytest.mark.parametrize("after", [0, 2])
def test_the_units_of_a_walker_that_dies_are_walked_again(tmp_path, monkeypatch, after):
    """A forked walker killed after `after` units of its own (its counts and the batches it walked never sent):
    every unit it took is walked again by the parent, so the tree ends as one walker leaves it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("x")
    trees = {w: tmp_path / f"w{w}" for w in (1, 2)}
    for tree in trees.values():
        _generate(tree, outside, 5)
        _wide(tree / "wide", 30, 2)
    serial = repair(str(trees[1]), 999, 998, workers=1)
    died = tmp_path / "died"
    parent = os.getpid()
    walk_batch = ownership._walk_batch
    walked = []

    def dying_child(batch, *args):
        if os.getpid() != parent:
            if len(walked) == after:
                died.write_text("x")
                os._exit(3)
            walked.append(batch)
        else:
            time.sleep(0.02)  # leaves the child units to take
        walk_batch(batch, *args)

    monkeypatch.setattr(ownership, "_walk_batch", dying_child)
    report = repair(str(trees[2]), 999, 998, workers=2)
    assert died.exists()
    assert _state(trees[2]) == _state(trees[1])
    assert report.visited == serial.visited and report.errors == serial.errors
    assert os.lstat(outside / "secret").st_uid == 0


def test_a_tree_with_few_subtrees_is_cut_below_its_root(tmp_path):
    """One directory at the root holding the whole tree: five small directories and a flat one of 2,500 files. The
    planning enters directories until there are units enough or none left to enter, cutting a large directory's
    entries into chunks; the tree ends as one walker leaves it."""
    trees = {w: tmp_path / f"w{w}" for w in (1, 2, "plan")}
    for tree in trees.values():
        _wide(tree / "all", 5, 2)
        flat = tree / "all" / "flat"
        flat.mkdir()
        for j in range(2500):
            (flat / f"f{j}").touch()
    fd = os.open(trees["plan"], os.O_RDONLY | os.O_DIRECTORY)
    try:
        units, opened = ownership._plan(fd, os.fstat(fd).st_dev, ownership._Fix(999, 999),
                                        RepairReport(str(trees["plan"])), 16)
        for held in opened:
            os.close(held)
    finally:
        os.close(fd)
    assert sorted(len(unit.entries) for unit in units) == [2, 2, 2, 2, 2, 500, 1000, 1000]
    reports = {w: repair(str(trees[w]), 999, 999, workers=w) for w in (1, 2)}
    assert _outcome(reports[2]) == _outcome(reports[1])
    assert _state(trees[2]) == _state(trees[1]) and tree_owned_by(str(trees[2]), 999, 999) == []


def test_a_small_tree_is_walked_without_a_fork(tmp_path, forks):
    """A data dir of a few files (Redis's: a dump and an append-only dir) is planned whole and walked by the repair's
    own process; a tree with a subtree the planning did not enter is shared."""
    small = tmp_path / "small"
    (small / "appendonlydir").mkdir(parents=True)
    for name in ("appendonlydir/a.1.base.rdb", "appendonlydir/a.1.incr.aof", "appendonlydir/a.manifest", "dump.rdb"):
        (small / name).touch()
    large = tmp_path / "large"
    _wide(large, 20, 2)
    assert repair(str(small), 999, 999, workers=2).changed == 1 + 5 and forks == []
    assert tree_owned_by(str(small), 999, 999) == []
    assert repair(str(large), 999, 999, workers=2).changed == 1 + 20 * 3 and forks == [1]
    assert tree_owned_by(str(large), 999, 999) == []
