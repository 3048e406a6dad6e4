"""ownvol.ownership: the root check and the symlink-safe repair walk that the driver and the hook share."""

from __future__ import annotations

import os
import subprocess

import pytest

from ownvol import ownership
from ownvol.ownership import OwnershipError, RepairReport, inspect_root, repair, tree_owned_by

pytestmark = pytest.mark.usefixtures("walk_loop")  # each test with the compiled loop and the Python one


def owner(path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


@pytest.fixture
def tree(tmp_path):
    """root/{a/{b/deep.txt, f.txt}, top.txt, fifo}, all root:root."""
    root = tmp_path / "vol"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "deep.txt").write_text("x")
    (root / "a" / "f.txt").write_text("x")
    (root / "top.txt").write_text("x")
    os.mkfifo(root / "fifo")
    return root


def test_inspect_root(tree):
    state = inspect_root(str(tree), 0, 0)
    assert state.ok and (state.uid, state.gid) == (0, 0)
    os.chmod(tree, 0o700)
    state = inspect_root(str(tree), 999, 999, 0o755)
    assert not state.ok and state.problems == ["owner 0:0, want 999:999", "mode 0700, want 0755"]


@pytest.mark.parametrize("kind,words", [("missing", "does not exist"), ("link", "is a symlink"),
                                        ("file", "not a directory")])
def test_a_root_that_cannot_be_checked(tmp_path, kind, words):
    path = tmp_path / "root"
    if kind == "link":
        os.symlink(tmp_path, path)
    elif kind == "file":
        path.write_text("x")
    with pytest.raises(OwnershipError, match=words):
        inspect_root(str(path), 0, 0)
    with pytest.raises(OwnershipError, match=words if kind != "file" else "cannot open"):
        repair(str(path), 999, 999)


def test_repair_gives_the_whole_tree_and_mode_applies_to_the_root_only(tree):
    os.chmod(tree / "a", 0o711)
    report = repair(str(tree), 999, 998, 0o750)
    assert isinstance(report, RepairReport)
    assert tree_owned_by(str(tree), 999, 998) == [] and owner(tree) == (999, 998)
    assert os.stat(tree).st_mode & 0o7777 == 0o750 and os.stat(tree / "a").st_mode & 0o7777 == 0o711
    assert (report.changed, report.visited, report.errors) == (7, 7, [])
    assert repair(str(tree), 999, 998, 0o750).changed == 0


def test_walk_false_touches_the_root_only(tree):
    report = repair(str(tree), 999, 999, walk=False)
    assert report.changed == 1 and owner(tree) == (999, 999) and owner(tree / "top.txt") == (0, 0)


@pytest.mark.parametrize("workers", [1, 4])
def test_workers_change_nothing_but_speed(tmp_path, workers):
    root = tmp_path / "vol"
    for i in range(6):
        (root / f"d{i}" / "sub").mkdir(parents=True)
        (root / f"d{i}" / "sub" / "f").write_text("x")
    report = repair(str(root), 999, 999, workers=workers)
    assert report.changed == 1 + 6 * 3 and tree_owned_by(str(root), 999, 999) == []


@pytest.mark.parametrize("workers", [1, 3])
def test_progress_counts_every_walkers_entries_and_ends_with_the_report(tmp_path, workers):
    root = tmp_path / "vol"
    for i in range(6):
        for j in range(20):
            (root / f"d{i}" / f"s{j}").mkdir(parents=True)
            (root / f"d{i}" / f"s{j}" / "f").write_text("x")
    seen: list[tuple[int, int]] = []
    report = repair(str(root), 999, 999, workers=workers, progress=lambda v, c: seen.append((v, c)),
                    progress_every=0)
    assert len(seen) > 6  # every directory walked ticks with progress_every=0
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(seen, seen[1:], strict=False))  # never counts back
    assert seen[-1] == (report.visited, report.changed) == (1 + 6 * 41, 1 + 6 * 41)
    assert tree_owned_by(str(root), 999, 999) == []


