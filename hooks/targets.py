"""Which containers the hook watches, and the facts it needs about each one.

Facts come from `docker inspect` only (and, for a user given by name, the container's own
/etc/passwd and /etc/group): the Redis address and password, the uid:gid its data must
belong to, and the mount that holds its data directory.
"""

from __future__ import annotations

import functools
import io
import os
import posixpath
import tarfile
from dataclasses import dataclass, field

import docker

from ownvol.status import driver_name, is_driver
from ownvol.status import owner as volume_owner

WATCH_LABEL = "ownvol.watch"
URL_LABEL = "ownvol.redis.url"
PASSWORD_LABEL = "ownvol.redis.password"
UID_LABEL, GID_LABEL = "ownvol.uid", "ownvol.gid"
AOF_FALLBACK_LABEL = "ownvol.aof-fallback"
HOOK_LABEL = "ownvol.hook"


@dataclass(frozen=True)
class DataMount:
    type: str  # bind | volume
    source: str  # the path on the engine's host
    destination: str
    subpath: str  # the Redis dir relative to the mount's destination ("" when it is the destination)
    name: str = ""  # volume name
    driver: str = ""

    @property
    def host_path(self) -> str:
        return posixpath.join(self.source, self.subpath) if self.subpath else self.source

    def as_dict(self) -> dict:
        return {"type": self.type, "source": self.source, "destination": self.destination, "subpath": self.subpath,
                "name": self.name, "driver": self.driver}


@dataclass
class Target:
    id: str
    name: str
    image: str
    status: str
    labels: dict
    redis_url: str | None
    password: str | None
    data_dir: str
    mount: DataMount | None
    uid: int | None
    gid: int | None
    owner_source: str
    aof_fallback: bool
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"id": self.id[:12], "name": self.name, "image": self.image, "status": self.status,
                "redis_url": _redact(self.redis_url), "data_dir": self.data_dir,
                "mount": self.mount.as_dict() if self.mount else None,
                "owner": None if self.uid is None else f"{self.uid}:{self.gid}", "owner_source": self.owner_source,
                "aof_fallback": self.aof_fallback, "notes": self.notes}


def _redact(url: str | None) -> str | None:
    if url and "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def command_of(attrs: dict) -> list[str]:
    return [attrs.get("Path") or "", *(attrs.get("Args") or [])]


def is_redis(attrs: dict) -> bool:
    """The image is a Redis image, or the command runs redis-server."""
    if any(posixpath.basename(arg.split()[0]) == "redis-server" for arg in command_of(attrs) if arg.strip()):
        return True
    image = (attrs.get("Config") or {}).get("Image", "")
    name = image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]
    return name in ("redis", "redis-server")


def is_watched(attrs: dict, selector: dict[str, str] | None = None) -> bool:
    """Redis (or opted in), not opted out, matching the selector; a container labelled ownvol.hook=X
    belongs to the hook whose selector says ownvol.hook=X and no other."""
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    selector = selector or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        return False
    if HOOK_LABEL in labels and selector.get(HOOK_LABEL) != labels[HOOK_LABEL]:
        return False
    choice = labels.get(WATCH_LABEL)
    if choice is not None and choice.strip().lower() in ("false", "0", "no", "off"):
        return False
    return _truthy(choice) or is_redis(attrs)


