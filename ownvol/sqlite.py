"""The SQLite setup the driver's store and the hook's journal share: pragmas, schema, schema version.

WAL (readers never block the writer), synchronous=FULL by default (a committed change survives a crash of
the process or the machine) or NORMAL where asked (a committed change survives a crash of the process; a crash
of the machine may roll back the last ones, never corrupting the file: sqlite.org/pragma.html#pragma_synchronous,
sqlite.org/wal.html), a busy timeout (writers in other processes wait instead of failing), and
the schema created inside one BEGIN IMMEDIATE with its version in PRAGMA user_version, so a file
written by a newer ownvol is refused rather than misread.
"""

from __future__ import annotations

import sqlite3


class SchemaTooNew(RuntimeError):
    """The file's schema version is newer than the one this ownvol knows."""


def connect(path: str, schema: str, version: int, busy_timeout_ms: int = 30_000, foreign_keys: bool = False,
            check_same_thread: bool = True, migrations: dict[int, str] | None = None, synchronous: str = "FULL"
            ) -> sqlite3.Connection:
    """An autocommit connection to path (created if missing) with schema (CREATE ... IF NOT EXISTS
    statements, version 1's) applied, then migrations[2..version] (each the statements that take a file from the
    version before to its own), in the same transaction; synchronous: FULL or NORMAL. Raises SchemaTooNew,
    sqlite3.Error, ValueError for another synchronous."""
    if synchronous not in ("FULL", "NORMAL"):
        raise ValueError(f"synchronous {synchronous!r}: FULL or NORMAL")
    conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000,
                           check_same_thread=check_same_thread)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        if foreign_keys:
            conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("BEGIN IMMEDIATE")
        try:
            found = conn.execute("PRAGMA user_version").fetchone()[0]
            if found > version:
                raise SchemaTooNew(f"{path} has schema {found}, newer than this ownvol ({version})")
            for statement in filter(str.strip, schema.split(";")):
                conn.execute(statement)
            steps = migrations or {}
            for step in range(max(found, 1) + 1, version + 1) if steps else ():
                for statement in filter(str.strip, steps[step].split(";")):
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {int(version)}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except BaseException:
        conn.close()
        raise
    return conn
