"""The hook against real Redis containers: start-up and run-time faults healed, bounded give-up,
the opt-in AOF fallback, resuming after a kill, and the helper-container repair path."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest
import redis

from tests.support.common import free_port
from tests.support.engine import redis_cmd, wait_for
from tests.support.fixtures_hook import fast_strategies, heal_report, redis_spec, run_redis

pytestmark = pytest.mark.engine


def client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=3, decode_responses=True)


def by(name: str, kind: str):
    return lambda e: e["event"] == kind and e.get("container") == name


def test_canary_becomes_healthy_without_a_human(hook, tracked, redis_image, host_dir, port):
    """(a) uid 999, AOF, root-owned bind mount, --restart on-failure: healed, no human step."""
    h = hook()
    started = time.time()
    c = run_redis(tracked, redis_image, port, host_dir, h.labels, restart=True)
    detected = h.wait_event(lambda e: by(c.name, "detected")(e) and e["pattern"] == "aof-dir-open", 60,
                            "the canary's own message to be recognised")
    assert detected["error_type"] == "permission-denied" and detected["context"]["dir"] == "appendonlydir"
    recovered = h.wait_event(by(c.name, "recovered"), 120, "the canary to be recovered")
    heal_report("canary, start-up", recovered["ts"] - started)
    print(f"hook: detection to verified {recovered['seconds']}s, by {recovered['by']}")

    r = client(port)
    assert r.ping()
    assert r.set("after", "heal")
    assert r.info("persistence")["aof_enabled"] == 1
    assert (host_dir.stat().st_uid, host_dir.stat().st_gid) == (999, 999)
    assert (host_dir / "appendonlydir").is_dir()
    repair = [e for e in h.of("action", c.name) if e["action"] == "repair-ownership"]
    assert repair and repair[0]["detail"]["route"] == "local" and repair[0]["detail"]["owner_source"] in ("user",
                                                                                                          "process")
    status = h.status()
    assert any(s["name"] == c.name for s in status["containers"])
    assert 'ownvol_hook_incidents_total{type="permission-denied"} 1.0' in h.metrics()
    # restarted by the hook as soon as the repair was done (the server had said it exits), or, once it had
    # exited, only while the policy's own start was still ahead: started once after its last exit, never twice
    early = h.of("early-start", c.name)
    print(f"early starts: {early}; left: {h.of('early-start-left', c.name)}")
    if early:
        assert started_once_after_last_exit(c), c.name


def started_once_after_last_exit(c) -> bool:
    events = c.client.api.events(since=time.time() - 300, until=time.time(), decode=True,
                                 filters={"container": c.id, "type": "container", "event": ["die", "start"]})
    kinds = [e["status"] for e in events]
    return "die" in kinds and kinds[len(kinds) - 1 - kinds[::-1].index("die"):].count("start") == 1


def test_a_long_back_off_is_cut_once_its_cause_is_gone(hook, tracked, redis_image, host_dir, port, docker_client):
    """A canary that crash-looped before any hook watched it waits seconds for its restart policy: the hook repairs
    it and starts it at once (one restart of the engine's, the policy kept), instead of leaving it to the back-off."""
    h = hook()
    h.stop()
    began = time.time()
    c = run_redis(tracked, redis_image, port, host_dir, h.labels, restart=True)
    # 7 exits in a row: the policy's 7th wait is 6.4 s (moby restartmanager: 100 ms doubling)
    wait_for(lambda: c.reload() or (c.attrs["RestartCount"] >= 7 and c.status == "restarting"), 60,
             what="the canary's 7th exit under its restart policy")
    hook(like=h)
    held = h.wait_event(by(c.name, "early-start"), 30, "the held canary to be started")
    recovered = h.wait_event(by(c.name, "recovered"), 30, "the canary to be recovered")
    assert held["restart_policy"] == "on-failure" and held["how"] == "held" and recovered["ts"] >= held["ts"]
    assert client(port).ping() and client(port).info("persistence")["aof_enabled"] == 1
    events = [e for e in docker_client.api.events(since=began, until=time.time(), decode=True,
                                                  filters={"container": c.id, "type": "container"})]
    kinds = [(e["status"], e["timeNano"] / 1e9) for e in events if e["status"] in ("die", "start", "restart")]
    last_die = max(t for k, t in kinds if k == "die")
    after = [k for k, t in kinds if t > last_die]
    assert after == ["start", "restart"], kinds  # the hook's restart alone started it, once
    assert after and min(t for k, t in kinds if t > last_die) < last_die + 6.4, kinds  # before the back-off's end
    c.reload()
    assert c.attrs["HostConfig"]["RestartPolicy"]["Name"] == "on-failure" and c.attrs["RestartCount"] == 0


def test_runtime_chown_bgsave_misconf_healed_and_every_acknowledged_key_survives(hook, tracked, redis_image,
                                                                                  host_dir, port):
    """(b) the data dir goes to root while Redis runs: BGSAVE fails, writes refused; healed; keys kept."""
    os.chown(host_dir, 999, 999)
    h = hook(strategies=fast_strategies(host_dir.parent / "s.yaml"))
    c = run_redis(tracked, redis_image, port, host_dir, h.labels)
    h.wait_event(lambda e: by(c.name, "health")(e) and e["state"] == "healthy", 60, "Redis healthy")
    r = client(port)
    acked = {}
    for i in range(200):
        assert r.set(f"k{i}", i)
        acked[f"k{i}"] = str(i)

    h.pause()  # the fault is made while the hook cannot see it, so the test sees it for itself
    try:
        os.chown(host_dir, 0, 0)
        mark = h.mark()
        assert r.bgsave()
        wait_for(lambda: r.info("persistence")["rdb_last_bgsave_status"] == "err", 30, what="the BGSAVE to fail")
        with pytest.raises(redis.exceptions.ResponseError, match="MISCONF"):
            r.set("refused", "1")
        fault_at = time.time()
    finally:
        h.resume()
    recovered = h.wait_event(by(c.name, "recovered"), 120, "the run-time fault to be healed", after=mark)
    heal_report("run time, BGSAVE refused", recovered["ts"] - fault_at)
    detected = h.of("detected", c.name)
    assert {"rdb-temp-open", "bgsave-error"} <= {e["pattern"] for e in detected}
    assert [e["action"] for e in h.of("action", c.name) if e["result"] != "skipped"][:2] == \
        ["repair-ownership", "persist-again"]

    for i in range(200, 300):
        assert r.set(f"k{i}", i)
        acked[f"k{i}"] = str(i)
    c.restart(timeout=10)
    r = client(port)
    wait_for(r.ping, 60, what="Redis back after the restart")
    assert r.mget(list(acked)) == list(acked.values())
    assert r.get("refused") is None


def test_several_canaries_failing_at_once_are_all_healed(hook, tracked, redis_image, tmp_path):
    """Five canaries created, then started together: each one's own failure opens its own incident, each is
    repaired and verified, each answers with AOF on from its repaired data dir, and none is left with an
    open incident (one worker per incident, engine events handled per container)."""
    h = hook()
    canaries = []
    for i in range(5):
        data = tmp_path / f"data{i}"
        data.mkdir()
        os.chown(data, 0, 0)
        port = free_port()
        spec = redis_spec(port, data, h.labels, restart=True)
        tracked.container(spec["name"])
        canaries.append((tracked.client.containers.create(redis_image, **spec), port, data))
    go = threading.Barrier(len(canaries))

    def start(c) -> None:
        go.wait()
        c.start()

    starters = [threading.Thread(target=start, args=(c,)) for c, _, _ in canaries]
    for t in starters:
        t.start()
    for t in starters:
        t.join()
    for c, port, data in canaries:
        recovered = h.wait_event(by(c.name, "recovered"), 180, f"{c.name} to be recovered")
        assert recovered["by"] == "repair-ownership", recovered
        repair = next(e for e in h.of("action", c.name) if e["incident"] == recovered["incident"])
        assert repair["action"] == "repair-ownership" and repair["result"] == "ok" and repair["verified"] is True
        r = client(port)
        assert wait_for(lambda r=r: r.ping(), 30)
        assert r.set("after", "burst")
        assert r.info("persistence")["aof_enabled"] == 1
        assert (data.stat().st_uid, data.stat().st_gid) == (999, 999)
        assert (data / "appendonlydir").is_dir()
    incidents = {e["incident"] for e in h.of("incident")}
    closed = {e["incident"] for kind in ("recovered", "gave-up") for e in h.of(kind)}
    assert incidents <= closed and not h.of("gave-up")
    assert len({e["container"] for e in h.of("recovered")}) == len(canaries)


def test_unfixable_read_only_mount_gives_up_after_bounded_attempts(hook, tracked, redis_image, host_dir, port):
    """(c) a read-only mount: the hook tries its bounded plan, says gave-up, then leaves it alone."""
    strategies = fast_strategies(host_dir.parent / "s.yaml")
    h = hook(strategies=strategies)
    c = run_redis(tracked, redis_image, port, host_dir, h.labels, read_only=True)
    incident = h.wait_event(by(c.name, "incident"), 60, "an incident")
    assert incident["type"] == "read-only-filesystem", (incident, [e for e in h.events if e.get("container") == c.name])
    assert incident["detail"]["context"]["errno"] == "Read-only file system"
    h.wait_event(by(c.name, "gave-up"), 180, "gave-up")
    actions = [e for e in h.of("action", c.name) if e["incident"] == incident["incident"]]
    print(f"gave up after {len(actions)} actions: {[(a['action'], a['result']) for a in actions]}")
    assert 1 <= len(actions) <= 4  # read-only-filesystem: 2 actions x 2 attempts
    assert not h.of("recovered", c.name)

    mark = h.mark()
    c.start()  # it crashes again: seen, but no new recovery loop
    h.wait_event(by(c.name, "suppressed"), 60, "the repeat to be suppressed", after=mark)
    assert not [e for e in h.events[mark:] if e["event"] in ("incident", "action")]
    history = h.cli("history", "--db", str(h.db), "--json")
    assert history.returncode == 0, history.stderr
    assert '"gave-up"' in history.stdout


def _immutable(path, on: bool) -> None:
    subprocess.run(["chattr", "+i" if on else "-i", str(path)], check=True)


def test_aof_fallback_only_when_opted_in_and_back_on_after_repair(hook, tracked, redis_image, tmp_path, port,
                                                                  unique_name):
    """(d) AOF writes fail and repair cannot help (immutable files): only the opted-in Redis gets AOF off;
    when the cause is gone, a later repair turns AOF back on, and says so."""
    from tests.support.common import free_port

    strategies = fast_strategies(tmp_path / "s.yaml", aof_fallback={"retry": 1, "max_retry": 2})
    h = hook(strategies=strategies)
    dirs, containers, ports = {}, {}, {"in": port, "out": free_port()}
    for who in ("in", "out"):
        d = dirs[who] = tmp_path / who
        d.mkdir()
        os.chown(d, 999, 999)
        labels = {**h.labels, **({"ownvol.aof-fallback": "true"} if who == "in" else {})}
        containers[who] = run_redis(tracked, redis_image, ports[who], d, labels)
    for who in ("in", "out"):
        healthy = by(containers[who].name, "health")
        h.wait_event(lambda e, healthy=healthy: healthy(e) and e["state"] == "healthy", 60, "healthy")
    frozen = []
    try:
        for who in ("in", "out"):
            aof = dirs[who] / "appendonlydir"
            for p in [*aof.glob("*.incr.aof"), aof]:
                _immutable(p, True)
                frozen.append(p)
            r = client(ports[who])
            r.set("before", "1")  # may be acknowledged before the write to the AOF fails
            wait_for(lambda r=r: r.info("persistence")["aof_last_write_status"] == "err", 30, what="AOF write error")
        fault_at = time.time()
        for who in ("in", "out"):
            with pytest.raises(redis.exceptions.ResponseError, match="MISCONF"):
                client(ports[who]).set("refused", "1")

        name_in, name_out = containers["in"].name, containers["out"].name
        recovered = h.wait_event(by(name_in, "recovered"), 180, "the opted-in Redis to recover")
        heal_report("AOF write error, fallback (AOF off)", recovered["ts"] - fault_at)
        assert recovered["by"] == "aof-off"
        assert h.of("aof-disabled", name_in)
        assert client(ports["in"]).info("persistence")["aof_enabled"] == 0
        assert client(ports["in"]).set("during-fallback", "1")

        h.wait_event(by(name_out, "gave-up"), 180, "the Redis that did not opt in to give up")
        out_actions = h.of("action", name_out)
        assert all(a["result"] == "skipped" for a in out_actions if a["action"] == "aof-off")
        assert any(a["detail"].get("why", "").startswith("not opted in") for a in out_actions)
        assert client(ports["out"]).info("persistence")["aof_enabled"] == 1
    finally:
        for p in frozen:
            _immutable(p, False)
    cleared_at = time.time()
    restored = h.wait_event(by(name_in, "aof-restored"), 60, "AOF back on")
    heal_report("AOF back on after the cause is gone", restored["ts"] - cleared_at)
    r = client(ports["in"])
    assert r.info("persistence")["aof_enabled"] == 1
    containers["in"].restart(timeout=10)
    wait_for(r.ping, 60, what="Redis back after the restart")
    assert r.get("during-fallback") == "1", "a key written while AOF was off survives the restart with AOF on"


def test_hook_killed_mid_incident_resumes_without_repeating_an_action(hook, tracked, redis_image, host_dir, port):
    """(e) killed between two actions of an incident: the next hook resumes it and repeats nothing."""
    strategies = fast_strategies(host_dir.parent / "s.yaml", types={
        "permission-denied": {"actions": ["restart", "repair-ownership", "restart"], "attempts": 1,
                              "delay": 6, "backoff": 1, "max_delay": 6},
        "persistence-failed": {"actions": ["persist-again"]}})
    h = hook(strategies=strategies)
    started = time.time()
    # no restart policy: only the hook starts it (opted in with ownvol.start=true)
    c = run_redis(tracked, redis_image, port, host_dir, {**h.labels, "ownvol.start": "true"})
    first = h.wait_event(lambda e: by(c.name, "action")(e) and e["step"] == 0, 60, "the first action")
    # Redis's exit may still be under way when the hook reaches step 0 (a busy machine): the restart of a container
    # still running on a data dir its server cannot write is skipped, the cause being there (actions.restart's
    # guards). Either way step 0 is done and must not be repeated.
    assert first["action"] == "restart", first
    assert (first["result"], first.get("verified")) == ("ok", False) or (
        first["result"] == "skipped" and "not restarted" in first["detail"]["why"]), first
    h.kill()  # in the 6 s delay before step 1

    h2 = hook(like=h)
    resumed = h2.wait_event(by(c.name, "resumed"), 30, "the incident to resume")
    assert resumed["incident"] == first["incident"]
    assert resumed["done"] == [f"0:restart:{first['result']}"]
    recovered = h2.wait_event(by(c.name, "recovered"), 120, "the resumed incident to recover")
    heal_report("start-up, across a hook kill", recovered["ts"] - started)
    steps = [(e["step"], e["action"]) for e in h2.of("action", c.name) if e["incident"] == first["incident"]]
    assert steps and steps[0][0] == 1 and all(s > 0 for s, _ in steps), steps
    history = h2.cli("history", "--db", str(h2.db), "--json")
    import json
    incident = next(i for i in json.loads(history.stdout)["incidents"] if i["id"] == first["incident"])
    assert [a["step"] for a in incident["actions"]] == sorted({a["step"] for a in incident["actions"]})
    assert incident["status"] == "resolved"
    assert client(port).ping()


@pytest.mark.parametrize("source", ["bind", "volume"])
def test_repair_through_a_helper_container(hook, tracked, redis_image, host_dir, port, ownvol_image, docker_client,
                                           unique_name, source):
    """The path for a hook that cannot reach the host path: a root, no-network helper of OWNVOL_IMAGE
    mounting the same source (a bind mount, or a local volume, which Docker creates root-owned here)."""
    h = hook(extra=("--repair-via", "helper", "--helper-image", ownvol_image))
    if source == "bind":
        c = run_redis(tracked, redis_image, port, host_dir, h.labels, restart=True)
    else:
        volume = tracked.volume(unique_name("ovtvol"))
        docker_client.volumes.create(volume, labels=tracked.labels)
        c = tracked.run(redis_image, redis_cmd(port, data_dir="/bound"), user="999:999", network_mode="host",
                        volumes={volume: {"bind": "/bound", "mode": "rw"}}, labels=h.labels,
                        restart_policy={"Name": "on-failure"})
    # from its first start, as the hook heard of it (creating a container on a volume can be slow here)
    started = h.wait_event(by(c.name, "watching"), 120, "the hook to see the container")["ts"]
    recovered = h.wait_event(by(c.name, "recovered"), 120, "the canary to be recovered through the helper")
    heal_report(f"canary on a {source}, through the helper container", recovered["ts"] - started)
    repair = next(e for e in h.of("action", c.name) if e["action"] == "repair-ownership")
    assert repair["result"] == "ok" and repair["detail"]["route"] == "helper", repair
    assert repair["detail"]["helper_image"] == ownvol_image and repair["detail"]["changed"] >= 1
    data = host_dir if source == "bind" else docker_client.volumes.get(volume).attrs["Mountpoint"]
    st = os.stat(data)
    assert (st.st_uid, st.st_gid) == (999, 999)
    assert not docker_client.containers.list(all=True, filters={"label": f"ownvol.repair.for={c.name}"})
    assert client(port).ping()


def test_hook_reconnects_after_an_engine_restart(hook, private_engine, redis_image, host_dir, port):
    """The hook outlives its engine: a private dockerd restarted under it, then the canary still healed."""
    engine = private_engine
    engine.start()
    engine.load_image(redis_image)
    h = hook(env={"DOCKER_HOST": engine.host})
    mark = h.mark()
    engine.restart()
    h.wait_event(lambda e: e["event"] == "engine-connected" and e["reconnect"], 120, "the hook to reconnect",
                 after=mark)
    started = time.time()
    c = engine.client().containers.run(
        redis_image, ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", "/bound",
                      "--appendonly", "yes"], detach=True, user="999:999", network_mode="host",
        volumes={str(host_dir): {"bind": "/bound", "mode": "rw"}}, labels=h.labels,
        restart_policy={"Name": "on-failure"})
    recovered = h.wait_event(by(c.name, "recovered"), 120, "the canary on the restarted engine to be healed")
    heal_report("canary, after an engine restart", recovered["ts"] - started)
    assert client(port).ping()