def _flag(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def redis_url(attrs: dict) -> str | None:
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    if labels.get(URL_LABEL):
        return labels[URL_LABEL]
    args = command_of(attrs)
    port = _flag(args, "--port") or "6379"
    if (attrs.get("HostConfig") or {}).get("NetworkMode") == "host":
        return f"redis://127.0.0.1:{port}/0"
    for net in ((attrs.get("NetworkSettings") or {}).get("Networks") or {}).values():
        if net.get("IPAddress"):
            return f"redis://{net['IPAddress']}:{port}/0"
    return None


def redis_password(attrs: dict) -> str | None:
    config = attrs.get("Config") or {}
    labels = config.get("Labels") or {}
    if labels.get(PASSWORD_LABEL):
        return labels[PASSWORD_LABEL]
    for item in config.get("Env") or []:
        if item.startswith("REDIS_PASSWORD="):
            return item.split("=", 1)[1]
    return _flag(command_of(attrs), "--requirepass")


def data_dir(attrs: dict) -> str:
    config = attrs.get("Config") or {}
    d = _flag(command_of(attrs), "--dir") or config.get("WorkingDir") or "/data"
    return d if d.startswith("/") else posixpath.join(config.get("WorkingDir") or "/", d)


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


def parse_user(user: str) -> tuple[str, str | None]:
    name, _, group = user.partition(":")
    return name, group or None


PASSWD_MAX = 1 << 20  # bytes of a container's /etc/passwd or /etc/group the hook reads at most


def _read_file(container, path: str, hops: int = 4) -> str:
    """A small text file from the container's own filesystem, a symlink followed there (a few hops, as the
    engine resolves a user); "" when it is missing, dangling, looping or larger than PASSWD_MAX."""
    try:
        stream, info = container.get_archive(path)
        if (info or {}).get("size", 0) > PASSWD_MAX:
            return ""
        data = bytearray()
        for chunk in stream:
            data += chunk
            if len(data) > PASSWD_MAX + 64 * 1024:  # the tar's own headers and padding beside the file
                return ""
        with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
            member = tar.next()
            if member is None:
                return ""
            if member.issym():
                target = posixpath.normpath(posixpath.join(posixpath.dirname(path), member.linkname))
                return _read_file(container, target, hops - 1) if hops > 0 else ""
            content = tar.extractfile(member)
            return content.read().decode(errors="replace") if content else ""
    except (docker.errors.APIError, tarfile.TarError, KeyError):
        return ""


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


def _ownvol_volume_owner(client: docker.DockerClient, mount: DataMount | None) -> tuple[int, int] | None:
    if not mount or mount.type != "volume" or not is_driver(mount.driver, driver_name()):
        return None
    try:
        return volume_owner(client.api.inspect_volume(mount.name).get("Status") or {})
    except docker.errors.APIError:
        return None


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


def owner(client: docker.DockerClient, container, attrs: dict, mount: DataMount | None
          ) -> tuple[int | None, int | None, str]:
    """(uid, gid, where it came from): labels, --user, the image's user, an ownvol volume; never a guess."""
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    if labels.get(UID_LABEL, "").isdigit():
        uid = int(labels[UID_LABEL])
        gid = int(labels[GID_LABEL]) if labels.get(GID_LABEL, "").isdigit() else uid
        return uid, gid, "label"
    candidates = [("user", (attrs.get("Config") or {}).get("User") or "")]
    candidates.append(("image", _image_user(client, attrs.get("Image", ""))))
    for where, user in candidates:
        if not user:
            continue
        name, grp = parse_user(user)
        if name.isdigit() and grp is not None and grp.isdigit():
            return int(name), int(grp), where
        resolved = resolve_user(user, _read_file(container, "/etc/passwd"), _read_file(container, "/etc/group"))
        if resolved:
            return resolved[0], resolved[1], where
    vol = _ownvol_volume_owner(client, mount)
    if vol:
        return vol[0], vol[1], "ownvol-volume"
    return None, None, "unknown"


def facts(client: docker.DockerClient, container) -> Target:
    attrs = container.attrs
    config = attrs.get("Config") or {}
    directory = data_dir(attrs)
    mount = data_mount(attrs, directory)
    uid, gid, source = owner(client, container, attrs, mount)
    notes = []
    if mount is None:
        notes.append(f"{directory} is not on a bind mount or volume: nothing to repair there")
    if uid is None:
        notes.append("no uid:gid known (labels ownvol.uid/ownvol.gid, --user, image user, ownvol volume): "
                     "ownership is never repaired to a guess")
    return Target(
        id=container.id, name=container.name, image=config.get("Image", ""),
        status=(attrs.get("State") or {}).get("Status", ""), labels=config.get("Labels") or {},
        redis_url=redis_url(attrs), password=redis_password(attrs), data_dir=directory, mount=mount,
        uid=uid, gid=gid, owner_source=source,
        aof_fallback=_truthy((config.get("Labels") or {}).get(AOF_FALLBACK_LABEL)),
        notes=notes)


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
