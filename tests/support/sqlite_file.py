"""What a SQLite database file itself holds, its write-ahead log left aside: what a checkpoint has put there."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path


def rows_in_the_file_alone(db_path: str | Path, scratch: Path, sql: str) -> list[tuple] | None:
    """The rows sql reads from a copy of db_path alone (no -wal, no -shm) made in scratch, which is left empty
    again; None when the copy has no table yet (every page of the schema still in the WAL)."""
    alone = scratch / "alone.db"
    shutil.copyfile(db_path, alone)
    conn = sqlite3.connect(alone)
    try:
        if conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0] == 0:
            return None
        return conn.execute(sql).fetchall()
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            (scratch / f"alone.db{suffix}").unlink(missing_ok=True)
