"""PostgreSQL as a service: recognised by `postgres` (or `postmaster`) or a postgres image; data in PGDATA;
a data dir the server refuses unless it is its own and of mode 0700 or 0750; probed with pg_isready and psql
inside the container (hooks/services/sql.py says why).

Where the data lives, in the order the server decides it (src/backend/utils/misc/guc.c SelectConfigFiles):
`-c data_directory=` / `--data_directory=` on the command line, else `-D`, else PGDATA in the container's
environment, else the official image's default /var/lib/postgresql/data. The port: `-p`, `-c port=`,
PGPORT, else 5432. Messages: tests/golden/postgres-15 and -17, captured from the real servers
(tests/golden/capture.sh), wording from src/backend/utils/init/miscinit.c (checkDataDir, CreateLockFile)
and src/bin/initdb/initdb.c.
"""

from __future__ import annotations

import posixpath

from ownvol.hook.health import Health
from ownvol.hook.services import ContainerView, Settings, register
from ownvol.hook.services.sql import ExecProbed, env_of, flag, p, run_in, secret_from_env, server_argv

VERSIONS = ("postgres-15", "postgres-17")
DEFAULT_PGDATA = "/var/lib/postgresql/data"
USER_LABEL, PASSWORD_LABEL = "ownvol.postgres.user", "ownvol.postgres.password"
_FILE_OP = r"could not (?:open|create|write|read|access|stat|fsync|rename|unlink|change permissions of)"

CATALOGUE = (
    p("pg-initdb", rf"^initdb: error: {_FILE_OP} (?:file|directory) \"(?P<dir>[^\"]+)\": (?P<errno>.+)$",
      "data-dir", "startup", True, VERSIONS, note="initdb on a data dir its user cannot change (the entrypoint's)"),
    p("pg-wrong-owner", r"FATAL:\s+data directory \"(?P<dir>[^\"]+)\" has wrong ownership$", "data-dir", "startup",
      True, VERSIONS, default_type="permission-denied", note="checkDataDir: the owner is not the server's uid"),
    p("pg-wrong-mode", r"FATAL:\s+data directory \"(?P<dir>[^\"]+)\" has invalid permissions$", "data-dir-mode",
      "startup", True, VERSIONS, default_type="permission-denied",
      note="checkDataDir: a mode other than 0700 or 0750; repaired on the directory alone"),
    p("pg-lock-held", r"FATAL:\s+lock file \"(?P<file>[^\"]+)\" already exists$", "lock-file", "startup", True,
      VERSIONS, default_type="data-dir-in-use",
      note="another live server (or one the server cannot tell from a live one) holds the data dir: never "
           "'healed' by deleting postmaster.pid"),
    p("pg-file", rf"(?:FATAL|PANIC|ERROR):\s+{_FILE_OP} (?:lock )?(?:file|directory) \"(?P<file>[^\"]+)\": "
                 r"(?P<errno>.+)$", "data-file", "runtime", False, VERSIONS,
      note="a backend, the checkpointer or the postmaster itself (then at start-up, fatal)"),
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
        origins = {}
        if guc.get("data_directory"):
            data_dir, origins["dir"] = guc["data_directory"], "command line data_directory"
        elif flag(args, "-D"):
            data_dir, origins["dir"] = flag(args, "-D") or "", "command line -D"
        elif env.get("PGDATA"):
            data_dir, origins["dir"] = env["PGDATA"], "env PGDATA"
        else:
            data_dir, origins["dir"] = DEFAULT_PGDATA, "default"
        port = flag(args, "-p") or guc.get("port") or env.get("PGPORT") or "5432"
        origins["port"] = "command line" if (flag(args, "-p") or guc.get("port")) else (
            "env PGPORT" if env.get("PGPORT") else "default")
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        origins["password"] = "label" if labels.get(PASSWORD_LABEL) else (
            "container env (read inside the container)" if any(k.startswith("POSTGRES_PASSWORD") for k in env)
            else "none (local trust)")
        problems = () if data_dir.startswith("/") else (f"data dir {data_dir!r} is not absolute",)
        return Settings(posixpath.normpath(data_dir) if data_dir.startswith("/") else data_dir,
                        f"postgresql://127.0.0.1:{port}/", labels.get(PASSWORD_LABEL), {"port": port},
                        origins, problems)

    def probe(self, target, container_status: str, local_paths: bool) -> Health:
        owner, down = self.first_look(target, container_status, local_paths)
        if down:
            return down
        ready = run_in(target.id, f"pg_isready -q -p {_port(target)}", _env(target))
        if ready.code == 1:
            return Health("loading", ["rejecting connections: starting up or in recovery"], container_status,
                          "rejecting", owner=owner)
        if not ready.ok:
            return Health("unreachable", [f"pg_isready: exit {ready.code}: {ready.first_line()}"], container_status,
                          ready.first_line(), owner=owner)
        # txid_current() makes this session's transaction write its commit to the WAL: a durable write
        # that changes no table. A server in recovery (a standby) assigns no transaction ids: it is read-only by
        # design, and asked only whether it answers.
        query = run_in(target.id, _psql(target, "select case when pg_is_in_recovery() then 'recovery' "
                                                "else txid_current()::text end"), _env(target))
        if not query.ok:
            return Health("refusing-writes", [f"psql: {query.first_line()}"], container_status, "accepting",
                          owner=owner)
        written = {"write": "read-only: in recovery (a standby)"} if query.first_line() == "recovery" \
            else {"write": "committed"}
        if owner and not owner.get("ok", True):
            return Health("latent", [f"data mount {owner.get('problem')}"], container_status, "accepting",
                          owner=owner)
        return Health("healthy", [], container_status, "accepting", persistence=written, owner=owner)

    def restart_hazard(self, target) -> str | None:
        """Why restarting the running server now could cost data or time it cannot spare; None when safe:
        in recovery (pg_isready's exit 1: starting up, or pg_is_in_recovery()), or with open write
        transactions (pg_stat_activity.backend_xid: their work is not durable until they commit)."""
        if run_in(target.id, f"pg_isready -q -p {_port(target)}", _env(target)).code == 1:
            return "PostgreSQL is starting up or in recovery: a restart would begin its recovery again"
        answer = run_in(target.id, _psql(target, "select pg_is_in_recovery(), count(*) from pg_stat_activity "
                                                 "where backend_xid is not null and pid <> pg_backend_pid()"),
                        _env(target))
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


def _port(target) -> str:
    return str(int((target.files or {}).get("port") or 5432))


def _env(target) -> dict[str, str]:
    env = {}
    if target.labels.get(USER_LABEL):
        env["PGUSER"] = target.labels[USER_LABEL]
    if target.password:
        env["PGPASSWORD"] = target.password
    return env


def _psql(target, sql: str) -> str:
    user = '${PGUSER:-${POSTGRES_USER:-postgres}}'
    password = "" if target.password else f"PGPASSWORD={secret_from_env('POSTGRES_PASSWORD')} "
    return (f"{password}exec psql -X -q -A -t -v ON_ERROR_STOP=1 -p {_port(target)} -U \"{user}\" -d postgres "
            f"-c \"{sql}\"")


POSTGRES = register(PostgresService())
