"""Idmapped bind mounts: a directory shown with another owner, without changing a byte on disk.

An idmapped mount (Linux 5.12+) is made in three steps, each a system call glibc has no wrapper for:
open_tree(OPEN_TREE_CLONE) makes a detached copy of the directory's mount, mount_setattr(MOUNT_ATTR_IDMAP) gives
the copy the id map of a user namespace, move_mount attaches it at the target (mount_setattr(2), open_tree(2),
move_mount(2); Documentation/filesystems/idmappings.rst). The map lives in a user namespace that no process needs
to stay in: a child process unshares one, the parent writes its uid_map and gid_map (user_namespaces(7)), opens
/proc/CHILD/ns/user and reaps the child; the mount keeps the namespace alive.

How an idmapped mount shows an owner (idmappings.rst, "Idmapped mounts"): a file whose owner on disk is k is seen
as the id the namespace maps k to, i.e. the uid_map line `k w 1` shows it as w; a process whose fsuid is w writing
through the mount makes files owned k on disk. Every id the caller or a file can have must be mapped, or the
kernel refuses the write (EOVERFLOW) and shows the file as the overflow id 65534. So the map swaps the two ids
(on-disk owner <-> wanted owner) and maps every other id to itself: `swap_map`.

The system call numbers are the same on x86_64 and aarch64: every call added since 5.1 has one number on all
architectures (include/uapi/asm-generic/unistd.h, which aarch64 uses; arch/x86/entry/syscalls/syscall_64.tbl).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import signal
import stat
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# include/uapi/asm-generic/unistd.h (aarch64) = arch/x86/entry/syscalls/syscall_64.tbl (x86_64)
SYSCALLS = {
    "open_tree": 428,  # __NR_open_tree, Linux 5.2
    "move_mount": 429,  # __NR_move_mount, Linux 5.2
    "mount_setattr": 442,  # __NR_mount_setattr, Linux 5.12
    "statmount": 457,  # __NR_statmount, Linux 6.8
}
ARCHES = ("x86_64", "aarch64")
# include/uapi/linux/mount.h and include/uapi/linux/fcntl.h
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_IDMAP = 0x00100000
MOUNT_ATTR_SIZE_VER0 = 32  # struct mount_attr: attr_set, attr_clr, propagation, userns_fd (4 x __u64)
CLONE_NEWUSER = 0x10000000  # include/uapi/linux/sched.h
MNT_DETACH = 0x2
ID_LIMIT = 2**32 - 1  # (uid_t)-1 is never an id: a map covers 0 .. 2^32-2
MAP_LINES_MAX = 340  # user_namespaces(7): at most 340 lines since Linux 4.15

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.unshare.argtypes = [ctypes.c_int]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


class IdmapError(OSError):
    """A step of making an idmapped mount was refused; errno is the kernel's, the message names the step."""


@dataclass(frozen=True)
class Mapping:
    """A volume's map: files owned on disk by disk_uid:disk_gid are shown as uid:gid (and the other way round)."""

    disk_uid: int
    disk_gid: int
    uid: int
    gid: int

    def describe(self) -> str:
        return f"on-disk {self.disk_uid}:{self.disk_gid} shown as {self.uid}:{self.gid}"


def swap_map(disk: int, shown: int) -> list[tuple[int, int, int]]:
    """The uid_map (or gid_map) lines (inside, outside, count) of a namespace that shows files owned `disk` on disk
    as `shown` and files owned `shown` as `disk`, every other id as itself: at most 5 lines, covering 0..2^32-2.
    ValueError when an id is not from 0 to 2^32-2."""
    for value in (disk, shown):
        if not 0 <= value < ID_LIMIT:
            raise ValueError(f"id {value} is not from 0 to {ID_LIMIT - 1}")
    if disk == shown:
        return [(0, 0, ID_LIMIT)]
    low, high = sorted((disk, shown))
    lines = [(disk, shown, 1), (shown, disk, 1)]
    for start, end in ((0, low), (low + 1, high), (high + 1, ID_LIMIT)):
        if end > start:
            lines.append((start, start, end - start))
    return sorted(lines)


