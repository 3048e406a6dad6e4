"""Health of a watched server, every family's parts of it: the owner and mode of its data mount (owner_of),
the space on its filesystem (disk_usage), and the Redis family's probe (Redis, Valkey: redis-py PING and INFO,
the container state). PostgreSQL and MariaDB are probed through their own tools (hooks/services/sql.py) and
give the same model.Health.

evaluate() is the pure rule that turns the Redis family's observations into a state; probe() gathers them.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ownvol.ownership import OwnershipError, inspect_root

from .data_path import data_path
from .model import DataMount, Health, Target

PERSISTENCE_FIELDS = ("loading", "aof_enabled", "aof_rewrite_in_progress", "rdb_bgsave_in_progress",
                      "aof_rewrite_scheduled", "aof_last_write_status", "aof_last_bgrewrite_status",
                      "rdb_last_bgsave_status", "aof_rewrites_consecutive_failures")
# INFO persistence fields that are 1 while a save runs or waits to (a child not yet reaped still counts)
SAVE_FIELDS = ("rdb_bgsave_in_progress", "aof_rewrite_in_progress", "aof_rewrite_scheduled")


def saving(health: Health) -> bool:
    """Whether Redis runs a save (BGSAVE, AOF rewrite) or has one scheduled: its outcome is still to come."""
    return any(health.persistence.get(f) == 1 for f in SAVE_FIELDS)


def evaluate(container: str, ping: str, persistence: dict, owner: dict | None) -> tuple[str, list[str]]:
    """State and reasons. ping is 'PONG', 'MISCONF ...', 'LOADING ...' or an error text."""
    if container != "running":
        return "down", [f"container {container}"]
    if persistence.get("loading") == 1 or ping.startswith("LOADING"):
        return "loading", ["Redis is loading its data"]
    if not persistence and ping != "PONG" and not ping.startswith("MISCONF"):
        return "unreachable", [ping]
    reasons = []
    refusing = ping.startswith("MISCONF")
    if ping.startswith("MISCONF"):
        reasons.append(ping[:120])
    if persistence.get("aof_enabled") == 1 and persistence.get("aof_last_write_status") == "err":
        refusing = True
        reasons.append("aof_last_write_status:err")
    if persistence.get("rdb_last_bgsave_status") == "err":
        refusing = True
        reasons.append("rdb_last_bgsave_status:err")
    if refusing:
        return "refusing-writes", reasons
    if persistence.get("aof_enabled") == 1 and persistence.get("aof_last_bgrewrite_status") == "err":
        reasons.append("aof_last_bgrewrite_status:err (the next restart may crash)")
    if owner and not owner.get("ok", True):
        reasons.append(f"data mount {owner.get('problem')}")
    if reasons:
        return "latent", reasons
    if ping != "PONG":
        return "unreachable", [ping]
    return "healthy", []


def unknown_health(health: Health) -> str | None:
    """Why a running server's health cannot be told from here (no address known; it answered, refusing the hook's
    password or ACL user), so that nothing is done to it on a guess; None when the probe's verdict stands."""
    if health.container != "running" or health.state != "unreachable":
        return None
    if NO_ADDRESS in health.reasons:
        return f"{NO_ADDRESS}: its health is unknown"
    if health.ping.startswith(REFUSED_US):
        return (f"the server {health.ping[:160]} (a password or ACL user the hook does not know: labels "
                "ownvol.redis.url, ownvol.redis.password): it runs, its health is unknown")
    return None


def redis_client(target: Target, timeout: float = 2.0) -> redis.Redis | None:
    """A client for target's Redis (timeout in seconds, replies decoded); None when no address is known."""
    if not target.redis_url:
        return None
    return connect(target.redis_url, target.password, timeout)


