"""The hook and `ownvol doctor` as users run Redis: settings and layouts beyond the canary, each a kind of
failure found by running them (the list in docs/development.md "What the tests prove", The hook).

Each test runs real containers of the offline images on the shared engine, host networking on 127.0.0.1, a hook
on its own selector; seconds each.
"""

from __future__ import annotations

import json
import os
import subprocess

import docker
import pytest

from tests.engine.test_hook_servers import by, client, server_args
from tests.support.common import ROOT, free_port, new_name
from tests.support.engine import wait_for
from tests.support.fixtures_hook import fast_strategies

pytestmark = pytest.mark.engine

OWNVOL = str(ROOT / ".venv" / "bin" / "ownvol")


def doctor(name: str) -> dict:
    out = subprocess.run([OWNVOL, "doctor", "--json", name], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def root_dir(tmp_path, name: str = "data"):
    d = tmp_path / name
    d.mkdir()
    os.chown(d, 0, 0)
    d.chmod(0o755)
    return d


def test_a_redis_that_keeps_nothing_on_disk_is_left_alone(hook, tracked, tmp_path, port, redis_image):
    """`--save "" --appendonly no` on a root-owned bind: Redis runs and writes nothing there, so it is healthy and
    never `latent` (it was, and the hook chowned the user's directory of a healthy server); the owner is
    untouched; doctor names the fact and its source (CONFIG GET) and finds nothing to do."""
    data = root_dir(tmp_path)
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    c = tracked.run(redis_image, [*server_args("redis-server", port, "/data", aof=False), "--save", ""],
                    user="999:999", network_mode="host", labels=h.labels,
                    volumes={str(data): {"bind": "/data", "mode": "rw"}})
    h.wait_event(lambda e: by(c.name, "health")(e) and e["state"] == "healthy", 60, "a healthy probe")
    assert [e for e in h.of("health", c.name) if e["state"] == "latent"] == []
    assert client(port).set("k", "v")
    report = doctor(c.name)
    assert report["error_type"] is None and report["container"]["persists"] is False
    assert any(n.startswith('nothing to persist (CONFIG GET: save ""') for n in report["container"]["notes"])
    assert h.of("incident", c.name) == [] and h.of("action", c.name) == []
    assert (data.stat().st_uid, data.stat().st_gid) == (0, 0)


def test_a_container_user_the_image_lacks_is_no_owner(tracked, tmp_path, port, redis_image):
    """Compose `user: nosuchuser` on an image without it: the engine refuses to start it. The owner is unknown
    (it was the image's USER, 999, and doctor diagnosed permission-denied), doctor shows the engine's words."""
    data = root_dir(tmp_path)
    name = new_name()
    with pytest.raises(docker.errors.APIError, match="nosuchuser"):
        tracked.run(redis_image, server_args("redis-server", port, "/data"), user="nosuchuser", network_mode="host",
                    name=name, volumes={str(data): {"bind": "/data", "mode": "rw"}})
    report = doctor(name)
    target = report["container"]
    assert target["owner"] is None and "'nosuchuser' is not in the image's /etc/passwd" in target["owner_source"]
    assert "unable to find user nosuchuser" in report["engine_error"] and report["error_type"] is None
    assert data.stat().st_uid == 0


def test_a_conf_with_optional_ipv6_include_and_password_is_healed_and_doctor_reads_this_run(
        hook, tracked, tmp_path, port, redis_image):
    """A read-only redis.conf (Redis 7 directives) as Redis ships it, `bind 127.0.0.1 -::1` (::1 optional: absent
    where IPv6 is off), with dir, port, appendonly, appenddirname and an included file holding requirepass:
    healed, reached on 127.0.0.1 (it was [::1]). Once healthy, doctor reads the current run's log only: nothing
    to do, nothing seen (it listed the crashes of earlier runs and diagnosed permission-denied on a healthy
    server)."""
    conf = tmp_path / "conf"
    (conf / "conf.d").mkdir(parents=True)
    (conf / "redis.conf").write_text(f"bind 127.0.0.1 -::1\nport {port}\ndir /srv/redis\nappendonly yes\n"
                                     "appenddirname aof\ninclude /etc/redis/conf.d/*.conf\n")
    (conf / "conf.d" / "auth.conf").write_text('requirepass "s3cret pass"\n')
    data = root_dir(tmp_path)
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    c = tracked.run(redis_image, ["redis-server", "/etc/redis/redis.conf"], user="999:999", network_mode="host",
                    labels=h.labels, restart_policy={"Name": "on-failure"},
                    volumes={str(conf): {"bind": "/etc/redis", "mode": "ro"},
                             str(data): {"bind": "/srv/redis", "mode": "rw"}})
    h.wait_event(by(c.name, "recovered"), 120, "the conf-configured Redis to be healed")
    assert {"aof"} == {e["context"].get("dir") for e in h.of("detected", c.name)}
    h.wait_event(lambda e: by(c.name, "health")(e) and e["state"] == "healthy", 60, "healthy after the heal")
    assert client(port, "s3cret pass").set("k", "v") and data.stat().st_uid == 999
    report = doctor(c.name)
    assert report["container"]["redis_url"] == f"redis://127.0.0.1:{port}/0"
    assert report["container"]["origins"]["password"].startswith("/etc/redis/conf.d/auth.conf:")
    c.reload()
    assert "Permission denied" in c.logs().decode(errors="replace"), "the log holds an earlier run's crash"
    assert report["health"]["state"] == "healthy" and report["error_type"] is None and report["detections"] == []


def test_a_tmpfs_data_dir_is_not_repaired_nor_restarted_and_doctor_says_how(hook, tracked, tmp_path, port,
                                                                             redis_image):
    """`tmpfs: /data` owned by root for a uid-999 Redis crash-looping under `restart: on-failure`: no repair can
    outlive the tmpfs the engine makes at each start, nor can a restart (the hook restarted it twice): the plan
    ends gave-up, no repair nor restart done, each skip saying why; doctor names the option that gives the tmpfs
    its owner, and that option, run as said, makes Redis persist."""
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    c = tracked.run(redis_image, server_args("redis-server", port, "/data"), user="999:999", network_mode="host",
                    labels=h.labels, restart_policy={"Name": "on-failure", "MaximumRetryCount": 3},
                    tmpfs={"/data": "mode=0755,uid=0"})
    gave_up = h.wait_event(by(c.name, "gave-up"), 120, "the hook to give up on the tmpfs")
    done = [tuple(a.split(":")) for a in gave_up["actions"]]
    assert all(result == "skipped" for action, result in done if action in ("repair-ownership", "restart")), done
    assert "ok" not in {result for _, result in done}, done
    restarts = [e for e in h.of("action", c.name) if e["action"] == "restart"]
    assert restarts and all("the container's own tmpfs /data" in e["detail"]["why"] for e in restarts)
    wait_for(lambda: (c.reload() or True) and c.status == "exited", 60, what="Redis to stop retrying")
    report = doctor(c.name)
    hint = "`--tmpfs /data:uid=999,gid=999,mode=0755`"
    assert any(hint in n for n in report["container"]["notes"]), report["container"]["notes"]
    assert report["detections"] and report["detections"][-1]["error_type"] == "permission-denied"
    fixed = tracked.run(redis_image, server_args("redis-server", port, "/data"), user="999:999",
                        network_mode="host", tmpfs={"/data": "uid=999,gid=999,mode=0755"})
    r = client(port)
    wait_for(lambda: fixed.reload() or r.ping(), 30, what="Redis on the tmpfs given its owner")
    assert r.set("k", "v") and r.info("persistence")["aof_last_write_status"] == "ok"


def test_a_unix_socket_only_redis_is_repaired_and_never_restarted_on_a_guess(hook, tracked, tmp_path, redis_image):
    """`--port 0 --unixsocket /data/redis.sock` on a root-owned bind: the crash is repaired on the owner evidence,
    after which the server runs but the hook cannot ask it (no address): its `restart` actions are skipped, saying
    so (it restarted the healthy server twice), and the container is never restarted by the hook."""
    data = root_dir(tmp_path)
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    c = tracked.run(redis_image, ["redis-server", "--port", "0", "--unixsocket", "/data/redis.sock", "--dir", "/data",
                                  "--appendonly", "yes"], user="999:999", network_mode="none", labels=h.labels,
                    restart_policy={"Name": "on-failure"}, volumes={str(data): {"bind": "/data", "mode": "rw"}})
    ended = h.wait_event(lambda e: e.get("container") == c.name and e["event"] in ("gave-up", "recovered"), 120,
                         "the incident to end")
    assert data.stat().st_uid == 999
    restarts = [e for e in h.of("action", c.name) if e["action"] == "restart"]
    assert restarts and all(e["result"] == "skipped" and "never restarted on a guess" in e["detail"]["why"]
                            for e in restarts), restarts
    assert ended["event"] == "gave-up"
    c.reload()
    assert c.status == "running"
    out = c.exec_run(["redis-cli", "-s", "/data/redis.sock", "set", "k", "v"], user="999:999")
    assert out.output.strip() == b"OK"


def test_a_redis_whose_password_the_hook_lacks_is_not_diagnosed(hook, tracked, tmp_path, port, redis_image):
    """A password read from a secret file by the command (`sh -c ... "$(cat /run/secrets/pw)"`): the server answers
    and refuses the hook; its health is unknown, said so, and doctor finds nothing the hook acts on (it diagnosed
    persistence-failed and listed the plan)."""
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 999, 999)
    secret = tmp_path / "pw"
    secret.write_text("hunter2")
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    cmd = " ".join([*server_args("redis-server", port, "/data"), '--requirepass "$(cat /run/secrets/pw)"'])
    c = tracked.run(redis_image, ["sh", "-c", f"exec {cmd}"], user="999:999", network_mode="host", labels=h.labels,
                    volumes={str(data): {"bind": "/data", "mode": "rw"}, str(secret): {"bind": "/run/secrets/pw",
                                                                                        "mode": "ro"}})
    r = client(port, "hunter2")
    wait_for(r.ping, 30, what="Redis to answer with its password")

    def reasons() -> list[str]:
        return next((w["reasons"] for w in h.status()["containers"] if w["name"] == c.name), [])

    said = wait_for(lambda: [x for x in reasons() if x.startswith("answers but refuses the hook")], 30,
                    what="the hook's probe to be refused")
    assert said and r.set("k", "v")
    assert h.of("incident", c.name) == []
    report = doctor(c.name)
    assert report["health"]["state"] == "unreachable" and report["error_type"] is None


