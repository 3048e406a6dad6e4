"""Services as data: what the hook knows about each kind of server it heals, one object per family.

A `Service` says, for one family (Redis, Valkey; PostgreSQL, MariaDB in the same form):
- how to recognise its containers: `commands` (server executables, by basename, in the command or the
  process table) and `images` (repositories: a last path component like "redis", or a full one like
  "valkey/valkey");
- who owns its data: the uid:gid its server process runs as (found in the container's process table by
  `is_server`), else the profile of its official image (`profile`, a name in ownvol/profiles.py);
- where its data and configuration live: `configured(view)` reads them as the server would (its config
  files read from inside the container, its command line, its defaults) and `live(settings, container_id)`
  asks the running server (None when it does not answer); both give `Settings`, each fact with its origin;
- its messages: `catalogue`, the patterns of hooks/patterns.py its log lines are matched against, and
  `log_prefix`, how its lines begin (stripped before matching); `locate` makes the path a message names
  (context `path`) absolute in the container, through the links and settings the server writes by
  (Settings.writes, links), and `path_settings` names the setting a line that names no path is about;
- its probe: `probe(target, container_status, local_paths)` -> hooks.model.Health;
- its plan: `plan(error_type)` -> the actions to try, or None for hooks/strategies.yaml's (the watcher puts
  the family in every incident's detail as "service"; hooks/recovery.py Recovery.plan_for asks plan_of).

Facts are then taken in hooks/targets.py (`facts`: the owner's order, the data mount, cached per start);
Target, Settings and the probe's Health are hooks/model.py's. Unit tests: tests/unit/test_hook_facts.py.

`service_for(attrs)` is the definition a container belongs to (None: not one of ours); `SERVICES` lists
them in the order they are tried. A family is added by writing one module here and listing it.
"""

from __future__ import annotations

import importlib
import posixpath
import re
from abc import ABC, abstractmethod
from typing import Protocol

from ..model import Health, ServerProcess, Settings, Target, resolve
from ..patterns import Pattern


class ContainerView(Protocol):
    """What a service may read of a container: its `docker inspect` and its own files."""
    attrs: dict

    def read_file(self, path: str) -> str | None: ...

    def list_dir(self, path: str) -> list[str] | None: ...


def command_of(attrs: dict) -> list[str]:
    """The container's process command line: Path then Args, as the engine starts it."""
    return [attrs.get("Path") or "", *(attrs.get("Args") or [])]


def image_repository(image: str) -> str:
    """'valkey/valkey' for 'docker.io/valkey/valkey:8.1@sha256:...', 'redis' for 'redis:7' or 'library/redis'."""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        ref = ref[: len(ref) - len(last)] + last.split(":", 1)[0]
    parts = ref.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if parts and parts[0] == "library":
        parts = parts[1:]
    return "/".join(parts)