def connect(url: str, password: str | None, timeout: float) -> redis.Redis:
    """A client that tries a command twice at most, the second time at once: enough to make again a kept
    connection a restart broke; the callers poll (or ask again: targets.LIVE_RETRY) at their own pace. (redis-py 6
    and later retry a refused connection 10 times with jittered exponential back-off up to 1 s,
    redis/_defaults.py: a probe of a Redis still starting returned seconds after it answered, and a CONFIG GET of
    one dying at start-up held the repair of what killed it 35 to 65 ms.)"""
    return redis.Redis.from_url(url, password=password or None, socket_timeout=timeout,
                                socket_connect_timeout=timeout, decode_responses=True, retry=Retry(NoBackoff(), 1))


_probe_clients: dict[tuple[str, str], redis.Redis] = {}


def probe_client(target: Target) -> redis.Redis | None:
    """The probes' client for target's address, kept between probes: a connection per probe cost more
    than the probe (bench: watcher_cpu_pct). A connection a restart broke is made again by redis-py."""
    if not target.redis_url:
        return None
    key = (target.redis_url, target.password or "")
    client = _probe_clients.get(key)
    if client is None:
        if len(_probe_clients) >= 256:
            for old in _probe_clients.values():
                old.close()
            _probe_clients.clear()
        client = _probe_clients[key] = connect(target.redis_url, target.password, 2.0)
    return client


REFUSED_US = "answers but refuses the hook"  # PING's text when the server answered with an auth or ACL refusal
NO_ADDRESS = "no Redis address known (label ownvol.redis.url)"


def ping_text(client: redis.Redis) -> str:
    """PING's reply as text: PONG, the error Redis replied (MISCONF ...), LOADING ..., `answers but refuses the
    hook: ...` for a password or ACL refusal (NOAUTH, WRONGPASS, NOPERM), or `error: ...` when the connection
    failed."""
    try:
        return "PONG" if client.ping() else "no reply"
    except redis.exceptions.NoPermissionError as exc:
        return f"{REFUSED_US}: NOPERM {exc}"
    except redis.exceptions.ResponseError as exc:
        return str(exc)
    except redis.exceptions.BusyLoadingError as exc:
        return f"LOADING {exc}"
    except redis.exceptions.AuthenticationError as exc:
        return f"{REFUSED_US}: {exc}"
    except redis.exceptions.RedisError as exc:
        return f"error: {exc}"


def owner_of(target: Target, local: bool, running: bool = False) -> dict | None:
    """Whether the service's uid:gid can write in its data mount's root ("ok"; "exact": owned by exactly that
    uid:gid); None when not checkable from here, or not a
    fact worth acting on: while the server runs, only against the uid:gid its process really runs as (a
    server that answers and owns its data is healthy whatever the container's user says), and never for a
    server that runs as root (no ownership stops it; ownvol never gives data to root)."""
    if not local or target.mount is None or target.uid is None or target.gid is None or target.uid == 0:
        return None
    if running and not target.owner_source.startswith("process"):
        return None
    path = target.mount.host_path
    try:
        with data_path(target.mount) as reach:
            state = inspect_root(reach, target.uid, target.gid)
    except (OwnershipError, OSError) as exc:
        return {"path": path, "ok": False, "problem": str(exc)}
    usable = can_write(state.uid, state.gid, state.mode, target.uid, target.gid)
    problems = [] if usable else [f"owner {state.uid}:{state.gid} mode {state.mode:04o}: "
                                  f"{target.uid}:{target.gid} cannot write there"]
    if target.data_modes and state.mode not in target.data_modes:
        accepted = " or ".join(f"{m:04o}" for m in target.data_modes)
        problems.append(f"mode {state.mode:04o}, the server accepts {accepted}")
    return {"path": path, "uid": state.uid, "gid": state.gid, "mode": f"{state.mode:04o}", "ok": not problems,
            "problem": "; ".join(problems), "exact": state.ok}


