"""Issue 27, defect 2, against real servers: a data dir whose mode stops the server's uid (chmod 000, or root's 0700)
is repaired in its mode as well as its owner, with the least change, and the hook takes no step that cannot help
(no BGSAVE into it, no restart of a running server): a serving Redis with AOF keeps serving, never MISCONF, never
restarted; a PostgreSQL that cannot start on it is healed to 0700 and started."""

from __future__ import annotations

import os
import stat
import threading
import time

import pytest
import redis

from tests.engine.test_hook_databases import PG, by
from tests.support.common import server_image
from tests.support.databases import initialised_postgres, psql, run_postgres
from tests.support.engine import wait_for
from tests.support.fixtures_hook import fast_strategies, heal_report, run_redis

pytestmark = pytest.mark.engine


def client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=3, decode_responses=True)


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


class Writer:
    """Writes a key every 20 ms until stopped: the acknowledged ones, and every error Redis replied."""

    def __init__(self, port: int) -> None:
        self.r = client(port)
        self.acked: dict[str, str] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            try:
                if self.r.set(f"w{i}", i):
                    self.acked[f"w{i}"] = str(i)
            except redis.exceptions.RedisError as exc:
                self.errors.append(str(exc)[:200])
            i += 1
            time.sleep(0.02)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.mark.parametrize("owner,fault_mode,changed", [
    pytest.param((999, 999), 0o000, [". 0000->0700"], id="chmod-000"),
    pytest.param((0, 0), 0o700, [], id="chown-root-0700"),
])
def test_a_running_redis_whose_data_dir_mode_stops_it_is_healed_without_a_save_or_a_restart(
        hook, tracked, redis_image, host_dir, port, owner, fault_mode, changed):
    os.chown(host_dir, 999, 999)
    h = hook(strategies=fast_strategies(host_dir.parent / "s.yaml"))
    c = run_redis(tracked, redis_image, port, host_dir, h.labels)
    h.wait_event(lambda e: by(c.name, "health")(e) and e["state"] == "healthy", 60, "Redis healthy")
    c.reload()
    started = c.attrs["State"]["StartedAt"]
    r = client(port)
    assert r.info("persistence")["aof_enabled"] == 1
    with Writer(port) as writer:
        wait_for(lambda: len(writer.acked) > 20, 10, what="writes acknowledged")
        mark = h.mark()
        fault_at = time.time()
        os.chown(host_dir, *owner)
        os.chmod(host_dir, fault_mode)
        recovered = h.wait_event(by(c.name, "recovered"), 60, "the data dir's mode to be healed", after=mark)
        heal_report(f"run time, owner {owner[0]}:{owner[1]} mode {fault_mode:04o}", recovered["ts"] - fault_at)
        count = len(writer.acked)
        wait_for(lambda: len(writer.acked) > count + 20, 10, what="writes acknowledged after the heal")
    assert recovered["by"] == "repair-ownership", recovered
    steps = [e for e in h.events[mark:] if e["event"] == "action" and e.get("container") == c.name]
    assert [(e["action"], e["result"]) for e in steps] == [("repair-ownership", "ok")], steps
    assert steps[0]["detail"].get("modes", []) == changed and steps[0]["verified"] is True, steps[0]
    assert (host_dir.stat().st_uid, host_dir.stat().st_gid, mode(host_dir)) == (999, 999, 0o700)
    assert not [e for e in writer.errors if "MISCONF" in e], writer.errors
    c.reload()
    assert c.status == "running" and c.attrs["State"]["StartedAt"] == started, "restarted"

    # the data dir works for every kind of save Redis makes, and nothing acknowledged was lost
    assert r.bgsave()
    wait_for(lambda: r.info("persistence")["rdb_bgsave_in_progress"] == 0, 30, what="the BGSAVE to end")
    assert r.bgrewriteaof()
    wait_for(lambda: (lambda i: not i["aof_rewrite_in_progress"] and not i["aof_rewrite_scheduled"])(
        r.info("persistence")), 30, what="the AOF rewrite to end")
    persistence = r.info("persistence")
    assert (persistence["rdb_last_bgsave_status"], persistence["aof_last_bgrewrite_status"],
            persistence["aof_last_write_status"]) == ("ok", "ok", "ok"), persistence
    assert r.mget(list(writer.acked)) == list(writer.acked.values())
    assert (host_dir / "dump.rdb").exists()


@pytest.mark.parametrize("image", PG, indirect=True)
def test_a_postgres_data_dir_chmod_000_while_stopped_is_healed_to_0700_at_start_up(hook, tracked, image, host_dir,
                                                                                   port):
    """The server run without the image's entrypoint (`entrypoint: postgres`), which would chmod 0700 PGDATA itself
    (images/postgres/entrypoint.sh, as the official image's docker-entrypoint.sh does): PostgreSQL cannot read its
    configuration in a data dir of mode 0000 and exits; repaired to 0700 (its own checkDataDir's mode), started,
    its rows all there."""
    h = hook(strategies=fast_strategies(host_dir.parent / "s.yaml"))
    initialised_postgres(tracked, image, port, host_dir, h.labels)
    os.chmod(host_dir, 0o000)
    started = time.time()
    c = run_postgres(tracked, image, port, host_dir, h.labels, restart_policy={"Name": "on-failure"},
                     entrypoint=["postgres"], command=["-p", str(port), "-c", "listen_addresses=127.0.0.1"])
    recovered = h.wait_event(by(c.name, "recovered"), 120, "PostgreSQL to be recovered")
    heal_report(f"{image} start-up, data dir mode 0000", recovered["ts"] - started)
    repair = next(e for e in h.of("action", c.name) if e["action"] == "repair-ownership")
    assert repair["result"] == "ok" and repair["detail"]["mode"] == "0700", repair
    assert repair["detail"]["modes"] == [". 0000->0700"], repair
    assert (host_dir.stat().st_uid, host_dir.stat().st_gid, mode(host_dir)) == (999, 999, 0o700)
    assert psql(c, port, "select count(*) from kept") == "500"
    assert psql(c, port, "insert into kept values (501); select count(*) from kept") == "501"
    assert not h.of("gave-up", c.name)


@pytest.fixture
def image(request, docker_client) -> str:
    return server_image(docker_client, request.param)
