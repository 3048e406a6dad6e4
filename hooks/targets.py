"""Which containers the hook watches, and the facts it needs about each one.

A container belongs to a service family (hooks/services) by its command or image. Its facts come from
the running system, in this order, never from a guess (docs/hook.md "How the hook decides each fact"):
- the owner its data must have: the uid:gid its server process runs as (the container's process table,
  through the engine's `top`; else /proc/<pid>/status of its main process), then the journal's record of
  its last healthy run, the labels ownvol.uid/ownvol.gid, a non-root container user (Config.User: the
  engine starts the process as it and a non-root process cannot change it; a name the image's /etc/passwd
  does not have leaves the owner unknown, never the image's), the profile of its official
  image (ownvol/profiles.py), a non-root image USER, the ownvol volume's own uid:gid; else unknown.
  A root start is not a fact about the server: the official images start as root and drop to their user.
- where its data lives and how to reach it: the running server's CONFIG GET, else its configuration as the
  server reads it (its config file read from inside the container, the command line, the defaults).
Facts that cannot change while a container runs are computed once per start (FactCache).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import posixpath
import socket
import stat
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import docker

from ownvol.profiles import profile_for_image
from ownvol.status import driver_name, is_driver
from ownvol.status import owner as volume_owner

from .model import DataMount, ServerProcess, Settings, Target
from .services import Service, by_family, command_of, service_for

WATCH_LABEL = "ownvol.watch"
UID_LABEL, GID_LABEL = "ownvol.uid", "ownvol.gid"
AOF_FALLBACK_LABEL = "ownvol.aof-fallback"
HOOK_LABEL = "ownvol.hook"
START_LABEL = "ownvol.start"  # "true": the hook may start a stopped container whose restart policy is "no"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def is_service(attrs: dict) -> bool:
    """The container runs one of the hook's service families (hooks/services), by command or image."""
    return service_for(attrs) is not None


def is_watched(attrs: dict, selector: dict[str, str] | None = None) -> bool:
    """A service of ours (or opted in), not opted out, matching the selector; a container labelled
    ownvol.hook=X belongs to the hook whose selector says ownvol.hook=X and no other."""
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    selector = selector or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        return False
    if HOOK_LABEL in labels and selector.get(HOOK_LABEL) != labels[HOOK_LABEL]:
        return False
    choice = labels.get(WATCH_LABEL)
    if choice is not None and choice.strip().lower() in ("false", "0", "no", "off"):
        return False
    return _truthy(choice) or is_service(attrs)


def data_mount(attrs: dict, directory: str) -> DataMount | None:
    """The mount that holds directory: the one with the longest destination that contains it."""
    best = None
    for m in attrs.get("Mounts") or []:
        dest = m.get("Destination", "").rstrip("/") or "/"
        if directory == dest or directory.startswith(dest.rstrip("/") + "/"):
            if best is None or len(dest) > len(best["Destination"]):
                best = m
    if best is None or best.get("Type") not in ("bind", "volume"):
        return None
    dest = best["Destination"].rstrip("/") or "/"
    sub = posixpath.relpath(directory, dest) if directory != dest else ""
    return DataMount(best["Type"], best.get("Source", ""), dest, "" if sub == "." else sub,
                     best.get("Name", ""), best.get("Driver", ""))


def nearest_existing(mount: DataMount, exists: Callable[[str], bool | None]) -> DataMount:
    """mount with its subpath cut to the deepest existing directory on the way to the data dir, never above the
    mount: a server whose data dir does not exist yet must create it there (PostgreSQL's entrypoint runs
    `mkdir -p "$PGDATA"`, initdb creates the last component). exists(relative path below the mount's source)
    -> True, False (missing), None (not a plain directory: a link, a file, unreadable): the walk stops before
    a missing component and keeps the path as it is at anything else (data_path then names it). mount itself
    when the data dir exists or nothing is missing."""
    if not mount.subpath:
        return mount
    parts = mount.subpath.split("/")
    for depth in range(1, len(parts) + 1):
        found = exists("/".join(parts[:depth]))
        if found is None:
            return mount
        if found is False:
            return dataclasses.replace(mount, subpath="/".join(parts[:depth - 1]))
    return mount


def host_dir_state(source: str) -> Callable[[str], bool | None]:
    """exists() for nearest_existing on the engine's host: lstat of source/relative, no link followed."""
    def state(relative: str) -> bool | None:
        try:
            st = os.lstat(posixpath.join(source, relative))
        except FileNotFoundError:
            return False
        except OSError:
            return None
        return True if stat.S_ISDIR(st.st_mode) else None
    return state


def only_writable_mount(attrs: dict) -> dict | None:
    """The container's one writable bind or volume (its Mounts entry), None when it has none or several."""
    writable = [m for m in attrs.get("Mounts") or [] if m.get("Type") in ("bind", "volume") and m.get("RW", True)]
    return writable[0] if len(writable) == 1 else None


