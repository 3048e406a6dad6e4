"""MariaDB as a service: recognised by `mariadbd` or a mariadb image; data in its datadir; probed with
mariadb-admin and mariadb inside the container (hooks/services/sql.py says why).

Where the data lives, as mariadbd decides it (mysys/my_default.c, sql/mysqld.cc): `--datadir` (or `-h`) on
the command line, else the last `datadir` of its option groups ([mysqld], [server], [mariadb], [mariadbd]
and their versioned forms) in the option files it reads (/etc/mysql/my.cnf, /etc/my.cnf, ~/.my.cnf or the
command line's --defaults-file, with their !include and !includedir), else /var/lib/mysql. Messages:
tests/golden/mariadb-10.11 and -11.8, captured from the real servers (tests/golden/capture.sh).
"""

from __future__ import annotations

import io
import posixpath
import re
import shlex
import tarfile
from dataclasses import dataclass, field, replace

import docker

from ..model import Health, Settings
from . import ContainerView, register
from .sql import ExecProbed, flag, p, run_in, secret_from_env, server_argv

VERSIONS = ("mariadb-10.11", "mariadb-11.8")
DEFAULT_DATADIR = "/var/lib/mysql"
OPTION_FILES = ("/etc/mysql/my.cnf", "/etc/my.cnf")
SERVER_GROUPS = re.compile(r"^(?:mysqld|server|mariadb|mariadbd)(?:-\d+(?:\.\d+)*)?$")
PASSWORD_LABEL = "ownvol.mariadb.password"
SCRATCH_SCHEMA = "ownvol_probe"
SCRATCH_PROBE = (f"SET SESSION sql_log_bin = 0; DROP DATABASE IF EXISTS {SCRATCH_SCHEMA}; "
                 f"CREATE DATABASE {SCRATCH_SCHEMA}; DROP DATABASE {SCRATCH_SCHEMA}")
_ERRCODE = r"\(Errcode: (?P<errnum>\d+) \"(?P<errno>[^\"]+)\"\)"
_OS_ERROR_13 = r"Operating system error number (?P<errnum>13) in a file operation\."
_THREAD_0 = r"(?:^|\s)0 "
_THREAD_N = r"(?:^|\s)[1-9]\d* "
ROOT = "0"  # the exec's user: root@localhost's unix_socket authentication, where the server grants it

CATALOGUE = (
    p("mariadb-file", rf"\[ERROR\] (?:mariadbd|mysqld): Can't create/write to file '(?P<file>[^']+)' {_ERRCODE}",
      "data-file", "startup", True, VERSIONS, note="ddl_recovery.log first: the server aborts"),
    p("mariadb-test-file", rf"\[Warning\] Can't create test file '(?P<file>[^']+)' {_ERRCODE}", "data-dir",
      "startup", False, VERSIONS, note="the lower-case test at start-up; the abort follows"),
    p("mariadb-chdir", rf"(?:mariadbd|mysqld): Can't change dir to '(?P<dir>[^']+)' {_ERRCODE}", "data-dir",
      "startup", True, VERSIONS, note="a data dir the server cannot enter (root's, mode 0700)"),
    p("mariadb-file-open", rf"\[ERROR\] (?:mariadbd|mysqld): File '(?P<file>[^']+)' not found {_ERRCODE}",
      "data-file", "startup", True, VERSIONS, note="Aria's control file of a data dir restored as root"),
    p("innodb-file-writable", r"\[ERROR\] InnoDB: The data file '(?P<file>[^']+)' must be writable", "data-file",
      "startup", True, VERSIONS, default_type="permission-denied",
      note="ibdata1 of a data dir restored as root (the directory still the server's)"),
    # mariadbd's log names the thread: 0 for the server's own start-up, a connection's id for a statement
    p("innodb-os-error-13", rf"{_THREAD_0}\[ERROR\] InnoDB: {_OS_ERROR_13}", "data-file", "startup", False, VERSIONS,
      default_type="permission-denied",
      note="a tablespace the server cannot open at start (EACCES): it starts without the table; its probe "
           "sees the tablespace unopened until a restart after the repair"),
    p("innodb-os-error-13-runtime", rf"{_THREAD_N}\[ERROR\] InnoDB: {_OS_ERROR_13}", "data-file", "runtime",
      False, VERSIONS, default_type="permission-denied",
      note="a statement that makes InnoDB open or stat a tablespace file of a data dir taken from it at run "
           "time (information_schema.INNODB_SYS_TABLESPACES, as monitoring agents read it)"),
)


