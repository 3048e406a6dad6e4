"""ownvol.ownership.repair's forked walkers against one walker: the same counts, errors and final owners and
modes, on a generated tree with symlinks (to files and directories outside it), hard links, fifos, modes its
owner cannot use and an entry the kernel refuses to re-own (immutable, chattr +i) in one walker's share."""

from __future__ import annotations

import os
import random
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from ownvol.ownership import repair

pytestmark = pytest.mark.usefixtures("walk_loop")  # each test with the compiled loop and the Python one


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
def test_parallel_walk_equals_serial(tmp_path, seed, usable):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("x")
    trees = {w: tmp_path / f"w{w}" for w in (1, 2, 3)}
    for tree in trees.values():
        _generate(tree, outside, seed)
    reports = {w: repair(str(tree), 999, 998, 0o750, workers=w, usable=usable) for w, tree in trees.items()}
    assert _outcome(reports[1])["visited"] > 20
    assert _outcome(reports[2]) == _outcome(reports[1]) == _outcome(reports[3])
    assert _state(trees[2]) == _state(trees[1]) == _state(trees[3])
    assert os.lstat(outside / "secret").st_uid == 0 and os.lstat(outside).st_uid == 0


@pytest.mark.skipif(shutil.which("chattr") is None, reason="chattr (e2fsprogs) is not installed")
def test_errors_in_each_walker_are_reported_as_by_one_walker(tmp_path):
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
    assert reports[1].errors == ["stuck: Operation not permitted"] * 8
    assert _outcome(reports[2]) == _outcome(reports[1])
    assert _state(trees[2]) == _state(trees[1])
