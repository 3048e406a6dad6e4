"""ownvol/idmap.py: the swap map on paper, then real idmapped binds on this kernel (root only) on tmpfs and on
the filesystem of the temporary directory (ext4 here)."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ownvol import idmap

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="idmapped mounts need root")
_libc = ctypes.CDLL(None, use_errno=True)


def test_swap_map_swaps_the_two_ids_and_maps_every_other_to_itself() -> None:
    lines = idmap.swap_map(0, 999)
    assert lines == [(0, 999, 1), (1, 1, 998), (999, 0, 1), (1000, 1000, idmap.ID_LIMIT - 1000)]
    assert sum(count for _, _, count in lines) == idmap.ID_LIMIT
    assert idmap.swap_map(1001, 999) == [(0, 0, 999), (999, 1001, 1), (1000, 1000, 1), (1001, 999, 1),
                                        (1002, 1002, idmap.ID_LIMIT - 1002)]
    assert idmap.swap_map(5, 5) == [(0, 0, idmap.ID_LIMIT)]
    assert idmap.map_text(idmap.swap_map(7, 7)) == f"0 0 {idmap.ID_LIMIT}\n"


def test_swap_map_of_adjacent_and_extreme_ids_leaves_no_gap() -> None:
    for disk, shown in ((0, 1), (1, 0), (0, idmap.ID_LIMIT - 1), (idmap.ID_LIMIT - 2, idmap.ID_LIMIT - 1)):
        lines = idmap.swap_map(disk, shown)
        covered = sorted((inside, inside + count) for inside, _, count in lines)
        assert covered[0][0] == 0 and covered[-1][1] == idmap.ID_LIMIT
        assert all(a[1] == b[0] for a, b in zip(covered, covered[1:], strict=False))
        assert sorted((outside, outside + count) for _, outside, count in lines) == covered
    with pytest.raises(ValueError):
        idmap.swap_map(idmap.ID_LIMIT, 0)


def test_syscall_numbers_are_the_unified_ones() -> None:
    assert idmap.SYSCALLS == {"open_tree": 428, "move_mount": 429, "mount_setattr": 442, "statmount": 457}


@pytest.fixture
def open_base() -> Iterator[Path]:
    """A directory other users can search (pytest's tmp_path sits below a 0700 directory): setpriv's 999 must
    reach the mount."""
    base = Path(tempfile.mkdtemp(prefix="ownvol-idmap-", dir="/tmp"))
    base.chmod(0o711)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def tmpfs(open_base: Path) -> Iterator[Path]:
    where = open_base / "tmpfs"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "ownvol-idmap-test", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _prove_on(base: Path) -> None:
    """A tree owned 0:0 shown as 999:999: what 999 writes lands as 0:0 on disk, root writes work, nosuid,nodev."""
    base.chmod(0o711)
    back = base / "back"
    back.mkdir(mode=0o755)
    (back / "f").write_text("disk")
    (back / "other").write_text("x")
    os.chown(back / "other", 1234, 4321)
    target = base / "shown"
    idmap.idmapped_bind(str(back), str(target), idmap.Mapping(0, 0, 999, 999))
    try:
        assert idmap.root_shown(str(target)) == (999, 999)
        st = os.stat(target / "f")
        assert (st.st_uid, st.st_gid) == (999, 999)
        other = os.stat(target / "other")
        assert (other.st_uid, other.st_gid) == (1234, 4321)
        subprocess.run(["setpriv", "--reuid=999", "--regid=999", "--clear-groups", "sh", "-c",
                        f"echo by-999 > {target}/w && mkdir {target}/d"], check=True)
        for name in ("w", "d"):
            st = os.stat(back / name)
            assert (st.st_uid, st.st_gid) == (0, 0), name
            st = os.stat(target / name)
            assert (st.st_uid, st.st_gid) == (999, 999), name
        (target / "by-root").write_text("root")  # no EOVERFLOW: root is mapped (to 999 on disk)
        st = os.stat(back / "by-root")
        assert (st.st_uid, st.st_gid) == (999, 999)
        line = next(ln for ln in Path("/proc/self/mountinfo").read_text().splitlines() if f" {target} " in ln)
        options = line.split()[5].split(",")
        assert {"nosuid", "nodev", "idmapped"} <= set(options)
    finally:
        idmap.detach(str(target))
    assert not target.exists()
    assert f" {target} " not in Path("/proc/self/mountinfo").read_text()


@needs_root
def test_idmapped_bind_on_tmpfs(tmpfs: Path) -> None:
    assert idmap.idmap_supported(str(tmpfs)) == (True, "tmpfs")
    _prove_on(tmpfs)


@needs_root
def test_idmapped_bind_on_the_temporary_directorys_filesystem(open_base: Path) -> None:
    ok, fstype = idmap.idmap_supported(str(open_base))
    assert ok, fstype
    _prove_on(open_base)


@needs_root
def test_the_probe_leaves_nothing_behind(tmp_path: Path) -> None:
    def idmapped() -> list[str]:  # others on this machine mount and unmount meanwhile: look at idmapped ones only
        return [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines() if "idmapped" in ln.split()[5]]

    before = idmapped()
    for _ in range(3):
        assert idmap.idmap_supported(str(tmp_path))[0]
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()
    assert idmapped() == before
    assert os.listdir(tmp_path) == []


@needs_root
def test_the_probe_names_the_filesystem_and_errno_when_refused(tmp_path: Path) -> None:
    lower, upper, work, merged = (tmp_path / n for n in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, merged):
        d.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}",
                    str(merged)], check=True)
    try:
        ok, why = idmap.idmap_supported(str(merged))
        assert not ok
        assert "overlay" in why and "EINVAL" in why and str(merged) in why, why
        ok, why = idmap.idmap_supported(str(tmp_path / "absent"))
        assert not ok and "ENOENT" in why, why
    finally:
        subprocess.run(["umount", "-l", str(merged)], check=False)


def test_a_refusal_says_why_for_fuse_apart_from_other_filesystems() -> None:
    """EINVAL on FUSE is its server's choice (FUSE_ALLOW_IDMAP), on overlay or NFS the filesystem's; the engine test
    of bindfs (tests/engine/test_plugin_idmap_filesystems.py) sees the first for real."""
    for fstype in ("fuse", "fuse.sshfs", "fuseblk"):
        assert "FUSE_ALLOW_IDMAP" in idmap.refusal_hint(fstype, errno.EINVAL), fstype
    for fstype in ("overlay", "nfs4", "fusectl"):
        assert idmap.refusal_hint(fstype, errno.EINVAL) == " (this filesystem does not support idmapped mounts)"
    assert idmap.refusal_hint("fuse", errno.EPERM) == idmap.refusal_hint("overlay", errno.EPERM) == ""


def test_reachable_by_others(open_base: Path) -> None:
    inner = open_base / "a" / "b"
    inner.mkdir(parents=True)
    os.chmod(open_base / "a", 0o755)
    assert idmap.reachable_by_others(str(inner))
    os.chmod(open_base / "a", 0o700)
    assert idmap.reachable_by_others(str(inner)) is None


@needs_root
def test_a_user_namespace_is_kept_per_map_and_reused() -> None:
    lines = idmap.swap_map(0, 4242)
    with idmap.kept_userns(lines, lines) as first:
        pass
    with idmap.kept_userns(lines, lines) as again:
        assert again == first
    other = idmap.swap_map(0, 4243)
    with idmap.kept_userns(other, other) as second:
        assert second != first
        assert os.readlink(f"/proc/self/fd/{second}") != os.readlink(f"/proc/self/fd/{first}")
        assert Path(f"/proc/self/fd/{second}").exists()


@needs_root
def test_without_cap_setuid_and_cap_setgid_the_probe_says_so(tmp_path: Path) -> None:
    """What a unit without CAP_SETUID and CAP_SETGID (the driver's before issue 25) gets at Create: the probe as
    the driver calls it (plugin/volumes.py, _choose), in a child whose bounding and inheritable sets lack both, so
    root's execve leaves them out of its permitted set (capabilities(7)); util-linux's setpriv, on every Debian."""
    code = f"from ownvol import idmap; print(idmap.idmap_supported({str(tmp_path)!r}))"
    out = subprocess.run(["setpriv", "--inh-caps=-setuid,-setgid", "--bounding-set=-setuid,-setgid",
                          sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == (f"(False, 'idmapped mount refused on {idmap.fstype_of(str(tmp_path))} at "
                                  f"{tmp_path}: writing uid_map: Operation not permitted (EPERM); the driver needs "
                                  "CAP_SETUID and CAP_SETGID')"), out


@needs_root
def test_mount_root_says_what_the_mount_table_says(tmpfs: Path, open_base: Path, monkeypatch) -> None:
    """One statx answers where a mount is attached as the mount table does: the tmpfs, a bind stacked inside it
    and then detached, a plain directory, a symlink to the mount point (not followed), a file, a missing path."""
    from ownvol.driver import binds

    plain = open_base / "plain"
    plain.mkdir()
    (open_base / "link").symlink_to(tmpfs)
    (open_base / "file").write_text("")
    inner = tmpfs / "inner"
    inner.mkdir()
    cases = [tmpfs, inner, plain, open_base / "link", open_base / "file", open_base / "missing", Path("/")]
    subprocess.run(["mount", "--bind", str(plain), str(inner)], check=True)
    try:
        seen = {str(p): idmap.mount_root(str(p)) for p in cases}
        assert seen == {str(p): str(p) in binds.mountpoints() for p in cases}
        assert [str(p) for p in cases if seen[str(p)]] == [str(tmpfs), str(inner), "/"]
    finally:
        subprocess.run(["umount", "-l", str(inner)], check=True)
    assert idmap.mount_root(str(inner)) is False and binds.is_mounted(str(tmpfs))
    monkeypatch.setattr(binds, "mount_root", lambda target: None)  # a kernel before 5.8: the table answers
    assert binds.is_mounted(str(tmpfs)) and not binds.is_mounted(str(inner))
