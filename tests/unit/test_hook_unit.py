"""Pure logic of the hook, with fakes where Docker and Redis would be: patterns, strategies, breaker,
journal, health rules, target facts, and the recovery engine."""

from __future__ import annotations

import io
import json
import math
import time

import pytest

from ownvol.dockertime import timestamp_ns
from ownvol.hook import patterns
from ownvol.hook.breaker import Breaker
from ownvol.hook.executor import DockerExecutor
from ownvol.hook.follow import Demux, since_param, split_lines
from ownvol.hook.health import evaluate
from ownvol.hook.journal import Journal
from ownvol.hook.model import ActionResult, Health
from ownvol.hook.services import by_family
from ownvol.hook.strategies import StrategyError, load, parse
from ownvol.hook.targets import data_mount, is_service, is_watched, resolve_user
from ownvol.hook.telemetry import Telemetry
from ownvol.hook.watcher import QUIET_MAX, Watched, Watcher
from tests.support.fakes import FakeExecutor, Verdict, engine, events


# --- patterns -----------------------------------------------------------------------------------
def test_log_prefix_is_stripped_and_errno_decides_the_type():
    d = patterns.match("1:M 26 Nov 2026 05:50:12.684 # Can't open or create append-only dir x: No space left on device")
    assert d.message.startswith("Can't open") and d.error_type == "no-space"
    assert patterns.match("1:M 26 Nov 2026 05:50:12.685 * Ready to accept connections") is None


def test_the_newer_wordings_match_too():
    """Wordings Redis 7.0.15 does not produce (so no capture exists): the issue's format strings, filled in."""
    d = patterns.match("Fatal error: can't open the RDB file dump.rdb for reading: Permission denied")
    assert (d.pattern.id, d.context["file"], d.error_type) == ("rdb-file-read", "dump.rdb", "permission-denied")
    d = patterns.match("Write error while saving DB to the disk(rdbSaveRio): No space left on device")
    assert (d.pattern.id, d.error_type) == ("rdb-write", "no-space")


def test_fork_failures_stay_fork_failures_whatever_the_errno():
    d = patterns.match("Can't save in background: fork: Cannot allocate memory")
    assert d.error_type == "fork-failed"


# --- strategies ---------------------------------------------------------------------------------
def test_packaged_strategies_load_and_cover_every_error_type():
    config = load()
    for t in patterns.ERROR_TYPES:
        assert config.strategy(t).actions
    assert config.strategy("something-new").error_type == "persistence-failed"


def test_plan_rounds_and_backoff():
    config = parse({"defaults": {"attempts": 2, "delay": 1, "backoff": 2, "max_delay": 3},
                    "types": {"persistence-failed": {"actions": ["repair-ownership", "restart"]}}})
    s = config.strategy("persistence-failed")
    assert s.plan() == [(1, "repair-ownership"), (1, "restart"), (2, "repair-ownership"), (2, "restart")]
    assert [s.delay_before(i) for i in range(4)] == [0, 1, 2, 3]


@pytest.mark.parametrize("bad, message", [
    ({}, "types"),
    ({"types": {"persistence-failed": {"actions": ["chmod-777"]}}}, "unknown action"),
    ({"types": {"permission-denied": {"actions": ["restart"]}}}, "persistence-failed is required"),
    ({"types": {"persistence-failed": {"actions": ["restart"], "attempts": 0}}}, "attempts"),
])
def test_bad_strategies_are_refused_with_a_reason(bad, message):
    with pytest.raises(StrategyError, match=message):
        parse(bad)


def test_learning_moves_a_failing_action_later_and_keeps_the_rest_in_order():
    config = load()
    s = config.strategy("permission-denied")
    ordered = config.ordered(s, {"repair-ownership": (0, 3), "restart": (5, 0)})
    assert ordered.actions == ("persist-again", "restart", "aof-off", "repair-ownership")
    assert config.ordered(s, {"repair-ownership": (1, 2)}).actions == s.actions  # too few samples


# --- breaker ------------------------------------------------------------------------------------
def test_breaker_counts_a_sliding_window_per_container():
    b = Breaker(max_actions=2, window=10)
    b.record("a", 0)
    b.record("a", 1)
    assert not b.allow("a", 5) and b.allow("b", 5)
    assert b.allow("a", 10.5)


