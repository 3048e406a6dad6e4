"""Every catalogue pattern against a line the real Redis of the test image wrote (Redis 7.0.15).

Each scenario provokes one failure on a real container; the lines are captured from its log
(or, for MISCONF, from the reply), never typed here.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import docker
import pytest
import redis

from ownvol.hook import patterns
from tests.support.common import SESSION, SESSION_LABEL, free_port, new_name
from tests.support.engine import redis_cmd, wait_for

pytestmark = pytest.mark.engine


class Lab:
    """Runs uid-999 Redis containers (hooks keep away: ownvol.watch=false) on dirs under base; cleans up."""

    def __init__(self, client: docker.DockerClient, image: str, base: Path) -> None:
        self.client, self.image, self.base = client, image, base
        self.containers: list = []
        self.mounts: list[Path] = []
        self.frozen: list[Path] = []

    def dir(self, name: str, owner: tuple[int, int] = (999, 999)) -> Path:
        d = self.base / name
        d.mkdir()
        import os
        os.chown(d, *owner)
        return d

    def run(self, data: Path, *extra: str, aof: bool = True, mode: str = "rw"):
        port = free_port()
        c = self.client.containers.run(
            self.image, redis_cmd(port, *extra, appendonly=aof, data_dir="/bound"), detach=True, name=new_name("pat"),
            user="999:999", network_mode="host", volumes={str(data): {"bind": "/bound", "mode": mode}},
            labels={SESSION_LABEL: SESSION, "ownvol.watch": "false"})
        self.containers.append(c)
        c.port = port
        return c

    def redis(self, c) -> redis.Redis:
        r = redis.Redis(host="127.0.0.1", port=c.port, socket_timeout=5, decode_responses=True)
        wait_for(r.ping, 30, what=f"{c.name} to answer")
        return r

    def exited(self, c):
        wait_for(lambda: self.client.containers.get(c.id).status == "exited", 30, what=f"{c.name} to exit")
        return c

    def stop(self, c) -> None:
        c.remove(force=True)

    def freeze(self, *paths: Path) -> None:
        for p in paths:
            subprocess.run(["chattr", "+i", str(p)], check=True)
            self.frozen.append(p)

    def tmpfs(self, name: str, size: str) -> Path:
        d = self.dir(name)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},uid=999,gid=999,mode=755", "ovt-pat", str(d)],
                       check=True)
        self.mounts.append(d)
        return d

    def cleanup(self) -> None:
        for c in self.containers:
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                pass
        for p in self.frozen:
            subprocess.run(["chattr", "-i", str(p)])
        for d in self.mounts:
            subprocess.run(["umount", str(d)])


def lines_of(c, wait_for_text: str | None = None) -> list[str]:
    if wait_for_text:
        wait_for(lambda: wait_for_text in c.logs().decode(), 30, what=f"'{wait_for_text}' in {c.name}'s log")
    return c.logs().decode().splitlines()


def scenario_startup(lab: Lab) -> dict[str, list[str]]:
    out = {}
    # a root-owned data dir, AOF on: the seed's crash
    out["aof-dir"] = lines_of(lab.exited(lab.run(lab.dir("root", (0, 0)))))
    out["aof-dir-ro"] = lines_of(lab.exited(lab.run(lab.dir("ro", (0, 0)), mode="ro")))
    # an existing AOF whose files were chowned to root one way or another
    for case, glob in (("incr", "*.incr.aof"), ("manifest", "*.manifest"), ("base", "*.base.rdb")):
        d = lab.dir(case)
        c = lab.run(d)
        lab.redis(c)
        lab.stop(c)
        for f in (d / "appendonlydir").glob(glob):
            import os
            os.chown(f, 0, 0)
            f.chmod(0o600 if case != "incr" else 0o644)
        out[case] = lines_of(lab.exited(lab.run(d)))
    d = lab.dir("rdb")
    c = lab.run(d, aof=False)
    lab.redis(c).save()
    lab.stop(c)
    import os
    os.chown(d / "dump.rdb", 0, 0)
    (d / "dump.rdb").chmod(0o600)
    out["rdb"] = lines_of(lab.exited(lab.run(d, aof=False)))
    return out


def scenario_runtime(lab: Lab) -> dict[str, list[str]]:
    import os
    out = {}
    # the data dir chowned to root under a running Redis; writes make automatic AOF rewrites fail
    d = lab.dir("chown")
    c = lab.run(d, "--auto-aof-rewrite-percentage", "1", "--auto-aof-rewrite-min-size", "1")
    r = lab.redis(c)
    os.chown(d, 0, 0)
    for i in range(100):
        r.set(f"k{i}", i)
        if "repeatedly failed" in c.logs().decode():
            break
        time.sleep(0.05)
    lines_of(c, "Background AOF rewrite has repeatedly failed")
    r.bgsave()
    wait_for(lambda: r.info("persistence")["rdb_last_bgsave_status"] == "err", 30, what="BGSAVE to fail")
    with pytest.raises(redis.exceptions.ResponseError) as refused:
        r.set("x", "1")
    out["chown"] = lines_of(c) + [str(refused.value)]
    # the manifest's temp name taken by a directory
    d = lab.dir("manifest-temp")
    c = lab.run(d)
    r = lab.redis(c)
    (d / "appendonlydir" / "temp-appendonly.aof.manifest").mkdir()
    with pytest.raises(redis.exceptions.ResponseError):
        r.bgrewriteaof()
    out["manifest-temp"] = lines_of(c, "Can't open the AOF manifest file")
    # no process left to fork: a pids limit at the current thread count
    d = lab.dir("fork")
    c = lab.run(d)
    r = lab.redis(c)
    c.reload()
    tasks = len(os.listdir(f"/proc/{c.attrs['State']['Pid']}/task"))
    subprocess.run(["docker", "update", "--pids-limit", str(tasks), c.id], check=True, capture_output=True)
    for command in (r.bgsave, r.bgrewriteaof):
        with pytest.raises(redis.exceptions.ResponseError):
            command()
    out["fork"] = lines_of(c, "Can't rewrite append only file in background: fork")
    # the AOF and its directory made immutable: writes to the open AOF fail
    d = lab.dir("immutable")
    c = lab.run(d)
    r = lab.redis(c)
    lab.freeze(*(d / "appendonlydir").glob("*.incr.aof"), d / "appendonlydir")
    r.set("a", "1")
    wait_for(lambda: r.info("persistence")["aof_last_write_status"] == "err", 30, what="an AOF write error")
    with pytest.raises(redis.exceptions.ResponseError) as refused:
        r.set("b", "1")
    out["immutable"] = lines_of(c, "Error writing to the AOF file") + [str(refused.value)]
    # a full disk: a short AOF write, then a snapshot that cannot be written
    d = lab.tmpfs("full", "1m")
    c = lab.run(d)
    r = lab.redis(c)
    subprocess.run(["dd", "if=/dev/zero", f"of={d}/filler", "bs=64k", "count=12"], check=True, capture_output=True)
    r.set("big", "x" * 400_000)
    wait_for(lambda: r.info("persistence")["aof_last_write_status"] == "err", 30, what="a short AOF write")
    subprocess.run(["dd", "if=/dev/zero", f"of={d}/filler2", "bs=4k"], capture_output=True)
    r.bgsave()
    out["full"] = lines_of(c, "Write error saving DB on disk")
    return out


@pytest.fixture(scope="module")
def captured(docker_client, redis_image, tmp_path_factory) -> dict[str, list[str]]:
    lab = Lab(docker_client, redis_image, tmp_path_factory.mktemp("patterns"))
    try:
        return {**scenario_startup(lab), **scenario_runtime(lab)}
    finally:
        lab.cleanup()


# pattern id -> (scenario, expected error type, expected context)
EXPECTED = {
    "aof-dir-open": ("aof-dir", "permission-denied", {"dir": "appendonlydir", "errno": "Permission denied"}),
    "aof-file-open": ("incr", "permission-denied", {"file": "appendonly.aof.1.incr.aof"}),
    "aof-file-read": ("base", "permission-denied", {"file": "appendonly.aof.1.base.rdb"}),
    "aof-manifest-read": ("manifest", "permission-denied", {"file": "appendonlydir/appendonly.aof.manifest"}),
    "aof-manifest-write": ("manifest-temp", "io-error", {"file": "temp-appendonly.aof.manifest",
                                                         "errno": "Is a directory"}),
    "aof-rewrite-temp": ("chown", "permission-denied", {"errno": "Permission denied"}),
    "rdb-load": ("rdb", "permission-denied", {"errno": "Permission denied"}),
    "aof-write": ("immutable", "permission-denied", {"errno": "Operation not permitted"}),
    "aof-short-write": ("full", "no-space", {}),
    "rdb-temp-open": ("chown", "permission-denied", {"dir": "/bound", "errno": "Permission denied"}),
    "rdb-write": ("full", "no-space", {"errno": "No space left on device"}),
    "bgsave-error": ("chown", "persistence-failed", {}),
    "aof-rewrite-error": ("chown", "persistence-failed", {}),
    "bgsave-fork": ("fork", "fork-failed", {"errno": "Resource temporarily unavailable"}),
    "aof-rewrite-fork": ("fork", "fork-failed", {"errno": "Resource temporarily unavailable"}),
    "aof-rewrite-limited": ("chown", "persistence-failed", {"minutes": "1"}),
    "misconf": ("chown", "persistence-failed", {}),
}


def test_every_pattern_captured_here_is_in_the_catalogue():
    """The rest of the catalogue (other versions' wordings, fsync and rename failures) is checked against the
    golden logs of every version (tests/unit/test_patterns_golden.py)."""
    assert set(EXPECTED) <= set(patterns.BY_ID)


@pytest.mark.parametrize("pattern_id", sorted(EXPECTED))
def test_pattern_matches_a_line_captured_from_real_redis(captured, pattern_id):
    scenario, error_type, context = EXPECTED[pattern_id]
    hits = [d for d in map(patterns.match, captured[scenario]) if d and d.pattern.id == pattern_id]
    assert hits, f"no line of scenario {scenario} matched {pattern_id}:\n" + "\n".join(captured[scenario][-15:])
    d = hits[0]
    print(f"{pattern_id}: {d.message}")
    assert d.error_type == error_type
    for key, value in context.items():
        assert d.context.get(key) == value, (key, d.context)


def test_read_only_mount_is_its_own_error_type(captured):
    d = next(d for d in map(patterns.match, captured["aof-dir-ro"]) if d)
    assert (d.pattern.id, d.error_type) == ("aof-dir-open", "read-only-filesystem")


def test_misconf_of_an_aof_write_error_carries_its_errno(captured):
    d = patterns.match(captured["immutable"][-1])
    assert (d.pattern.id, d.context.get("errno"), d.error_type) == ("misconf", "Operation not permitted",
                                                                    "permission-denied")


def test_the_startup_failures_were_fatal(captured):
    """What the catalogue calls fatal at start-up did stop Redis (the captures come from exited containers)."""
    for scenario in ("aof-dir", "incr", "manifest", "base", "rdb"):
        fatal = [d for d in map(patterns.match, captured[scenario]) if d]
        assert fatal and all(d.pattern.fatal and d.pattern.phase == "startup" for d in fatal), scenario