def map_text(lines: list[tuple[int, int, int]]) -> str:
    return "".join(f"{inside} {outside} {count}\n" for inside, outside, count in lines)


def _syscall(name: str, *args: object) -> int:
    if platform.machine() not in ARCHES:
        raise IdmapError(errno.ENOSYS, f"{name}: architecture {platform.machine()} is not one ownvol knows the "
                                       f"system call numbers of ({', '.join(ARCHES)})")
    result = _libc.syscall(ctypes.c_long(SYSCALLS[name]), *args)
    if result < 0:
        err = ctypes.get_errno()
        raise IdmapError(err, f"{name}: {os.strerror(err)} ({errno.errorcode.get(err, err)})")
    return int(result)


def open_tree_clone(path: str | int) -> int:
    """A detached clone of the mount at path (a path, or an O_PATH descriptor of the directory): its descriptor
    (O_CLOEXEC). Closing it before move_mount frees the clone; nothing is left behind. IdmapError."""
    if isinstance(path, int):
        return _syscall("open_tree", ctypes.c_int(path), b"", ctypes.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC
                                                                           | AT_EMPTY_PATH))
    return _syscall("open_tree", ctypes.c_int(AT_FDCWD), os.fsencode(path),
                    ctypes.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC))


def set_idmap(tree_fd: int, userns_fd: int, extra: int = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV) -> None:
    """Give a detached mount the map of the user namespace userns_fd, plus the attributes extra. IdmapError."""
    attr = struct.pack("=QQQQ", MOUNT_ATTR_IDMAP | extra, 0, 0, userns_fd)
    buf = ctypes.create_string_buffer(attr, len(attr))
    _syscall("mount_setattr", ctypes.c_int(tree_fd), b"", ctypes.c_uint(AT_EMPTY_PATH), buf,
             ctypes.c_size_t(MOUNT_ATTR_SIZE_VER0))


def attach(tree_fd: int, target: str) -> None:
    """Attach a detached mount at target (an existing directory). IdmapError."""
    _syscall("move_mount", ctypes.c_int(tree_fd), b"", ctypes.c_int(AT_FDCWD), os.fsencode(target),
             ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH))


