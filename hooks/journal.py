"""The hook's memory (SQLite): incidents, their actions and outcomes, AOF fallbacks.

Every action is written as started before it runs and finished after, so a hook restarted
mid-incident knows what it already did (an action started but never finished counts as done:
it is not repeated). Success rates per (error type, action) come from here.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from ownvol import sqlite

from .model import ActionRecord, Incident

_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY,
    container_id TEXT NOT NULL,
    container_name TEXT NOT NULL,
    error_type TEXT NOT NULL,
    origin TEXT NOT NULL,
    detail TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open',
    detected_at REAL NOT NULL,
    opened_at REAL NOT NULL,
    closed_at REAL,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS incidents_open ON incidents(status, container_id);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY,
    incident_id INTEGER NOT NULL REFERENCES incidents(id),
    step INTEGER NOT NULL,
    action TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    result TEXT,
    verified INTEGER,
    detail TEXT,
    UNIQUE (incident_id, step)
);
CREATE TABLE IF NOT EXISTS evidence (
    incident_id INTEGER NOT NULL REFERENCES incidents(id),
    at REAL NOT NULL,
    what TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS fallbacks (
    container_id TEXT PRIMARY KEY,
    container_name TEXT NOT NULL,
    incident_id INTEGER NOT NULL,
    since REAL NOT NULL,
    tries INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    container_id TEXT PRIMARY KEY,
    container_name TEXT NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    at REAL NOT NULL
);
"""
SCHEMA_VERSION = 2  # 2: runs (the owner of each container's last healthy run)