class Service(ABC):
    family: str = ""
    commands: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    profile: str | None = None
    catalogue: tuple[Pattern, ...] = ()
    log_prefix: re.Pattern | None = None
    # The modes its server accepts on its data dir, the first being what a repair sets (on that directory
    # alone); () when the server does not care.
    data_modes: tuple[int, ...] = ()
    # Seconds after its container started during which a server that does not answer yet is starting (an
    # initdb, a recovery), not stuck: it is never restarted then. 0: no such phase worth waiting for.
    startup_grace: float = 0.0
    # pattern id -> the Settings.writes keys whose directory its line is about, for a line that names no path:
    # one (MariaDB's "Bind on unix socket: Permission denied": the socket's), or several, of which the first
    # whose directory the server's uid cannot write (InnoDB's "Operating system error number 13": its redo
    # log's, undo or system tablespace's directory, when one is on a mount of its own)
    path_settings: dict[str, tuple[str, ...]] = {}

    def runs_server(self, attrs: dict) -> bool:
        """An argument of the container's command runs one of `commands` (after an entrypoint, `sh -c`...)."""
        for arg in command_of(attrs):
            words = arg.split()
            if words and any(posixpath.basename(w) in self.commands for w in words[:3]):
                return True
        return False

    def image_matches(self, attrs: dict) -> bool:
        repo = image_repository((attrs.get("Config") or {}).get("Image", ""))
        return any(repo == name or repo.rsplit("/", 1)[-1] == name for name in self.images)

    def recognises(self, attrs: dict) -> bool:
        """A container of this family: its command runs the server, or its image is one of `images`."""
        return self.runs_server(attrs) or self.image_matches(attrs)

    def is_server(self, comm: str, args: str) -> bool:
        """A process-table row (comm, full command line) is this family's server process."""
        first = args.split()[0] if args.split() else ""
        return comm in self.commands or posixpath.basename(first) in self.commands

    @abstractmethod
    def configured(self, view: ContainerView) -> Settings:
        """Settings as the server reads them at start: config files inside the container, command line,
        defaults. Never raises for a missing or broken file: it is named in Settings.problems."""

    def from_process(self, view: ContainerView, process: ServerProcess) -> Settings | None:
        """Settings from the server process itself (its argv and cwd, the sockets it listens on), for a
        container whose command is not the server's (a wrapper script that starts it); None when the process
        says nothing more than configured(view) did."""
        return None

    @abstractmethod
    def live(self, settings: Settings, container_id: str | None = None) -> Settings | None:
        """Settings asked of the running server (at settings.address, or through an exec in container_id);
        None when it does not answer."""

    @abstractmethod
    def probe(self, target: Target, container_status: str, local_paths: bool) -> Health:
        """Health of the server of target (see hooks/health.py STATES)."""

    def locate(self, pattern_id: str, context: dict, target: Target, unwritable: dict[str, str] | None = None
               ) -> dict:
        """context with `path` the absolute path in the container that the message is about: the one it names,
        a relative one taken from target's data dir through its links (model.resolve: PostgreSQL's
        "pg_wal/..." is where pg_wal points), or, for a line that names none, the directory of the setting
        path_settings gives, of the first of several in unwritable (setting -> directory its uid cannot
        write, executor.unwritable), with `path_from` saying which and `directory` (the path is a directory
        the server writes in, not a file it creates); context itself when none is known."""
        path = context.get("path")
        if path:
            found = resolve(path, target.data_dir, target.links)
            return context if found == path else {**context, "path": found, "named": path}
        settings = self.path_settings.get(pattern_id, ())
        if len(settings) == 1 and target.writes.get(settings[0]):
            return {**context, "path": target.writes[settings[0]], "directory": True,
                    "path_from": f"setting {settings[0]}"}
        for setting in settings if len(settings) > 1 else ():
            if (unwritable or {}).get(setting):
                return {**context, "path": (unwritable or {})[setting], "directory": True,
                        "path_from": f"setting {setting}, a directory the server's uid cannot write"}
        return context

    def restart_hazard(self, target: Target) -> str | None:
        """Why a restart of the running server now could lose data (in recovery, writes not yet durable);
        None when it is safe or the service says nothing (Redis's check is actions.unpersisted_writes)."""
        return None

    def plan(self, error_type: str) -> tuple[str, ...] | None:
        """The actions to try for error_type; None: the strategies file's."""
        return None


_REGISTRY: list[Service] = []


def register(service: Service) -> Service:
    """Add a service definition (first registered, first tried)."""
    _REGISTRY.append(service)
    return service


def services() -> tuple[Service, ...]:
    """Every registered definition, in the order they are tried."""
    _load_builtin()
    return tuple(_REGISTRY)


def service_for(attrs: dict) -> Service | None:
    """The family a container belongs to, by its command first (a valkey-server in a redis image is Valkey),
    then by its image; None when it is none of ours."""
    candidates = services()
    for service in candidates:
        if service.runs_server(attrs):
            return service
    for service in candidates:
        if service.image_matches(attrs):
            return service
    return None


def by_family(family: str) -> Service:
    """The definition of a family by name; KeyError naming the known ones."""
    for service in services():
        if service.family == family:
            return service
    raise KeyError(f"unknown service {family!r}; known: {', '.join(s.family for s in services())}")


def plan_of(family: str, error_type: str) -> tuple[str, ...] | None:
    """The plan a family's definition has for error_type; None for an unknown family or no plan of its own."""
    try:
        return by_family(family).plan(error_type)
    except KeyError:
        return None


# The built-in families' modules; each registers its definitions when imported.
BUILTIN: tuple[str, ...] = (".redis", ".postgres", ".mariadb")


def _load_builtin() -> None:
    for module in BUILTIN:
        importlib.import_module(module, __name__)