class MariaDBService(ExecProbed):
    family = "mariadb"
    commands = ("mariadbd", "mysqld")
    images = ("mariadb",)
    profile = "mariadb"
    catalogue = CATALOGUE
    startup_grace = 20.0  # initdb (or mariadb-install-db and its temporary server) runs before the server

    def configured(self, view: ContainerView) -> Settings:
        attrs = view.attrs
        args = server_argv(attrs, self.commands)
        options, origin_of, problems = _options(view, args)
        origins = {}
        if flag(args, "--datadir", "-h"):
            data_dir, origins["dir"] = flag(args, "--datadir", "-h") or "", "command line --datadir"
        elif options.get("datadir"):
            data_dir, origins["dir"] = options["datadir"], origin_of["datadir"]
        else:
            data_dir, origins["dir"] = DEFAULT_DATADIR, "default"
        port = flag(args, "--port", "-P") or options.get("port") or "3306"
        socket = flag(args, "--socket") or options.get("socket") or ""
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        origins["password"] = "label" if labels.get(PASSWORD_LABEL) else "container env (read inside the container)"
        if not data_dir.startswith("/"):
            problems.append(f"datadir {data_dir!r} is not absolute")
        data_dir = posixpath.normpath(data_dir) if data_dir.startswith("/") else data_dir
        files = {"port": port, "socket": socket}
        if flag(args, "--defaults-file"):
            files["defaults-file"] = flag(args, "--defaults-file") or ""
        return Settings(data_dir, f"mysql://127.0.0.1:{port}/", labels.get(PASSWORD_LABEL), files, origins,
                        tuple(problems))

    def live(self, settings: Settings, container_id: str | None = None) -> Settings | None:
        """The data dir the running server uses (SELECT @@datadir through the exec); when it does not answer
        (starting, initialising on its private socket, credentials refused) and its command line names none,
        the option files' as the server's own reader finds them (`my_print_defaults --mysqld`, the groups
        mariadbd reads, in the container); None when neither says (the configured settings stand)."""
        if not container_id:
            return None
        answer = run_in(container_id, _client(settings, "SELECT @@datadir"), _env(settings), user=ROOT)
        datadir, origin = (answer.first_line() if answer.ok else ""), "SELECT @@datadir"
        if not datadir.startswith("/") and not settings.origins.get("dir", "").startswith("command line"):
            defaults_file = (settings.files or {}).get("defaults-file")
            first = f"--defaults-file={shlex.quote(defaults_file)} " if defaults_file else ""
            printed = run_in(container_id, f"exec my_print_defaults {first}--mysqld")
            values = [line.split("=", 1)[1] for line in printed.output.splitlines()
                      if printed.ok and line.startswith("--datadir=")]
            datadir, origin = (values[-1] if values else ""), "my_print_defaults --mysqld"
        if not datadir.startswith("/"):
            return None
        return replace(settings, data_dir=posixpath.normpath(datadir), origins={**settings.origins, "dir": origin})

    def probe(self, target, container_status: str, local_paths: bool) -> Health:
        owner, down = self.first_look(target, container_status, local_paths)
        if down:
            return down
        alive = run_in(target.id, _tool(target, "mariadb-admin") + " ping", _env(target), user=ROOT)
        if not alive.ok:
            return Health("unreachable", [f"mariadb-admin ping: {alive.error_line()}"], container_status,
                          alive.first_line(), owner=owner)
        facts = run_in(target.id, _client(target, "SELECT @@wsrep_on, @@datadir"), _env(target), user=ROOT)
        wsrep, _, datadir = facts.first_line().partition("\t") if facts.ok else ("", "", "")
        if not datadir.startswith("/"):
            return Health("unreachable", [f"mariadb: {facts.error_line()}"], container_status, "alive", owner=owner)
        # ANALYZE of one of the server's own InnoDB tables writes its persistent statistics: an InnoDB
        # transaction committed to the redo log, no user data touched. It writes only into files the server
        # already holds open, so a data dir taken from it at run time passes; creating (and dropping) the
        # hook's scratch schema makes the server create a directory in its data dir, as every new database
        # and table needs, and fails there with errno 13. Kept out of the binary log: replicas never see it.
        # A Galera node (wsrep_on) replicates DDL to every node whatever sql_log_bin says (total order
        # isolation): there the write check is left out, and the health says so. The scratch schema comes
        # first and the client stops at the first error: on a data dir taken from the server, ANALYZE (its
        # table status) and the tablespace check would make InnoDB log an error for each file it cannot stat.
        galera = wsrep in ("1", "ON")
        sql = UNOPENED_SQL if galera else f"{SCRATCH_PROBE}; ANALYZE TABLE mysql.innodb_index_stats; {UNOPENED_SQL}"
        check = run_in(target.id, UNOPENED_SHELL.format(client=_client(target, sql), dir=shlex.quote(datadir)),
                       _env(target), user=ROOT)
        text = check.output
        if not check.ok or "\terror\t" in text.lower() or "Errcode" in text:
            return Health("refusing-writes", [f"mariadb: {check.error_line()}"], container_status, "alive",
                          owner=owner)
        unopened = [line.split("\t", 1)[1] for line in text.splitlines() if line.startswith("unopened\t")]
        if unopened:
            return Health("refusing-writes", [f"InnoDB did not open {len(unopened)} tablespace(s) at start "
                                              f"(a restart opens them again): {', '.join(unopened[:5])}"],
                          container_status, "alive", owner=owner)
        persistence = {"write": f"not checked: {GALERA_SKIP}" if galera else "committed"}
        if owner and not owner.get("ok", True):
            return Health("latent", [f"data mount {owner.get('problem')}"], container_status, "alive", owner=owner,
                          persistence=persistence)
        return Health("healthy", [], container_status, "alive", persistence=persistence, owner=owner)

    def restart_hazard(self, target) -> str | None:
        """Open InnoDB transactions (information_schema.INNODB_TRX): not durable until they commit."""
        answer = run_in(target.id, _client(target, "SELECT COUNT(*) FROM information_schema.INNODB_TRX"),
                        _env(target), user=ROOT)
        count = answer.first_line() if answer.ok else ""
        if count.isdigit() and int(count) > 0:
            return f"{count} InnoDB transaction(s) in progress: not durable until they commit"
        return None


