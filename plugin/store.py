"""The driver's state in SQLite: volumes, their mount references, their last check and repair.

WAL, a busy timeout and BEGIN IMMEDIATE transactions make it safe for several gunicorn
workers and their threads (each opens its own connection); synchronous=FULL makes a committed change survive
a crash, of the plugin or of the machine. Mount references alone commit with NORMAL (see
transaction). A volume row carries a state: 'creating' and 'removing' are written before the disk
is touched, so a crash between the database and the disk is found and finished at the next
start (see volumes.Volumes.recover).
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ownvol import sqlite

from .options import VolumeSpec

log = logging.getLogger("ownvol.plugin")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('creating', 'ready', 'removing')),
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    policy TEXT NOT NULL,
    profile TEXT,
    path TEXT NOT NULL UNIQUE,
    adopted INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    last_check TEXT,
    last_check_result TEXT,
    last_repair_at TEXT,
    last_repair_changed INTEGER,
    last_repair_seconds REAL
);
CREATE TABLE IF NOT EXISTS mounts (
    volume TEXT NOT NULL REFERENCES volumes(name) ON DELETE CASCADE,
    id TEXT NOT NULL,
    count INTEGER NOT NULL CHECK (count > 0),
    since TEXT NOT NULL,
    PRIMARY KEY (volume, id)
);
"""
# Each step takes a store from the version before it to its own; a store is brought up to date when opened.
_MIGRATIONS = {
    2: """
ALTER TABLE volumes ADD COLUMN data_mount TEXT;
ALTER TABLE volumes ADD COLUMN data_fstype TEXT;
ALTER TABLE volumes ADD COLUMN data_source TEXT;
ALTER TABLE volumes ADD COLUMN data_inode INTEGER;
ALTER TABLE mounts ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE mounts ADD COLUMN last_at TEXT;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
""",
    3: """
ALTER TABLE volumes ADD COLUMN ownership TEXT NOT NULL DEFAULT 'walk';
ALTER TABLE volumes ADD COLUMN view_of TEXT;
ALTER TABLE volumes ADD COLUMN mapped INTEGER NOT NULL DEFAULT 0;
ALTER TABLE volumes ADD COLUMN ownership_note TEXT;
""",
}
SCHEMA_VERSION = max(_MIGRATIONS)


@dataclass(frozen=True)
class DataIdentity:
    """Where a volume's data lives: the filesystem (its mount point, type and source as the driver sees them)
    and the data directory's inode on it."""

    mount: str
    fstype: str
    source: str
    inode: int

    def same_data(self, other: DataIdentity) -> bool:
        """The same directory on the same filesystem. The mount point may differ (a bind of the same filesystem
        over it); the device number is not compared, since NFS and tmpfs get a new one at every mount."""
        return (self.fstype, self.source, self.inode) == (other.fstype, other.source, other.inode)

    def describe(self) -> str:
        return f"inode {self.inode} on {self.fstype} {self.source} mounted at {self.mount}"


@dataclass(frozen=True)
class VolumeRecord:
    name: str
    state: str
    spec: VolumeSpec
    path: str
    adopted: bool
    created_at: str
    last_check: str | None = None
    last_check_result: str | None = None
    last_repair_at: str | None = None
    last_repair_changed: int | None = None
    last_repair_seconds: float | None = None
    identity: DataIdentity | None = None
    mapped: bool = False  # shown through an idmapped mount (ownership idmap, or auto where the probe succeeded)
    ownership_note: str | None = None  # why auto chose what it chose, or what the last map check found


@dataclass(frozen=True)
class Reference:
    """One mount ID's references: how many, since when, last counted when, and in which epoch (see Store.epoch)."""

    volume: str
    id: str
    count: int
    since: str
    last_at: str | None
    epoch: int


