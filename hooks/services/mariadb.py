"""MariaDB as a service: recognised by `mariadbd` or a mariadb image; data in its datadir; probed with
mariadb-admin and mariadb inside the container (hooks/services/sql.py says why).

Where the data lives, as mariadbd decides it (mysys/my_default.c, sql/mysqld.cc): `--datadir` (or `-h`) on
the command line, else the last `datadir` of its option groups ([mysqld], [server], [mariadb], [mariadbd]
and their versioned forms) in the option files it reads (/etc/mysql/my.cnf, /etc/my.cnf, ~/.my.cnf or the
command line's --defaults-file, with their !include and !includedir), else /var/lib/mysql. Messages:
tests/golden/mariadb-10.11 and -11.8, captured from the real servers (tests/golden/capture.sh).

What it writes beside the data dir (Settings.writes; MariaDB's server system variables and option
reference): the binary and relay logs (log-bin, log-bin-index, relay-log, relay-log-index: base names, a
relative one in the data dir), the error, general and slow query logs, the pid file, the unix socket, tmpdir
(a list separated by ':'), and InnoDB's redo log, undo and system tablespace directories
(innodb-log-group-home-dir, innodb-undo-directory, innodb-data-home-dir, innodb-tmpdir). Read from the
command line and the option files as above, or asked of the running server (SELECT @@log_bin_basename...).
"""

from __future__ import annotations

import io
import posixpath
import re
import shlex
import tarfile
from dataclasses import dataclass, field, replace

import docker

from ..model import Health, Settings, writes_of
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
# The options that name a path the server writes (option -> whether it names the directory itself; else a file or
# base name whose directory the server writes in), as option files spell them (dashes).
PATH_OPTIONS = {"log-bin": False, "log-bin-index": False, "relay-log": False, "relay-log-index": False,
                "log-error": False, "general-log-file": False, "slow-query-log-file": False, "pid-file": False,
                "socket": False, "tmpdir": True, "innodb-log-group-home-dir": True, "innodb-undo-directory": True,
                "innodb-data-home-dir": True, "innodb-tmpdir": True}
# The same as the running server reports them (server system variables): variable -> option
PATH_VARIABLES = {"log_bin_basename": "log-bin", "log_bin_index": "log-bin-index",
                  "relay_log_basename": "relay-log", "relay_log_index": "relay-log-index", "log_error": "log-error",
                  "pid_file": "pid-file", "socket": "socket", "tmpdir": "tmpdir",
                  "innodb_log_group_home_dir": "innodb-log-group-home-dir",
                  "innodb_undo_directory": "innodb-undo-directory", "innodb_data_home_dir": "innodb-data-home-dir"}
DEFAULT_SOCKET = "/run/mysqld/mysqld.sock"  # Debian's packages (/etc/mysql/mariadb.conf.d/50-server.cnf)
ROOT = "0"  # the exec's user: root@localhost's unix_socket authentication, where the server grants it