GALERA_SKIP = "a Galera node (wsrep_on=ON) would replicate the scratch schema's DDL to the whole cluster"
# The InnoDB tables the server loaded (INNODB_SYS_TABLESTATS: its dictionary cache) without their tablespace
# (not among INNODB_SYS_TABLESPACES): a tablespace it could not open, marked missing until a restart. A table
# not used since the start is not loaded (InnoDB opens it at its first use); one DISCARDed, or in another DATA
# DIRECTORY, has no file in the data dir: the shell keeps those whose file is there and adds its owner.
UNOPENED_SQL = ("SELECT 'unopened', t.NAME FROM information_schema.INNODB_SYS_TABLESTATS c "
                "JOIN information_schema.INNODB_SYS_TABLES t ON t.TABLE_ID = c.TABLE_ID "
                "LEFT JOIN information_schema.INNODB_SYS_TABLESPACES s ON s.SPACE = t.SPACE "
                "WHERE t.SPACE > 0 AND s.SPACE IS NULL")
UNOPENED_SHELL = r"""
dir={dir}
out=$({client}) || {{ printf '%s\n' "$out"; exit 1; }}
printf '%s\n' "$out" | while IFS= read -r line; do
  case $line in
    unopened"$(printf '\t')"*) name=${{line#*"$(printf '\t')"}}; file="${{dir%/}}/$name.ibd"
      if [ -e "$file" ]; then printf 'unopened\t%s.ibd (owner %s)\n' "$name" "$(stat -c %u:%g "$file")"; fi ;;
    *) printf '%s\n' "$line" ;;
  esac
done"""


SNAPSHOT_MAX = 4 << 20  # bytes of /etc/mysql's tar read at most


