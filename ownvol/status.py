"""An ownvol volume as the engine shows it: the driver's name and the Status of `docker volume inspect`.

The driver writes the Status (its Get reply, plugin/volumes.py); the hook reads the owner from it
(hooks/targets.py). Both take the keys from VolumeStatus, so mypy holds them to one spelling.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, TypedDict

DRIVER_NAME_ENV = "OWNVOL_DRIVER_NAME"
DEFAULT_DRIVER_NAME = "ownvol"


def driver_name(env: Mapping[str, str] | None = None) -> str:
    """The driver's name (OWNVOL_DRIVER_NAME in env, os.environ by default; else "ownvol"): its socket's
    name and what `docker volume create --driver` names."""
    return (os.environ if env is None else env).get(DRIVER_NAME_ENV) or DEFAULT_DRIVER_NAME


def is_driver(driver: str, name: str) -> bool:
    """Whether a mount's Driver (as `docker inspect` shows it) is the driver called name: a managed
    plugin shows its tag too ("ownvol:latest")."""
    return driver.split(":")[0] == name


class LastRepair(TypedDict):
    """The last repair a Mount made: when, how many entries it changed, how long it took."""

    at: str  # RFC 3339, UTC
    changed: int  # entries re-owned or re-moded
    seconds: float


class VolumeStatus(TypedDict):
    """Status of an ownvol volume (Get): its owner and mode, how Mount checks it, what the last check found."""

    uid: int
    gid: int
    mode: str  # octal, four digits
    policy: str  # on-root-mismatch | always | never
    profile: str  # "" when none
    path: str  # the data directory on the host
    adopted: bool  # an existing directory given with -o path=
    created: str  # RFC 3339, UTC
    last_check: str
    last_check_result: str
    last_repair: LastRepair | None
    mounts: int  # mount references held now
    state: str  # "ok", else what is wrong with the data directory
    host_owner: str  # uid:gid on the host: the same as uid:gid unless the engine remaps user namespaces
    data: str  # what identifies the data: its inode, filesystem type, source and mount point ("" before known)
    ownership: str  # how the container sees its owner: "walk" (chowned on disk) or "idmap" (an idmapped mount)
    ownership_asked: str  # the ownership= option: walk, idmap or auto
    ownership_note: str  # why auto chose what it chose, or what the idmap check at start found
    view_of: str  # the volume whose data a view shows ("" when not a view)


def owner(status: Mapping[str, Any]) -> tuple[int, int] | None:
    """uid:gid from a volume's Status as the engine returned it (VolumeStatus's uid and gid); None when it
    does not carry them."""
    try:
        return int(status["uid"]), int(status["gid"])
    except (KeyError, TypeError, ValueError):
        return None
