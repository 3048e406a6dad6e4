"""PostgreSQL as a service: recognised by `postgres` (or `postmaster`) or a postgres image; data in PGDATA;
a data dir the server refuses unless it is its own and of mode 0700 or 0750; probed with pg_isready and psql
inside the container (hooks/services/sql.py says why).

Where the data lives: asked of the running server when it answers (`SHOW data_directory`, its own psql
inside the container); else in the order the server decides it (src/backend/utils/misc/guc.c
SelectConfigFiles): `-c data_directory=` / `--data_directory=` on the command line, else `data_directory` in
its config file (`-c config_file=`, else postgresql.conf of the -D / PGDATA dir, read from the container),
else `-D`, else PGDATA in the container's environment, else the official image's default
/var/lib/postgresql/data. The port: `-p`, `-c port=`,
PGPORT, else 5432. Messages: tests/golden/postgres-15 and -17, captured from the real servers
(tests/golden/capture.sh), wording from src/backend/utils/init/miscinit.c (checkDataDir, CreateLockFile)
and src/bin/initdb/initdb.c.

What it writes beside the data dir (Settings.writes, links): the unix sockets' directories
(unix_socket_directories, `-k`; Debian's build puts them in /var/run/postgresql), the logging collector's
log_directory, external_pid_file, and through links in the data dir: pg_wal (initdb --waldir) and each
tablespace (pg_tblspc/OID -> its LOCATION), read from the container (the links themselves, as the server
follows them). A message names a file of these relative to the data dir ("pg_wal/archive_status",
"pg_tblspc/16385/PG_17_.../5/16386"): Service.locate makes it the absolute path.
"""

from __future__ import annotations

import base64
import io
import json
import posixpath
import re
import tarfile
from dataclasses import replace

import docker
import requests

from ..model import Health, Settings, writes_of
from . import ContainerView, register
from .sql import ExecProbed, env_of, flag, p, run_in, secret_from_env, server_argv

VERSIONS = ("postgres-15", "postgres-17")
DEFAULT_PGDATA = "/var/lib/postgresql/data"
USER_LABEL, PASSWORD_LABEL = "ownvol.postgres.user", "ownvol.postgres.password"
_FILE_OP = r"could not (?:open|create|write|read|access|stat|fsync|rename|unlink|change permissions of)"

_PATH = r'(?P<path>[^"]+)'
CATALOGUE = (
    p("pg-initdb", rf"^initdb: error: {_FILE_OP} (?:file|directory) \"(?P<dir>{_PATH})\": (?P<errno>.+)$",
      "data-dir", "startup", True, VERSIONS,
      note="initdb on a data dir its user cannot change (the entrypoint's), or on its --waldir"),
    p("pg-wrong-owner", rf"FATAL:\s+data directory \"(?P<dir>{_PATH})\" has wrong ownership$", "data-dir",
      "startup", True, VERSIONS, default_type="permission-denied",
      note="checkDataDir: the owner is not the server's uid"),
    p("pg-wrong-mode", rf"FATAL:\s+data directory \"(?P<dir>{_PATH})\" has invalid permissions$", "data-dir-mode",
      "startup", True, VERSIONS, default_type="permission-denied",
      note="checkDataDir: a mode other than 0700 or 0750; repaired on the directory alone"),
    p("pg-missing-dir", rf"FATAL:\s+could not create missing directory \"(?P<dir>{_PATH})\": (?P<errno>.+)$",
      "wal-dir", "startup", True, VERSIONS,
      note="the startup process re-creating pg_wal/archive_status (xlog.c ValidateXLOGDirectoryStructure): a "
           "pg_wal on its own mount (initdb --waldir) the server cannot write"),
    p("pg-log-file", rf"FATAL:\s+could not open log file \"(?P<file>{_PATH})\": (?P<errno>.+)$", "log-file",
      "startup", True, VERSIONS, note="the logging collector's log_directory (syslogger.c)"),
    p("pg-tablespace-dir",
      rf"ERROR:\s+could not set permissions on directory \"(?P<dir>{_PATH})\": (?P<errno>.+)$",
      "tablespace", "runtime", False, VERSIONS,
      note="CREATE TABLESPACE on a LOCATION the server cannot chmod (tablespace.c create_tablespace_directories)"),
    p("pg-lock-held", rf"FATAL:\s+lock file \"(?P<file>{_PATH})\" already exists$", "lock-file", "startup", True,
      VERSIONS, default_type="data-dir-in-use",
      note="another live server (or one the server cannot tell from a live one) holds the data dir: never "
           "'healed' by deleting postmaster.pid"),
    p("pg-file", rf"(?:FATAL|PANIC|ERROR):\s+{_FILE_OP} (?:lock )?(?:file|directory) \"(?P<file>{_PATH})\": "
                 r"(?P<errno>.+)$", "data-file", "runtime", False, VERSIONS,
      note="a backend, the checkpointer or the postmaster itself (then at start-up, fatal); a relative path is "
           "in the data dir (pg_tblspc/OID/...: a tablespace), the lock file of a unix socket in its directory"),
)