def test_a_chown_under_a_redis_wakes_its_probe_which_changes_only_the_one_that_cannot_write(hook, tracked, tmp_path,
                                                                                           redis_image):
    """The drift watch only wakes probes, and the probe decides as ever: under `--interval 60`, the data dirs of three
    running Redis are given to root at run time: one that persists nothing (`chown -R`) and one whose dir stays
    writable (0777, its entries left to it) are left alone, healthy; the one that can no longer write there (the
    positive control, chowned last and probed after the other two: the probe loop probes in the order it started
    watching) is healed."""

    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"), extra=("--interval", "60"))
    kinds = {"nothing": ["--save", ""], "writable": ["--appendonly", "yes"], "healed": ["--appendonly", "yes"]}
    made = {}
    for kind, args in kinds.items():
        data = tmp_path / kind
        data.mkdir()
        os.chown(data, 999, 999)
        data.chmod(0o777 if kind == "writable" else 0o755)
        port = free_port()
        c = tracked.run(redis_image, [*server_args("redis-server", port, "/data", aof=False), *args], user="999:999",
                        network_mode="host", labels=h.labels, volumes={str(data): {"bind": "/data", "mode": "rw"}})
        wait_for(lambda port=port: client(port).ping(), 60, what=f"{kind} Redis to answer")
        made[kind] = (c, data, port)
        h.wait_event(lambda e, c=c: by(c.name, "health")(e) and e["state"] == "healthy", 60, f"{kind} Redis healthy")

    def watched() -> bool:
        out = subprocess.run([OWNVOL, "status", "--addr", f"127.0.0.1:{h.port}", "--json"], capture_output=True,
                             text=True, timeout=60)
        shown = {x["name"]: x.get("drift", "") for x in json.loads(out.stdout or "{}").get("containers", [])}
        return all(shown.get(c.name) == f"on: {data}" for c, data, _ in made.values())

    wait_for(watched, 60, what="the hook to watch the three data dirs")
    mark = h.mark()
    for kind, (_, data, port) in made.items():
        assert client(port).set("k", "v")
        subprocess.run(["chown", *([] if kind == "writable" else ["-R"]), "0:0", str(data)], check=True)
    healed = made["healed"][0]
    h.wait_event(by(healed.name, "recovered"), 120, "the Redis that cannot write to be healed", after=mark)
    for kind in ("nothing", "writable"):
        c, data, port = made[kind]
        assert [e for e in h.events[mark:] if by(c.name, "drift")(e)], f"{kind}: the probe was not woken"
        assert h.of("incident", c.name) == [] and h.of("action", c.name) == [], kind
        assert (data.stat().st_uid, data.stat().st_gid) == (0, 0), kind
        assert client(port).get("k") == "v"
    assert made["healed"][1].stat().st_uid == 999
