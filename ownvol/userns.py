"""User namespaces (`dockerd --userns-remap`): which host uid and gid a container's ids are.

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
from dataclasses import dataclass


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
        raise UnknownMapping(f"{what} {inside} is outside the engine's remapped range")

    def host_ids(self, uid: int, gid: int) -> tuple[int, int]:
        """The host uid and gid that are uid and gid inside a container; UnknownMapping if unmapped."""
        return self._map(self.uids, uid, "uid"), self._map(self.gids, gid, "gid")

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