def parse_user(user: str) -> tuple[str, str | None]:
    name, _, group = user.partition(":")
    return name, group or None


PASSWD_MAX = 1 << 20  # bytes of a container's /etc/passwd or /etc/group the hook reads at most


def _read_file(container, path: str, hops: int = 4, missing: str | None = "") -> str | None:
    """A small text file from the container's own filesystem, a symlink followed there (a few hops, as the
    engine resolves a user); "" when it is missing, dangling, looping or larger than PASSWD_MAX
    (or `missing` when given)."""
    try:
        stream, info = container.get_archive(path)
        if (info or {}).get("size", 0) > PASSWD_MAX:
            return missing
        data = bytearray()
        for chunk in stream:
            data += chunk
            if len(data) > PASSWD_MAX + 64 * 1024:  # the tar's own headers and padding beside the file
                return missing
        with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
            member = tar.next()
            if member is None:
                return missing
            if member.issym():
                target = posixpath.normpath(posixpath.join(posixpath.dirname(path), member.linkname))
                return _read_file(container, target, hops - 1) if hops > 0 else ""
            content = tar.extractfile(member)
            return content.read().decode(errors="replace") if content else ""
    except (docker.errors.APIError, tarfile.TarError, KeyError):
        return missing


LISTING_MAX = 4 << 20  # bytes of a directory's tar the hook reads to list its names (an include glob)


def _list_dir(container, path: str) -> list[str] | None:
    """Names in a directory of the container (for `include /etc/redis/*.conf`); None when unreadable.
    Only the tar headers within LISTING_MAX bytes are read: a huge directory lists partly."""
    try:
        stream, _ = container.get_archive(path)
        data = bytearray()
        for chunk in stream:
            data += chunk
            if len(data) > LISTING_MAX:
                break
        names = []
        with tarfile.open(fileobj=io.BytesIO(bytes(data)), mode="r|") as tar:
            try:
                for member in tar:
                    parts = member.name.split("/")
                    if len(parts) == 2 and parts[1] and not member.isdir():
                        names.append(parts[1])
            except tarfile.ReadError:
                pass
        return names
    except (docker.errors.APIError, tarfile.TarError):
        return None


@dataclass
class ContainerFiles:
    """A container as hooks/services.ContainerView: its inspect and its own files, read through the engine."""
    container: object
    attrs: dict

    def read_file(self, path: str) -> str | None:
        return _read_file(self.container, path, missing=None)

    def list_dir(self, path: str) -> list[str] | None:
        return _list_dir(self.container, path)


def _lookup(table: str, key: str) -> list[str] | None:
    for line in table.splitlines():
        parts = line.split(":")
        if len(parts) >= 4 and (parts[0] == key or parts[2] == key):
            return parts
    return None


def resolve_user(user: str, passwd: str, group: str) -> tuple[int, int] | None:
    """uid:gid of a Docker user string, as the engine would run it; None if the name is unknown."""
    name, grp = parse_user(user)
    if name.isdigit():
        uid = int(name)
        entry = _lookup(passwd, name)
        primary = int(entry[3]) if entry else 0  # the engine's rule: a uid not in passwd runs with gid 0
    else:
        entry = _lookup(passwd, name)
        if not entry:
            return None
        uid, primary = int(entry[2]), int(entry[3])
    if grp is None:
        return uid, primary
    if grp.isdigit():
        return uid, int(grp)
    gentry = _lookup(group, grp)
    return (uid, int(gentry[2])) if gentry else None


OWNVOL_STATUS = ("uid", "gid", "mode", "policy")  # the Status keys ownvol's driver gives every volume (docs/driver.md)


def _ownvol_status(client: docker.DockerClient, mount: DataMount | None) -> dict | None:
    """The Status of an ownvol volume: a volume of the driver (OWNVOL_DRIVER_NAME), or of any driver whose Status
    carries all of ownvol's keys (a driver installed under another name); None otherwise."""
    if not mount or mount.type != "volume" or mount.driver in ("", "local"):
        return None
    try:
        status = client.api.inspect_volume(mount.name).get("Status") or {}
    except docker.errors.APIError:
        return None
    if not is_driver(mount.driver, driver_name()) and not all(k in status for k in OWNVOL_STATUS):
        return None
    return status


def _ownvol_volume_owner(client: docker.DockerClient, mount: DataMount | None) -> tuple[int, int] | None:
    """The uid:gid an ownvol volume is for (its Status); None when the mount is no ownvol volume."""
    status = _ownvol_status(client, mount)
    return volume_owner(status) if status is not None else None


