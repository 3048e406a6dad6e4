"""The recovery's waits: a no-space incident waits for room, not for a fixed delay (issue 27: no step that cannot
help given the facts just read), and a resumed plan backs off per action that ran, not per skipped step."""

from __future__ import annotations

import time

from ownvol.hook.health import MIN_ROOM, no_room
from tests.support.fakes import FakeExecutor, engine, events


class Clock:
    """A clock that only sleep moves (epoch seconds), and what was slept."""

    def __init__(self) -> None:
        self.now = time.time()
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class RoomAt(FakeExecutor):
    """A data mount whose filesystem has no room until clock() reaches room_at (None: never); each action's time
    kept."""

    def __init__(self, clock: Clock, room_at: float | None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.clock = clock
        self.room_at = room_at
        self.at: list[tuple[str, float]] = []

    def room(self, cid):
        return lambda: None if self.room_at is not None and self.clock() >= self.room_at else "full: 0 bytes free"

    def run(self, cid, action, incident=None):
        self.at.append((action, self.clock()))
        return super().run(cid, action, incident)


NO_SPACE = {"types": {"no-space": {"actions": ["persist-again", "aof-off"], "delay": 5}},
            "defaults": {"attempts": 2, "delay": 0.5, "backoff": 2, "max_delay": 30}}


def recovery(tmp_path, ex, clock, overrides=None):
    rec, out = engine(tmp_path, ex, overrides or NO_SPACE)
    rec.clock, rec.sleep = clock, clock.sleep
    return rec, out


def test_a_no_space_save_waits_for_room_and_runs_as_soon_as_there_is_some(tmp_path):
    clock = Clock()
    start = clock.now
    ex = RoomAt(clock, room_at=start + 1.2, heals="persist-again")
    rec, _ = recovery(tmp_path, ex, clock)
    inc = rec.report("c1", "r", "no-space", "log", {}, background=False)
    assert rec.journal.incident(inc.id).status == "resolved"
    assert ex.ran == ["persist-again"]
    assert 1.2 <= ex.at[0][1] - start < 1.2 + 0.1 + 1e-6  # within one poll of the room coming back, not 5 s
    assert max(clock.slept) <= 0.1 + 1e-9


def test_a_no_space_save_never_runs_early_and_the_wait_counts_as_the_next_step_s_delay(tmp_path):
    clock = Clock()
    start = clock.now
    ex = RoomAt(clock, room_at=None, results={"persist-again": "skipped", "aof-off": "skipped"})
    rec, _ = recovery(tmp_path, ex, clock)
    rec.report("c1", "r", "no-space", "log", {}, background=False)
    times = {}
    for action, at in ex.at:
        times.setdefault(action, at - start)
    # the first save waited the strategy's delay for room (and then skips itself: no room); aof-off comes when it
    # came before (one delay after the incident began), not a second delay later
    assert abs(times["persist-again"] - 5) < 1e-6
    assert abs(times["aof-off"] - 5) < 1e-6
    assert [a for a, _ in ex.at] == ["persist-again", "aof-off", "persist-again", "aof-off"]


def test_a_no_space_save_with_room_now_does_not_wait(tmp_path):
    clock = Clock()
    ex = RoomAt(clock, room_at=clock.now, heals="persist-again")
    rec, _ = recovery(tmp_path, ex, clock)
    rec.report("c1", "r", "no-space", "log", {}, background=False)
    assert clock.slept == [] and ex.ran == ["persist-again"]


def test_other_types_keep_their_delays_whatever_the_room(tmp_path):
    clock = Clock()
    ex = RoomAt(clock, room_at=None, heals="restart")
    rec, _ = recovery(tmp_path, ex, clock, {"defaults": {"attempts": 1, "delay": 0.5, "backoff": 2, "max_delay": 30}})
    rec.report("c1", "r", "persistence-failed", "log", {}, background=False)
    assert ex.ran == ["repair-ownership", "persist-again", "restart"]
    assert clock.slept == [0.5, 1.0]


def test_a_resumed_plan_backs_off_per_action_that_ran_not_per_skipped_step(tmp_path):
    """A hook killed while its repair ran: the resumed plan's steps that cannot help are skipped, and the next round's
    repair comes one delay after the interrupted one, not the fourth step's backoff (4 s) later."""
    clock = Clock()
    ex = RoomAt(clock, room_at=clock.now, heals="repair-ownership",
                results={"persist-again": "skipped", "restart": "skipped", "aof-off": "skipped"})
    rec, out = recovery(tmp_path, ex, clock, {"defaults": {"attempts": 2, "delay": 0.5, "backoff": 2, "max_delay": 30}})
    inc = rec.journal.open_incident("c1", "r", "persistence-failed", "log", {}, clock.now)
    rec.journal.start_action(inc.id, 0, "repair-ownership")  # the hook died while this ran
    rec.recover(rec.journal.incident(inc.id))
    assert ex.ran == ["persist-again", "restart", "aof-off", "repair-ownership"]
    assert rec.journal.incident(inc.id).status == "resolved"
    assert sum(clock.slept) < 0.6, clock.slept  # one delay (0.5 s) after the interrupted step began, not 4 s
    assert [e["event"] for e in events(out)][-1] == "recovered"


def test_a_plan_not_resumed_keeps_its_backoff_per_step(tmp_path):
    clock = Clock()
    ex = RoomAt(clock, room_at=clock.now, heals="repair-ownership",
                results={"repair-ownership": "failed", "persist-again": "skipped", "restart": "skipped",
                         "aof-off": "skipped"})
    rec, _ = recovery(tmp_path, ex, clock, {"defaults": {"attempts": 2, "delay": 0.5, "backoff": 2, "max_delay": 30}})
    rec.report("c1", "r", "persistence-failed", "log", {}, background=False)
    assert ex.ran[:5] == ["repair-ownership", "persist-again", "restart", "aof-off", "repair-ownership"]
    assert sum(clock.slept[:4]) >= 4.0 - 1e-6  # the round-two repair waited its step's backoff (4 s), as before


def test_no_room_is_less_than_a_mebibyte_free_and_unknown_is_not_told():
    assert no_room(None) is None
    assert no_room({"path": "/d", "free_bytes": MIN_ROOM, "size_bytes": 16 << 20}) is None
    assert no_room({"path": "/d", "free_bytes": 4096, "size_bytes": 16 << 20}) == \
        f"/d has 4096 bytes free of {16 << 20}"


def test_a_no_space_incident_ends_when_the_server_is_verified_healthy_during_a_delay(tmp_path):
    """Redis exits on its failed AOF write and Docker's restart policy brings it back once room came: the watcher
    verifies it healthy during the next step's delay, and the incident ends then (resolved), not after the rest of
    the plan's delays, which a second fill would otherwise find still open (seen in a chaos run: gave-up)."""
    clock = Clock()
    start = clock.now
    ex = RoomAt(clock, room_at=start + 1.0, results={"persist-again": "skipped", "aof-off": "skipped"})
    rec, out = recovery(tmp_path, ex, clock)
    sleep = clock.sleep

    def sleep_and_watch(seconds: float) -> None:
        sleep(seconds)
        if clock.now - start >= 2.0 and not ex.is_healthy:  # its restart, seen by the watcher's probe
            ex.is_healthy = True
            rec.healthy("c1")

    rec.sleep = sleep_and_watch
    inc = rec.report("c1", "r", "no-space", "log", {}, background=False)
    assert rec.journal.incident(inc.id).status == "resolved"
    assert ex.ran == ["persist-again"]  # skipped: "container is restarting"; aof-off never came
    assert clock.now - start < 2.2
    assert [e["event"] for e in events(out)][-1] == "recovered"