# Commits a connection makes before checkpoint_if_due copies the WAL back into the database. SQLite's own
# checkpoint (wal_autocheckpoint, 1000 pages by default) runs inside the COMMIT that crosses the mark, so the writers'
# lock stays held through its two fsyncs while every other writer queues (bench: mount_p99_ms; sqlite.org/wal.html,
# "Automatic Checkpoint"). A Mount or an Unmount commits 2 to 3 pages: 100 commits in each of a few workers is about as
# much WAL between checkpoints as SQLite's mark.
CHECKPOINT_EVERY = 100


class Store:
    def __init__(self, db_path: str, busy_timeout_ms: int = 30_000, deferred_checkpoints: bool = False) -> None:
        """deferred_checkpoints: SQLite never checkpoints inside a commit of this store's; its owner calls
        checkpoint_if_due when no request waits on it (app.py: once a reply is sent)."""
        self.db_path = db_path
        self.busy_timeout_ms = busy_timeout_ms
        self.deferred_checkpoints = deferred_checkpoints
        self._local = threading.local()  # conn, pid, lock_fd, durable, commits: each thread's own

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection: a connection never crosses a fork into a gunicorn worker, nor a thread
        (sqlite3 refuses that) into another of a worker's threads."""
        local = self._local
        if not self._connected():
            local.conn = self._connect()
            local.durable = True
            local.commits = 0
            # the writers' queue (see transaction): an open file of this thread's own, as flock wants
            local.lock_fd = os.open(self.db_path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            local.pid = os.getpid()
        return local.conn

    def _connected(self) -> bool:
        """Whether this thread holds a connection made in this process (a fork's child makes its own)."""
        local = self._local
        return getattr(local, "conn", None) is not None and local.pid == os.getpid()

    def _connect(self) -> sqlite3.Connection:
        os.makedirs(os.path.dirname(self.db_path) or ".", mode=0o700, exist_ok=True)
        conn = sqlite.connect(self.db_path, _SCHEMA, SCHEMA_VERSION, self.busy_timeout_ms, foreign_keys=True,
                              migrations=_MIGRATIONS)
        conn.row_factory = sqlite3.Row
        if self.deferred_checkpoints:
            conn.execute("PRAGMA wal_autocheckpoint = 0")
        return conn

    def close(self) -> None:
        local = self._local
        if self._connected():
            local.conn.close()
            os.close(local.lock_fd)
        local.conn = None
        local.lock_fd = -1

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (BEGIN IMMEDIATE), committed or rolled back whole.

        Writers queue on a flock first: the kernel wakes the next one the moment the lock is free,
        where SQLite's busy handler would sleep 1, 2, 5, 10... ms between tries (bench: mount_p99_ms).
        durable=False commits without an fsync (WAL, synchronous=NORMAL): it survives a crash of the
        plugin, and only a crash of the machine may lose it, which ends every container its mount
        references stood for (so it is right for those, never for Create and Remove). The next durable
        commit makes it durable too.
        """
        conn = self.conn
        local = self._local
        lock_fd = local.lock_fd
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            if durable != local.durable:
                conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
                local.durable = durable
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            local.commits += 1
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)

    def checkpoint_if_due(self) -> bool:
        """With deferred_checkpoints, after CHECKPOINT_EVERY commits of this thread's connection: copy the WAL back
        into the database (PRAGMA wal_checkpoint(PASSIVE): it waits for no reader or writer, and writers go on
        meanwhile; sqlite.org/pragma.html#pragma_wal_checkpoint), outside the writers' lock. Whether it ran; one
        refused (another connection's checkpoint holds the file) is asked again after the next commit."""
        local = self._local
        if not self.deferred_checkpoints or not self._connected() or local.commits < CHECKPOINT_EVERY:
            return False
        try:
            local.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.OperationalError as exc:
            log.debug("event=checkpoint-deferred db=%s reason=%s", self.db_path, exc)
            return False
        local.commits = 0
        return True

    @contextmanager
    def name_lock(self, name: str) -> Iterator[None]:
        """Hold one volume name for the length of a Create or Remove: an flock on a file of that name, which the
        kernel releases the moment its holder dies, so a killed worker frees the name at once. Names are
        validated before (no '/'); lock files stay (unlinking a lock file others may wait on is a race)."""
        locks = os.path.join(os.path.dirname(self.db_path) or ".", "locks")
        os.makedirs(locks, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(locks, name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @staticmethod
    def _record(row: sqlite3.Row) -> VolumeRecord:
        spec = VolumeSpec(uid=row["uid"], gid=row["gid"], mode=row["mode"], policy=row["policy"],
                          profile=row["profile"], path=row["path"] if row["adopted"] else None,
                          ownership=row["ownership"], view_of=row["view_of"])
        identity = None
        if row["data_inode"] is not None:
            identity = DataIdentity(row["data_mount"], row["data_fstype"], row["data_source"], row["data_inode"])
        return VolumeRecord(
            name=row["name"], state=row["state"], spec=spec, path=row["path"], adopted=bool(row["adopted"]),
            created_at=row["created_at"], last_check=row["last_check"], last_check_result=row["last_check_result"],
            last_repair_at=row["last_repair_at"], last_repair_changed=row["last_repair_changed"],
            last_repair_seconds=row["last_repair_seconds"], identity=identity, mapped=bool(row["mapped"]),
            ownership_note=row["ownership_note"],
        )

    def get(self, name: str) -> VolumeRecord | None:
        row = self.conn.execute("SELECT * FROM volumes WHERE name = ?", (name,)).fetchone()
        return self._record(row) if row else None

    def all(self, state: str | None = None) -> list[VolumeRecord]:
        if state is None:
            rows = self.conn.execute("SELECT * FROM volumes ORDER BY name").fetchall()
        else:
            rows = self.conn.execute("SELECT * FROM volumes WHERE state = ? ORDER BY name", (state,)).fetchall()
        return [self._record(r) for r in rows]

    def names_and_paths(self, state: str = "ready") -> list[tuple[str, str]]:
        """(name, data directory) of every volume in `state`, in table order: what List needs and no more
        (bench: list_10k_ms; whole records in name order took most of a List of 10,000). The daemon merges
        every driver's List and the CLI sorts what it shows (docker/cli cli/command/volume/list.go)."""
        return self.conn.execute("SELECT name, path FROM volumes WHERE state = ?", (state,)).fetchall()

    def insert(self, record: VolumeRecord) -> None:
        s = record.spec
        self.conn.execute(
            "INSERT INTO volumes (name, state, uid, gid, mode, policy, profile, path, adopted, created_at,"
            " ownership, view_of, mapped, ownership_note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.name, record.state, s.uid, s.gid, s.mode, s.policy, s.profile, record.path,
             int(record.adopted), record.created_at, s.ownership, s.view_of, int(record.mapped),
             record.ownership_note),
        )

    def set_mapped(self, name: str, mapped: bool, note: str | None) -> None:
        """Whether the volume is shown through an idmapped mount, and why (auto's choice, a map check)."""
        self.conn.execute("UPDATE volumes SET mapped = ?, ownership_note = ? WHERE name = ?",
                          (int(mapped), note, name))

    def views_of(self, name: str) -> list[str]:
        """The names of the views (view-of=name) of a volume, in name order."""
        return [r[0] for r in self.conn.execute("SELECT name FROM volumes WHERE view_of = ? ORDER BY name",
                                                (name,)).fetchall()]

    def set_identity(self, name: str, identity: DataIdentity) -> None:
        self.conn.execute("UPDATE volumes SET data_mount = ?, data_fstype = ?, data_source = ?, data_inode = ?"
                          " WHERE name = ?", (identity.mount, identity.fstype, identity.source, identity.inode, name))

    def set_state(self, name: str, state: str) -> None:
        self.conn.execute("UPDATE volumes SET state = ? WHERE name = ?", (state, name))

    def delete(self, name: str) -> None:
        self.conn.execute("DELETE FROM volumes WHERE name = ?", (name,))

    def record_check(self, name: str, at: str, result: str) -> None:
        with self.transaction():
            self.set_check(name, at, result)

    def set_check(self, name: str, at: str, result: str) -> None:
        """record_check inside a transaction the caller holds."""
        self.conn.execute("UPDATE volumes SET last_check = ?, last_check_result = ? WHERE name = ?", (at, result, name))

    def record_repair(self, name: str, at: str, changed: int, seconds: float) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE volumes SET last_repair_at = ?, last_repair_changed = ?, last_repair_seconds = ?"
                " WHERE name = ?",
                (at, changed, seconds, name),
            )

    def add_ref(self, name: str, mount_id: str, at: str) -> int:
        """Count one more Mount of (name, mount_id); return the volume's references in all.

        A reference counted in an earlier epoch (before the engine that holds the driver now was started)
        was the dead engine's: this Mount replaces it instead of adding to it."""
        epoch = self.epoch()
        self.conn.execute(
            "INSERT INTO mounts (volume, id, count, since, last_at, epoch) VALUES (?, ?, 1, ?, ?, ?)"
            " ON CONFLICT (volume, id) DO UPDATE SET"
            " count = CASE WHEN epoch < excluded.epoch THEN 1 ELSE count + 1 END,"
            " since = CASE WHEN epoch < excluded.epoch THEN excluded.since ELSE since END,"
            " last_at = excluded.last_at, epoch = excluded.epoch",
            (name, mount_id, at, at, epoch),
        )
        return self.refs(name)

    def references(self, name: str | None = None) -> list[Reference]:
        """Every reference (of one volume, or of all), oldest first."""
        sql = "SELECT * FROM mounts" + (" WHERE volume = ?" if name else "") + " ORDER BY volume, since"
        rows = self.conn.execute(sql, (name,) if name else ()).fetchall()
        return [Reference(r["volume"], r["id"], r["count"], r["since"], r["last_at"], r["epoch"]) for r in rows]

    def drop_refs(self, name: str, before_epoch: int | None = None) -> int:
        """Forget a volume's references (only those of epochs before before_epoch, if given); how many IDs."""
        if before_epoch is None:
            return self.conn.execute("DELETE FROM mounts WHERE volume = ?", (name,)).rowcount
        return self.conn.execute("DELETE FROM mounts WHERE volume = ? AND epoch < ?", (name, before_epoch)).rowcount

    # -- the engine that activated the driver

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET"
                          " value = excluded.value", (key, value))

    def metas(self, prefix: str) -> list[tuple[str, str]]:
        """(key, value) of every meta row whose key starts with prefix, in key order."""
        rows = self.conn.execute("SELECT key, value FROM meta WHERE substr(key, 1, ?) = ? ORDER BY key",
                                 (len(prefix), prefix)).fetchall()
        return [(r["key"], r["value"]) for r in rows]

    def delete_meta(self, key: str) -> None:
        self.conn.execute("DELETE FROM meta WHERE key = ?", (key,))

    def epoch(self) -> int:
        """How many times an engine not seen before has activated the driver (0 before the first)."""
        return int(self.meta("epoch") or 0)

    def drop_ref(self, name: str, mount_id: str) -> tuple[bool, int]:
        """Count one Unmount; return (whether the ID was known, the volume's references left)."""
        row = self.conn.execute("SELECT count FROM mounts WHERE volume = ? AND id = ?", (name, mount_id)).fetchone()
        if row is None:
            return False, self.refs(name)
        if row["count"] > 1:
            self.conn.execute("UPDATE mounts SET count = count - 1 WHERE volume = ? AND id = ?", (name, mount_id))
        else:
            self.conn.execute("DELETE FROM mounts WHERE volume = ? AND id = ?", (name, mount_id))
        return True, self.refs(name)

    def refs(self, name: str, epoch: int = 0) -> int:
        """A volume's references in all (only those counted in epoch or later, if given)."""
        return self.conn.execute("SELECT COALESCE(SUM(count), 0) FROM mounts WHERE volume = ? AND epoch >= ?",
                                 (name, epoch)).fetchone()[0]

    def mount_ids(self, name: str) -> dict[str, int]:
        rows = self.conn.execute("SELECT id, count FROM mounts WHERE volume = ? ORDER BY since", (name,)).fetchall()
        return {r["id"]: r["count"] for r in rows}