class Journal:
    """The hook's SQLite journal at path (`:memory:` for tests); one connection shared by the hook's threads behind a
    lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._lock = threading.Lock()
        # NORMAL: a commit does not wait for fsync(2). Every commit did with FULL, one after another behind the
        # lock, while dockerd's own writes filled the disk's queue: 20 incidents opening at once waited up to
        # 0.25 s (bench: burst20_detect_p99_ms). A crash of the hook loses nothing; a crash of the machine may
        # lose the last commits' history, never the file, and every fact acted on is read again from the
        # running system after it (the driver's store, whose records are the volumes, stays FULL).
        self._db = sqlite.connect(self.path, _SCHEMA, SCHEMA_VERSION, check_same_thread=False, synchronous="NORMAL")
        self._runs: dict[str, tuple[int, int] | None] = {}  # None: never seen healthy (asked once, not each probe)

    # healthy runs: the uid:gid a container's server ran as when last verified healthy
    def record_run(self, container_id: str, container_name: str, uid: int, gid: int) -> None:
        """Remember the owner of a healthy run; written only when it changed (a healthy probe every interval)."""
        if self._runs.get(container_id) == (uid, gid):
            return
        self._runs[container_id] = (uid, gid)
        self._write("INSERT OR REPLACE INTO runs (container_id, container_name, uid, gid, at) VALUES (?, ?, ?, ?, ?)",
                    (container_id, container_name, uid, gid, time.time()))

    def last_run(self, container_id: str) -> tuple[int, int] | None:
        """(uid, gid) its server ran as on its last healthy run, None if never seen healthy."""
        if container_id not in self._runs:
            rows = self._rows("SELECT uid, gid FROM runs WHERE container_id = ?", (container_id,))
            self._runs[container_id] = (rows[0][0], rows[0][1]) if rows else None
        return self._runs[container_id]

    def conflict(self, container_id: str) -> dict | None:
        """The owner conflict an earlier repair-ownership of this container reported (its detail's "conflict":
        the container's uid:gid against its ownvol volume's), None if none did."""
        rows = self._rows("SELECT a.detail FROM actions a JOIN incidents i ON a.incident_id = i.id "
                          "WHERE i.container_id = ? AND a.action = 'repair-ownership' AND a.result = 'ok' "
                          "ORDER BY a.id DESC", (container_id,))
        for (detail,) in rows:
            found = json.loads(detail or "{}").get("conflict")
            if found:
                return found
        return None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _write(self, sql: str, args: tuple = ()) -> None:
        with self._lock:
            self._db.execute(sql, args)

    def _insert(self, sql: str, args: tuple = ()) -> int:
        """Run one INSERT; the new row's id."""
        with self._lock:
            rowid = self._db.execute(sql, args).lastrowid
        assert rowid is not None, "sqlite3 sets lastrowid after every INSERT"
        return rowid

    def open_incident(self, container_id: str, container_name: str, error_type: str, origin: str,
                      detail: dict, detected_at: float) -> Incident:
        """Record a new open incident and return it (detail is stored as JSON)."""
        now = time.time()
        iid = self._insert(
            "INSERT INTO incidents (container_id, container_name, error_type, origin, detail, detected_at, opened_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (container_id, container_name, error_type, origin, json.dumps(detail), detected_at, now))
        return self.incident(iid)

    def incident(self, incident_id: int) -> Incident:
        rows = self._rows("SELECT * FROM incidents WHERE id = ?", (incident_id,))
        if not rows:
            raise KeyError(incident_id)
        return _incident(rows[0])

    def open_incidents(self) -> list[Incident]:
        return [_incident(r) for r in self._rows("SELECT * FROM incidents WHERE status = 'open' ORDER BY id")]

    def open_incident_for(self, container_id: str) -> Incident | None:
        """The container's open incident, if there is one (at most one is open per container)."""
        rows = self._rows("SELECT * FROM incidents WHERE status = 'open' AND container_id = ? ORDER BY id DESC"
                          " LIMIT 1", (container_id,))
        return _incident(rows[0]) if rows else None

    def last_gave_up(self, container_id: str) -> Incident | None:
        """The container's most recent incident that ended in gave-up, if any."""
        rows = self._rows("SELECT * FROM incidents WHERE container_id = ? ORDER BY id DESC LIMIT 1", (container_id,))
        inc = _incident(rows[0]) if rows else None
        return inc if inc and inc.status == "gave-up" else None

    def close_incident(self, incident_id: int, status: str, outcome: str) -> Incident:
        """Close an open incident with status (resolved | gave-up | abandoned) and outcome; the incident as closed."""
        self._write("UPDATE incidents SET status = ?, outcome = ?, closed_at = ? WHERE id = ? AND status = 'open'",
                    (status, outcome, time.time(), incident_id))
        return self.incident(incident_id)

    def set_plan(self, incident_id: int, detail: dict) -> None:
        self._write("UPDATE incidents SET detail = ? WHERE id = ?", (json.dumps(detail), incident_id))

    def add_evidence(self, incident_id: int, what: str) -> None:
        self._write("INSERT INTO evidence (incident_id, at, what) VALUES (?, ?, ?)", (incident_id, time.time(), what))

    def evidence(self, incident_id: int) -> list[str]:
        return [r[0] for r in self._rows("SELECT what FROM evidence WHERE incident_id = ? ORDER BY at",
                                         (incident_id,))]

    def history(self, limit: int = 50) -> list[Incident]:
        return [_incident(r) for r in self._rows("SELECT * FROM incidents ORDER BY id DESC LIMIT ?", (limit,))]

    def start_action(self, incident_id: int, step: int, action: str) -> None:
        """Record that plan step `step` (0-based) starts running `action`, before it runs."""
        self._write("INSERT INTO actions (incident_id, step, action, started_at) VALUES (?, ?, ?, ?)",
                    (incident_id, step, action, time.time()))

    def finish_action(self, incident_id: int, step: int, result: str, verified: bool | None, detail: dict) -> None:
        """Record a step's result (ok | failed | skipped | interrupted), its verification and detail (JSON)."""
        self._write("UPDATE actions SET finished_at = ?, result = ?, verified = ?, detail = ?"
                    " WHERE incident_id = ? AND step = ?",
                    (time.time(), result, None if verified is None else int(verified), json.dumps(detail),
                     incident_id, step))

    def actions(self, incident_id: int) -> list[ActionRecord]:
        return [_action(r) for r in self._rows(
            "SELECT incident_id, step, action, started_at, finished_at, result, verified, detail FROM actions"
            " WHERE incident_id = ? ORDER BY step", (incident_id,))]

    def failed_actions(self, container_id: str, since: float) -> list[ActionRecord]:
        """The container's actions since a time (epoch seconds) that did not make it healthy, oldest first: not
        skipped, not verified healthy, and started after its last resolved incident closed (a verified recovery
        closes the count). The breaker's memory (hooks/breaker.py)."""
        return [_action(r) for r in self._rows(
            "SELECT a.incident_id, a.step, a.action, a.started_at, a.finished_at, a.result, a.verified, a.detail"
            " FROM actions a JOIN incidents i ON i.id = a.incident_id"
            " WHERE i.container_id = ? AND a.started_at >= ? AND COALESCE(a.result, '') != 'skipped'"
            " AND COALESCE(a.verified, 0) = 0 AND a.started_at > COALESCE((SELECT MAX(closed_at) FROM incidents"
            " WHERE container_id = ? AND status = 'resolved'), 0)"
            " ORDER BY a.started_at", (container_id, since, container_id))]

    def action_times(self, container_id: str, since: float) -> list[float]:
        """When the actions that did not make the container healthy ran since a time (failed_actions)."""
        return [a.started_at for a in self.failed_actions(container_id, since)]

    def foreign_owners(self, container_id: str, since: float) -> list[tuple[int, float, str, str, str]]:
        """The container's repair-ownership steps since a time (epoch seconds) that did their part on a data mount
        another owner held (their detail's "found", hooks/actions.py repair_ownership), oldest first: (incident
        id, started_at, owner found, owner repaired to, path)."""
        rows = self._rows(
            "SELECT a.incident_id, a.started_at, json_extract(a.detail, '$.found'), json_extract(a.detail, '$.owner'),"
            " COALESCE(json_extract(a.detail, '$.path'), '') FROM actions a JOIN incidents i ON i.id = a.incident_id"
            " WHERE i.container_id = ? AND a.started_at >= ? AND a.action = 'repair-ownership' AND a.result = 'ok'"
            " AND json_extract(a.detail, '$.found') IS NOT NULL"
            " AND json_extract(a.detail, '$.found') != COALESCE(json_extract(a.detail, '$.owner'), '')"
            " ORDER BY a.started_at", (container_id, since))
        return [(int(r[0]), float(r[1]), str(r[2]), str(r[3]), str(r[4])) for r in rows]

    def rates(self, error_type: str | None = None, service: str | None = None
              ) -> dict[tuple[str, str], tuple[int, int]]:
        """(error type, action) -> (verified successes, failures) over finished, not skipped actions; with
        `service`, only the incidents of that service family (their detail's "service"; "" for those without)."""
        sql = ("SELECT i.error_type, a.action, SUM(a.verified = 1), SUM(a.verified = 0) FROM actions a"
               " JOIN incidents i ON i.id = a.incident_id WHERE a.result IN ('ok', 'failed')")
        args: tuple = ()
        if error_type:
            sql += " AND i.error_type = ?"
            args = (error_type,)
        if service is not None:
            sql += " AND COALESCE(json_extract(i.detail, '$.service'), '') = ?"
            args = (*args, service)
        rows = self._rows(sql + " GROUP BY i.error_type, a.action", args)
        return {(t, a): (int(ok or 0), int(bad or 0)) for t, a, ok, bad in rows}

    def set_fallback(self, container_id: str, container_name: str, incident_id: int, next_try: float) -> None:
        """Remember that the hook turned the container's AOF off, and when to try turning it back on (epoch seconds)."""
        self._write("INSERT OR REPLACE INTO fallbacks (container_id, container_name, incident_id, since, next_try)"
                    " VALUES (?, ?, ?, ?, ?)", (container_id, container_name, incident_id, time.time(), next_try))

    def fallback(self, container_id: str) -> dict | None:
        """The container's AOF fallback (container_id, container_name, incident_id, since, tries, next_try), if any."""
        rows = self._rows("SELECT container_id, container_name, incident_id, since, tries, next_try FROM fallbacks"
                          " WHERE container_id = ?", (container_id,))
        if not rows:
            return None
        keys = ("container_id", "container_name", "incident_id", "since", "tries", "next_try")
        return dict(zip(keys, rows[0], strict=True))

    def fallback_retry(self, container_id: str, next_try: float) -> None:
        self._write("UPDATE fallbacks SET tries = tries + 1, next_try = ? WHERE container_id = ?",
                    (next_try, container_id))

    def clear_fallback(self, container_id: str) -> None:
        self._write("DELETE FROM fallbacks WHERE container_id = ?", (container_id,))


def _incident(row: tuple) -> Incident:
    (iid, cid, name, etype, origin, detail, status, detected, opened, closed, outcome) = row
    return Incident(iid, cid, name, etype, origin, json.loads(detail), status, detected, opened, closed, outcome)


def _action(row: tuple) -> ActionRecord:
    iid, step, action, started, finished, result, verified, detail = row
    return ActionRecord(iid, step, action, started, finished, result, None if verified is None else bool(verified),
                        json.loads(detail) if detail else {})