# --- journal ------------------------------------------------------------------------------------
def test_journal_incident_actions_and_rates(tmp_path):
    j = Journal(tmp_path / "j.sqlite")
    inc = j.open_incident("c1", "redis", "permission-denied", "log", {"message": "x"}, 1.0)
    assert j.open_incident_for("c1").id == inc.id
    j.start_action(inc.id, 0, "repair-ownership")
    j.finish_action(inc.id, 0, "ok", False, {})
    j.start_action(inc.id, 1, "restart")
    j.finish_action(inc.id, 1, "ok", True, {})
    j.start_action(inc.id, 2, "aof-off")  # never finished: a hook killed here
    j.close()
    j = Journal(tmp_path / "j.sqlite")
    acts = j.actions(inc.id)
    assert [(a.step, a.action, a.result) for a in acts] == [(0, "repair-ownership", "ok"), (1, "restart", "ok"),
                                                             (2, "aof-off", None)]
    assert j.rates("permission-denied") == {("permission-denied", "repair-ownership"): (0, 1),
                                            ("permission-denied", "restart"): (1, 0)}
    j.close_incident(inc.id, "resolved", "verified")
    assert j.open_incident_for("c1") is None and j.history()[0].status == "resolved"


def test_rates_are_kept_per_service_family(tmp_path):
    """What MariaDB's start-ups taught says nothing of PostgreSQL's plan for the same error type."""
    j = Journal(tmp_path / "j.sqlite")
    inc = j.open_incident("c1", "db", "permission-denied", "log", {"service": "mariadb"}, 1.0)
    j.start_action(inc.id, 0, "repair-ownership")
    j.finish_action(inc.id, 0, "ok", False, {})
    assert j.rates("permission-denied", "mariadb") == {("permission-denied", "repair-ownership"): (0, 1)}
    assert j.rates("permission-denied", "postgres") == {} and j.rates("permission-denied", "") == {}
    assert j.rates("permission-denied") == {("permission-denied", "repair-ownership"): (0, 1)}


# --- health -------------------------------------------------------------------------------------
OK = {"aof_enabled": 1, "aof_last_write_status": "ok", "aof_last_bgrewrite_status": "ok",
      "rdb_last_bgsave_status": "ok", "loading": 0}


@pytest.mark.parametrize("container, ping, persistence, owner, state", [
    ("running", "PONG", OK, {"ok": True}, "healthy"),
    ("exited", "", {}, None, "down"),
    ("running", "MISCONF Redis is configured to save RDB snapshots", {**OK, "rdb_last_bgsave_status": "err"},
     None, "refusing-writes"),
    ("running", "PONG", {**OK, "aof_last_bgrewrite_status": "err"}, None, "latent"),
    ("running", "PONG", {**OK, "aof_enabled": 0, "aof_last_write_status": "err"}, None, "healthy"),
    ("running", "PONG", OK, {"ok": False, "problem": "owner 0:0, want 999:999"}, "latent"),
    ("running", "error: Connection refused", {}, None, "unreachable"),
    ("running", "PONG", {**OK, "loading": 1}, None, "loading"),
])
def test_health_rules(container, ping, persistence, owner, state):
    assert evaluate(container, ping, persistence, owner)[0] == state


# --- targets ------------------------------------------------------------------------------------
def attrs(path="redis-server", args=(), image="ownvol/redis:7", labels=None, network="host", mounts=(), env=()):
    return {"Path": path, "Args": list(args), "Config": {"Image": image, "Labels": labels or {}, "Env": list(env),
                                                         "WorkingDir": "/data"},
            "HostConfig": {"NetworkMode": network}, "Mounts": list(mounts),
            "NetworkSettings": {"Networks": {}}}


def test_which_containers_are_watched():
    assert is_service(attrs()) and is_service(attrs(path="docker-entrypoint.sh", image="redis:7.2"))
    assert is_service(attrs(path="valkey-server", image="x/y"))
    assert is_service(attrs(path="sh", image="valkey/valkey:8"))
    assert is_service(attrs(path="postgres", image="x/y")) and is_service(attrs(path="sh", image="mariadb:11"))
    assert not is_service(attrs(path="mongod", image="mongo:7"))
    assert not is_watched(attrs(labels={"ownvol.watch": "false"}))
    assert is_watched(attrs(path="mongod", image="mongo:7", labels={"ownvol.watch": "true"}))
    assert not is_watched(attrs(labels={"team": "b"}), selector={"team": "a"})
    mine = attrs(labels={"ownvol.hook": "h1"})
    assert is_watched(mine, selector={"ownvol.hook": "h1"}) and not is_watched(mine)


class _View:
    def __init__(self, attrs, files=None):
        self.attrs, self.files = attrs, files or {}

    def read_file(self, path):
        return self.files.get(path)

    def list_dir(self, path):
        return None


def settings(a, files=None):
    return by_family("redis").configured(_View(a, files))


def test_redis_address_and_password():
    assert settings(attrs(args=["--port", "7001"])).address == "redis://127.0.0.1:7001/0"
    assert settings(attrs(labels={"ownvol.redis.url": "redis://h:1/2"})).address == "redis://h:1/2"
    assert settings(attrs(env=["REDIS_PASSWORD=s3"])).password == "s3"
    assert settings(attrs(labels={"ownvol.redis.password": "l"}, env=["REDIS_PASSWORD=s3"])).password == "l"
    assert settings(attrs(args=["--requirepass", "p"])).password == "p"