def _ownvol_idmap(client: docker.DockerClient, mount: DataMount | None) -> str | None:
    """What an ownvol volume shown through an idmapped mount is, in words (Status ownership "idmap", see
    docs/driver.md); None for any other mount."""
    status = _ownvol_status(client, mount)
    if not status or status.get("ownership") != "idmap" or mount is None:
        return None
    view = f", a view of {status['view_of']}" if status.get("view_of") else ""
    return (f"ownvol volume {mount.name} is an idmapped mount showing its data as {status.get('uid')}:"
            f"{status.get('gid')}{view}")


def volume_mountpoint(client: docker.DockerClient, name: str) -> str:
    """A volume's Mountpoint (`docker volume inspect`): a plugin's volume has no Source in the container's
    Mounts (moby's container inspect leaves it empty for volumes of a driver other than local)."""
    try:
        return client.api.inspect_volume(name).get("Mountpoint") or ""
    except docker.errors.APIError:
        return ""


_image_users: dict[str, str] = {}


def _image_user(client: docker.DockerClient, image_id: str) -> str:
    """The image's own user. Cached by image ID, a digest of immutable content: the health probe asks
    for every container every interval (bench: watcher_cpu_pct)."""
    if image_id in _image_users:
        return _image_users[image_id]
    try:
        user = client.api.inspect_image(image_id).get("Config", {}).get("User") or ""
    except docker.errors.APIError:
        return ""
    if image_id.startswith("sha256:"):
        if len(_image_users) >= 256:
            _image_users.clear()
        _image_users[image_id] = user
    return user


ROOT_USERS = ("", "0", "root")


def _non_root(user: str) -> bool:
    return parse_user(user)[0] not in ROOT_USERS