class PostgresService(ExecProbed):
    family = "postgres"
    commands = ("postgres", "postmaster")
    images = ("postgres", "postgis/postgis")
    profile = "postgres"
    catalogue = CATALOGUE
    startup_grace = 20.0  # initdb (or mariadb-install-db and its temporary server) runs before the server
    data_modes = (0o700, 0o750)

    def configured(self, view: ContainerView) -> Settings:
        attrs = view.attrs
        args, env = server_argv(attrs, self.commands), env_of(attrs)
        guc = {k: v for k, _, v in (a.partition("=") for a in _gucs(args))}
        origins: dict[str, str] = {}
        config_dir = flag(args, "-D") or env.get("PGDATA") or DEFAULT_PGDATA
        config_file = guc.get("config_file") or posixpath.join(config_dir, "postgresql.conf")
        from_file = _conf_settings(view.read_file(config_file) or "", config_file) if config_file.startswith("/") \
            else {}
        if guc.get("data_directory"):
            data_dir, origins["dir"] = guc["data_directory"], "command line data_directory"
        elif "data_directory" in from_file:
            data_dir, origins["dir"] = from_file["data_directory"]
        elif flag(args, "-D"):
            data_dir, origins["dir"] = flag(args, "-D") or "", "command line -D"
        elif env.get("PGDATA"):
            data_dir, origins["dir"] = env["PGDATA"], "env PGDATA"
        else:
            data_dir, origins["dir"] = DEFAULT_PGDATA, "default"
        port = flag(args, "-p") or guc.get("port") or (from_file.get("port") or ("", ""))[0] or env.get("PGPORT") \
            or "5432"
        origins["port"] = "command line" if (flag(args, "-p") or guc.get("port")) else (
            from_file["port"][1] if "port" in from_file else "env PGPORT" if env.get("PGPORT") else "default")
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        files = {"port": port, **({"user": labels[USER_LABEL]} if labels.get(USER_LABEL) else {})}
        origins["password"] = "label" if labels.get(PASSWORD_LABEL) else (
            "container env (read inside the container)" if any(k.startswith("POSTGRES_PASSWORD") for k in env)
            else "none (local trust)")
        problems = () if data_dir.startswith("/") else (f"data dir {data_dir!r} is not absolute",)
        data_dir = posixpath.normpath(data_dir) if data_dir.startswith("/") else data_dir
        links = _links(view, data_dir) if data_dir.startswith("/") else {}
        return Settings(data_dir, f"postgresql://127.0.0.1:{port}/", labels.get(PASSWORD_LABEL), files, origins,
                        problems, writes=_writes(data_dir, args, guc, from_file, links), links=links)

    def live(self, settings: Settings, container_id: str | None = None) -> Settings | None:
        """The running server's own data directory (`SHOW data_directory`, its psql inside the container, as the
        probe asks); None when it does not answer or may not read the setting (superuser or pg_read_all_settings)."""
        if not container_id:
            return None
        answer = run_in(container_id, _psql(settings.files, settings.password, "show data_directory"),
                        _env(settings.files, settings.password))
        found = answer.first_line() if answer.ok else ""
        if not found.startswith("/"):
            return None
        return replace(settings, data_dir=posixpath.normpath(found), problems=(),
                       origins={**settings.origins, "dir": "SHOW data_directory"})

    def probe(self, target, container_status: str, local_paths: bool) -> Health:
        owner, down = self.first_look(target, container_status, local_paths)
        if down:
            return down
        ready = run_in(target.id, f"pg_isready -q -p {_port(target.files)}", _env(target.files, target.password))
        if ready.code == 1:
            return Health("loading", ["rejecting connections: starting up or in recovery"], container_status,
                          "rejecting", owner=owner)
        if not ready.ok:
            return Health("unreachable", [f"pg_isready: exit {ready.code}: {ready.first_line()}"], container_status,
                          ready.first_line(), owner=owner)
        # txid_current() makes this session's transaction write its commit to the WAL: a durable write
        # that changes no table. A server in recovery (a standby) assigns no transaction ids: it is read-only by
        # design, and asked only whether it answers.
        sql = "select case when pg_is_in_recovery() then 'recovery' else txid_current()::text end"
        query = run_in(target.id, _psql(target.files, target.password, sql), _env(target.files, target.password))
        if not query.ok:
            return Health("refusing-writes", [f"psql: {query.first_line()}"], container_status, "accepting",
                          owner=owner)
        # stdout and stderr arrive interleaved in no fixed order (sql.ExecResult): the answer is the line that says it
        standby = any(line.strip() == "recovery" for line in query.output.splitlines())
        written = {"write": "read-only: in recovery (a standby)"} if standby else {"write": "committed"}
        if owner and not owner.get("ok", True):
            return Health("latent", [f"data mount {owner.get('problem')}"], container_status, "accepting",
                          owner=owner)
        return Health("healthy", [], container_status, "accepting", persistence=written, owner=owner)

    def restart_hazard(self, target) -> str | None:
        """Why restarting the running server now could cost data or time it cannot spare; None when safe:
        in recovery (pg_isready's exit 1: starting up, or pg_is_in_recovery()), or with open write
        transactions (pg_stat_activity.backend_xid: their work is not durable until they commit)."""
        env = _env(target.files, target.password)
        if run_in(target.id, f"pg_isready -q -p {_port(target.files)}", env).code == 1:
            return "PostgreSQL is starting up or in recovery: a restart would begin its recovery again"
        answer = run_in(target.id, _psql(target.files, target.password,
                                         "select pg_is_in_recovery(), count(*) from pg_stat_activity "
                                         "where backend_xid is not null and pid <> pg_backend_pid()"), env)
        if not answer.ok:
            return None
        recovery, _, open_xacts = answer.first_line().partition("|")
        if recovery == "t":
            return "PostgreSQL is in recovery: a restart would begin its recovery again"
        if open_xacts.strip() not in ("", "0"):
            return f"{open_xacts.strip()} write transaction(s) in progress: not durable until they commit"
        return None


