"""The SQLite store: rows, states, mount references, and several processes writing at once."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading

import pytest

from ownvol.driver.options import VolumeSpec
from ownvol.driver.store import CHECKPOINT_EVERY, SCHEMA_VERSION, Store, VolumeRecord
from tests.support.sqlite_file import rows_in_the_file_alone

SPEC = VolumeSpec(999, 999, 0o755, "on-root-mismatch", "redis")


def record(name: str, state: str = "ready", path: str | None = None) -> VolumeRecord:
    return VolumeRecord(name, state, SPEC, path or f"/v/{name}", False, "2026-01-01T00:00:00Z")


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "ownvol.db"))
    yield s
    s.close()


def test_round_trip_and_states(store):
    with store.transaction():
        store.insert(record("a", "creating"))
    assert store.get("a").state == "creating" and store.get("a").spec == SPEC
    with store.transaction():
        store.set_state("a", "ready")
    assert [r.name for r in store.all(state="ready")] == ["a"]
    store.record_check("a", "t1", "ok")
    store.record_repair("a", "t2", 3, 0.5)
    got = store.get("a")
    assert (got.last_check, got.last_check_result, got.last_repair_changed, got.last_repair_seconds) == \
        ("t1", "ok", 3, 0.5)
    assert store.get("missing") is None


def test_a_failed_transaction_leaves_nothing(store):
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.insert(record("a"))
            raise RuntimeError("disk said no")
    assert store.get("a") is None


def test_paths_are_unique(store):
    with store.transaction():
        store.insert(record("a", path="/srv/x"))
    with pytest.raises(sqlite3.IntegrityError):
        with store.transaction():
            store.insert(record("b", path="/srv/x"))


def test_references_count_per_id(store):
    with store.transaction():
        store.insert(record("a"))
        assert store.add_ref("a", "m1", "t") == 1
        assert store.add_ref("a", "m1", "t") == 2  # docker cp mounts again with the same ID
        assert store.add_ref("a", "m2", "t") == 3
    assert store.mount_ids("a") == {"m1": 2, "m2": 1}
    with store.transaction():
        assert store.drop_ref("a", "unknown") == (False, 3)
        assert store.drop_ref("a", "m1") == (True, 2)
        assert store.drop_ref("a", "m1") == (True, 1)
        assert store.drop_ref("a", "m1") == (False, 1)
        assert store.drop_ref("a", "m2") == (True, 0)


def test_references_go_with_the_volume(store):
    with store.transaction():
        store.insert(record("a"))
        store.add_ref("a", "m1", "t")
        store.delete("a")
    assert store.refs("a") == 0


def test_state_survives_reopening(tmp_path):
    path = str(tmp_path / "ownvol.db")
    first = Store(path)
    with first.transaction():
        first.insert(record("a"))
        first.add_ref("a", "m1", "t")
    first.close()
    again = Store(path)
    assert again.get("a").name == "a" and again.refs("a") == 1
    assert again.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _hammer(path: str, worker: int, n: int) -> None:
    store = Store(path)
    for i in range(n):
        with store.transaction():
            store.add_ref("a", f"w{worker}-{i % 3}", "t")
    store.close()


def test_several_processes_count_every_reference(tmp_path):
    path = str(tmp_path / "ownvol.db")
    store = Store(path)
    with store.transaction():
        store.insert(record("a"))
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_hammer, args=(path, w, 50)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert store.refs("a") == 200
    assert len(store.mount_ids("a")) == 12


def test_a_connection_is_not_shared_across_fork(store):
    store.get("a")
    parent_conn = store.conn
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child():
        queue.put(store.conn is not parent_conn)

    p = ctx.Process(target=child)
    p.start()
    p.join(30)
    assert queue.get(timeout=5)


def test_only_transactions_asked_not_to_be_durable_skip_the_fsync(store):
    """Mount references commit with synchronous=NORMAL; everything else, before and after, with FULL (2)."""
    modes = []
    for durable in (True, False, False, True):
        with store.transaction(durable=durable) as conn:
            modes.append(conn.execute("PRAGMA synchronous").fetchone()[0])
    assert modes == [2, 1, 1, 2]


def test_threads_of_one_store_each_have_their_own_connection_and_count_every_reference(store):
    """Threads sharing a Store each get a connection (and writers' lock) of their own."""
    with store.transaction():
        store.insert(record("a"))
    seen, errors = [], []

    def worker(w: int) -> None:
        try:
            seen.append(store.conn)
            for i in range(50):
                with store.transaction(durable=False):
                    store.add_ref("a", f"t{w}-{i % 3}", "t")
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len({id(c) for c in seen}) == 4 and store.conn not in seen
    assert store.refs("a") == 200 and len(store.mount_ids("a")) == 12


def test_a_version_1_store_is_migrated_when_opened(tmp_path):
    """A store written by the version before data identities and reference epochs opens, keeps every row,
    and gains the new columns empty (a volume learns its identity at its next Mount)."""
    from ownvol.driver.store import _SCHEMA

    path = tmp_path / "ownvol.db"
    old = sqlite3.connect(path)
    old.executescript(_SCHEMA)
    old.execute("INSERT INTO volumes (name, state, uid, gid, mode, policy, profile, path, adopted, created_at)"
                " VALUES ('a', 'ready', 999, 999, 493, 'on-root-mismatch', 'redis', '/v/a', 0, 't')")
    old.execute("INSERT INTO mounts (volume, id, count, since) VALUES ('a', 'm1', 2, 't')")
    old.execute("PRAGMA user_version = 1")
    old.commit()
    old.close()
    s = Store(str(path))
    try:
        assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        got = s.get("a")
        assert got.spec == SPEC and got.identity is None
        assert (got.spec.ownership, got.spec.view_of, got.mapped, got.ownership_note) == ("walk", None, False, None)
        assert [(r.id, r.count, r.epoch) for r in s.references("a")] == [("m1", 2, 0)]
        with s.transaction():
            s.set_meta("epoch", "1")
            assert s.add_ref("a", "m1", "t2") == 1  # an earlier epoch's count is replaced, not added to
            assert s.add_ref("a", "m1", "t3") == 2
    finally:
        s.close()


def _names_in_the_file_alone(db_path: str, tmp_path) -> set[str]:
    """The volume names the database file itself holds, its WAL left aside."""
    rows = rows_in_the_file_alone(db_path, tmp_path, "SELECT name FROM volumes")
    return {name for (name,) in rows or []}


@pytest.mark.parametrize("deferred", [False, True])
def test_a_store_with_deferred_checkpoints_never_checkpoints_inside_a_commit(tmp_path, deferred):
    """1,200 commits make more WAL than SQLite's mark (1000 pages): SQLite's own checkpoint, run inside the COMMIT
    that crosses it, has put rows into the database file; a store with deferred checkpoints has put none there
    until checkpoint_if_due, which then puts all of them."""
    path = str(tmp_path / "ownvol.db")
    s = Store(path, deferred_checkpoints=deferred)
    try:
        for i in range(1200):
            with s.transaction(durable=False):
                s.insert(record(f"v{i}"))
        in_file = _names_in_the_file_alone(path, tmp_path)
        if not deferred:
            assert in_file and not s.checkpoint_if_due()
            return
        assert in_file == set() and s.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        assert s.checkpoint_if_due()
        assert _names_in_the_file_alone(path, tmp_path) == {f"v{i}" for i in range(1200)}
        assert not s.checkpoint_if_due(), "due again with no commit since"
    finally:
        s.close()


def test_a_deferred_checkpoint_is_due_after_checkpoint_every_commits_of_the_thread(tmp_path):
    s = Store(str(tmp_path / "ownvol.db"), deferred_checkpoints=True)
    try:
        for i in range(CHECKPOINT_EVERY - 1):
            with s.transaction(durable=False):
                s.insert(record(f"v{i}"))
        assert not s.checkpoint_if_due()
        other: list[bool] = []
        worker = threading.Thread(target=lambda: other.append(s.checkpoint_if_due()))
        worker.start()
        worker.join()
        assert other == [False], "another thread's connection has made no commit"
        with s.transaction(durable=False):
            s.insert(record("last"))
        assert s.checkpoint_if_due()
    finally:
        s.close()
