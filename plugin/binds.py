"""Bind mounts for OWNVOL_MOUNT_ROOT: a volume's data directory shown at MOUNT_ROOT/<name>.

The source is opened with O_NOFOLLOW and bound through /proc/self/fd, so a data directory
swapped for a symlink is never followed into the host.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
from dataclasses import dataclass

from ownvol.idmap import mount_root, remove_mount_point

MS_BIND = 0x1000
MNT_DETACH = 0x2
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_ESCAPE = re.compile(r"\\([0-7]{3})")


class BindError(OSError):
    """mount(2) or umount2(2) refused a bind; errno is the kernel's."""

    pass


@dataclass(frozen=True)
class MountEntry:
    """One line of a mountinfo (proc_pid_mountinfo(5)): the filesystem's device, the directory of that
    filesystem mounted (root) and where (mount_point), its type and source."""

    device: str  # major:minor
    root: str
    mount_point: str
    fstype: str
    source: str


def _unescape(text: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), text)


def mount_table(mountinfo: str = "/proc/self/mountinfo") -> list[MountEntry]:
    """A process's mounts in mount order (octal escapes decoded); OSError if it cannot be read."""
    entries = []
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-", 6)
            entries.append(MountEntry(fields[2], _unescape(fields[3]), _unescape(fields[4]),
                                      fields[sep + 1], _unescape(fields[sep + 2])))
    return entries


def mountpoints(mountinfo: str = "/proc/self/mountinfo") -> set[str]:
    """Every mount point a process sees (its mountinfo, octal escapes decoded)."""
    return {entry.mount_point for entry in mount_table(mountinfo)}


def below(path: str, top: str) -> bool:
    return top == "/" or path == top or path.startswith(top.rstrip("/") + "/")


def filesystem_of(path: str, table: list[MountEntry] | None = None) -> tuple[MountEntry, str]:
    """The mount path is on in this process's view (the last mounted of the longest mount point above it)
    and path's directory within that filesystem, e.g. (the mount of /dev/vda1 at /, "/srv/data")."""
    table = mount_table() if table is None else table
    best = None
    for entry in table:
        if below(path, entry.mount_point) and (best is None or len(entry.mount_point) >= len(best.mount_point)):
            best = entry
    assert best is not None, "every path is below /"
    rest = path[len(best.mount_point.rstrip("/")):]
    return best, (best.root.rstrip("/") + rest) or "/"


def is_mounted(target: str) -> bool:
    """Whether target is a mount point in this process's mount namespace: one statx (idmap.mount_root), which
    costs the same with 10,000 mounts as with 20; the mount table, read whole, where the kernel does not say."""
    found = mount_root(target)
    return target in mountpoints() if found is None else found


def bind(source: str, target: str) -> None:
    """Bind source (a real directory, never a symlink) at target, creating target if needed."""
    fd = os.open(source, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.makedirs(target, mode=0o755, exist_ok=True)
        if _libc.mount(f"/proc/self/fd/{fd}".encode(), target.encode(), None, MS_BIND, None) != 0:
            err = ctypes.get_errno()
            raise BindError(err, f"bind mount of {source} at {target} failed: {os.strerror(err)}")
    finally:
        os.close(fd)


def unbind(target: str) -> None:
    """Unmount target (lazily if busy) until nothing is mounted there, then remove the empty directory."""
    for _ in range(8):
        if not is_mounted(target):
            break
        if _libc.umount2(target.encode(), 0) != 0:
            err = ctypes.get_errno()
            if err == errno.EBUSY:
                _libc.umount2(target.encode(), MNT_DETACH)
            elif err != errno.EINVAL:
                raise BindError(err, f"unmount of {target} failed: {os.strerror(err)}")
    remove_mount_point(target)
