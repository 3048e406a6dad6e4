"""examples/compose.yaml and examples/host-folder/ with Compose v2, as shipped, on the driver tests' own engine.

What varies per test comes in through the examples' own variables: the driver (the test
plugin's unique name), the Redis image and port, the hook's metrics port and the engine socket.
The project name is unique, so is the hook's selector (it defaults to the project name).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.support.common import ROOT, free_port, new_name
from tests.support.driver import NO_HOOK, redis_answers
from tests.support.engine import compose_binary, redis_cmd, wait_for
from tests.support.fixtures_hook import heal_report
from tests.support.hook_container import hook_events, load_hook_image, this_tree_image

pytestmark = pytest.mark.engine
EXAMPLES = ROOT / "examples"
COMPOSE = compose_binary()


class Project:
    """One Compose project on the plugin engine: `project(*args)` runs docker compose with its files and env."""

    def __init__(self, engine, files: list[Path], env: dict[str, str], cwd: Path | None = None) -> None:
        self.engine = engine
        self.name = new_name("proj")
        self.files = files
        self.env = env
        self.cwd = cwd or EXAMPLES
        self.port = int(env["REDIS_PORT"])

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [COMPOSE, "-p", self.name, *(a for f in self.files for a in ("-f", str(f))), *args]
        result = subprocess.run(cmd, env=self.env, cwd=self.cwd, capture_output=True, text=True, timeout=300)
        if check and result.returncode != 0:
            raise AssertionError(f"docker compose {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    def container(self, service: str):
        found = self.engine.client().containers.list(all=True, filters={"label": [
            f"com.docker.compose.project={self.name}", f"com.docker.compose.service={service}"]})
        return found[0] if found else None

    def down(self) -> None:
        result = self("down", "-v", "--timeout", "5", check=False)
        if result.returncode != 0:
            print(f"cleanup: compose down of {self.name}: {result.stderr}")


@pytest.fixture(scope="module")
def hook_on_plugin_engine(plugin_engine, docker_client, ownvol_image) -> str:
    return load_hook_image(plugin_engine, this_tree_image(docker_client, ownvol_image))


@pytest.fixture
def project(plugin_engine, ownvol_plugin, redis_image, hook_on_plugin_engine):
    """project(*compose files, cwd=None, **env) -> a Project, taken down with its volumes after the test."""
    made: list[Project] = []

    def make(*files: Path, cwd: Path | None = None, **env: str) -> Project:
        base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
                "DOCKER_HOST": plugin_engine.host, "DOCKER_SOCKET": plugin_engine.sock,
                "OWNVOL_DRIVER": ownvol_plugin.name, "REDIS_IMAGE": redis_image,
                "REDIS_PORT": str(free_port()), "OWNVOL_METRICS_PORT": str(free_port())}
        p = Project(plugin_engine, list(files or [EXAMPLES / "compose.yaml"]), {**base, **env}, cwd)
        made.append(p)
        return p

    yield make
    for p in made:
        p.down()


def post_start_exits(client, container, since: float) -> list[tuple[str, str]]:
    """(command, exit code) of every exec into container since then, from the engine's own events."""
    events = client.events(since=int(since), until=int(time.time()) + 1, decode=True,
                           filters={"container": container.id, "event": ["exec_create", "exec_die"]})
    commands, exits = {}, []
    for e in events:
        attrs = e["Actor"]["Attributes"]
        if e["Action"].startswith("exec_create"):
            commands[attrs["execID"]] = e["Action"].split(": ", 1)[1]
        elif e["Action"] == "exec_die" and attrs["execID"] in commands:
            exits.append((commands[attrs["execID"]], attrs["exitCode"]))
    return exits


def test_up_gives_a_healthy_uid999_redis_with_aof_the_check_passes_and_down_v_removes_the_volume(
        project, ownvol_plugin, engine_client):
    p = project()
    since = time.time()
    p("up", "-d", "--wait")
    redis_c = p.container("redis")
    assert redis_c.attrs["State"]["Health"]["Status"] == "healthy"
    assert redis_c.exec_run(["id", "-u"]).output.decode().strip() == "999"
    r = redis_answers(p.port)
    assert r.set("k", "v") and r.info("persistence")["aof_enabled"] == 1

    volume = f"{p.name}_data"
    info = engine_client.api.inspect_volume(volume)
    assert info["Driver"] == ownvol_plugin.name
    assert (info["Status"]["uid"], info["Status"]["gid"], info["Status"]["profile"]) == (999, 999, "redis")
    aof = ownvol_plugin.data_dir(volume) / "appendonlydir"
    assert (aof.stat().st_uid, aof.stat().st_gid) == (999, 999)

    check = f"redis-check {p.port}"
    assert (check, "0") in post_start_exits(engine_client, redis_c, since), "the post_start check did not pass"
    again = p("exec", "-T", "redis", "redis-check", str(p.port))
    assert again.stdout.startswith("ownvol-check: ok: ") and "aof_enabled:1" in again.stdout, again.stdout

    p("down", "-v", "--timeout", "5")
    assert volume not in [v["Name"] for v in ownvol_plugin.call("List")["Volumes"]]
    assert not ownvol_plugin.data_dir(volume).exists()
    assert volume not in [v.name for v in engine_client.volumes.list()]