def test_data_mount_is_the_longest_containing_destination():
    mounts = [{"Type": "volume", "Source": "/v/_data", "Destination": "/data", "Name": "v", "Driver": "local"},
              {"Type": "bind", "Source": "/srv/r", "Destination": "/data/redis"}]
    m = data_mount(attrs(mounts=mounts), "/data/redis/db")
    assert (m.type, m.host_path) == ("bind", "/srv/r/db")
    assert data_mount(attrs(mounts=mounts), "/elsewhere") is None


PASSWD = "root:x:0:0::/root:/bin/sh\nredis:x:999:998::/data:/usr/sbin/nologin\n"
GROUP = "root:x:0:\nredis:x:998:\nstaff:x:50:\n"


@pytest.mark.parametrize("user, expected", [
    ("redis", (999, 998)), ("999", (999, 998)), ("redis:staff", (999, 50)), ("1234", (1234, 0)),
    ("1234:77", (1234, 77)), ("nobody", None),
])
def test_users_resolve_as_the_engine_runs_them(user, expected):
    assert resolve_user(user, PASSWD, GROUP) == expected


def test_docker_timestamps_keep_nanoseconds():
    assert timestamp_ns("2026-11-26T05:50:16.000000001Z") - timestamp_ns("2026-11-26T05:50:16Z") == 1


# --- recovery engine ----------------------------------------------------------------------------


def test_only_verification_ends_an_incident(tmp_path):
    ex = FakeExecutor(heals="restart")
    rec, out = engine(tmp_path, ex)
    inc = rec.report("c1", "r", "persistence-failed", "log", {}, background=False)
    assert ex.ran == ["repair-ownership", "persist-again", "restart"]
    assert rec.journal.incident(inc.id).status == "resolved"
    assert [e["event"] for e in events(out)][-1] == "recovered"


def test_one_incident_per_container_further_sightings_are_evidence(tmp_path):
    rec, _ = engine(tmp_path, FakeExecutor())
    inc = rec.journal.open_incident("c1", "r", "persistence-failed", "log", {}, 0)
    assert rec.report("c1", "r", "persistence-failed", "health", {"message": "again"}) is None
    assert rec.journal.evidence(inc.id) == ["health: again"]


def test_plan_exhausted_gives_up_and_repeats_are_suppressed(tmp_path):
    ex = FakeExecutor(heals=None)
    rec, out = engine(tmp_path, ex)
    inc = rec.report("c1", "r", "persistence-failed", "log", {}, background=False)
    assert rec.journal.incident(inc.id).status == "gave-up" and len(ex.ran) == 8
    assert rec.report("c1", "r", "persistence-failed", "log", {}, background=False) is None
    assert events(out)[-1]["event"] == "suppressed"
    rec.healthy("c1")  # healthy again after the gave-up: a new fault is a new incident
    assert rec.report("c1", "r", "persistence-failed", "log", {}, background=False) is not None


def test_breaker_stops_a_recovery_early(tmp_path):
    ex = FakeExecutor(heals=None)
    rec, out = engine(tmp_path, ex, {"breaker": {"max_actions": 3}})
    inc = rec.report("c1", "r", "persistence-failed", "log", {}, background=False)
    assert len(ex.ran) == 3
    final = rec.journal.incident(inc.id)
    assert final.status == "gave-up" and final.outcome.startswith("circuit breaker")


def test_breaker_gave_up_says_which_actions_failed_and_why(tmp_path):
    ex = FakeExecutor(heals=None, results={"persist-again": "failed"})
    rec, out = engine(tmp_path, ex, {"breaker": {"max_actions": 2}})
    inc = rec.report("c1", "r", "persistence-failed", "health", {}, background=False)
    final = rec.journal.incident(inc.id)
    assert final.outcome.startswith("circuit breaker: 2 actions in 600s did not make it healthy")
    assert "repair-ownership ok -> down" in final.outcome and "persist-again failed -> down" in final.outcome
    gave_up = [e for e in events(out) if e["event"] == "gave-up"][-1]
    assert [(f["action"], f["result"], f["state"]) for f in gave_up["failed"]] == [
        ("repair-ownership", "ok", "down"), ("persist-again", "failed", "down")]


class Redrifts(FakeExecutor):
    """A server whose data dir something else keeps re-owning: unhealthy at each new incident, healed by a repair."""

    def drift(self):
        self.is_healthy = False


def test_breaker_does_not_count_verified_repairs(tmp_path):
    """Ten incidents in a row, each healed by one verified repair within the window: none is stopped by a breaker
    of eight (issue 27 defect 1, case 23)."""
    ex = Redrifts(heals="repair-ownership")
    rec, out = engine(tmp_path, ex, {"breaker": {"max_actions": 8}})
    for _ in range(10):
        ex.drift()
        inc = rec.report("c1", "r", "permission-denied", "health", {}, background=False)
        assert inc is not None and rec.journal.incident(inc.id).status == "resolved"
    assert ex.ran == ["repair-ownership"] * 10 and "gave-up" not in [e["event"] for e in events(out)]
    assert rec.journal.action_times("c1", 0) == []


