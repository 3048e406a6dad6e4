"""One writer per server, recording every write the server acknowledged, and the check that each is still there.

Redis and Valkey: SET chaos:N N over TCP (the reply comes after the AOF's fsync: appendfsync always, redis.io
"Redis persistence"). PostgreSQL and MariaDB: INSERT of row N in autocommit over a `docker exec -i` session of the
server's own client (psql, mariadb), the row read back in the same session before it counts (a commit is durable
when it returns: PostgreSQL synchronous_commit=on, MariaDB innodb_flush_log_at_trx_commit=1, their defaults).
"""

from __future__ import annotations

import os
import select
import subprocess
import threading
import time

import redis

from tests.chaos.servers import PASSWORD, Server

PAUSE = {"redis": 0.04, "valkey": 0.04, "postgres": 0.15, "mariadb": 0.15}  # seconds between writes


class Writer(threading.Thread):
    """Writes until stop(); acks: the sequence numbers acknowledged; ack_times/fail_times: time.monotonic() of each
    acknowledged and failed write."""

    def __init__(self, server: Server, host: str) -> None:
        super().__init__(daemon=True, name=f"writer-{server.key}")
        self.server = server
        self.host = host  # the engine's DOCKER_HOST, for the SQL sessions
        self.acks: list[int] = []
        self.ack_times: list[float] = []
        self.fail_times: list[float] = []
        self.last_error = ""
        self._halt = threading.Event()
        self._seq = 0

    @property
    def last_ack(self) -> float:
        return self.ack_times[-1] if self.ack_times else 0.0

    def acked_since(self, t: float) -> bool:
        return self.last_ack >= t

    def stop(self) -> None:
        self._halt.set()
        self.join(30)
        self.close()

    def run(self) -> None:
        while not self._halt.is_set():
            self._seq += 1
            try:
                ok = self.write(self._seq)
            except Exception as exc:  # noqa: BLE001 - any failure is a write not acknowledged
                ok, self.last_error = False, repr(exc)[:200]
                self.close()
            now = time.monotonic()
            if ok:
                self.acks.append(self._seq)
                self.ack_times.append(now)
                self._halt.wait(PAUSE[self.server.family])
            else:
                self.fail_times.append(now)
                self._halt.wait(0.1)

    def write(self, n: int) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def missing(self) -> list[int]:
        """The acknowledged sequence numbers the server does not have now; raises when it cannot be asked."""
        raise NotImplementedError


class RedisWriter(Writer):
    def __init__(self, server: Server, host: str) -> None:
        super().__init__(server, host)
        self.client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=3, socket_connect_timeout=1)

    def write(self, n: int) -> bool:
        return bool(self.client.set(f"chaos:{n}", n))

    def close(self) -> None:
        self.client.connection_pool.disconnect()

    def missing(self) -> list[int]:
        client = redis.Redis(host="127.0.0.1", port=self.server.port, socket_timeout=30)
        lost = []
        for i in range(0, len(self.acks), 1000):
            chunk = self.acks[i:i + 1000]
            values = client.mget([f"chaos:{n}" for n in chunk])
            lost += [n for n, v in zip(chunk, values, strict=True) if v != str(n).encode()]
        client.close()
        return lost


class Session:
    """A server's own SQL client over `docker exec -i`, reading statements on stdin; lines of output by marker."""

    def __init__(self, host: str, container: str, argv: list[str]) -> None:
        self.proc = subprocess.Popen(["docker", "-H", host, "exec", "-i", container, *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.buffer = b""

    def ask(self, statements: str, marker: str, timeout: float = 10) -> list[str]:
        """Send statements, return the output lines before the line `marker`; TimeoutError, EOFError."""
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(statements.encode())
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                text = line.decode(errors="replace").strip()
                if text == marker:
                    return lines
                lines.append(text)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {marker} within {timeout}s")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise EOFError("the session ended")
                self.buffer += chunk

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream and stream.close()
            except OSError:
                pass
        self.proc.kill()
        self.proc.wait()


class SqlWriter(Writer):
    def __init__(self, server: Server, host: str) -> None:
        super().__init__(server, host)
        self.session: Session | None = None

    def client_argv(self) -> list[str]:
        if self.server.family == "postgres":
            return ["psql", "-XAtq", "-p", str(self.server.port), "-U", "postgres"]
        return ["mariadb", "-uroot", f"-p{PASSWORD}", "--batch", "--skip-column-names", "--unbuffered", "--force"]

    def statements(self, sql: str, marker: str) -> str:
        echo = f"\\echo {marker}\n" if self.server.family == "postgres" else f"SELECT '{marker}';\n"
        return f"{sql}\n{echo}"

    def table(self) -> str:
        return "chaos" if self.server.family == "postgres" else "chaos.w"

    def open(self) -> Session:
        session = Session(self.host, self.server.name, self.client_argv())
        create = ("CREATE TABLE IF NOT EXISTS chaos(i bigint primary key);" if self.server.family == "postgres" else
                  "CREATE DATABASE IF NOT EXISTS chaos; CREATE TABLE IF NOT EXISTS chaos.w(i bigint primary key);")
        try:
            session.ask(self.statements(create, "~open"), "~open")
        except Exception:
            session.close()
            raise
        return session

    def write(self, n: int) -> bool:
        if self.session is None:
            self.session = self.open()
        if self.server.family == "postgres":
            sql = f"INSERT INTO chaos VALUES ({n}) RETURNING i;"
        else:
            sql = f"INSERT INTO chaos.w VALUES ({n}); SELECT i FROM chaos.w WHERE i = {n};"
        return str(n) in self.session.ask(self.statements(sql, f"~{n}"), f"~{n}")

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def missing(self) -> list[int]:
        session = self.open()
        try:
            have = {int(x) for x in session.ask(self.statements(f"SELECT i FROM {self.table()};", "~all"), "~all",
                                                timeout=60) if x.isdigit()}
        finally:
            session.close()
        return [n for n in self.acks if n not in have]


def writer_for(server: Server, host: str) -> Writer:
    return SqlWriter(server, host) if server.sql else RedisWriter(server, host)