def write_blocked(target: Target, local: bool) -> str | None:
    """Why the running server's uid cannot create entries in its data dir now, read afresh (owner_of with the facts
    of a running server: its process's uid:gid), e.g. `/srv/data owner 999:999 mode 0000: 999:999 cannot write
    there`; None when it can, or when that cannot be told from here (not reachable, no process uid, root)."""
    owner = owner_of(target, local, running=True)
    if not owner or "mode" not in owner or target.uid is None or target.gid is None:
        return None
    if can_write(owner["uid"], owner["gid"], int(owner["mode"], 8), target.uid, target.gid):
        return None
    return f"{owner['path']} owner {owner['uid']}:{owner['gid']} mode {owner['mode']}: " \
           f"{target.uid}:{target.gid} cannot write there"


def writable_mounts(mounts: list[dict]) -> list[dict]:
    """The container's writable binds and volumes (its inspect's Mounts entries of type bind or volume, RW, with
    a Source): what the server may have to write in. A tmpfs is left out (the engine makes it anew at each
    start, with the owner its options give), and so is a plugin's volume (no Source in the inspect)."""
    return [m for m in mounts if m.get("Type") in ("bind", "volume") and m.get("RW", True) and m.get("Source")]


def _holder(path: str, mounts: list[dict]) -> dict | None:
    """The mount (a Mounts entry) that holds a path of the container: the longest Destination containing it."""
    best = None
    for m in mounts:
        dest = (m.get("Destination") or "").rstrip("/") or "/"
        if (path == dest or path.startswith(dest.rstrip("/") + "/")) and \
                (best is None or len(dest) > len((best.get("Destination") or "").rstrip("/"))):
            best = m
    return best


def mount_verdicts(target: Target, mounts: list[dict], local: bool) -> list[dict]:
    """Every writable mount of the container (writable_mounts of its inspect's Mounts) against the server's
    uid:gid: can it create entries where the server writes? One verdict per directory a setting names on a
    mount (its data dir, Settings.writes: "log_bin", "unix_socket_directories"...), else one for the mount's
    root, each {"destination", "source", "type", "needed_by" (the settings; [] for a mount no setting names),
    "candidate" (needed_by is not empty: only such a mount is the server's to write, and may be repaired),
    "path" (the directory checked, in the container: the deepest existing one on the way to the setting's, where
    the server must create the rest), "wanted" (the setting's directory, or the mount's root), "host_path",
    "uid", "gid", "mode", "ok", "problem"}.
    [] when not checkable from here (not local, no uid:gid known, or root, which no owner stops)."""
    if not local or target.uid is None or target.gid is None or target.uid == 0:
        return []
    rw = writable_mounts(mounts)
    needs: dict[int, dict[str, list[str]]] = {}
    for name, path in {"data dir": target.data_dir, **target.writes}.items():
        holder = _holder(path, mounts) if path.startswith("/") else None
        if holder is not None and any(holder is m for m in rw):
            needs.setdefault(id(holder), {}).setdefault(posixpath.normpath(path), []).append(name)
    verdicts: dict[tuple[str, str], dict] = {}
    for m in rw:
        dest = (m.get("Destination") or "").rstrip("/") or "/"
        for directory, names in (needs.get(id(m)) or {dest: []}).items():
            verdict = _verdict(target, m, dest, directory, names)
            same = verdicts.setdefault((dest, verdict["path"]), verdict)
            if same is not verdict:
                same["needed_by"] = [*same["needed_by"], *names]
    return list(verdicts.values())