CATALOGUE = (
    p("mariadb-file",
      rf"\[ERROR\] (?:mariadbd|mysqld): Can't create/write to file '(?P<file>(?P<path>[^']+))' {_ERRCODE}",
      "data-file", "startup", True, VERSIONS, note="ddl_recovery.log first: the server aborts"),
    p("mariadb-test-file", rf"\[Warning\] Can't create test file '(?P<file>(?P<path>[^']+))' {_ERRCODE}", "data-dir",
      "startup", False, VERSIONS, note="the lower-case test at start-up; the abort follows"),
    p("mariadb-chdir", rf"(?:mariadbd|mysqld): Can't change dir to '(?P<dir>(?P<path>[^']+))' {_ERRCODE}", "data-dir",
      "startup", True, VERSIONS, note="a data dir the server cannot enter (root's, mode 0700)"),
    p("mariadb-file-open", rf"\[ERROR\] (?:mariadbd|mysqld): File '(?P<file>(?P<path>[^']+))' not found {_ERRCODE}",
      "data-file", "startup", True, VERSIONS,
      note="Aria's control file of a data dir restored as root; the binary log's index (log-bin) in a directory "
           "the server cannot write (case 20)"),
    p("innodb-file-writable", r"\[ERROR\] InnoDB: The data file '(?P<file>(?P<path>[^']+))' must be writable",
      "data-file",
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
    p("mariadb-log-file", r"^(?:mariadbd|mysqld): Can't create file '(?P<file>(?P<path>[^']+))' "
                          r"\(errno: (?P<errnum>\d+) \"(?P<errno>[^\"]+)\"\)",
      "log-file", "startup", False, VERSIONS,
      note="the error log (log-error) it cannot create, written to stderr before the first prefixed line: the "
           "server starts and logs to stderr instead"),
    p("mariadb-socket-bind", r"\[ERROR\] Can't start server ?: Bind on unix socket: (?P<errno>.+)$", "socket",
      "startup", True, VERSIONS,
      note="the unix socket's directory; the socket's path is on the next line ('another server running on "
           "socket: PATH ?'), and in the settings (socket): the path comes from there"),
    p("mariadb-relay-log", r"\[ERROR\] Failed when trying to open logs for '(?P<file>(?P<path>[^']+))' in "
                           r"Relay_log_info::init\(\)\. Error: (?P<errnum>\d+) \"(?P<errno>[^\"]+)\"",
      "relay-log", "runtime", False, VERSIONS, note="CHANGE MASTER TO (or a replica's start) opening its relay log"),
)
# Patterns whose line names no path, and the settings (Settings.writes) whose directory it is about (Service.locate)
PATH_SETTINGS = {"mariadb-socket-bind": ("socket",),
                 "innodb-os-error-13": ("innodb-log-group-home-dir", "innodb-undo-directory", "innodb-data-home-dir",
                                        "tmpdir", "innodb-tmpdir")}


class MariaDBService(ExecProbed):
    family = "mariadb"
    commands = ("mariadbd", "mysqld")
    images = ("mariadb",)
    profile = "mariadb"
    catalogue = CATALOGUE
    path_settings = PATH_SETTINGS
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
        paths = {name: options[name] for name in PATH_OPTIONS if options.get(name)}
        paths.update(path_flags(args))
        paths.setdefault("socket", DEFAULT_SOCKET)
        return Settings(data_dir, f"mysql://127.0.0.1:{port}/", labels.get(PASSWORD_LABEL), files, origins,
                        tuple(problems), writes=_writes(data_dir, paths))

    def live(self, settings: Settings, container_id: str | None = None) -> Settings | None:
        """The data dir the running server uses (SELECT @@datadir through the exec), with the paths it writes
        (PATH_VARIABLES, asked in the same query); when it does not answer (starting, initialising on its
        private socket, credentials refused) and its command line names no data dir, the option files' as the
        server's own reader finds them (`my_print_defaults --mysqld`, the groups mariadbd reads, in the
        container), the paths too (the command line's win); None when neither says (the configured settings
        stand)."""
        if not container_id:
            return None
        answer = run_in(container_id, _client(settings, LIVE_SQL), _env(settings), user=ROOT)
        row = _live_row(answer.output) if answer.ok else {}
        datadir, origin = row.pop("datadir", ""), "SELECT @@datadir"
        paths = {PATH_VARIABLES[k]: v for k, v in row.items() if v and v != "NULL"}
        if not datadir.startswith("/") and not settings.origins.get("dir", "").startswith("command line"):
            defaults_file = (settings.files or {}).get("defaults-file")
            first = f"--defaults-file={shlex.quote(defaults_file)} " if defaults_file else ""
            printed = run_in(container_id, f"exec my_print_defaults {first}--mysqld")
            options = path_flags(printed.output.splitlines()) if printed.ok else {}
            values = [line.split("=", 1)[1] for line in printed.output.splitlines()
                      if printed.ok and line.startswith("--datadir=")]
            datadir, origin = (values[-1] if values else ""), "my_print_defaults --mysqld"
        if not datadir.startswith("/"):
            return None
        datadir = posixpath.normpath(datadir)
        if origin == "SELECT @@datadir":
            writes = _writes(datadir, paths) if paths else settings.writes
        else:  # the command line's (in settings.writes) win over the option files'
            writes = {**_writes(datadir, options), **settings.writes}
        return replace(settings, data_dir=datadir, origins={**settings.origins, "dir": origin}, writes=writes)

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


LIVE_SQL = "SELECT " + ", ".join(f"'{v}', @@{v}" for v in ("datadir", *PATH_VARIABLES))


def _live_row(output: str) -> dict[str, str]:
    """LIVE_SQL's answer (name, value pairs on one tab-separated line) as {variable: value}."""
    for line in output.splitlines():
        cells = line.rstrip("\n").split("\t")
        if cells and cells[0] == "datadir" and len(cells) % 2 == 0:
            return dict(zip(cells[::2], cells[1::2], strict=True))
    return {}


def path_flags(args: list[str]) -> dict[str, str]:
    """The PATH_OPTIONS a mariadbd command line (or my_print_defaults' output) sets, the last one winning:
    `--name=value` (dashes or underscores), or `--name value` for those that take a value (all but log-bin
    and relay-log... whose value is optional: `--log-bin` alone names the default base in the data dir)."""
    found = {}
    for i, arg in enumerate(args):
        if not arg.startswith("--"):
            continue
        name, eq, value = arg[2:].partition("=")
        name = name.replace("_", "-")
        if name not in PATH_OPTIONS:
            continue
        if not eq:
            if name in ("log-bin", "relay-log") or i + 1 >= len(args) or args[i + 1].startswith("-"):
                continue
            value = args[i + 1]
        found[name] = value
    return found


def _writes(data_dir: str, paths: dict[str, str]) -> dict[str, str]:
    """Settings.writes of PATH_OPTIONS' values: tmpdir's list (':'-separated) as tmpdir, tmpdir.2..."""
    split = {}
    for name, value in paths.items():
        if name == "tmpdir" and ":" in value:
            for n, part in enumerate(value.split(":"), 1):
                split["tmpdir" if n == 1 else f"tmpdir.{n}"] = part
        else:
            split[name] = value
    directories = tuple(n for n in split if PATH_OPTIONS.get(n.split(".")[0]))
    return writes_of(data_dir, split, directories)


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
                if key in ("datadir", "port") or key in PATH_OPTIONS:
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
