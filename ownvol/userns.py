"""User namespaces: which host uid and gid a container's ids are (`dockerd --userns-remap`, rootless Docker).

The kernel's own answer comes first: /proc/PID/uid_map and gid_map of a process, lines `inside outside count`
(user_namespaces(7)), read by a process outside PID's user namespace, give the reader's ids for PID's ids. Rootless
Docker (dockerd-rootless.sh: dockerd inside rootlesskit's user namespace) runs its containers in that namespace,
so the engine's own map is theirs; under --userns-remap each container has its own, the engine none. An id
outside every range is unmapped: nothing on the host is that id inside (the kernel shows it as the overflow id
65534), and nothing is given to it.

Under remapping, uid 999 in a container is a host uid from the remap user's subordinate range, so a data
directory must belong to that host id for uid 999 to own it. Facts, from the running engine: `docker info`
lists `name=userns` in SecurityOptions, and its DockerRootDir ends in `<uid>.<gid>`, the host ids of the
container's root (moby daemon/daemon_unix.go, setupRemappedRoot). The ranges are the remap user's lines in
/etc/subuid and /etc/subgid (subuid(5)), laid end to end from container id 0 (moby pkg/idtools,
createIDMap); the user is the one whose first range starts at the root's host id. When the two facts do
not agree, the mapping is unknown and callers do nothing with it.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass

ALL_IDS = 4294967295  # the identity map's count: the initial namespace's `0 0 4294967295` (user_namespaces(7))


class UnknownMapping(ValueError):
    """The engine remaps, but the host ids cannot be told: why, in words."""


@dataclass(frozen=True)
class IdMap:
    """(container start, host start, count) ranges for uids and for gids, as in /proc/PID/uid_map."""

    uids: tuple[tuple[int, int, int], ...]
    gids: tuple[tuple[int, int, int], ...]

    @staticmethod
    def _map(ranges: tuple[tuple[int, int, int], ...], inside: int, what: str) -> int:
        for start, host, count in ranges:
            if start <= inside < start + count:
                return host + inside - start
        raise UnknownMapping(f"{what} {inside} is unmapped: outside the engine's remapped range "
                             f"{IdMap._text(ranges)}")

    @staticmethod
    def _unmap(ranges: tuple[tuple[int, int, int], ...], host: int, what: str) -> int:
        for start, outside, count in ranges:
            if outside <= host < outside + count:
                return start + host - outside
        raise UnknownMapping(f"host {what} {host} is unmapped: no id inside is it (ranges {IdMap._text(ranges)})")

    def host_ids(self, uid: int, gid: int) -> tuple[int, int]:
        """The host uid and gid that are uid and gid inside a container; UnknownMapping if unmapped."""
        return self._map(self.uids, uid, "uid"), self._map(self.gids, gid, "gid")

    def inside_ids(self, host_uid: int, host_gid: int) -> tuple[int, int]:
        """The inverse of host_ids: the uid and gid inside that are these host ids; UnknownMapping if unmapped."""
        return self._unmap(self.uids, host_uid, "uid"), self._unmap(self.gids, host_gid, "gid")

    @property
    def identity(self) -> bool:
        """Whether every id is itself (the initial namespace's map, or one range from 0 to 0 over all ids)."""
        return all(ranges == ((0, 0, ALL_IDS),) for ranges in (self.uids, self.gids))

    @classmethod
    def identity_map(cls) -> IdMap:
        return cls(((0, 0, ALL_IDS),), ((0, 0, ALL_IDS),))

    @classmethod
    def from_process(cls, pid: int, proc: str = "/proc") -> IdMap:
        """The map the kernel applies to process pid, in this process's ids: the identity when pid is in this
        process's own user namespace (its uid_map would then name the parent's ids, user_namespaces(7)).
        UnknownMapping, with why, when the files cannot be read or hold no range (a namespace whose map is not
        written yet maps nothing)."""
        try:
            if os.stat(f"{proc}/{pid}/ns/user").st_ino == os.stat(f"{proc}/self/ns/user").st_ino:
                return cls.identity_map()
            uids = parse_map(open(f"{proc}/{pid}/uid_map", encoding="ascii").read())
            gids = parse_map(open(f"{proc}/{pid}/gid_map", encoding="ascii").read())
        except (OSError, ValueError) as exc:
            raise UnknownMapping(f"the id map of process {pid} cannot be read: {exc}") from None
        if not uids or not gids:
            raise UnknownMapping(f"process {pid}'s user namespace maps no {'uid' if not uids else 'gid'} yet")
        return cls(uids, gids)

    def describe(self) -> str:
        return f"uids {self._text(self.uids)}, gids {self._text(self.gids)}"

    @staticmethod
    def _text(ranges: tuple[tuple[int, int, int], ...]) -> str:
        return ", ".join(f"{start}->{host} ({count})" for start, host, count in ranges)

    @classmethod
    def parse(cls, text: str) -> IdMap:
        """The inverse of str(): "uidstart:host:count,...;gidstart:host:count,..."."""
        halves = text.split(";")
        if len(halves) != 2:
            raise ValueError(f"{text!r} is not uid ranges;gid ranges")
        uids, gids = (tuple(tuple(int(n) for n in r.split(":")) for r in half.split(",") if r) for half in halves)
        if not uids or not gids or any(len(r) != 3 for r in uids + gids):
            raise ValueError(f"{text!r}: each range is start:host:count")
        return cls(uids, gids)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return ";".join(",".join(f"{a}:{b}:{c}" for a, b, c in half) for half in (self.uids, self.gids))


def parse_map(text: str) -> tuple[tuple[int, int, int], ...]:
    """The ranges of a /proc/PID/uid_map or gid_map: each line `inside outside count`, three decimal numbers
    separated by blanks (user_namespaces(7); the kernel pads them with spaces), as (inside, outside, count)
    tuples in the file's order; () for an empty file. ValueError for any other line, a count of 0, or ranges
    that overlap inside or outside (the kernel refuses both)."""
    ranges = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3 or not all(f.isdigit() for f in fields):
            raise ValueError(f"line {number} {line.strip()!r} is not `inside outside count`")
        inside, outside, count = (int(f) for f in fields)
        if count == 0 or inside + count > ALL_IDS + 1 or outside + count > ALL_IDS + 1:
            raise ValueError(f"line {number} {line.strip()!r}: a range of 1 to 4294967295 ids below 2^32")
        ranges.append((inside, outside, count))
    for side in (0, 1):
        spans = sorted((r[side], r[side] + r[2]) for r in ranges)
        if any(a[1] > b[0] for a, b in zip(spans, spans[1:], strict=False)):
            raise ValueError(f"ranges overlap {'inside' if side == 0 else 'outside'}: {text.strip()!r}")
    return tuple(ranges)


def listener_pid(path: str, timeout: float = 2.0) -> int | None:
    """The pid, in this process's pid namespace, of the process that listens on the unix socket path (SO_PEERCRED
    on a connection: the listener's credentials at listen(), unix(7)); None when it cannot be told (no such
    socket, refused, or a listener in a pid namespace this process does not see: pid 0)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        pid, _, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    except OSError:
        return None
    finally:
        sock.close()
    return pid or None


def rootless(info: dict) -> bool:
    """Whether `docker info` (a dict as the API returns it) is a rootless engine's: `name=rootless` in its
    SecurityOptions (moby daemon/info.go, set when dockerd runs in rootlesskit's namespaces)."""
    return any("name=rootless" in option for option in info.get("SecurityOptions") or [])


def _ranges(path: str, user: str) -> list[tuple[int, int]]:
    ranges = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.strip().split(":")
            if len(fields) == 3 and fields[0] == user and fields[1].isdigit() and fields[2].isdigit():
                ranges.append((int(fields[1]), int(fields[2])))
    return ranges


def _laid_end_to_end(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int, int], ...]:
    out, inside = [], 0
    for host, count in ranges:
        out.append((inside, host, count))
        inside += count
    return tuple(out)


def remap_user(root_uid: int, subuid: str = "/etc/subuid") -> str:
    """The user whose first subordinate uid range starts at root_uid; UnknownMapping unless exactly one."""
    firsts: dict[str, int] = {}
    with open(subuid, encoding="utf-8") as f:
        for line in f:
            fields = line.strip().split(":")
            if len(fields) == 3 and fields[1].isdigit():
                firsts.setdefault(fields[0], int(fields[1]))
    users = [u for u, start in firsts.items() if start == root_uid]
    if len(users) != 1:
        raise UnknownMapping(f"{len(users)} users in {subuid} have a first range starting at {root_uid}")
    return users[0]


def from_engine(info: dict, subuid: str = "/etc/subuid", subgid: str = "/etc/subgid") -> IdMap | None:
    """The engine's mapping from its `docker info` (a dict as the API returns it): None when it does not remap;
    UnknownMapping when it does and the host ids cannot be told."""
    if not any("name=userns" in option for option in info.get("SecurityOptions") or []):
        return None
    suffix = os.path.basename(str(info.get("DockerRootDir") or ""))
    uid_text, _, gid_text = suffix.partition(".")
    if not (uid_text.isdigit() and gid_text.isdigit()):
        raise UnknownMapping(f"the engine remaps, but its DockerRootDir {info.get('DockerRootDir')!r} does not end "
                             "in <uid>.<gid>")
    user = remap_user(int(uid_text), subuid)
    uids, gids = _ranges(subuid, user), _ranges(subgid, user)
    if not uids or not gids or uids[0][0] != int(uid_text) or gids[0][0] != int(gid_text):
        raise UnknownMapping(f"{user}'s ranges in {subuid} and {subgid} do not start at the engine's root "
                             f"{uid_text}.{gid_text}")
    return IdMap(_laid_end_to_end(uids), _laid_end_to_end(gids))