def _verdict(target: Target, m: dict, dest: str, directory: str, names: list[str]) -> dict:
    assert target.uid is not None and target.gid is not None
    relative = "" if directory == dest else posixpath.relpath(directory, dest)
    existing: list[str] = []
    for part in relative.split("/") if relative else []:
        try:
            st = os.lstat(os.path.join(m["Source"], *existing, part))
        except OSError:
            break
        if not stat.S_ISDIR(st.st_mode):
            break
        existing.append(part)
    mount = DataMount(m["Type"], m["Source"], dest, "/".join(existing), m.get("Name") or "", m.get("Driver") or "")
    base = {"destination": dest, "source": m["Source"], "type": m["Type"], "needed_by": names,
            "candidate": bool(names), "path": posixpath.join(dest, *existing), "wanted": directory,
            "host_path": mount.host_path}
    try:
        with data_path(mount) as reach:
            state = inspect_root(reach, target.uid, target.gid)
    except (OwnershipError, OSError) as exc:
        return {**base, "ok": False, "problem": str(exc)}
    usable = can_write(state.uid, state.gid, state.mode, target.uid, target.gid)
    return {**base, "uid": state.uid, "gid": state.gid, "mode": f"{state.mode:04o}", "ok": usable,
            "problem": "" if usable else f"owner {state.uid}:{state.gid} mode {state.mode:04o}: "
                                         f"{target.uid}:{target.gid} cannot write there"}


def can_write(owner_uid: int, owner_gid: int, mode: int, uid: int, gid: int) -> bool:
    """Whether uid:gid may create entries in a directory owned owner_uid:owner_gid with mode (write and search
    permission by the owner, group or other bits, as the kernel picks them; supplementary groups and ACLs
    aside). The official images give their data dir to the user alone (chown redis, the group unchanged): a
    server that can write there is healthy, whoever the group is."""
    if owner_uid == uid:
        bits = mode >> 6
    elif owner_gid == gid:
        bits = mode >> 3
    else:
        bits = mode
    return bits & 0o3 == 0o3


def disk_usage(target: Target, local: bool) -> dict | None:
    """Space on the filesystem of the data mount's source (statvfs: f_bavail and f_blocks times f_frsize):
    {"path", "free_bytes", "size_bytes"}; None when the source is not reachable from here or cannot be read."""
    if not local or target.mount is None:
        return None
    try:
        usage = shutil.disk_usage(target.mount.source)
    except OSError:
        return None
    return {"path": target.mount.source, "free_bytes": usage.free, "size_bytes": usage.total}


# Below this many free bytes a data mount's filesystem has no room: a save (a new RDB or a rewritten AOF, written
# whole before it replaces the old one) cannot finish there, nor can a server that creates its files at start.
MIN_ROOM = 1 << 20


def no_room(disk: dict | None) -> str | None:
    """Why a filesystem (disk_usage's {"path", "free_bytes", "size_bytes"}) has no room for a save now (fewer than
    MIN_ROOM bytes free), e.g. `/srv/data has 4096 bytes free of 16777216`; None when it has, or when disk is
    None (not reachable from here: not told)."""
    if disk is None or disk["free_bytes"] >= MIN_ROOM:
        return None
    return f"{disk['path']} has {disk['free_bytes']} bytes free of {disk['size_bytes']}"


def probe(target: Target, container_status: str, local_paths: bool) -> Health:
    """Probe target now: health from the container status, PING and INFO persistence (Redis's own fields, redis.io INFO
    docs) and, when local_paths and the mount is reachable here, the mount's root owner and its filesystem's space;
    the facts used (target.as_dict()) ride along for the status page. A Sentinel (target.role) is asked
    Sentinel's questions (sentinel_probe)."""
    if target.role == "sentinel":
        health = sentinel_probe(target, container_status, local_paths)
        health.target = target.as_dict()
        return health
    health = _probe(target, container_status, local_paths)
    health.target = target.as_dict()
    health.disk = disk_usage(target, local_paths)
    return health


SENTINEL_SAVE = {"path_of": "configfile", "needs": "create", "subject": "sentinel-config"}