def test_breaker_seed_of_a_restarted_hook_does_not_count_verified_repairs(tmp_path):
    ex = Redrifts(heals="repair-ownership")
    rec, _ = engine(tmp_path, ex, {"breaker": {"max_actions": 8}})
    for _ in range(8):
        ex.drift()
        rec.report("c1", "r", "permission-denied", "health", {}, background=False)
    again = Redrifts(heals="repair-ownership")
    rec2, out2 = engine(tmp_path, again, {"breaker": {"max_actions": 8}})  # a new hook on the same journal
    inc = rec2.report("c1", "r", "permission-denied", "health", {}, background=False)
    assert again.ran == ["repair-ownership"] and rec2.journal.incident(inc.id).status == "resolved"


def test_breaker_counts_failures_across_incidents_until_a_verified_recovery(tmp_path):
    ex = FakeExecutor(heals=None)
    rec, _ = engine(tmp_path, ex, {"breaker": {"max_actions": 3}, "types": {"persistence-failed": {
        "actions": ["repair-ownership", "persist-again"], "attempts": 1}}})
    first = rec.report("c1", "r", "persistence-failed", "health", {}, background=False)
    assert rec.journal.incident(first.id).outcome.startswith("2 planned actions")
    rec.healthy("c1")  # seen healthy by a probe, not by a recovery: the two failures still count
    second = rec.report("c1", "r", "persistence-failed", "health", {}, background=False)
    assert rec.journal.incident(second.id).outcome.startswith("circuit breaker: 3 actions")
    assert len(ex.ran) == 3
    rec3, _ = engine(tmp_path, FakeExecutor(heals=None), {"breaker": {"max_actions": 3}})
    rec3._seed_breaker("c1")
    assert rec3.breaker.count("c1", rec3.clock()) == 3  # a restarted hook counts them too


def test_a_foreign_owner_that_keeps_coming_back_is_a_shared_volume_conflict(tmp_path):
    """Case 23: another container on the same volume chowns it at each of its starts. Every drift is repaired (no
    breaker), and the conflict is reported at the 2nd, 4th, 8th time, naming the other container and what ends it."""

    class Chowned(Redrifts):
        def run(self, cid, action, incident=None):
            done = super().run(cid, action, incident)
            return ActionResult(done.result, {"found": "101:102", "owner": "999:1000", "path": "/v/_data"})

    ex = Chowned(heals="repair-ownership")
    ex.others = [{"id": "0123456789ab", "name": "xboard", "status": "running", "destination": "/data"}]
    rec, out = engine(tmp_path, ex, {"breaker": {"max_actions": 8}})
    for _ in range(9):
        ex.drift()
        inc = rec.report("c1", "r", "permission-denied", "health", {}, background=False)
        assert rec.journal.incident(inc.id).status == "resolved"
    shared = [e for e in events(out) if e["event"] == "shared-volume"]
    assert [e["repeats"] for e in shared] == [2, 4, 8]
    assert all(e["kind"] == "conflict" and e["foreign_owner"] == "101:102" and e["owner"] == "999:1000"
               for e in shared)
    assert "xboard (running)" in shared[0]["message"] and "its own volume" in shared[0]["message"]
    assert rec.shared["c1"]["repeats"] == 9 and rec.shared["c1"]["others"][0]["name"] == "xboard"
    assert "gave-up" not in [e["event"] for e in events(out)]


def test_one_foreign_owner_repaired_once_is_no_conflict(tmp_path):
    class Once(Redrifts):
        def run(self, cid, action, incident=None):
            done = super().run(cid, action, incident)
            return ActionResult(done.result, {"found": "0:0", "owner": "999:1000", "path": "/v"})

    ex = Once(heals="repair-ownership")
    rec, out = engine(tmp_path, ex)
    ex.drift()
    rec.report("c1", "r", "permission-denied", "health", {}, background=False)
    assert "shared-volume" not in [e["event"] for e in events(out)] and rec.shared == {}


def test_a_resumed_incident_whose_last_action_is_skipped_ends_on_the_verified_state(tmp_path):
    """The resumed plan's last step is skipped while the container heals on its own (its restart policy): the
    incident ends resolved, not gave-up (issue 27 defect 4)."""

    class HealsMeanwhile(FakeExecutor):
        def run(self, cid, action, incident=None):
            self.is_healthy = True  # its own restart finished while this step was being skipped
            return super().run(cid, action, incident)

    ex = HealsMeanwhile(results={"persist-again": "skipped"})
    rec, out = engine(tmp_path, ex)
    inc = rec.journal.open_incident("c1", "r", "persistence-failed", "log",
                                    {"plan": ["repair-ownership", "persist-again"]}, 0)
    rec.journal.start_action(inc.id, 0, "repair-ownership")
    rec.journal.finish_action(inc.id, 0, "ok", False, {})
    final = rec.recover(rec.journal.incident(inc.id))
    assert ex.ran == ["persist-again"]
    assert final.status == "resolved", final.outcome
    assert [e["event"] for e in events(out)][-1] == "recovered"


