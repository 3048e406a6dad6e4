"""PostgreSQL and MariaDB containers of the offline images (images/postgres, images/mariadb) for the hook's
tests and benchmarks: host network, the server on 127.0.0.1:port, its data dir a bind mount of a host dir."""

from __future__ import annotations

import os
from pathlib import Path

import docker

from tests.support.engine import wait_for

PGDATA = "/var/lib/postgresql/data"
MYSQL_DATA = "/var/lib/mysql"
PASSWORD = "ownvol-test"


def _exec(container, command: list[str]) -> tuple[int, str]:
    """(exit code, output) of command in the container; (-1, why) when the engine refuses the exec (the
    container is restarting or stopped)."""
    try:
        code, out = container.exec_run(command)
    except docker.errors.APIError as exc:
        return -1, str(exc)
    return code, out.decode().strip()


def psql_run(container, port: int, sql: str) -> tuple[int, str]:
    """(exit code, output) of psql as postgres over the container's own socket."""
    return _exec(container, ["psql", "-XAtq", "-p", str(port), "-U", "postgres", "-c", sql])


def psql(container, port: int, sql: str) -> str:
    code, out = psql_run(container, port, sql)
    assert code == 0, out
    return out


def mariadb_run(container, sql: str) -> tuple[int, str]:
    """(exit code, output) of the mariadb client as root over the container's own socket."""
    return _exec(container, ["mariadb", "-uroot", f"-p{PASSWORD}", "--batch", "--skip-column-names", "-e", sql])


def run_postgres(tracked, image: str, port: int, data: Path, labels: dict, **kwargs):
    """PostgreSQL as uid 999 (unless `user` says otherwise) on data; `mode="ro"` mounts it read-only."""
    kwargs.setdefault("user", "999:999")
    return tracked.run(image, kwargs.pop("command", ["postgres", "-p", str(port), "-c", "listen_addresses=127.0.0.1"]),
                       network_mode="host", environment={"POSTGRES_PASSWORD": PASSWORD},
                       volumes={str(data): {"bind": PGDATA, "mode": kwargs.pop("mode", "rw")}}, labels=labels,
                       **kwargs)


def run_mariadb(tracked, image: str, port: int, data: Path, labels: dict, **kwargs):
    """MariaDB as uid 999 on data, root's password PASSWORD."""
    command = kwargs.pop("command", ["mariadbd", f"--port={port}", "--bind-address=127.0.0.1"])
    return tracked.run(image, command, user="999:999",
                       network_mode="host", environment={"MARIADB_ROOT_PASSWORD": PASSWORD},
                       volumes={str(data): {"bind": MYSQL_DATA, "mode": "rw"}}, labels=labels, **kwargs)


def pg_ready(container, port: int) -> bool:
    container.reload()
    return container.status == "running" and _exec(container, ["pg_isready", "-q", "-p", str(port)])[0] == 0


def initialised_postgres(tracked, image: str, port: int, data: Path, labels: dict) -> None:
    """A PostgreSQL data dir the image initialised, with 500 rows in `kept`, the server stopped cleanly."""
    os.chown(data, 999, 999)
    c = run_postgres(tracked, image, port, data, {**labels, "ownvol.watch": "false"})
    wait_for(lambda: pg_ready(c, port), 60, what="PostgreSQL to accept connections")
    psql(c, port, "create table kept(i int); insert into kept select generate_series(1, 500)")
    c.stop(timeout=30)
    c.remove()


def mariadb_ready(container) -> bool:
    container.reload()
    return container.status == "running" and mariadb_run(container, "select 1")[0] == 0


def initialised_mariadb(tracked, image: str, port: int, data: Path, labels: dict, rows: int = 500) -> None:
    """A MariaDB data dir the image initialised, with `rows` rows in kept.t (its own tablespace,
    kept/t.ibd), the server stopped cleanly."""
    os.chown(data, 999, 999)
    c = run_mariadb(tracked, image, port, data, {**labels, "ownvol.watch": "false"})
    wait_for(lambda: mariadb_ready(c), 90, what="MariaDB to accept connections")
    code, out = mariadb_run(c, f"create database kept; create table kept.t(i int) engine=innodb; "
                               f"insert into kept.t select seq from kept.seq_1_to_{rows}")
    assert code == 0, out
    c.stop(timeout=30)
    c.remove()
