"""Issue 27, defect 2: the mode bits that stop a server's uid are repaired (the least change, never looser than the
service needs), the report says which, and no step that cannot help is taken while the data dir stays unwritable
(no BGSAVE into it, no restart of the running server)."""

from __future__ import annotations

import os
import stat

import pytest

from ownvol import ownership
from ownvol.hook import actions
from ownvol.hook.actions import RESTART_GUARDS, Context, persist_again
from ownvol.hook.health import write_blocked
from ownvol.hook.model import DataMount, Target
from ownvol.ownership import mode_for, repair

PG = (0o700, 0o750)


@pytest.mark.parametrize("current,accepted,wanted", [
    (0o000, (), 0o700),          # chmod 000: the owner's rwx, nothing for group or others
    (0o700, (), None),           # chown 0:0 + chmod 0700: the owner fix alone suffices
    (0o755, (), None),
    (0o500, (), 0o700),          # search and read, no write
    (0o070, (), 0o770),          # the group's bits kept, never taken away
    (0o2050, (), 0o2750),        # setgid kept
    (0o1000, (), 0o1700),        # sticky kept
    (0o000, PG, 0o700),          # PostgreSQL: never looser than 0700 ...
    (0o777, PG, 0o700),
    (0o755, PG, 0o700),
    (0o750, PG, None),           # ... or 0750, which it accepts as it is
    (0o700, PG, None),
])
def test_the_mode_decision(current, accepted, wanted):
    assert mode_for(current, accepted) == wanted


def test_the_decision_only_ever_adds_the_owner_s_bits():
    for current in range(0o10000):
        wanted = mode_for(current)
        if wanted is None:
            assert current & 0o700 == 0o700
        else:
            assert wanted & ~current == 0o700 & ~current and wanted & current == current


@pytest.fixture
def data(tmp_path):
    """data/{appendonlydir/{a.aof, locked.aof}, dump.rdb, link -> /etc}, all 999:999, the tree's modes made to stop
    its owner: the root 0000, appendonlydir 0500, locked.aof 0400, dump.rdb 0644."""
    root = tmp_path / "data"
    (root / "appendonlydir").mkdir(parents=True)
    (root / "appendonlydir" / "a.aof").write_text("x")
    (root / "appendonlydir" / "locked.aof").write_text("x")
    (root / "dump.rdb").write_text("x")
    os.symlink("/etc", root / "link")
    for path in (root, root / "appendonlydir", root / "appendonlydir" / "a.aof",
                 root / "appendonlydir" / "locked.aof", root / "dump.rdb"):
        os.chown(path, 999, 999)
    os.lchown(root / "link", 999, 999)
    os.chmod(root / "appendonlydir" / "locked.aof", 0o400)
    os.chmod(root / "dump.rdb", 0o644)
    os.chmod(root / "appendonlydir", 0o500)
    os.chmod(root, 0o000)
    return root


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_usable_repair_gives_the_owner_what_stops_it_and_says_which_modes_changed(data, walk_loop):
    etc = mode("/etc")
    report = repair(str(data), 999, 999, mode_for(mode(data)), usable=True)
    assert (mode(data), mode(data / "appendonlydir"), mode(data / "appendonlydir" / "locked.aof")) == \
        (0o700, 0o700, 0o600)
    assert mode(data / "dump.rdb") == 0o644 and mode(data / "appendonlydir" / "a.aof") == 0o644
    assert mode("/etc") == etc  # the link is never followed
    assert sorted(report.as_dict()["modes"]) == [". 0000->0700", "appendonlydir 0500->0700",
                                                 "appendonlydir/locked.aof 0400->0600"]
    assert report.modes_changed == 3 and report.errors == []
    again = repair(str(data), 999, 999, mode_for(mode(data)), usable=True).as_dict()
    assert again["changed"] == 0 and "modes" not in again