def test_a_plan_exhausted_on_a_healthy_server_is_resolved(tmp_path):
    class HealsAtTheEnd(FakeExecutor):
        def run(self, cid, action, incident=None):
            if action == "aof-off":
                self.is_healthy = True
            return super().run(cid, action, incident)

    ex = HealsAtTheEnd(results={"aof-off": "skipped"})
    rec, out = engine(tmp_path, ex)
    inc = rec.report("c1", "r", "persistence-failed", "health", {}, background=False)
    assert rec.journal.incident(inc.id).status == "resolved"


def test_skipped_actions_do_not_count_and_are_not_verified(tmp_path):
    ex = FakeExecutor(heals="restart", results={"persist-again": "skipped"})
    rec, out = engine(tmp_path, ex, {"breaker": {"max_actions": 2}})
    inc = rec.report("c1", "r", "persistence-failed", "log", {}, background=False)
    assert rec.journal.incident(inc.id).status == "resolved"
    assert [a.verified for a in rec.journal.actions(inc.id)] == [False, None, True]


def test_resume_repeats_no_action(tmp_path):
    ex = FakeExecutor(heals="restart")
    rec, out = engine(tmp_path, ex)
    inc = rec.journal.open_incident("c1", "r", "persistence-failed", "log", {"plan": ["repair-ownership",
                                                                                      "persist-again", "restart"]}, 0)
    rec.journal.start_action(inc.id, 0, "repair-ownership")
    rec.journal.finish_action(inc.id, 0, "ok", False, {})
    rec.journal.start_action(inc.id, 1, "persist-again")  # the hook died while this ran
    rec.recover(rec.journal.incident(inc.id))
    assert ex.ran == ["restart"]
    assert [(a.action, a.result) for a in rec.journal.actions(inc.id)] == [
        ("repair-ownership", "ok"), ("persist-again", "interrupted"), ("restart", "ok")]


def test_resume_leaves_an_incident_this_hook_is_already_recovering(tmp_path):
    import threading

    release = threading.Event()

    class Slow(FakeExecutor):
        def run(self, cid, action, incident=None):
            release.wait(10)
            return super().run(cid, action, incident)

    rec, out = engine(tmp_path, Slow(heals="repair-ownership"))
    inc = rec.report("c1", "r", "persistence-failed", "log", {})  # a worker of this hook holds it
    try:
        assert rec.resume(lambda cid: True) == []
        assert "resumed" not in [e["event"] for e in events(out)]
    finally:
        release.set()
        rec._workers["c1"].join(10)
    assert rec.journal.incident(inc.id).status == "resolved"


def test_aof_off_is_remembered_and_turned_back_on_after_a_repair(tmp_path):
    ex = FakeExecutor(heals="aof-off")
    rec, out = engine(tmp_path, ex)
    rec.report("c1", "r", "persistence-failed", "log", {}, background=False)
    assert rec.journal.fallback("c1") and "aof-disabled" in [e["event"] for e in events(out)]
    ex.results["aof-on"] = "failed"
    assert rec.fallback_due("c1") and not rec.restore_aof("c1")
    assert rec.journal.fallback("c1")["tries"] == 1
    ex.results["aof-on"] = "ok"
    assert rec.restore_aof("c1") and rec.journal.fallback("c1") is None
    assert ex.ran[-2:] == ["repair-ownership", "aof-on"]
    assert events(out)[-1]["event"] == "aof-restored"


def test_webhook_gets_incident_recovered_and_gave_up_only():
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    got: list[dict] = []
    done = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()
            if len(got) == 3:
                done.set()

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        t = Telemetry(out=io.StringIO(), webhook=f"http://127.0.0.1:{server.server_port}/hook")
        for kind in ("health", "incident", "action", "recovered", "gave-up"):
            t.emit(kind, container="r")
        assert done.wait(10)
    finally:
        server.shutdown()
    assert sorted(e["event"] for e in got) == ["gave-up", "incident", "recovered"]


class _Observed(DockerExecutor):
    """DockerExecutor.verify over a scripted sequence of health observations (the last one repeats)."""

    def __init__(self, seen: list[Health]) -> None:
        super().__init__(client=lambda: None)
        self.seen = seen
        self.looks = 0
        self.looked: list[tuple[bool, bool]] = []  # each look's (kept asked for, an inspect kept before it)

    def health(self, container_id: str, kept: bool = False) -> Health:
        self.looks += 1
        self.looked.append((kept, self.inspects.young(container_id, 60) is not None))
        return self.seen[min(self.looks, len(self.seen)) - 1]

    def _stays_down(self, container_id: str, health: Health) -> bool:
        return False

    def swarm_task(self, container_id: str) -> None:
        return None


