"""Is a volume really in use? The kernel's mount tables answer, not anyone's memory of Mount calls.

A container's volume is a bind mount of the volume's data directory in the container's own mount
namespace (runc makes it there; the host's table never shows it). So a volume is live while some mount
namespace on the machine holds a mount of its directory (or of a directory below it) anywhere else than
where the host itself shows it. Every process's namespace is looked at once (/proc/PID/ns/mnt, then that
PID's mountinfo). The answer is only as wide as the driver's view of processes: it is trusted when the
engine that activated the driver is a process the driver can see (SO_PEERCRED on its connection; a
managed plugin runs in a PID namespace of its own and cannot), else it is "unknown" and nothing is dropped.
Sources: proc_pid_mountinfo(5), mount_namespaces(7), unix(7) SO_PEERCRED.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass

from .binds import below, filesystem_of, mount_table

DEFAULT_ENGINE_SOCKET = "/var/run/docker.sock"


@dataclass(frozen=True)
class Holder:
    """A mount namespace holding a volume's directory: one process in it, and where it is mounted there."""

    pid: int
    command: str
    mount_point: str


@dataclass(frozen=True)
class Engine:
    """A process that activated the driver: pid and its start time (clock ticks since boot: proc_pid_stat(5),
    field 22), which together name one run of it; pid 0 when it is in a PID namespace the driver cannot see."""

    pid: int
    started: int
    command: str

    @property
    def is_dockerd(self) -> bool:
        return self.command == "dockerd"

    def key(self) -> str:
        return f"{self.pid}:{self.started}"


def process_start(pid: int) -> int | None:
    """A process's start time in clock ticks since boot; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    return int(text.rsplit(")", 1)[1].split()[19])


def command_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


def peer(sock: socket.socket | None) -> Engine | None:
    """Who is on the other end of a unix socket (SO_PEERCRED); None if it cannot be told."""
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        pid, _, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    except OSError:
        return None
    if pid <= 0:
        return Engine(0, 0, "")
    started = process_start(pid)
    return Engine(pid, started or 0, command_of(pid)) if started is not None else None


def alive(engine: Engine) -> bool:
    return engine.pid > 0 and process_start(engine.pid) == engine.started


def namespaces() -> dict[str, int]:
    """One PID per mount namespace on the machine (as far as /proc shows them)."""
    found: dict[str, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            found.setdefault(os.readlink(f"/proc/{entry.name}/ns/mnt"), int(entry.name))
        except OSError:
            continue
    return found


def holders(path: str, not_at: tuple[str, ...] = ()) -> list[Holder]:
    """Every mount namespace holding path (or a directory below it) mounted somewhere other than path
    itself and the mount points in not_at (the driver's own binds). [] when none does."""
    fs, inner = filesystem_of(path)
    skip = {path, *not_at}
    found = []
    for pid in namespaces().values():
        try:
            table = mount_table(f"/proc/{pid}/mountinfo")
        except OSError:
            continue
        for entry in table:
            if entry.device != fs.device or not below(entry.root, inner) or entry.mount_point in skip:
                continue
            found.append(Holder(pid, command_of(pid), entry.mount_point))
            break
    return found


def engine_socket(pid: int) -> str:
    """The unix socket a dockerd listens on: its -H/--host unix:// argument (dockerd(8)), else the default."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return DEFAULT_ENGINE_SOCKET
    for k, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith(("--host=", "-H=")) else \
            (args[k + 1] if arg in ("-H", "--host") and k + 1 < len(args) else "")
        if value.startswith("unix://"):
            return value[len("unix://"):]
    return DEFAULT_ENGINE_SOCKET


def engine_info(pid: int, timeout: float = 10.0) -> dict:
    """`docker info` of the dockerd with this pid (GET /info on its socket); OSError or ValueError on failure."""
    import http.client
    import json

    conn = http.client.HTTPConnection("localhost", timeout=timeout)
    conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.sock.settimeout(timeout)
    try:
        conn.sock.connect(engine_socket(pid))
        conn.request("GET", "/info")
        response = conn.getresponse()
        if response.status != 200:
            raise OSError(f"GET /info answered {response.status}")
        return json.loads(response.read())
    finally:
        conn.close()
