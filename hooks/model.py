"""The hook's shared data: what several of its floors pass each other, and no behaviour (this module imports
nothing of the hook, nor Docker or a server's client).

- `Settings`: where a server keeps its data and how to reach it, as a service (hooks/services) reads them;
- `DataMount`, `ServerProcess`, `Target`: a watched container's facts (hooks/targets.py `facts` takes them);
- `Health`: one probe's verdict (hooks/health.py `evaluate` decides its state, one of STATES);
- `ActionResult`: what an action reports back to the recovery engine (hooks/recovery.py), which with the
  telemetry stays free of Docker and Redis;
- `Incident`, `ActionRecord`: an incident and one step of its plan as the journal (hooks/journal.py) keeps them.
"""

from __future__ import annotations

import posixpath
import time
from dataclasses import dataclass, field
from typing import Literal

Outcome = Literal["ok", "failed", "skipped"]
# A verification's states (Health.state; health.evaluate decides which), from healthy to worst.
STATES = ("healthy", "latent", "refusing-writes", "loading", "unreachable", "down")


@dataclass
class ActionResult:
    """An action's outcome; detail is JSON-able and goes to the journal and the events as it is
    (`why` when skipped, `error` when failed, what was done when ok)."""

    result: Outcome
    detail: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.result == "ok"


@dataclass(frozen=True)
class Settings:
    """Where a server keeps its data and how to reach it, each fact with its origin.

    data_dir: absolute path inside the container; address: the URL the probe uses (None: unknown);
    files: named paths of its data (e.g. {"appenddirname": "appendonlydir"}), relative to data_dir;
    origins: fact -> "CONFIG GET" | "PATH:LINE" (a config file) | "command line" | "label" | "WORKDIR" | "default";
    problems: what could not be read (a missing config file, a syntax error), for `doctor`;
    persists: whether the server writes to its data dir on its own (False: it keeps nothing on disk, as a Redis
    with `save ""` and `appendonly no`); None when the service does not say;
    paths: the other paths it uses, by setting (e.g. {"configfile": "/etc/redis/sentinel.conf", "unixsocket":
    "/run/redis/redis.sock"}: absolute, or relative to data_dir, as configured), which a log line may name
    (hooks/patterns.py path_of);
    role: what the server is beside a data server ("sentinel" for a Redis Sentinel; "" otherwise);
    writes: the directories besides data_dir the server creates files in, by the setting that names them
    (e.g. {"log_bin": "/var/log/mysql", "unix_socket_directories": "/var/run/postgresql"}), absolute paths in
    the container (writes_of makes them); with data_dir, the only paths a repair may be for;
    links: the links in data_dir the server writes through, as a path relative to data_dir -> where it points
    (PostgreSQL's {"pg_wal": "/wal", "pg_tblspc/16385": "/srv/ts"}): what a message's relative path means
    (resolve).
    """
    data_dir: str
    address: str | None = None
    password: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    persists: bool | None = None
    paths: dict[str, str] = field(default_factory=dict)
    role: str = ""
    writes: dict[str, str] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)


def writes_of(data_dir: str, paths: dict[str, str], directories: tuple[str, ...] = ()) -> dict[str, str]:
    """Settings.writes from a service's path settings (setting -> its value as configured): the directory the
    server creates files in, which is the value itself for a setting in `directories` (tmpdir, a log directory)
    and the directory that holds it for any other (a file, or a base name as MariaDB's log_bin); a relative
    value is taken from data_dir, as the servers take it. Empty values, relative ones with no absolute
    data_dir, and data_dir itself are left out."""
    found = {}
    for name, value in paths.items():
        if not value:
            continue
        directory = value if name in directories else posixpath.dirname(value.rstrip("/")) or "."
        if not directory.startswith("/"):
            if not data_dir.startswith("/"):
                continue
            directory = posixpath.join(data_dir, directory)
        directory = posixpath.normpath(directory)
        if directory != posixpath.normpath(data_dir):
            found[name] = directory
    return found


def resolve(path: str, data_dir: str, links: dict[str, str]) -> str:
    """The absolute path in the container of a path a server's message names: a relative one is taken from
    data_dir, through the links of Settings.links ("pg_wal/archive_status" with {"pg_wal": "/wal"} is
    /wal/archive_status); path itself when it is absolute, or relative with data_dir not absolute."""
    if path.startswith("/") or not data_dir.startswith("/"):
        return path
    clean = posixpath.normpath(path)
    for link in sorted(links, key=len, reverse=True):
        if clean == link or clean.startswith(link + "/"):
            return posixpath.normpath(links[link] + clean[len(link):])
    return posixpath.normpath(posixpath.join(data_dir, clean))


@dataclass(frozen=True)
class DataMount:
    type: str  # bind | volume
    source: str  # the path on the engine's host
    destination: str
    subpath: str  # the Redis dir relative to the mount's destination ("" when it is the destination)
    name: str = ""  # volume name
    driver: str = ""
    file: bool = False  # subpath (or the mount itself, a single-file bind) names a file, not a directory

    @property
    def host_path(self) -> str:
        return posixpath.join(self.source, self.subpath) if self.subpath else self.source

    def as_dict(self) -> dict:
        return {"type": self.type, "source": self.source, "destination": self.destination, "subpath": self.subpath,
                "name": self.name, "driver": self.driver, **({"file": True} if self.file else {})}