def _looked(state: str, **persistence: int) -> Health:
    return Health(state, [], "running", "PONG", {"rdb_bgsave_in_progress": 0, **persistence})


def test_verification_waits_out_a_save_begun_before_the_action():
    """Healthy while the save that failed is not yet reaped, then refusing: the verdict is the refusal."""
    ex = _Observed([_looked("healthy", rdb_bgsave_in_progress=1), _looked("healthy", rdb_bgsave_in_progress=1),
                    _looked("refusing-writes")])
    verdict = ex.verify("c", timeout=5, interval=0)
    assert verdict.state == "refusing-writes" and ex.looks == 3


def test_verification_looks_fresh_after_the_action_then_takes_the_kept_inspect():
    """An inspect kept from before the action (a probe's) is forgotten: the first look asks the engine; the looks
    after it take the kept inspect, which every engine event about the container forgets."""
    ex = _Observed([_looked("loading"), _looked("loading"), _looked("healthy")])
    ex.inspects.clear(followed=True)
    ex.inspects.get("c", lambda _: "the probe's")
    assert ex.verify("c", timeout=5, interval=0).healthy
    assert ex.looked == [(True, False)] * 3


def test_a_refusal_with_no_save_in_progress_is_final_at_once():
    ex = _Observed([_looked("refusing-writes")])
    assert ex.verify("c", timeout=5, interval=0).state == "refusing-writes" and ex.looks == 1


def test_a_save_that_ends_well_verifies_healthy():
    ex = _Observed([_looked("refusing-writes", aof_rewrite_in_progress=1), _looked("healthy")])
    assert ex.verify("c", timeout=5, interval=0).healthy and ex.looks == 2


def test_a_redis_still_loading_is_waited_for_until_the_timeout():
    ex = _Observed([_looked("loading")])
    assert ex.verify("c", timeout=0.05, interval=0.01).state == "loading" and ex.looks > 1


class _Held(_Observed):
    """verify over observations of a container its restart policy holds, start_held answering from a script."""

    def __init__(self, seen: list[Health], answers: list[dict]) -> None:
        super().__init__(seen)
        self.answers = answers
        self.asked = 0
        self.told: list[dict] = []
        self.on_held = lambda cid, answer: self.told.append(answer)

    def start_held(self, container_id: str, tell: bool = True) -> dict:
        self.asked += 1
        return self._told(container_id, self.answers.pop(0)) if tell else self.answers.pop(0)


def _restarting() -> Health:
    return Health("down", ["container restarting"], "restarting", "")


def _full(free: int) -> dict:
    return {"started": False, "container": "c", "how": "held", "why": f"/srv has {free} bytes free of 16777216",
            "cause": True}


def test_a_held_container_is_asked_for_again_while_a_cause_holds_it_and_said_once_per_reason():
    started = {"started": True, "container": "c", "how": "held", "why": "started now"}
    ex = _Held([_restarting(), _restarting(), _restarting(), _looked("healthy")], [_full(0), _full(4096), started])
    assert ex.verify("c", timeout=5, interval=0).healthy
    assert ex.asked == 3
    assert [t["started"] for t in ex.told] == [False, True]  # the full disk said once, its bytes changing or not


def test_a_held_container_the_policy_starts_soon_is_left_to_it_and_not_asked_again():
    soon = {"started": False, "container": "c", "how": "held", "why": "its restart policy starts it within 0.030s"}
    ex = _Held([_restarting(), _restarting(), _looked("healthy")], [soon])
    assert ex.verify("c", timeout=5, interval=0).healthy
    assert ex.asked == 1 and ex.told == [soon]


class _RefusesUntilSaved(FakeExecutor):
    """repair-ownership leaves Redis refusing writes with no save in progress; persist-again heals it."""

    def verify(self, cid, timeout):
        if self.is_healthy:
            return Verdict(True, "healthy")
        return Verdict(False, "refusing-writes" if self.ran[-1] == "repair-ownership" else "down")


def test_no_backoff_before_the_save_a_refusing_redis_waits_for(tmp_path):
    rec, _ = engine(tmp_path, _RefusesUntilSaved(heals="persist-again"),
                    {"defaults": {"delay": 5, "backoff": 1, "max_delay": 5}})
    slept = []
    rec.sleep = slept.append
    incident = rec.report("c1", "redis-1", "permission-denied", "log", {"message": "x"}, background=False)
    assert rec.executor.ran == ["repair-ownership", "persist-again"] and slept == []
    assert rec.journal.incident(incident.id).status == "resolved"


