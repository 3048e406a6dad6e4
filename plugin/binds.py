"""Bind mounts for OWNVOL_MOUNT_ROOT: a volume's data directory shown at MOUNT_ROOT/<name>.

The source is opened with O_NOFOLLOW and bound through /proc/self/fd, so a data directory
swapped for a symlink is never followed into the host.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re

MS_BIND = 0x1000
MNT_DETACH = 0x2
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_ESCAPE = re.compile(r"\\([0-7]{3})")


class BindError(OSError):
    """mount(2) or umount2(2) refused a bind; errno is the kernel's."""

    pass


def mountpoints(mountinfo: str = "/proc/self/mountinfo") -> set[str]:
    """Every mount point a process sees (its mountinfo, octal escapes decoded)."""
    points = set()
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split(" ", 5)
            points.add(_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4]))
    return points


def is_mounted(target: str) -> bool:
    """Whether target is a mount point in this process's mount namespace."""
    return target in mountpoints()


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
    try:
        os.rmdir(target)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EBUSY):
            raise
