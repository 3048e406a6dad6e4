"""The driver's settings, read from the environment once at start.

The managed plugin maps these same names to `docker plugin set`, so they are part of the interface.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ownvol.status import driver_name
from ownvol.userns import IdMap

from .options import Defaults, parse_defaults

DEFAULT_ALLOWED_ROOTS = ("/srv", "/home", "/mnt")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MAX_WORKERS = 64


def default_workers() -> int:
    """Worker processes when OWNVOL_WORKERS is unset: one per CPU this process may run on
    (sched_getaffinity(2): a cpuset or taskset counts, not the host's count), and one more for a Mount that walks.

    Each worker answers one request at a time (serve.py) and every Mount and Unmount commits under one writers'
    lock (store.Store.transaction). More workers busy than CPUs only adds a worker preempted while it holds that
    lock, and everyone else waiting behind it: with the bench's 8 clients on 2 CPUs, the lock held 0.13 ms at the
    median but 2.3 to 3.4 ms at p99 with 4 workers (0.3 to 0.45 ms with 2), and Mount p99 was 8.3 to 9.7 ms with
    4 workers, 5.5 to 5.7 with 3, 4.0 to 5.1 with 2, at the same rate or higher (BENCHMARKS.md, Issue 28:
    mount_p99_ms)."""
    return min(len(os.sched_getaffinity(0)) + 1, MAX_WORKERS)


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    driver_name: str
    socket: str
    root: str
    defaults: Defaults
    allowed_roots: tuple[str, ...]
    mount_root: str
    log_level: str
    workers: int
    userns: str = "auto"  # auto | off | an IdMap's text (see ownvol/userns.py)
    # (uid, gid) the socket is given to, for a rootless engine run by that user (docs/driver.md, Rootless
    # Docker); None: root's alone
    socket_owner: tuple[int, int] | None = None

    @property
    def volumes_dir(self) -> str:
        return os.path.join(self.root, "volumes")

    @property
    def views_dir(self) -> str:
        return os.path.join(self.root, "views")

    @property
    def db_path(self) -> str:
        return os.path.join(self.root, "ownvol.db")


def _roots(value: str | None) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_ALLOWED_ROOTS
    roots = tuple(r for r in value.split(":") if r)
    for r in roots:
        if not os.path.isabs(r) or os.path.normpath(r) != r:
            raise SettingsError(f"OWNVOL_ALLOWED_ROOTS: {r!r} is not a normalised absolute path")
    return roots


def from_env(env: dict[str, str] | None = None) -> Settings:
    """Settings from env (os.environ by default); SettingsError names the variable that is wrong."""
    env = dict(os.environ if env is None else env)
    name = driver_name(env)
    if "/" in name or name in (".", ".."):
        raise SettingsError(f"OWNVOL_DRIVER_NAME: {name!r} must not contain '/'")
    root = env.get("OWNVOL_ROOT") or "/var/lib/ownvol"
    mount_root = env.get("OWNVOL_MOUNT_ROOT", "")
    for var, path in (("OWNVOL_ROOT", root), ("OWNVOL_MOUNT_ROOT", mount_root)):
        if path and not os.path.isabs(path):
            raise SettingsError(f"{var}: {path!r} is not an absolute path")
    try:
        defaults = parse_defaults(
            uid=env.get("OWNVOL_DEFAULT_UID") or None,
            gid=env.get("OWNVOL_DEFAULT_GID") or None,
            mode=env.get("OWNVOL_DEFAULT_MODE") or None,
            policy=env.get("OWNVOL_DEFAULT_POLICY") or None,
            profile=env.get("OWNVOL_DEFAULT_PROFILE") or None,
            ownership=env.get("OWNVOL_DEFAULT_OWNERSHIP") or None,
        )
    except ValueError as exc:
        raise SettingsError(f"OWNVOL_DEFAULT_*: {exc}") from None
    log_level = (env.get("OWNVOL_LOG_LEVEL") or "INFO").upper()
    if log_level not in LOG_LEVELS:
        raise SettingsError(f"OWNVOL_LOG_LEVEL: {log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    workers_text = env.get("OWNVOL_WORKERS") or str(default_workers())
    if not workers_text.isdigit() or not 1 <= int(workers_text) <= MAX_WORKERS:
        raise SettingsError(f"OWNVOL_WORKERS: {workers_text!r} is not a number of workers from 1 to {MAX_WORKERS}")
    userns = env.get("OWNVOL_USERNS") or "auto"
    if userns not in ("auto", "off"):
        try:
            IdMap.parse(userns)
        except ValueError as exc:
            raise SettingsError(f"OWNVOL_USERNS: {exc}; use auto, off, or uid ranges;gid ranges as "
                                "start:host:count (0:100000:65536;0:100000:65536)") from None
    owner_text = env.get("OWNVOL_SOCKET_OWNER") or ""
    uid_text, _, gid_text = owner_text.partition(":")
    if owner_text and not (uid_text.isdigit() and gid_text.isdigit() and int(uid_text) > 0):
        raise SettingsError(f"OWNVOL_SOCKET_OWNER: {owner_text!r} is not uid:gid of a user other than root")
    return Settings(
        driver_name=name,
        socket=env.get("OWNVOL_SOCKET") or f"/run/docker/plugins/{name}.sock",
        root=os.path.normpath(root),
        defaults=defaults,
        allowed_roots=_roots(env.get("OWNVOL_ALLOWED_ROOTS")),
        mount_root=os.path.normpath(mount_root) if mount_root else "",
        log_level=log_level,
        workers=int(workers_text),
        userns=userns,
        socket_owner=(int(uid_text), int(gid_text)) if owner_text else None,
    )


def open_to_engine(path: str, settings: Settings) -> None:
    """Let a rootless engine's user (OWNVOL_SOCKET_OWNER) pass through the driver's directory path to a volume's
    data (dockerd bind-mounts it as that user, whose root in its namespace has no right over the host root's
    files): group its gid, mode 0710 (pass through, never list or read). Nothing when the socket is root's."""
    if settings.socket_owner is not None:
        os.chown(path, 0, settings.socket_owner[1])
        os.chmod(path, 0o710)