def test_backoff_stays_after_an_action_that_failed(tmp_path):
    rec, _ = engine(tmp_path, FakeExecutor(heals="persist-again", results={"repair-ownership": "failed"}),
                    {"defaults": {"delay": 5, "backoff": 1, "max_delay": 5}})
    slept = []
    rec.sleep = slept.append
    rec.report("c1", "redis-1", "permission-denied", "log", {"message": "x"}, background=False)
    assert rec.executor.ran == ["repair-ownership", "persist-again"] and slept and slept[0] > 4


def test_an_action_that_awaits_the_next_ones_save_is_not_learnt_as_failing(tmp_path):
    """repair-ownership did its part each time (persist-again's save then healed): it keeps its place."""
    ex = _RefusesUntilSaved(heals="persist-again")
    rec, _ = engine(tmp_path, ex, {"learning": {"min_samples": 1, "min_success_rate": 0.5}})
    for i in range(3):
        ex.is_healthy = False
        ex.ran.clear()
        rec.report(f"c{i}", f"redis-{i}", "permission-denied", "log", {"message": "x"}, background=False)
        assert ex.ran == ["repair-ownership", "persist-again"]
    assert rec.journal.rates("permission-denied")[("permission-denied", "repair-ownership")] == (0, 0)


def test_a_service_healthy_again_before_the_next_action_is_not_acted_on(tmp_path):
    """Its restart policy finished the job after a verification gave up: the next action (a restart) never runs."""
    from tests.support.fakes import FakeExecutor
    from tests.support.fakes import engine as recovery_engine

    class HealsLate(FakeExecutor):
        def verify(self, cid, timeout):
            if timeout == 0 and self.ran:
                self.is_healthy = True
            return super().verify(cid, timeout)

    executor = HealsLate()
    rec, _ = recovery_engine(tmp_path, executor)
    incident = rec.report("c1", "db", "persistence-failed", "log", {"message": "x"}, background=False)
    assert executor.ran == ["repair-ownership"]
    assert rec.journal.incident(incident.id).status == "resolved"


# --- supervision ----------------------------------------------------------------------------------
class RaisingExecutor(FakeExecutor):
    """The engine's socket fails under some actions (requests' ConnectionError is no DockerException)."""

    def __init__(self, raises_in: set[str], heals: str | None = None, verify_raises: bool = False) -> None:
        super().__init__(heals)
        self.raises_in = raises_in
        self.verify_raises = verify_raises

    def run(self, cid, action, incident=None):
        if action in self.raises_in:
            self.ran.append(action)
            raise ConnectionError("('Connection aborted.', RemoteDisconnected('Remote end closed connection'))")
        return super().run(cid, action, incident)

    def verify(self, cid, timeout):
        if self.verify_raises and not self.is_healthy:
            raise ConnectionError("engine gone")
        return super().verify(cid, timeout)


def test_an_action_that_raises_is_a_failed_step_and_the_incident_goes_on(tmp_path):
    ex = RaisingExecutor({"repair-ownership"}, heals="restart")
    rec, out = engine(tmp_path, ex)
    inc = rec.report("c1", "r", "persistence-failed", "log", {}, background=False)
    assert rec.journal.incident(inc.id).status == "resolved"
    first = rec.journal.actions(inc.id)[0]
    assert (first.action, first.result) == ("repair-ownership", "failed")
    assert "ConnectionError" in first.detail["error"]
    kinds = [e["event"] for e in events(out)]
    assert "action-raised" in kinds and kinds[-1] == "recovered"


def test_an_incident_whose_every_step_raises_ends_gave_up(tmp_path):
    ex = RaisingExecutor({"repair-ownership", "persist-again", "restart", "aof-off"}, verify_raises=True)
    rec, out = engine(tmp_path, ex)
    inc = rec.report("c1", "r", "persistence-failed", "log", {}, background=False)
    assert rec.journal.incident(inc.id).status == "gave-up" and len(ex.ran) == 8
    assert rec.journal.open_incidents() == []


def test_a_worker_that_fails_outside_any_action_closes_its_incident(tmp_path):
    rec, out = engine(tmp_path, FakeExecutor())

    def broken_plan(incident):
        raise RuntimeError("strategy table unreadable")

    rec.plan_for = broken_plan
    inc = rec.report("c1", "r", "persistence-failed", "log", {}, background=False)
    closed = rec.journal.incident(inc.id)
    assert closed.status == "gave-up" and "recovery worker failed: RuntimeError" in closed.outcome
    assert [e["event"] for e in events(out)][-2:] == ["worker-failed", "gave-up"]