def server_process(container, service: Service, pid: int | None = None, proc: str = "/proc"
                   ) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the service's server process in the container: the lowest pid whose name or command is
    the server's among the container's main process (pid) and the processes below it, read from proc when it
    shows pid's children (_below) and pid is the container's (_of_container); None at once when proc shows no pid
    (the engine's table, asked then, waits until the engine has handled the exit); else in the engine's process
    table (`docker top`: moby daemon/top_unix.go runs ps on the engine's host with these columns, 20 ms or more,
    holding the container's lock); else, that table refused, the main process's effective uid/gid (proc(5)
    Uid/Gid lines) when it is the server."""
    tree = None
    if pid and os.path.isdir(proc):
        if not os.path.exists(f"{proc}/{pid}"):
            return None  # the container's init has exited, and every process below it with it (pid_namespaces(7))
        tree = _below(pid, proc) if _of_container(pid, container.id, proc) else None
    if tree is not None:
        found = [(p, uid, gid) for p in tree if (row := _process_row(p, proc)) is not None
                 for comm, args, uid, gid in (row,) if service.is_server(comm, args)]
        return min(found) if found else None
    try:
        table = container.top(ps_args="-o pid,euid,egid,comm,args")
        titles = [t.upper() for t in table.get("Titles") or []]
        col = {name: titles.index(name) for name in ("PID", "EUID", "EGID", "COMMAND") if name in titles}
        args_at = len(titles) - 1
        found = []
        for row in table.get("Processes") or []:
            comm = row[col["COMMAND"]] if "COMMAND" in col else ""
            if service.is_server(comm, row[args_at]):
                found.append((int(row[col["PID"]]), int(row[col["EUID"]]), int(row[col["EGID"]])))
        if found:
            return min(found)
        if table.get("Processes"):
            return None
    except (docker.errors.APIError, KeyError, ValueError, IndexError):
        pass
    if not pid:
        return None
    row = _process_row(pid, proc)
    if row is None or not service.is_server(row[0], row[1]):
        return None
    return pid, row[2], row[3]


def _of_container(pid: int, container_id: str, proc: str) -> bool:
    """Whether process pid, as proc shows it, is in the container's cgroup: its /proc/PID/cgroup names the
    container's id (moby's cgroup parent: `/docker/ID`, or `docker-ID.scope` with the systemd driver; the paths
    are relative to the reader's cgroup namespace, cgroup_namespaces(7)). A pid the engine gave in a pid
    namespace this process does not share names another process here, or none."""
    try:
        return bool(container_id) and container_id in open(f"{proc}/{pid}/cgroup").read()
    except OSError:
        return False


PROCESSES_MAX = 4096  # processes _below reads at most: a container's, not a fork bomb's


def _below(pid: int, proc: str) -> list[int] | None:
    """pid and the processes below it, parents first: each one's children from proc's /proc/PID/task/TID/children
    (proc(5): Linux 3.5, CONFIG_PROC_CHILDREN; a snapshot, as ps takes one). In a container these are what its
    init started, an orphan included (reparented to the namespace's init, pid_namespaces(7)); what `docker exec`
    started is not (its parent is the runtime). None when proc does not show pid's children."""
    seen: list[int] = []
    todo = [pid]
    while todo and len(seen) < PROCESSES_MAX:
        current = todo.pop(0)
        try:
            tasks = os.listdir(f"{proc}/{current}/task")
            children = [int(c) for tid in tasks for c in open(f"{proc}/{current}/task/{tid}/children").read().split()]
        except (OSError, ValueError):
            if current == pid:
                return None
            continue  # exited meanwhile
        seen.append(current)
        todo += children
    return seen


def _process_row(pid: int, proc: str) -> tuple[str, str, int, int] | None:
    """(name, command line, effective uid, effective gid) of process pid from proc (proc(5) status Name, Uid, Gid;
    cmdline's NULs as spaces, empty for a zombie), as ps shows comm, args, euid and egid; None when unreadable."""
    fields = _status_fields(pid, proc)
    if fields is None or (ids := _effective_ids(fields)) is None:
        return None
    try:
        cmdline = open(f"{proc}/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    return fields.get("Name", "").strip(), cmdline, ids[0], ids[1]


def _status_fields(pid: int, proc: str) -> dict[str, str] | None:
    """Process pid's proc(5) status lines as {field: value as written}; None when it cannot be read."""
    try:
        status = open(f"{proc}/{pid}/status").read()
    except OSError:
        return None
    return dict(line.split(":", 1) for line in status.splitlines() if ":" in line)


def _effective_ids(fields: dict[str, str]) -> tuple[int, int] | None:
    """(effective uid, effective gid) from a status's fields (proc(5) Uid/Gid lines: real, effective, saved,
    filesystem, each shown in the reader's user namespace); None when they are not there."""
    try:
        return int(fields["Uid"].split()[1]), int(fields["Gid"].split()[1])
    except (KeyError, IndexError, ValueError):
        return None


def process_ids(pid: int, proc: str = "/proc") -> tuple[int, int] | None:
    """(effective uid, effective gid) of process pid in this process's ids (_effective_ids); None when it cannot be
    read."""
    fields = _status_fields(pid, proc)
    return _effective_ids(fields) if fields is not None else None


def process_argv(raw: bytes) -> tuple[str, ...]:
    """A process's argv from its /proc/PID/cmdline (proc(5): the arguments, each ended by a NUL); () for a
    zombie or a kernel thread (empty)."""
    if not raw:
        return ()
    return tuple(arg.decode(errors="replace") for arg in raw.removesuffix(b"\0").split(b"\0"))


_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column (include/net/tcp_states.h)


def _hex_address(text: str) -> str:
    """An address of /proc/net/tcp{,6}: the kernel prints each 32-bit word of it in host byte order."""
    raw = bytes.fromhex(text)
    words = b"".join(raw[i:i + 4][::-1] if sys.byteorder == "little" else raw[i:i + 4] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET6 if len(words) == 16 else socket.AF_INET, words)


def listening_sockets(table: str, inodes: set[int]) -> list[tuple[str, int]]:
    """(address, port) of the listening sockets among inodes in a /proc/PID/net/tcp or tcp6 table (proc(5):
    sl local_address rem_address st ... inode, the address as ADDR:PORT in hex)."""
    found = []
    for line in table.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 10 or cols[3] != _LISTEN or not cols[9].isdigit() or int(cols[9]) not in inodes:
            continue
        address, _, port = cols[1].partition(":")
        try:
            found.append((_hex_address(address), int(port, 16)))
        except ValueError:
            continue
    return found


def read_process(pid: int, proc: str = "/proc") -> ServerProcess | None:
    """The server process pid as /proc shows it (ServerProcess); None when it is gone or unreadable."""
    try:
        argv = process_argv(open(f"{proc}/{pid}/cmdline", "rb").read())
        cwd = os.readlink(f"{proc}/{pid}/cwd")
    except OSError:
        return None
    inodes = set()
    try:
        for fd in os.listdir(f"{proc}/{pid}/fd"):
            try:
                link = os.readlink(f"{proc}/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1].isdigit():
                inodes.add(int(link[8:-1]))
    except OSError:
        pass
    listening: list[tuple[str, int]] = []
    for table in ("tcp", "tcp6"):
        try:
            listening += listening_sockets(open(f"{proc}/{pid}/net/{table}").read(), inodes)
        except OSError:
            continue
    return ServerProcess(pid, argv, cwd, tuple(listening))


@dataclass
class StartFacts:
    """What cannot change while a container runs, computed once per start (a start gives a new StartedAt)."""
    service: Service
    settings: Settings
    passwd: str | None = None
    group: str | None = None
    image_user: str | None = None
    volume_owner: tuple[int, int] | None = None
    volume_checked: bool = False
    process: tuple[int, int, int] | None = None
    live: Settings | None = None
    live_tries: int = 0
    live_next: float = 0.0
    process_tries: int = 0
    process_next: float = 0.0
    volume_path: str | None = None
    volume_idmap: str | None = None
    idmap_checked: bool = False
    # held while the running server is asked for its settings (Service.live): a caller that finds it asking waits
    # for its answer rather than asking too (a probe and a resumed recovery's verification, a hook just started)
    asking: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False, compare=False)


class FactCache:
    """StartFacts per (container id, StartedAt); bounded. A 0.2 s verification poll reuses them instead of
    copying /etc/passwd and the config file out of the container again (bench: watcher_cpu_pct)."""
    LIMIT = 512

    def __init__(self) -> None:
        self._facts: dict[tuple[str, str], StartFacts] = {}
        self._lock = threading.Lock()
        self._making: dict[tuple[str, str], threading.Lock] = {}

    def get(self, key: tuple[str, str]) -> StartFacts | None:
        with self._lock:
            return self._facts.get(key)

    def put(self, key: tuple[str, str], facts: StartFacts) -> StartFacts:
        with self._lock:
            if len(self._facts) >= self.LIMIT:
                self._facts.clear()
            return self._facts.setdefault(key, facts)

    def made(self, key: tuple[str, str], make: Callable[[], StartFacts]) -> StartFacts:
        """key's StartFacts, made by make() when there are none: one caller makes them while the others asking for
        the same key wait and take them (a hook just started probes a container while a resumed recovery verifies it:
        each copied its files out of the container, twice the engine's work, both slower; bench/resume_bench.py). make's
        exception is the caller's; a caller waiting then makes them itself."""
        cached = self.get(key)
        if cached is not None:
            return cached
        with self._lock:
            making = self._making.setdefault(key, threading.Lock())
        try:
            with making:
                cached = self.get(key)
                return cached if cached is not None else self.put(key, make())
        finally:
            with self._lock:
                if self._making.get(key) is making:
                    del self._making[key]

    def answered(self, container) -> bool:
        """The server of container's current start has just answered a probe: when its settings are not known from
        it yet (no CONFIG GET answered), they are asked at the next facts() instead of after LIVE_RETRY's back-off;
        True then. A first question at the start event finds the server not yet listening, and a rename under the
        data dir before the next (Redis's `dir` is its getcwd(), src/config.c) would give the hook the moved path."""
        cached = self.get((container.id, (container.attrs.get("State") or {}).get("StartedAt") or ""))
        if cached is None or cached.live is not None or cached.live_next <= time.monotonic():
            return False
        cached.live_next = 0.0
        return True


# While a started server does not answer yet (CONFIG GET) or is not yet in the process table (an entrypoint
# still running as root), the hook asks again after LIVE_RETRY seconds, doubling up to RETRY_MAX.
LIVE_RETRY = 0.5
RETRY_MAX = 30.0
LastRun = Callable[[str], "tuple[int, int] | None"]


def _passwd_user(cached: StartFacts, container, user: str) -> tuple[int, int] | None:
    name, grp = parse_user(user)
    if name.isdigit() and grp is not None and grp.isdigit():
        return int(name), int(grp)
    if cached.passwd is None:
        cached.passwd = _read_file(container, "/etc/passwd") or ""
        cached.group = _read_file(container, "/etc/group") or ""
    return resolve_user(user, cached.passwd, cached.group or "")


def owner(client: docker.DockerClient, container, attrs: dict, mount: DataMount | None, cached: StartFacts,
          last_run: LastRun | None = None) -> tuple[int | None, int | None, str]:
    """(uid, gid, where it came from), in the module docstring's order; (None, None, "unknown") otherwise."""
    if cached.process:
        return cached.process[1], cached.process[2], "process"
    if last_run and (previous := last_run(attrs.get("Id") or container.id)):
        return previous[0], previous[1], "last-healthy-run"
    config = attrs.get("Config") or {}
    labels = config.get("Labels") or {}
    if labels.get(UID_LABEL, "").isdigit():
        uid = int(labels[UID_LABEL])
        gid = int(labels[GID_LABEL]) if labels.get(GID_LABEL, "").isdigit() else uid
        return uid, gid, "label"
    if _non_root(config.get("User") or ""):
        found = _passwd_user(cached, container, config["User"])
        if found is None:  # the container's user wins over the image's: its USER or profile would be a guess
            return None, None, (f"unknown: the container user {config['User']!r} is not in the image's "
                                "/etc/passwd or /etc/group (the engine cannot start it as that user)")
        return found[0], found[1], "user"
    profile = profile_for_image(config.get("Image", ""))
    if profile:
        return profile.uid, profile.gid, f"profile {profile.name}"
    if cached.image_user is None:
        cached.image_user = _image_user(client, attrs.get("Image", ""))
    if _non_root(cached.image_user) and (found := _passwd_user(cached, container, cached.image_user)):
        return found[0], found[1], "image"
    if not cached.volume_checked:
        cached.volume_owner, cached.volume_checked = _ownvol_volume_owner(client, mount), True
    if cached.volume_owner:
        return cached.volume_owner[0], cached.volume_owner[1], "ownvol-volume"
    return None, None, "unknown"


def facts(client: docker.DockerClient, container, cache: FactCache | None = None, last_run: LastRun | None = None,
          proc: str | None = None, ask_server: bool = True) -> Target:
    """The container's Target now: start facts from cache (computed on a first call per start), the server's
    process and CONFIG GET once they are found, the state and restart policy as inspected now.

    ask_server False: a server that said it exits (a fatal line of its current run) is not asked its settings
    now. It cannot answer, and the question waits for its exit: a Redis failing at start-up has accepted the
    connection before it loads its data (src/server.c main: the listeners are opened before loadDataFromDisk, no
    command is read before aeMain), and its CONFIG GET, or another thread's the facts wait for, held the repair 18
    to 51 ms. What it answered earlier in this run, else its configured settings, are its facts, as for a server
    that does not answer CONFIG GET."""
    attrs = container.attrs
    config = attrs.get("Config") or {}
    state = attrs.get("State") or {}
    cached = _start_facts(container, cache)
    running = state.get("Status") == "running"
    now = time.monotonic()
    if running and cached.process and process_gone(cached.process[0], proc):
        # the process that matched is gone while the container runs: a passing one (the MariaDB entrypoint's
        # `mariadbd --help` as root, before it drops to mysql) or the server dying now; looked for again, and
        # kept when no other is found (the uid of a server that just died is still its owner)
        before = cached.process
        _look_for_server(cached, container, proc, now)
        cached.process = cached.process or before
    looked = running and cached.process is None and now >= cached.process_next
    if looked:
        _look_for_server(cached, container, proc, now)
    if ask_server and running and cached.live is None and now >= cached.live_next:
        with cached.asking:
            if cached.live is None and now >= cached.live_next:  # not asked meanwhile by the caller it waited for
                cached.live = cached.service.live(cached.settings, container.id)
                cached.live_tries += 1
                cached.live_next = now + min(LIVE_RETRY * 2 ** cached.live_tries, RETRY_MAX)
    settings = cached.live or cached.settings
    directory = settings.data_dir
    mount = _data_mount_found(client, attrs, directory, cached)
    origins = dict(settings.origins)
    notes = list(settings.problems)
    if mount is None:
        directory, mount = _only_mount_instead(client, attrs, cached, directory, origins, notes)
    data_modes = cached.service.data_modes
    if mount is not None and mount.source and (proc or engine_paths_reachable()):
        nearest = _nearest_on_mount(mount, directory, origins)
        if nearest != mount:
            mount, data_modes = nearest, ()
    uid, gid, source = owner(client, container, attrs, mount, cached, last_run)
    if uid is None and running and cached.process is None and not looked:
        # nothing else gives the owner (a root image with no profile): the process table is asked now, not
        # after the backoff, or a server dying of its fault would be repaired to nobody
        _look_for_server(cached, container, proc, now)
        uid, gid, source = owner(client, container, attrs, mount, cached, last_run)
    if mount is None:
        notes.append(f"{directory} is not on a bind mount or volume: nothing to repair there"
                     + _tmpfs_hint(attrs, directory, uid, gid))
    if uid is None:
        notes.append("no uid:gid known (server process, last healthy run, labels ownvol.uid/ownvol.gid, a non-root "
                     "user, the image's profile or USER, ownvol volume): ownership is never repaired to a guess")
    if settings.persists is False:
        notes.append(f"nothing to persist ({_persistence_origin(settings)}): the owner of {directory} is reported, "
                     "never repaired, while the server runs and keeps nothing there")
    conflict = _volume_conflict(client, mount, cached, uid, gid, source, notes)
    if not cached.idmap_checked:
        cached.volume_idmap, cached.idmap_checked = _ownvol_idmap(client, mount), True
    if cached.volume_idmap:
        notes.append(f"{cached.volume_idmap}: its owner is judged as the container sees it, and never repaired by "
                     "a chown (a server that cannot write through it has a wrong map)")
    labels = config.get("Labels") or {}
    policy = restart_policy(attrs)
    return Target(
        id=container.id, name=container.name, image=config.get("Image", ""), status=state.get("Status", ""),
        labels=labels, redis_url=settings.address, password=settings.password, data_dir=directory, mount=mount,
        uid=uid, gid=gid, owner_source=source, aof_fallback=_truthy(labels.get(AOF_FALLBACK_LABEL)), notes=notes,
        service=cached.service.family, origins=origins, files=dict(settings.files),
        restart_policy=policy, start_opt_in=_truthy(labels.get(START_LABEL)), conflict=conflict,
        server_pid=cached.process[0] if cached.process else None, data_modes=data_modes,
        persists=settings.persists, paths=dict(settings.paths), role=settings.role,
        mounts=tuple(attrs.get("Mounts") or ()), writes=dict(settings.writes), links=dict(settings.links),
        idmapped=cached.volume_idmap)


def _start_facts(container, cache: FactCache | None) -> StartFacts:
    """The facts of the container's current start (its id and State.StartedAt): from cache, else its service
    (a container opted in with ownvol.watch=true and of no family is treated as Redis) and that service's
    configured settings, read now and put in cache."""
    attrs = container.attrs
    key = (container.id, (attrs.get("State") or {}).get("StartedAt") or "")
    def make() -> StartFacts:
        service = service_for(attrs) or by_family("redis")
        return StartFacts(service, service.configured(ContainerFiles(container, attrs)))

    return cache.made(key, make) if cache else make()


def process_gone(pid: int, proc: str | None) -> bool:
    """Whether process pid is known to have exited: its /proc entry (proc, else this host's /proc when the
    engine's paths are ours) is absent; False when no /proc shows the engine's processes."""
    reach = proc or ("/proc" if engine_paths_reachable() else None)
    return reach is not None and not os.path.exists(f"{reach}/{pid}")


def _look_for_server(cached: StartFacts, container, proc: str | None, now: float) -> None:
    """Ask for the server's process now (server_process, through /proc when the engine's paths are ours) and
    set when to ask next (LIVE_RETRY doubling up to RETRY_MAX seconds after now, time.monotonic)."""
    reach = proc or ("/proc" if engine_paths_reachable() else None)
    pid = (container.attrs.get("State") or {}).get("Pid")
    cached.process = server_process(container, cached.service, pid, reach or "/nonexistent")
    if cached.process and reach:
        # `docker top` shows ids as the engine sees them, which a rootless engine's namespace makes its own:
        # /proc read here gives this host's, the ids a repair here gives (executor.py maps the others)
        ids = process_ids(cached.process[0], reach)
        cached.process = (cached.process[0], *ids) if ids else None
    cached.process_tries += 1
    cached.process_next = now + min(LIVE_RETRY * 2 ** cached.process_tries, RETRY_MAX)
    if cached.process and reach and not cached.service.runs_server(container.attrs):
        _settings_of_process(cached, container, reach)


def _settings_of_process(cached: StartFacts, container, proc: str) -> None:
    """A container whose command is not its server's (a wrapper script): its settings as the server process
    shows them (Service.from_process), replacing those read from the command; CONFIG GET is asked again."""
    assert cached.process is not None
    found = read_process(cached.process[0], proc)
    settings = cached.service.from_process(ContainerFiles(container, container.attrs), found) if found else None
    if settings is not None:
        cached.settings, cached.live, cached.live_tries, cached.live_next = settings, None, 0, 0.0


def _data_mount_found(client: docker.DockerClient, attrs: dict, directory: str, cached: StartFacts
                      ) -> DataMount | None:
    """data_mount of directory, a plugin's volume (no Source in the container's Mounts) given its Mountpoint
    (asked once per start)."""
    mount = data_mount(attrs, directory)
    if mount and mount.type == "volume" and not mount.source:
        if cached.volume_path is None:
            cached.volume_path = volume_mountpoint(client, mount.name)
        mount = dataclasses.replace(mount, source=cached.volume_path)
    return mount


def _only_mount_instead(client: docker.DockerClient, attrs: dict, cached: StartFacts, directory: str,
                        origins: dict[str, str], notes: list[str]) -> tuple[str, DataMount | None]:
    """(data dir, its mount) for a directory on no mount: the container's only writable bind or volume when the
    dir is no fact (the cwd of a server whose argv was not seen: its command is a wrapper script), with origins
    and a note saying so; (directory, None) otherwise."""
    if origins.get("dir") not in ("WORKDIR", "default") or cached.service.runs_server(attrs):
        return directory, None
    unknown = (f"the data dir is not known (the command {' '.join(command_of(attrs))[:80]!r} is not the "
               "server's, and its process was not read yet)")
    only = only_writable_mount(attrs)
    if only is None:
        notes.append(f"{unknown}, and the container has no single writable bind or volume to take instead")
        return directory, None
    taken = only["Destination"].rstrip("/") or "/"
    origins["dir"] = origins["mount"] = "the container's only writable bind or volume"
    notes.append(f"{unknown}: {taken}, the container's only writable bind or volume, is taken as the data mount")
    return taken, _data_mount_found(client, attrs, taken, cached)


def _nearest_on_mount(mount: DataMount, directory: str, origins: dict[str, str]) -> DataMount:
    """nearest_existing of mount on the engine's host, with origins["mount"] saying why when it is not mount."""
    nearest = nearest_existing(mount, host_dir_state(mount.source))
    if nearest != mount:
        inside = posixpath.join(mount.destination, nearest.subpath) if nearest.subpath else mount.destination
        origins["mount"] = (f"{directory} does not exist yet: {inside}, its nearest existing directory on "
                            f"the mount {mount.destination}, is where the server must create it")
    return nearest


def _volume_conflict(client: docker.DockerClient, mount: DataMount | None, cached: StartFacts, uid: int | None,
                     gid: int | None, source: str, notes: list[str]) -> dict | None:
    """The container's owner against its ownvol volume's (which the driver restores at every mount): the
    conflict, with its note added to notes; None when they agree, or the owner is the volume's or unknown."""
    if not mount or uid is None or source == "ownvol-volume":
        return None
    if not cached.volume_checked:
        cached.volume_owner, cached.volume_checked = _ownvol_volume_owner(client, mount), True
    if not cached.volume_owner or cached.volume_owner == (uid, gid):
        return None
    notes.append(f"conflict: the container runs as {uid}:{gid} ({source}) but its ownvol volume {mount.name} "
                 f"is for {cached.volume_owner[0]}:{cached.volume_owner[1]}, which the driver restores at "
                 f"every mount; recreate the volume with -o uid={uid} -o gid={gid}, or drop the container's "
                 "`user:` so it runs as the volume's owner")
    return {"volume": mount.name, "volume_owner": "{}:{}".format(*cached.volume_owner),
            "container_owner": f"{uid}:{gid}", "owner_source": source}


def _persistence_origin(settings: Settings) -> str:
    if settings.origins.get("save") == "CONFIG GET":
        return 'CONFIG GET: save "", appendonly no'
    return 'save "" and appendonly no, as configured'


def tmpfs_of(attrs: dict, directory: str) -> str | None:
    """The container's own tmpfs that holds directory (HostConfig.Tmpfs, `--tmpfs`; or a Mounts entry of type
    tmpfs, `--mount type=tmpfs`), its destination; None when none does. The engine makes it anew at each start
    with the options given (docker run reference: uid, gid, mode; moby daemon/oci_linux.go): a repair would not
    outlive it, a restart gives the same owner again and loses what it held."""
    tmpfs = [d.rstrip("/") or "/" for d in ((attrs.get("HostConfig") or {}).get("Tmpfs") or {})]
    tmpfs += [(m.get("Destination") or "").rstrip("/") or "/" for m in attrs.get("Mounts") or []
              if m.get("Type") == "tmpfs"]
    return next((d for d in tmpfs if directory == d or directory.startswith(d.rstrip("/") + "/")), None)


def _tmpfs_hint(attrs: dict, directory: str, uid: int | None, gid: int | None) -> str:
    """What sets the owner of a tmpfs data dir (tmpfs_of), as a note's tail; "" when it is on none."""
    hit = tmpfs_of(attrs, directory)
    if hit is None:
        return ""
    owner = f"uid={uid},gid={gid}," if uid is not None and gid is not None else "uid=UID,gid=GID,"
    return (f" ({hit} is a tmpfs the engine makes at each start: give it its owner with "
            f"`--tmpfs {hit}:{owner}mode=0755`)")


def restart_policy(attrs: dict) -> str:
    """The name of a container's restart policy (docker inspect's HostConfig.RestartPolicy.Name): no, always,
    unless-stopped or on-failure; "no" when none is set (the engine's default)."""
    return ((attrs.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or "no"


@functools.lru_cache(maxsize=1)
def engine_paths_reachable() -> bool:
    """Whether the engine's host paths are ours: a dockerd is visible from here in our mount namespace.

    A hook on the host sees dockerd and shares its mounts; a hook in a container does not (no
    /.dockerenv test: a container may run its own engine, as a CI sandbox does).
    """
    try:
        ours = os.stat("/proc/self/ns/mnt").st_ino
    except OSError:
        return False
    pids = []
    try:
        pids.append(int(open(os.environ.get("OWNVOL_DOCKER_PIDFILE", "/var/run/docker.pid")).read().strip()))
    except (OSError, ValueError):
        pass
    pids += [int(p) for p in os.listdir("/proc") if p.isdigit()]
    for pid in pids:
        try:
            if open(f"/proc/{pid}/comm").read().strip() == "dockerd" and \
                    os.stat(f"/proc/{pid}/ns/mnt").st_ino == ours:
                return True
        except OSError:
            continue
    return False


def engine_node(client: docker.DockerClient) -> dict:
    """The engine this hook watches, which is the node its containers' volumes live on (volumes are per node):
    {"name": the engine's host name, "swarm_node": its Swarm node id, "" outside a swarm}.

    From `docker info` (Name, Swarm.NodeID; moby api/types/system/info.go); {"name": "", ...} if it does not answer.
    """
    try:
        info = client.info()
    except docker.errors.DockerException:
        return {"name": "", "swarm_node": ""}
    return {"name": info.get("Name", ""), "swarm_node": (info.get("Swarm") or {}).get("NodeID", "")}