def test_the_driver_s_repair_leaves_the_tree_s_modes_alone(data, walk_loop):
    """Without usable (the driver's Mount preflight) the modes below the root are the application's business."""
    os.chmod(data, 0o755)
    report = repair(str(data), 1000, 1000, None)
    assert mode(data / "appendonlydir") == 0o500 and mode(data / "appendonlydir" / "locked.aof") == 0o400
    assert report.modes == [] and "modes" not in report.as_dict()


def test_modes_are_counted_across_forked_walkers(tmp_path, walk_loop):
    root = tmp_path / "many"
    for i in range(6):
        (root / f"d{i}").mkdir(parents=True)
        (root / f"d{i}" / "f").write_text("x")
        os.chmod(root / f"d{i}" / "f", 0o000)
        os.chmod(root / f"d{i}", 0o000)
    report = repair(str(root), 999, 999, None, workers=3, usable=True)
    assert report.modes_changed == 12 and len(report.modes) == 12
    assert sorted(report.modes)[:2] == ["d0 0000->0700", "d0/f 0000->0600"]
    assert report.modes_changed <= ownership.MODES_KEPT


class _Container:
    def __init__(self, status: str) -> None:
        self.status = status
        self.labels: dict = {}


def _ctx(data, source: str = "process") -> Context:
    target = Target("c1", "c", "img", "running", {}, "redis://127.0.0.1:1/0", None, "/data",
                    DataMount("bind", str(data), "/data", ""), 999, 999, source, False)
    return Context(client=None, target=target)  # type: ignore[arg-type]


@pytest.fixture
def reachable(monkeypatch):
    monkeypatch.setattr(actions, "engine_paths_reachable", lambda: True)


def test_a_running_server_whose_data_dir_it_cannot_write_is_not_restarted(data, reachable):
    guard = dict(RESTART_GUARDS)["cause-remains"]
    ctx = _ctx(data)
    why = guard(ctx, _Container("running"))
    assert why == (f"{data} owner 999:999 mode 0000: 999:999 cannot write there: a restart cannot help while the "
                   "cause is there (the server would not start again there); not restarted")
    assert guard(ctx, _Container("exited")) is None  # a stopped one: start_decision's
    os.chmod(data, 0o700)
    assert guard(ctx, _Container("running")) is None
    os.chown(data, 0, 0)
    assert "owner 0:0 mode 0700: 999:999 cannot write there" in guard(ctx, _Container("running"))


def test_a_bgsave_is_never_asked_into_a_data_dir_the_server_cannot_write(data, reachable, monkeypatch):
    class Redis:
        closed = False

        def close(self) -> None:
            Redis.closed = True

        def bgsave(self, schedule: bool = True) -> None:
            raise AssertionError("BGSAVE into an unwritable data dir")

    monkeypatch.setattr(actions, "_redis_or_skip", lambda ctx: Redis())
    result = persist_again(_ctx(data))
    assert result.result == "skipped" and Redis.closed
    assert result.detail["blocked"] == f"{data} owner 999:999 mode 0000: 999:999 cannot write there"
    assert "MISCONF" in result.detail["why"]


def test_what_cannot_be_told_blocks_nothing(data, reachable, monkeypatch):
    """Only the running server's own uid (its process) is judged; not reachable from here: no guard."""
    assert write_blocked(_ctx(data, "user").target, True) is None
    assert write_blocked(_ctx(data).target, False) is None
    monkeypatch.setattr(actions, "engine_paths_reachable", lambda: False)
    assert actions.data_dir_blocked(_ctx(data)) is None


def test_an_idmapped_ownvol_volume_is_never_chowned(data, reachable):
    os.chown(data, 0, 0)
    before = os.stat(data)
    ctx = _ctx(data)
    ctx.target.idmapped = "ownvol volume v is an idmapped mount showing its data as 999:999"
    result = actions.repair_ownership(ctx)
    assert result.result == "skipped"
    assert "never chowns the data of an idmapped volume" in result.detail["why"]
    assert "-o uid=999 -o gid=999" in result.detail["why"]
    after = os.stat(data)
    assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid, before.st_mode)