def test_post_start_check_fails_up_on_a_root_owned_bind_mount(project, host_dir, tmp_path):
    """Without AOF, Redis starts on a data dir it cannot write and answers PING: only the check sees it.

    (With AOF it would exit at once, before the hook could look; that crash is what the driver prevents.)
    The hook service is not started: nothing repairs the mount behind the check's back.
    """
    override = tmp_path / "broken.yaml"
    p = project(EXAMPLES / "compose.yaml", override)
    override.write_text(yaml.safe_dump({"services": {"redis": {
        "command": redis_cmd(p.port, appendonly=False),
        "volumes": [{"type": "bind", "source": str(host_dir), "target": "/data"}],
    }}}))
    up = p("up", "-d", "redis", check=False)
    assert up.returncode != 0 and "redis hook exited with status 1" in up.stderr, up.stderr
    assert p.container("hook") is None
    assert redis_answers(p.port).ping()
    check = p("exec", "-T", "redis", "redis-check", str(p.port), check=False)
    assert check.returncode == 1
    assert "data dir /data is not writable by uid 999 (owner 0:0" in check.stderr, check.stderr


def test_hook_service_heals_a_broken_redis_in_the_same_project(project, ownvol_plugin):
    p = project()
    p("up", "-d", "--wait")
    hook_c = p.container("hook")
    assert hook_c.attrs["HostConfig"]["CapDrop"] == ["ALL"] and hook_c.attrs["HostConfig"]["ReadonlyRootfs"]
    r = redis_answers(p.port)
    keys = {f"k{i}": str(i) for i in range(50)}
    for k, v in keys.items():
        r.set(k, v)
    data = ownvol_plugin.data_dir(f"{p.name}_data")
    for path in [data, *data.rglob("*")]:
        os.chown(path, 0, 0)  # the run-time fault the driver cannot see: chowned while Redis runs
    r.bgsave()

    def recovered() -> dict | None:
        return next((e for e in hook_events(hook_c) if e["event"] == "recovered"), None)

    done = wait_for(recovered, 60, interval=0.5, what="the hook service to report recovered")
    events = hook_events(hook_c)
    incident = next(e for e in events if e["event"] == "incident")
    assert incident["container"] == p.container("redis").name and incident["type"] == "permission-denied"
    repair = next(e for e in events if e["event"] == "action" and e["action"] == "repair-ownership")
    assert repair["result"] == "ok" and repair["detail"]["route"] == "helper"
    heal_report("compose: hook service, run-time chown", done["seconds"])

    assert r.set("after", "heal")
    persistence = r.info("persistence")
    assert persistence["rdb_last_bgsave_status"] == "ok" and persistence["aof_enabled"] == 1
    assert (data.stat().st_uid, data.stat().st_gid) == (999, 999)
    assert [r.get(k) for k in keys] == [v.encode() for v in keys.values()]


def test_host_folder_example_adopts_redis_data_and_down_keeps_it(project, ownvol_plugin, ptracked, redis_image,
                                                                  engine_client):
    """The seed's case: ./redis-data written by a root Redis earlier; the example adopts it, data and all."""
    here = ownvol_plugin.adopt / new_name("app")
    folder = here / "redis-data"
    folder.mkdir(parents=True)
    seed_port = free_port()
    seeder = ptracked.run(redis_image, redis_cmd(seed_port), user="0:0", network_mode="host", labels=NO_HOOK,
                          volumes={str(folder): {"bind": "/data", "mode": "rw"}})
    redis_answers(seed_port).set("seed", "kept")
    seeder.stop(timeout=30)
    assert {(f.stat().st_uid, f.stat().st_gid) for f in [folder, *folder.rglob("*")]} == {(0, 0)}

    p = project(EXAMPLES / "host-folder" / "compose.yaml", cwd=here, PWD=str(here))
    p("up", "-d", "--wait")
    assert redis_answers(p.port).get("seed") == b"kept"
    assert {(f.stat().st_uid, f.stat().st_gid) for f in [folder, *folder.rglob("*")]} == {(999, 999)}
    status = engine_client.api.inspect_volume(f"{p.name}_data")["Status"]
    assert status["adopted"] is True and status["path"] == str(folder)

    p("down", "-v", "--timeout", "5")
    assert f"{p.name}_data" not in [v.name for v in engine_client.volumes.list()]
    assert (folder / "appendonlydir").is_dir() and any((folder / "appendonlydir").iterdir())