@contextmanager
def userns(uid_lines: list[tuple[int, int, int]], gid_lines: list[tuple[int, int, int]]) -> Iterator[int]:
    """A descriptor of a new user namespace with these maps, for as long as the block runs (the namespace lives on
    in whatever mount was given its map). The namespace is made by a child process that unshares it and waits;
    this process writes the maps (which needs CAP_SETUID and CAP_SETGID over every id mapped), opens its
    /proc/PID/ns/user and reaps it. IdmapError when the kernel or the driver's privileges refuse."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: system calls only, then _exit
        try:
            os.close(ready_r)
            os.close(go_w)
            code = 0 if _libc.unshare(CLONE_NEWUSER) == 0 else 1
            err = ctypes.get_errno() if code else 0
            os.write(ready_w, bytes([code, err & 0xFF]))
            os.read(go_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(go_r)
    fd = -1
    try:
        answer = os.read(ready_r, 2)
        if len(answer) != 2 or answer[0] != 0:
            err = answer[1] if len(answer) == 2 else errno.ECHILD
            raise IdmapError(err, f"unshare(CLONE_NEWUSER): {os.strerror(err)} ({errno.errorcode.get(err, err)}); "
                                  "user namespaces refused (RestrictNamespaces=, user.max_user_namespaces=0, "
                                  "a seccomp profile?)")
        for name, lines in (("uid_map", uid_lines), ("gid_map", gid_lines)):
            try:
                with open(f"/proc/{pid}/{name}", "w") as f:
                    f.write(map_text(lines))
            except OSError as exc:
                raise IdmapError(exc.errno or errno.EPERM,
                                 f"writing {name}: {exc.strerror} ({errno.errorcode.get(exc.errno or 0, '')}); "
                                 "the driver needs CAP_SETUID and CAP_SETGID") from None
        fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        yield fd
    finally:
        if fd >= 0:
            os.close(fd)
        os.close(go_w)  # the child's read returns: it exits
        os.close(ready_r)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        except InterruptedError:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


USERNS_KEPT = 64  # user namespaces a process keeps open for reuse, one per distinct map
_kept: OrderedDict[tuple, int] = OrderedDict()
_kept_pid = os.getpid()
_kept_lock = threading.Lock()


@contextmanager
def kept_userns(uid_lines: list[tuple[int, int, int]], gid_lines: list[tuple[int, int, int]]) -> Iterator[int]:
    """A descriptor of a user namespace with these maps, made once per process and map (userns) and kept open
    for the next mount of the same map: making one costs a fork, 2 to 7 ms here (bench: mount_idmap_1m_ms), a
    mount_setattr with a kept one nothing of the kind. At most USERNS_KEPT are kept, the oldest closed first;
    the block runs under a lock, so no thread closes a descriptor another is using."""
    global _kept_pid
    key = (tuple(uid_lines), tuple(gid_lines))
    with _kept_lock:
        if _kept_pid != os.getpid():  # a forked child: the parent's descriptors are not this process's to close
            _kept.clear()
            _kept_pid = os.getpid()
        fd = _kept.get(key)
        if fd is None:
            with userns(uid_lines, gid_lines) as made:
                fd = os.dup(made)
            _kept[key] = fd
            while len(_kept) > USERNS_KEPT:
                os.close(_kept.popitem(last=False)[1])
        _kept.move_to_end(key)
        yield fd


def _source_fd(source: str) -> int:
    return os.open(source, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def idmapped_bind(source: str, target: str, mapping: Mapping, extra: int = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
                  ) -> None:
    """Attach at target (made if absent, mode 0755) an idmapped bind of source (a real directory: never followed
    if a symlink) with mapping's swap map, nosuid and nodev. Not recursive: mounts below source are not shown.
    IdmapError naming the step refused."""
    tree = _idmapped_clone(source, swap_map(mapping.disk_uid, mapping.uid), swap_map(mapping.disk_gid, mapping.gid),
                           extra)
    try:
        os.makedirs(target, mode=0o755, exist_ok=True)
        attach(tree, target)
    finally:
        os.close(tree)


def _idmapped_clone(source: str, uid_map: list[tuple[int, int, int]], gid_map: list[tuple[int, int, int]],
                    extra: int) -> int:
    """A detached clone of source (open_tree) with the map set (mount_setattr): its fd, which the caller closes
    (closing a clone never attached leaves nothing behind). OSError/IdmapError naming the step refused."""
    fd = _source_fd(source)
    try:
        tree = open_tree_clone(fd)
    finally:
        os.close(fd)
    try:
        with kept_userns(uid_map, gid_map) as ns:
            set_idmap(tree, ns, extra)
    except BaseException:
        os.close(tree)
        raise
    return tree


def detach(target: str) -> None:
    """Unmount target lazily (MNT_DETACH: containers that hold a bind of it keep it) and remove the empty
    directory; nothing mounted there is not an error. IdmapError for any other refusal."""
    if _libc.umount2(os.fsencode(target), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise IdmapError(err, f"umount2({target}, MNT_DETACH): {os.strerror(err)}")
    remove_mount_point(target)


def remove_mount_point(target: str) -> None:
    """Remove the directory target once unmounted (the driver's binds too: plugin/binds.py unbind) when it is
    empty: gone already, not empty (ENOTEMPTY) or still a mount point (EBUSY) is not an error; any other OSError
    is raised."""
    try:
        os.rmdir(target)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EBUSY):
            raise


def fstype_of(path: str) -> str:
    """The type of the filesystem path is on, as /proc/self/mountinfo names it (the last mount of the longest
    mount point above path), or "unknown"."""
    best, best_len = "unknown", -1
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.split()
                point = fields[4].replace("\\040", " ")
                sep = fields.index("-", 6)
                if (point == "/" or path == point or path.startswith(point.rstrip("/") + "/")) \
                        and len(point) >= best_len:
                    best, best_len = fields[sep + 1], len(point)
    except OSError:
        pass
    return best


def idmap_supported(path: str) -> tuple[bool, str]:
    """Whether an idmapped bind of path can be made here: tried on a detached clone (open_tree, mount_setattr,
    close; no move_mount), which leaves nothing behind. (True, "fstype") or (False, why), why naming the
    filesystem, the step and the errno."""
    fstype = fstype_of(path)
    try:
        st = os.stat(path)
        os.close(_idmapped_clone(path, swap_map(st.st_uid, st.st_uid), swap_map(st.st_gid, st.st_gid),
                                 MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV))
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        detail = exc.strerror if isinstance(exc, IdmapError) else f"{exc.strerror} [{name}]: {path}"
        return False, f"idmapped mount refused on {fstype} at {path}: {detail}{refusal_hint(fstype, exc.errno)}"
    return True, fstype


def refusal_hint(fstype: str, err: int | None) -> str:
    """Why the kernel says EINVAL to mount_setattr(MOUNT_ATTR_IDMAP) on a filesystem of this type (mountinfo's
    name: fuse, fuse.sshfs, fuseblk...), in words for an Err ("" for another errno). can_idmap_mount (fs/namespace.c)
    says EINVAL where the type lacks FS_ALLOW_IDMAP (overlay, nfs, nfs4) or the superblock has SB_I_NOIDMAP: FUSE
    has the flag since Linux 6.12 but sets SB_I_NOIDMAP unless its server answers FUSE_INIT with FUSE_ALLOW_IDMAP
    (kernel commit 16e1503eaf32, "fuse: allow idmapped mounts"), which bindfs, sshfs and most servers do not."""
    if err != errno.EINVAL:
        return ""
    if fstype in ("fuse", "fuseblk") or fstype.startswith(("fuse.", "fuseblk.")):
        return (" (a FUSE filesystem takes an idmapped mount only where its server asks for one, FUSE_ALLOW_IDMAP "
                "on Linux 6.12 or later; this one does not)")
    return " (this filesystem does not support idmapped mounts)"


def reachable_by_others(path: str) -> str | None:
    """Whether a host user other than root could reach path: None when some directory from / down to path lets
    neither others nor a non-root group search it; else the words saying so. A file made setuid through an
    idmapped mount is owned on disk by the id the map swaps in; only the backing path's reach keeps it from host
    users."""
    parts = [p for p in os.path.abspath(path).split("/") if p]
    current = "/"
    for part in [""] + parts:
        current = os.path.join(current, part) if part else "/"
        st = os.stat(current)
        if not st.st_mode & stat.S_IXOTH and not (st.st_mode & stat.S_IXGRP and st.st_gid != 0):
            return None
    return (f"every directory from / down to {path} lets other host users search it: make one of them "
            "0700 or 0750 root:root (a file made setuid through the map would be owned on disk by the id it swaps)")


def root_shown(target: str) -> tuple[int, int]:
    """The owner the mount at target shows for its root (stat through the mount)."""
    st = os.stat(target)
    return st.st_uid, st.st_gid


def mount_options(target: str, mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """The per-mount options (mountinfo's sixth field: rw,nosuid,nodev,relatime,idmapped...) of every mount at
    target, the last mounted last; [] when nothing is mounted there (proc_pid_mountinfo(5))."""
    found = []
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            if fields[4].replace("\\040", " ") == target:
                found.append(fields[5])
    return found


# statmount(2) (Linux 6.8; the maps since 6.15): include/uapi/linux/mount.h
STATMOUNT_MNT_UIDMAP = 0x2000
STATMOUNT_MNT_GIDMAP = 0x4000
STATX_MNT_ID_UNIQUE = 0x4000  # include/uapi/linux/stat.h, Linux 6.8
_STATX_MNT_ID = 144  # offset of stx_mnt_id in struct statx
_SM_MASK, _SM_UIDMAP, _SM_STR = 8, 152, 512  # offsets in struct statmount: mask, mnt_uidmap_num.., str[]
_libc.statx.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]


AT_SYMLINK_NOFOLLOW = 0x100  # include/uapi/linux/fcntl.h
STATX_ATTR_MOUNT_ROOT = 0x2000  # include/uapi/linux/stat.h, Linux 5.8
_STATX_ATTRIBUTES, _STATX_ATTRIBUTES_MASK = 8, 56  # offsets of stx_attributes and stx_attributes_mask


def _statx(target: str, mask: int) -> bytes:
    """struct statx of target, a symlink at target not followed (statx(2)). IdmapError with the kernel's errno."""
    buf = ctypes.create_string_buffer(256)
    if _libc.statx(AT_FDCWD, os.fsencode(target), AT_SYMLINK_NOFOLLOW, mask, buf) != 0:
        err = ctypes.get_errno()
        raise IdmapError(err, f"statx({target}): {os.strerror(err)}")
    return buf.raw


def unique_mount_id(target: str) -> int:
    """The 64-bit mount ID (never reused) of the mount whose root target is: statx(STATX_MNT_ID_UNIQUE)."""
    return int(struct.unpack_from("=Q", _statx(target, STATX_MNT_ID_UNIQUE), _STATX_MNT_ID)[0])


def mount_root(target: str) -> bool | None:
    """Whether a mount is attached at target (target is the root of the topmost mount there), from one statx(2):
    STATX_ATTR_MOUNT_ROOT, which the kernel sets when the dentry is its mount's root (fs/stat.c
    vfs_getattr_nosec, Linux 5.8). A symlink at target is not followed (it is no mount point), and a target that
    does not exist has nothing mounted. None where the kernel does not say (before 5.8 the attribute is not in
    stx_attributes_mask) or statx is refused for another reason: the caller reads the mount table then."""
    try:
        raw = _statx(target, 0)
    except IdmapError as exc:
        return False if exc.errno in (errno.ENOENT, errno.ENOTDIR) else None
    attributes, known = (struct.unpack_from("=Q", raw, offset)[0] for offset in (_STATX_ATTRIBUTES,
                                                                                _STATX_ATTRIBUTES_MASK))
    return bool(attributes & STATX_ATTR_MOUNT_ROOT) if known & STATX_ATTR_MOUNT_ROOT else None


def mount_maps(target: str) -> tuple[list[str], list[str]] | None:
    """The uid and gid map of the mount at target as statmount(STATMOUNT_MNT_UIDMAP|GIDMAP) gives them: lines
    `inside outside count` as seen from this process's user namespace; None where the kernel cannot say (before
    6.15: EINVAL or no such bits in the mask). IdmapError for other refusals."""
    mnt_id = unique_mount_id(target)
    req = struct.pack("=IIQQ", 24, 0, mnt_id, STATMOUNT_MNT_UIDMAP | STATMOUNT_MNT_GIDMAP)
    size = 1 << 16
    buf = ctypes.create_string_buffer(size)
    try:
        _syscall("statmount", ctypes.create_string_buffer(req, len(req)), buf, ctypes.c_size_t(size),
                 ctypes.c_uint(0))
    except IdmapError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOSYS):
            return None
        raise
    mask = struct.unpack_from("=Q", buf.raw, _SM_MASK)[0]
    if not mask & STATMOUNT_MNT_UIDMAP or not mask & STATMOUNT_MNT_GIDMAP:
        return None
    uid_num, uid_off, gid_num, gid_off = struct.unpack_from("=IIII", buf.raw, _SM_UIDMAP)

    def strings(count: int, offset: int) -> list[str]:
        raw = buf.raw[_SM_STR + offset:]
        return [part.decode() for part in raw.split(b"\0")[:count]]

    return strings(uid_num, uid_off), strings(gid_num, gid_off)