class _Snapshot:
    """/etc/mysql of the container read in one archive request (a file at a time took ~2 s for Debian's
    dozen option files); paths elsewhere, and links leaving it, are read through the view."""

    ROOT = "/etc/mysql"

    def __init__(self, view: ContainerView) -> None:
        self.view = view
        self.files: dict[str, str] = {}
        self.links: dict[str, str] = {}
        container = getattr(view, "container", None)
        if container is None:
            return
        try:
            stream, _ = container.get_archive(self.ROOT)
            data = bytearray()
            for chunk in stream:
                data += chunk
                if len(data) > SNAPSHOT_MAX:
                    return
            with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
                for member in tar:
                    path = posixpath.join(posixpath.dirname(self.ROOT), member.name)
                    if member.issym():
                        self.links[path] = posixpath.normpath(posixpath.join(posixpath.dirname(path),
                                                                             member.linkname))
                    elif member.isfile() and (content := tar.extractfile(member)):
                        self.files[path] = content.read().decode(errors="replace")
        except (docker.errors.APIError, tarfile.TarError, KeyError):
            self.files, self.links = {}, {}

    def read_file(self, path: str, hops: int = 4) -> str | None:
        if path in self.files:
            return self.files[path]
        if path in self.links and hops:
            return self.read_file(self.links[path], hops - 1)
        return self.view.read_file(path)

    def list_dir(self, path: str) -> list[str] | None:
        path = path.rstrip("/")
        if (path == self.ROOT or path.startswith(self.ROOT + "/")) and self.files:
            return sorted({p[len(path) + 1:] for p in [*self.files, *self.links]
                           if posixpath.dirname(p) == path})
        return self.view.list_dir(path)


def _options(view: ContainerView, args: list[str]) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """The server groups' options in the option files mariadbd reads, the last value winning, with where
    each was set ("PATH:LINE"), and the files that could not be read."""
    defaults_file = flag(args, "--defaults-file")
    files = [defaults_file] if defaults_file else list(OPTION_FILES)
    extra = flag(args, "--defaults-extra-file")
    if extra:
        files.append(extra)
    reading = _OptionFiles(_Snapshot(view), defaults_file)
    for path in files:
        reading.read(path, 0)
    return reading.options, reading.origins, reading.problems


@dataclass
class _OptionFiles:
    """One reading of option files (MariaDB's "Configuring MariaDB with Option Files"): the server groups'
    datadir, port and socket, with where each was set, an !include or !includedir followed (8 deep at most,
    each file once)."""
    snapshot: _Snapshot
    defaults_file: str | None
    options: dict[str, str] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def read(self, path: str, depth: int) -> None:
        if path in self.seen or depth > 8:
            return
        self.seen.add(path)
        text = self.snapshot.read_file(path)
        if text is None:
            if self.defaults_file == path:
                self.problems.append(f"{path}: cannot be read")
            return
        in_server = False
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("!include"):
                self._include(line, depth)
            elif line.startswith("["):
                in_server = bool(SERVER_GROUPS.match(line.strip("[] \t")))
            elif in_server:
                key, _, value = line.partition("=")
                key = key.strip().replace("_", "-")
                if key in ("datadir", "port", "socket"):
                    self.options[key] = value.split("#", 1)[0].strip().strip("'\"")
                    self.origins[key] = f"{path}:{number}"

    def _include(self, line: str, depth: int) -> None:
        """`!includedir DIR` (its *.cnf files, by name) or `!include FILE`."""
        if line.startswith("!includedir"):
            directory = line.split(None, 1)[1].strip() if len(line.split(None, 1)) > 1 else ""
            for name in sorted(self.snapshot.list_dir(directory) or []):
                if name.endswith(".cnf"):
                    self.read(posixpath.join(directory, name), depth + 1)
        elif len(line.split(None, 1)) > 1:
            self.read(line.split(None, 1)[1].strip(), depth + 1)


def _socket(target) -> str:
    socket = (target.files or {}).get("socket")
    return f"--socket={socket} " if socket else ""


def _env(target) -> dict[str, str]:
    return {"MYSQL_PWD": target.password} if target.password else {}


def _tool(target, tool: str) -> str:
    """Shell text running a client tool of the container as root@localhost over its socket: exec'd as uid 0
    (unix_socket, where root@localhost has it: Debian's mariadb-install-db), with the password of a label
    (the exec's environment) or the container's own MARIADB_ROOT_PASSWORD / MYSQL_ROOT_PASSWORD or their
    _FILE forms (read by this shell, inside the container) as MYSQL_PWD: never on a command line, never here."""
    password = "" if target.password else \
        f"MYSQL_PWD={secret_from_env('MARIADB_ROOT_PASSWORD', 'MYSQL_ROOT_PASSWORD')} "
    return f"{password}exec {tool} {_socket(target)}--connect-timeout=2 -uroot"


def _client(target, sql: str) -> str:
    return f"{_tool(target, 'mariadb')} --batch --skip-column-names -e \"{sql}\""


MARIADB = register(MariaDBService())