def _gucs(args: list[str]) -> list[str]:
    """`-c name=value` and `--name=value` settings of a postgres command line (dashes as underscores)."""
    found = []
    for i, arg in enumerate(args):
        if arg == "-c" and i + 1 < len(args):
            setting = args[i + 1]
        elif arg.startswith("-c") and len(arg) > 2:
            setting = arg[2:]
        elif arg.startswith("--") and "=" in arg:
            setting = arg[2:]
        else:
            continue
        name, _, value = setting.partition("=")
        found.append(f"{name.replace('-', '_')}={value}")
    return found


_CONF_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*=?\s*('(?:[^'\\]|\\.|'')*'|[^\s#]+)")


def _conf_settings(text: str, path: str) -> dict[str, tuple[str, str]]:
    """data_directory, port and PATH_SETTINGS of a postgresql.conf: name -> (value, "PATH:LINE"), the last one
    winning, as the server reads it (src/backend/utils/misc/guc-file.l: `name [=] value`, single quotes with ''
    or \\ escapes, `#` comments). include directives are not followed."""
    found = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = _CONF_LINE.match(line)
        if not match or match.group(1).lower() not in ("data_directory", "port", *PATH_SETTINGS):
            continue
        value = match.group(2)
        if value.startswith("'"):
            value = value[1:-1].replace("''", "'").replace("\\'", "'")
        found[match.group(1).lower()] = (value, f"{path}:{number}")
    return found


DEFAULT_SOCKET_DIR = "/var/run/postgresql"  # Debian's build (DEFAULT_PGSOCKET_DIR), the images'
PATH_SETTINGS = ("unix_socket_directories", "log_directory", "external_pid_file")