def test_suppressed_repeats_are_counted_and_reported_at_most_once_a_minute(tmp_path):
    now = [1000.0]
    ex = FakeExecutor(heals=None)
    rec, out = engine(tmp_path, ex)
    rec.clock = lambda: now[0]
    rec.report("c1", "r", "persistence-failed", "log", {}, background=False)
    for _ in range(90):  # a crash loop seen every second for a minute and a half
        now[0] += 1
        assert rec.report("c1", "r", "persistence-failed", "log", {}, background=False) is None
    suppressed = [e for e in events(out) if e["event"] == "suppressed"]
    assert [e["repeats"] for e in suppressed] == [1, 60]


def test_log_lines_are_whole_across_frames_and_since_is_exact():
    lines, rest = split_lines("", "2026-11-30T01:00:00.000000001Z one\n2026-11-30T01:00:00.00000")
    assert lines == ["2026-11-30T01:00:00.000000001Z one"] and rest == "2026-11-30T01:00:00.00000"
    lines, rest = split_lines(rest, "0002Z two\n")
    assert lines == ["2026-11-30T01:00:00.000000002Z two"] and rest == ""
    assert since_param(1_796_000_000_000_000_007) == "1796000000.000000007"
    assert since_param(timestamp_ns("2026-11-30T01:00:00.000000001Z")) == "1796000400.000000001"


def _frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def test_log_frames_are_unwrapped_whatever_the_pieces_they_arrive_in():
    stream = _frame(1, b"2026-11-30T01:00:00.000000001Z out\n") + _frame(2, b"2026-11-30T01:00:00.0000") + \
        _frame(2, "00002Z err \u00e9\n".encode()) + _frame(1, b"")
    for size in (1, 3, 8, 9, len(stream)):
        demux = Demux(tty=False)
        payload = b"".join(demux.feed(stream[i:i + size]) for i in range(0, len(stream), size))
        assert payload == "2026-11-30T01:00:00.000000001Z out\n2026-11-30T01:00:00.000000002Z err \u00e9\n".encode()
    raw = b"\x01\x00 not a frame header\n"
    assert Demux(tty=True).feed(raw) == raw


class _Probes:
    """A watched container's probe results, one per call, in order."""

    def __init__(self, states):
        self.states = list(states)

    def health(self, cid):
        state = self.states.pop(0)
        return Health(state, [], "running", "PONG" if state == "healthy" else "")


def test_a_healthy_container_is_probed_less_often_until_something_happens(tmp_path):
    rec, _ = engine(tmp_path, FakeExecutor())
    probes = _Probes(["healthy"] * 7 + ["loading", "healthy", "healthy"])
    watcher = Watcher(lambda: None, {}, rec, Telemetry(out=io.StringIO()), probes, interval=5)
    w = Watched("c1", "c")
    watcher.watched = {"c1": w}
    assert watcher.probe_due(False, set()) == math.inf and len(probes.states) == 10  # nothing asked for it yet
    quiet = []
    for _ in range(6):
        watcher.check(w)
        quiet.append(w.quiet)
    assert quiet == [0.0, 5, 10, 20, 40, 60]  # the first healthy probe is a change: its next one a plain interval
    watcher.check(w)
    assert w.quiet == 5 * QUIET_MAX
    watcher.probe_soon("c1")  # an event or a log line of its own
    everyone, poked = watcher._wake.take()
    assert (everyone, poked) == (False, {"c1"})
    next_due = watcher.probe_due(everyone, poked)  # loading: not settled
    assert w.quiet == 0.0 and next_due == w.due and len(probes.states) == 2
    assert watcher.probe_due(False, set()) == next_due and len(probes.states) == 2  # not due again yet
    watcher.probe_due(True, set())
    watcher.probe_due(True, set())
    assert w.quiet == 5


class _SlowFirst:
    """Probe results by container; the probe of `slow` takes `seconds` (an exec'd PostgreSQL probe, facts read cold)."""

    def __init__(self, slow: str, seconds: float) -> None:
        self.slow, self.seconds, self.done = slow, seconds, []

    def health(self, cid):
        if cid == self.slow:
            time.sleep(self.seconds)
        self.done.append((cid, time.monotonic()))
        return Health("healthy", [], "running", "PONG")


def test_a_slow_probe_does_not_hold_up_the_containers_after_it(tmp_path):
    rec, _ = engine(tmp_path, FakeExecutor())
    probes = _SlowFirst("pg", 0.6)
    watcher = Watcher(lambda: None, {}, rec, Telemetry(out=io.StringIO()), probes, interval=5)
    watcher.watched = {cid: Watched(cid, cid) for cid in ("pg", "r1", "r2")}
    began = time.monotonic()
    watcher.probe_due(True, set())  # every container, as at the hook's start
    at = dict(probes.done)
    assert set(at) == {"pg", "r1", "r2"}  # every one probed before it returns
    assert at["r1"] - began < 0.3 and at["r2"] - began < 0.3 < at["pg"] - began
    assert all(w.due < math.inf and w.health == "healthy" for w in watcher.watched.values())