def sentinel_probe(target: Target, container_status: str, local_paths: bool) -> Health:
    """A Redis Sentinel's health, by Sentinel's own questions: PING, `SENTINEL MASTERS` (it is a Sentinel and
    answers about what it monitors) and `SENTINEL FLUSHCONFIG`, which saves its config and, since Redis 7.0,
    replies `ERR Failed to save config file` when it cannot (6.2 replies OK either way: src/sentinel.c); with
    the engine's paths local, also whether its process's uid can create files in the directory that holds its
    config (through /proc/PID/root, the container's own view). A Sentinel that cannot save is `latent`: it
    runs, and loses its id, epochs and failovers at the next start. Health.about says which path it is about."""
    if container_status != "running":
        state, reasons = evaluate(container_status, "", {}, None)
        return Health(state, reasons, container_status, "")
    client = probe_client(target)
    if client is None:
        return Health("unreachable", [NO_ADDRESS], container_status, "")
    ping = ping_text(client)
    if ping != "PONG":
        state, reasons = evaluate(container_status, ping, {}, None)
        return Health(state, reasons, container_status, ping)
    try:
        masters = client.execute_command("SENTINEL", "MASTERS")
    except redis.exceptions.RedisError as exc:
        return Health("unreachable", [f"SENTINEL MASTERS: {exc}"], container_status, ping)
    problem = None
    try:
        client.execute_command("SENTINEL", "FLUSHCONFIG")
    except redis.exceptions.ResponseError as exc:
        problem = f"SENTINEL FLUSHCONFIG: {exc}"
    except redis.exceptions.RedisError as exc:
        return Health("unreachable", [f"SENTINEL FLUSHCONFIG: {exc}"], container_status, ping)
    if problem is None and local_paths:
        problem = _config_dir_blocked(target)
    memory = {"sentinel_masters": len(masters or [])}
    if problem:
        config = target.paths.get("configfile", "its config file")
        health = Health("latent", [f"Sentinel cannot save {config}: {problem}"], container_status, ping,
                        memory=memory)
        health.about = dict(SENTINEL_SAVE)
        return health
    return Health("healthy", [], container_status, ping, memory=memory)


def _config_dir_blocked(target: Target, proc: str = "/proc") -> str | None:
    """Why the server's process uid cannot create files beside its config file (the directory as the container
    sees it, through /proc/PID/root), None when it can or it cannot be told (no process, not found)."""
    config = target.paths.get("configfile")
    if not config or not target.server_pid or target.uid is None or target.gid is None or target.uid == 0:
        return None
    directory = os.path.dirname(config)
    try:
        st = os.stat(f"{proc}/{target.server_pid}/root{directory}")
    except OSError:
        return None
    if can_write(st.st_uid, st.st_gid, st.st_mode & 0o7777, target.uid, target.gid):
        return None
    return f"{directory} owner {st.st_uid}:{st.st_gid} mode {st.st_mode & 0o7777:04o}: " \
           f"{target.uid}:{target.gid} cannot create files there"


def _probe(target: Target, container_status: str, local_paths: bool) -> Health:
    reachable = local_paths and target.mount is not None and os.path.isdir(target.mount.host_path)
    owner = owner_of(target, reachable, running=container_status == "running")
    if container_status != "running":
        state, reasons = evaluate(container_status, "", {}, owner)
        return Health(state, reasons, container_status, "", owner=owner)
    client = probe_client(target)
    if client is None:
        return Health("unreachable", [NO_ADDRESS], container_status, "", owner=owner)
    ping = ping_text(client)
    persistence, memory, clients = {}, {}, {}
    try:
        info = client.info()
        persistence = {k: info.get(k) for k in PERSISTENCE_FIELDS if k in info}
        memory = {k: info.get(k) for k in ("used_memory", "used_memory_peak", "maxmemory") if k in info}
        clients = {k: info.get(k) for k in ("connected_clients", "blocked_clients") if k in info}
    except redis.exceptions.RedisError as exc:
        if ping == "PONG":
            ping = f"error: INFO failed: {exc}"
    # a server that keeps nothing on disk is not stopped by its data dir's owner: nothing to act on while it runs
    acting_owner = None if target.persists is False else owner
    state, reasons = evaluate(container_status, ping, persistence, acting_owner)
    return Health(state, reasons, container_status, ping, persistence, memory, clients, owner)