def _writes(data_dir: str, args: list[str], guc: dict[str, str], from_file: dict[str, tuple[str, str]],
            links: dict[str, str]) -> dict[str, str]:
    """Settings.writes: the sockets' directories (`-k`, else unix_socket_directories, a comma-separated list,
    else the build's default), log_directory and external_pid_file as set (command line over config file),
    and where the data dir's links point (pg_wal, pg_tblspc/OID)."""
    def setting(name: str) -> str:
        return guc.get(name) or (from_file.get(name) or ("", ""))[0]
    sockets = flag(args, "-k") or setting("unix_socket_directories") or DEFAULT_SOCKET_DIR
    paths = {}
    listed = [d.strip() for d in sockets.split(",") if d.strip() and not d.strip().startswith("@")]
    for n, directory in enumerate(listed):
        paths["unix_socket_directories" if n == 0 else f"unix_socket_directories.{n + 1}"] = directory
    if setting("log_directory"):
        paths["log_directory"] = setting("log_directory")
    if setting("external_pid_file"):
        paths["external_pid_file"] = setting("external_pid_file")
    directories = tuple(k for k in paths if k != "external_pid_file")
    return {**writes_of(data_dir, paths, directories), **links}


LINKS_MAX = 1 << 20  # bytes of pg_tblspc's tar kept at most (links only: a few hundred bytes each)


def _path_stat(container, path: str) -> dict | None:
    """A path's stat in the container as the engine gives it without its content (HEAD
    /containers/ID/archive: the X-Docker-Container-Path-Stat header, name, size, mode, linkTarget); None when
    it does not exist or the engine does not say. A GET of pg_wal would stream every WAL segment (16 MB each),
    and one left unread holds the container's lock in dockerd: every other request about it waits."""
    try:
        api = container.client.api
        reply = api.head(api._url("/containers/{0}/archive", container.id), params={"path": path}, timeout=10)
        header = reply.headers.get("X-Docker-Container-Path-Stat") if reply.ok else None
        return json.loads(base64.b64decode(header)) if header else None
    except (AttributeError, ValueError, requests.exceptions.RequestException):
        return None


def _links(view: ContainerView, data_dir: str) -> dict[str, str]:
    """The data dir's links the server writes through, read from the container (the engine's archive API gives
    a link as a link, running or not): pg_wal -> its target, pg_tblspc/OID -> each tablespace's location; {}
    where the view cannot read them (no container) or they are plain directories."""
    container = getattr(view, "container", None)
    if container is None:
        return {}
    found = {}
    wal = _path_stat(container, posixpath.join(data_dir, "pg_wal")) or {}
    if str(wal.get("linkTarget") or "").startswith("/"):
        found["pg_wal"] = posixpath.normpath(wal["linkTarget"])
    if not _path_stat(container, posixpath.join(data_dir, "pg_tblspc")):
        return found
    try:
        stream, _ = container.get_archive(posixpath.join(data_dir, "pg_tblspc"))
        data = bytearray()
        for chunk in stream:  # read to its end, whatever is kept: see _path_stat
            if len(data) <= LINKS_MAX:
                data += chunk
        with tarfile.open(fileobj=io.BytesIO(bytes(data)), mode="r|") as tar:
            for member in tar:
                if member.issym() and member.linkname.startswith("/"):
                    found[member.name] = posixpath.normpath(member.linkname)
    except (docker.errors.APIError, tarfile.TarError, KeyError):
        pass
    return found


def _port(files: dict) -> str:
    return str(int((files or {}).get("port") or 5432))


def _env(files: dict, password: str | None) -> dict[str, str]:
    """The exec's environment: the user and password given by labels (files "user", Settings.password)."""
    env = {}
    if (files or {}).get("user"):
        env["PGUSER"] = files["user"]
    if password:
        env["PGPASSWORD"] = password
    return env


def _psql(files: dict, password: str | None, sql: str) -> str:
    user = '${PGUSER:-${POSTGRES_USER:-postgres}}'
    from_env = "" if password else f"PGPASSWORD={secret_from_env('POSTGRES_PASSWORD')} "
    return (f"{from_env}exec psql -X -q -A -t -v ON_ERROR_STOP=1 -p {_port(files)} -U \"{user}\" -d postgres "
            f"-c \"{sql}\"")


POSTGRES = register(PostgresService())