@dataclass(frozen=True)
class ServerProcess:
    """A server process as the kernel shows it (proc(5)): pid on the engine's host, argv from
    /proc/PID/cmdline, cwd from /proc/PID/cwd (a path inside the container), and the TCP sockets it listens on
    ((address, port) from /proc/PID/net/tcp and tcp6, matched to its own descriptors)."""
    pid: int
    argv: tuple[str, ...]
    cwd: str
    listening: tuple[tuple[str, int], ...] = ()

    @property
    def retitled(self) -> bool:
        """Its argv was overwritten by a title (Redis's proc-title-template, "redis-server *:6379"): one
        argument with spaces, the original arguments gone."""
        return len(self.argv) == 1 and " " in self.argv[0]


@dataclass
class Target:
    id: str
    name: str
    image: str
    status: str
    labels: dict
    redis_url: str | None  # the server's address (redis:// for Redis and Valkey)
    password: str | None
    data_dir: str
    mount: DataMount | None
    uid: int | None
    gid: int | None
    owner_source: str
    aof_fallback: bool
    notes: list[str] = field(default_factory=list)
    service: str = "redis"
    origins: dict = field(default_factory=dict)  # fact -> where it came from (see hooks/services Settings)
    files: dict = field(default_factory=dict)
    restart_policy: str = ""
    start_opt_in: bool = False
    conflict: dict | None = None
    server_pid: int | None = None
    data_modes: tuple[int, ...] = ()  # the modes the server accepts on its data dir (Service.data_modes)
    remapped: bool = False  # uid/gid are host ids under the engine's userns-remap or rootless (executor.py)
    # what a root helper in the engine's own user namespace gives for uid/gid (`docker run --userns=host`):
    # the host's ids under userns-remap, the container's under a rootless engine; None: uid/gid themselves
    engine_ids: tuple[int, int] | None = None
    persists: bool | None = None  # the server writes to its data dir on its own (Settings.persists)
    paths: dict = field(default_factory=dict)  # its other paths by setting (Settings.paths)
    role: str = ""  # Settings.role ("sentinel")
    mounts: tuple = ()  # the container's own mount table (docker inspect Mounts), for a path a log line names
    path_plan: dict | None = None  # the plan for the path an incident names (hooks/paths.py PathPlan.as_dict)
    writes: dict = field(default_factory=dict)  # Settings.writes: setting -> directory it writes in
    links: dict = field(default_factory=dict)  # Settings.links: relative path in data_dir -> where it points
    idmapped: str | None = None  # an ownvol volume shown through an idmapped mount, in words: never chowned

    def as_dict(self) -> dict:
        return {"id": self.id[:12], "name": self.name, "image": self.image, "status": self.status,
                "service": self.service, "redis_url": _redact(self.redis_url), "data_dir": self.data_dir,
                "mount": self.mount.as_dict() if self.mount else None,
                "owner": None if self.uid is None else f"{self.uid}:{self.gid}", "owner_source": self.owner_source,
                "origins": self.origins, "files": self.files, "restart_policy": self.restart_policy,
                "conflict": self.conflict, "server_pid": self.server_pid, "aof_fallback": self.aof_fallback,
                "persists": self.persists, "writes": self.writes, "links": self.links, "idmapped": self.idmapped,
                "notes": self.notes,
                **({"paths": self.paths} if self.paths else {}), **({"role": self.role} if self.role else {}),
                **({"path_plan": self.path_plan} if self.path_plan else {})}


def _redact(url: str | None) -> str | None:
    if url and "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


@dataclass
class Health:
    """One probe's verdict: state (STATES; health.evaluate decides it), the reasons, the container's status, the
    PING reply, Redis's persistence, memory and clients INFO fields, the data mount's owner (health.owner_of) and
    when it was taken (epoch seconds)."""

    state: str
    reasons: list[str]
    container: str
    ping: str
    persistence: dict = field(default_factory=dict)
    memory: dict = field(default_factory=dict)
    clients: dict = field(default_factory=dict)
    owner: dict | None = None
    at: float = field(default_factory=time.time)
    target: dict | None = None  # Target.as_dict() of the facts this probe used (the status page shows them)
    disk: dict | None = None  # health.disk_usage() of the data mount's source, when reachable from here
    # what a fault the probe found is about beside the data dir, for the incident's detail ({"path_of":
    # "configfile", "needs": "create"}: hooks/paths.py); None: the data dir
    about: dict | None = None

    @property
    def healthy(self) -> bool:
        return self.state == "healthy"

    def as_dict(self) -> dict:
        return {"state": self.state, "reasons": self.reasons, "container": self.container, "ping": self.ping,
                "persistence": self.persistence, "memory": self.memory, "clients": self.clients, "owner": self.owner}


@dataclass
class Incident:
    """A failure the hook works on: which container, its error type, where it was seen (origin: log | health | manual),
    detail (the detection, the plan), status (open | resolved | gave-up | abandoned), epoch seconds of detection,
    opening and closing, and the outcome in words."""

    id: int
    container_id: str
    container_name: str
    error_type: str
    origin: str
    detail: dict
    status: str
    detected_at: float
    opened_at: float
    closed_at: float | None
    outcome: str | None


@dataclass
class ActionRecord:
    """One step of an incident's plan as the journal holds it (times in epoch seconds; verified: the verification after
    it passed, failed, or None when none ran)."""

    incident_id: int
    step: int
    action: str
    started_at: float
    finished_at: float | None
    result: str | None  # ok | failed | skipped | None (started, never finished)
    verified: bool | None
    detail: dict
