"""Workers that outlived their arbiter: keep them from existing, and take their socket over when they do.

A gunicorn worker asks the kernel for SIGTERM when its parent dies (prctl(2) PR_SET_PDEATHSIG), so a worker
whose arbiter was killed stops at once and answers no new request (gunicorn's SIGTERM: the requests in progress
finish within graceful_timeout). A driver that finds its socket answered anyway tells a live driver from
orphans (see `orphans`) by who holds the listening socket (/proc/net/unix, proc(5), names its inode;
/proc/PID/fd links name it as socket:[INODE]), their parents, and who last called listen(2) on it (the kernel
keeps that process's credentials for SO_PEERCRED on a connection to it, unix(7)).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import time

from ownvol.userns import listener_pid

log = logging.getLogger("ownvol.plugin")
PR_SET_PDEATHSIG = 1  # linux/prctl.h
_ACCEPTING = 0x10000  # __SO_ACCEPTCON in /proc/net/unix's Flags: a listening socket


def die_with_parent(parent: int) -> None:
    """In a freshly forked worker: SIGTERM when the parent (the arbiter, pid parent) dies; at once if it already
    has (the signal is asked for after the fork, so a parent that died in between is seen by the pid)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def _listening_inodes(sock_path: str) -> set[str]:
    """The inodes of the listening sockets bound to sock_path (/proc/net/unix: Num RefCount Protocol Flags Type
    St Inode Path)."""
    found = set()
    with open("/proc/net/unix", encoding="utf-8", errors="replace") as f:
        next(f)
        for line in f:
            fields = line.split(None, 7)
            if len(fields) == 8 and fields[7].rstrip("\n") == sock_path and int(fields[3], 16) & _ACCEPTING:
                found.add(fields[6])
    return found


def holders(sock_path: str) -> set[int]:
    """The processes holding a listening socket bound to sock_path."""
    links = {f"socket:[{inode}]" for inode in _listening_inodes(sock_path)}
    found: set[int] = set()
    if not links:
        return found
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in links for fd in fds):
                found.add(int(pid))
        except OSError:
            continue
    return found


def orphans(sock_path: str) -> set[int] | None:
    """The processes serving sock_path whose arbiter is gone; empty when nobody serves it any more; None when a
    live driver does (or that cannot be ruled out).

    A live driver is an arbiter holding the listening socket with its workers, children that hold it too.
    Without that pair, the holders are orphans when the process that last called listen(2) on the socket is
    not among them (it died: gunicorn's arbiter), or when there are several of them (workers of one dead
    arbiter; a worker that calls listen(2) itself, as uvicorn's did, is then the listener). A lone process that
    listened itself is taken for a live server."""
    pid = listener_pid(sock_path)
    if pid is None:
        return set()
    held = holders(sock_path)
    if any(_parent(h) in held for h in held):
        return None
    if pid not in held or len(held) > 1:
        return held
    return None


def stop(pids: set[int], grace: float = 10.0) -> None:
    """SIGTERM the pids, then SIGKILL those still there after grace seconds."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _parent(pid: int) -> int | None:
    """pid's parent (proc_pid_stat(5), field 4); None if pid is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def _alive(pid: int) -> bool:
    """Whether pid runs (a zombie does not: it answers nothing)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