def test_the_sum_never_counts_back_while_a_walker_stores_its_counts():
    """A forked walker stores its counts while the parent sums them (the race a three-worker repair once showed
    under load: a slot read between struct.pack_into's zeroing and its packing)."""
    seen: list[tuple[int, int]] = []
    meter = ownership._Meter(lambda v, c: seen.append((v, c)), 2, 0)
    pid = os.fork()
    if pid == 0:
        try:
            meter.slot = 1
            walker = RepairReport("/")
            for n in range(1, 200_001):
                walker.visited = walker.changed = n
                meter.tick(walker)
        finally:
            os._exit(0)
    parent = RepairReport("/")
    reaped = False
    try:
        while not reaped:
            meter.tick(parent)
            reaped = os.waitpid(pid, os.WNOHANG)[0] == pid
    finally:
        if not reaped:
            os.waitpid(pid, 0)
    meter.tick(parent)
    assert seen[-1] == (200_000, 200_000)
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(seen, seen[1:], strict=False))


def test_symlinks_are_reowned_themselves_never_their_targets(tree, decoys):
    os.symlink(decoys / "passwd", tree / "link-to-host-file")
    os.symlink(decoys / "etc", tree / "a" / "link-to-host-dir")
    os.symlink("../../../host/etc/shadow", tree / "a" / "relative-link")
    before = {p: (owner(p), os.stat(p).st_mode) for p in (decoys / "passwd", decoys / "etc", decoys / "etc" / "shadow")}
    repair(str(tree), 999, 999)
    after = {p: (owner(p), os.stat(p).st_mode) for p in before}
    assert after == before
    for link in (tree / "link-to-host-file", tree / "a" / "link-to-host-dir", tree / "a" / "relative-link"):
        assert owner(link) == (999, 999)


def test_hard_links_are_left_alone_and_reported(tree, decoys):
    os.link(decoys / "passwd", tree / "hardlink")
    report = repair(str(tree), 999, 999)
    assert owner(decoys / "passwd") == (0, 0) and report.skipped_hardlinks == 1


def test_the_walk_stays_on_one_filesystem(tree):
    other = tree / "a" / "other-fs"
    other.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "ovt", str(other)], check=True)
    try:
        (other / "file").write_text("x")
        report = repair(str(tree), 999, 999)
        assert owner(other / "file") == (0, 0) and report.skipped_other_fs == 1
    finally:
        subprocess.run(["umount", str(other)], check=True)


class Listed:
    """A directory entry as the listing saw it (not a directory), whatever the name is by the time it is opened."""

    def __init__(self, name: str) -> None:
        self.name = name

    def is_dir(self, follow_symlinks: bool = True) -> bool:
        return False


def fix_one(root, name: str) -> tuple[bool, RepairReport]:
    """ownership._fix_listed on one name of root listed as a file, as the walk calls it after the listing."""
    report = RepairReport(str(root))
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return ownership._fix_listed(fd, "", [Listed(name)], os.fstat(fd).st_dev, ownership._Fix(999, 999),
                                     report) == [name], report
    finally:
        os.close(fd)


def test_an_entry_that_vanishes_is_counted_not_fatal(tree):
    is_dir, report = fix_one(tree, "gone-meanwhile")
    assert not is_dir and report.vanished == 1 and report.errors == []


def test_a_name_swapped_for_a_directory_is_walked_not_chowned_as_a_file(tree):
    is_dir, report = fix_one(tree, "a")
    assert is_dir and owner(tree / "a") == (0, 0) and report.changed == 0


def test_tree_owned_by_lists_what_is_wrong(tree):
    assert sorted(os.path.basename(p) for p in tree_owned_by(str(tree), 0, 0)) == []
    os.chown(tree / "top.txt", 5, 5)
    assert tree_owned_by(str(tree), 0, 0) == [str(tree / "top.txt")]
