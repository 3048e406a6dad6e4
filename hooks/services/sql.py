"""What PostgreSQL and MariaDB share as services: their probes run the server's own client tools inside the
container, through the engine (`docker exec`), and their credentials never pass through the hook.

Why exec and not a client library (psycopg, a MySQL connector): the container's own pg_isready, psql,
mariadb-admin and mariadb are the server's version, reach it on its unix socket whatever its network
(none, a user network, host), and with the official images' defaults need no password there (initdb's
local `trust`; `mariadb-admin ping` answers without one). Where a password is needed it is read inside the
container from its own environment (POSTGRES_PASSWORD, MARIADB_ROOT_PASSWORD and their _FILE forms) by the
shell of the exec, or given by a label as the exec's environment: the hook neither logs nor keeps it.
"""

from __future__ import annotations

import functools
import os
import posixpath
import re
import shlex
from dataclasses import dataclass

import docker

from .. import connection
from ..health import owner_of
from ..model import Health, Settings
from ..patterns import Pattern
from . import Service, command_of

EXEC_TIMEOUT = 10  # seconds an exec'd probe may take (the engine's API timeout bounds it)


@functools.lru_cache(maxsize=1)
def _engine() -> docker.DockerClient:
    return connection.client(timeout=EXEC_TIMEOUT + 5)


@dataclass(frozen=True)
class ExecResult:
    code: int | None  # None: the exec could not run (container not running, engine refused)
    output: str

    @property
    def ok(self) -> bool:
        return self.code == 0

    def first_line(self) -> str:
        lines = [line.strip() for line in self.output.splitlines() if line.strip()]
        return lines[-1][:200] if lines else f"exit {self.code}"

    def error_line(self) -> str:
        """The first line that reports an error (ERROR, Errcode, a status column `error`), else first_line();
        stdout and stderr arrive interleaved in no fixed order, so the error need not be the last line."""
        for line in self.output.splitlines():
            if "ERROR" in line or "Errcode" in line or "\terror\t" in line:
                return line.strip()[:200]
        return self.first_line()


def run_in(container_id: str, script: str, env: dict[str, str] | None = None, user: str | None = None
           ) -> ExecResult:
    """`sh -c script` in the container (docker exec, as `user` or the container's own), stdout and stderr
    together; the engine's exec API (moby api/server/router/container/exec.go)."""
    try:
        container = _engine().containers.get(container_id)
        result = container.exec_run(["sh", "-c", f"timeout {EXEC_TIMEOUT} sh -c {shlex.quote(script)}"],
                                    environment=env or None, user=user or "", demux=False)
    except docker.errors.DockerException as exc:
        return ExecResult(None, f"exec: {exc}"[:300])
    return ExecResult(result.exit_code, (result.output or b"").decode(errors="replace"))


def secret_from_env(*names: str) -> str:
    """Shell text, for run_in's script, that yields the first of names set in the container's environment,
    or the content of the file its NAME_FILE names: the secret stays inside the container."""
    parts = [f'${{{n}:-}}' for n in names]
    files = " ".join(f'"${{{n}_FILE:-}}"' for n in names)
    return (f'"$(v="{"".join(parts)}"; if [ -z "$v" ]; then for f in {files}; do '
            f'[ -n "$f" ] && [ -r "$f" ] && {{ cat "$f"; break; }}; done; else printf %s "$v"; fi)"')


def flag(args: list[str], *names: str) -> str | None:
    """The value of the last of `names` in args: `--name=value`, `--name value`, `-Xvalue`, `-X value`."""
    found = None
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                found = args[i + 1]
            elif name.startswith("--") and arg.startswith(name + "="):
                found = arg.split("=", 1)[1]
            elif not name.startswith("--") and len(name) == 2 and arg.startswith(name) and len(arg) > 2:
                found = arg[2:]
    return found


def server_argv(attrs: dict, commands: tuple[str, ...]) -> list[str]:
    """The server's own arguments: what follows its executable in the container's command (after an
    entrypoint such as docker-entrypoint.sh); [] when the command does not name it."""
    command = command_of(attrs)
    for i, arg in enumerate(command):
        if posixpath.basename(arg) in commands:
            return command[i + 1:]
    return []


class ExecProbed(Service):
    """A service probed through `docker exec` with its own tools: its settings are the configured ones unless
    the service asks its running server (MariaDB: SELECT @@datadir)."""

    def live(self, settings: Settings, container_id: str | None = None) -> Settings | None:
        return None

    def first_look(self, target, container_status: str, local_paths: bool) -> tuple[dict | None, Health | None]:
        """(the data mount's owner and mode against the service's, when its host path is reachable from here;
        the Health of a container that is not running, else None: the probe goes on)."""
        reachable = local_paths and target.mount is not None and os.path.isdir(target.mount.host_path)
        owner = owner_of(target, reachable, running=container_status == "running")
        if container_status != "running":
            return owner, Health("down", [f"container {container_status}"], container_status, "", owner=owner)
        return owner, None


def env_of(attrs: dict) -> dict[str, str]:
    return dict(item.split("=", 1) for item in (attrs.get("Config") or {}).get("Env") or [] if "=" in item)


def p(id: str, regex: str, subject: str, phase: str, fatal: bool, versions: tuple[str, ...], **kw) -> Pattern:
    """A catalogue entry (hooks/patterns.Pattern) of a database's message, tagged with the versions it was
    captured from."""
    return Pattern(id, re.compile(regex), subject, phase, fatal, versions=versions, **kw)
