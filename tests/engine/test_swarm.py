"""examples/stack.yaml on a single-node Swarm made for these tests, on a private engine, left at the end.

The engine is a PluginEngine with a network namespace of its own (loopback only): `docker swarm
init` creates the `ingress` overlay and, within a second, the node's ingress sandbox and the
`docker_gwbridge` bridge, each with a private-range address, before any command can remove
ingress (the first test proves it). In this namespace those addresses touch nothing; ingress and
docker_gwbridge are removed at once and the services use the host network only, nothing published.
Redis answers on that namespace's loopback, so the tests reach it with `docker exec`.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import time

import pytest

from tests.support.common import ROOT, free_port, new_name
from tests.support.engine import wait_for
from tests.support.fixtures_hook import heal_report
from tests.support.fixtures_plugin import PluginEngine, PluginProcess
from tests.support.hook_container import hook_events, load_hook_image, this_tree_image

pytestmark = pytest.mark.engine
STACK_FILE = ROOT / "examples" / "stack.yaml"


class Swarm:
    """The engine in swarm mode, its legacy ownvol driver, and what `swarm init` was seen to hand out."""

    def __init__(self, engine: PluginEngine, plugin: PluginProcess) -> None:
        self.engine = engine
        self.plugin = plugin
        self.client = engine.client()
        self.seen_at_init: set[str] = set()
        self.node = ""
        self.host_before = host_ipv4()

    def ipv4(self) -> set[str]:
        """The IPv4 addresses in the engine's network namespace."""
        out = subprocess.run(["nsenter", "-t", str(self.engine.holder.pid), "-n", "ip", "-4", "-o", "addr"],
                             capture_output=True, text=True, check=True).stdout
        return {f"{line.split()[1]} {line.split()[3]}" for line in out.splitlines()}

    def networks(self) -> set[str]:
        return {n.name for n in self.client.networks.list()}

    def init(self) -> None:
        self.engine.docker("swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:2377")
        rm = subprocess.run(["docker", "-H", self.engine.host, "network", "rm", "ingress"], input="y\n",
                            capture_output=True, text=True, timeout=60)
        assert rm.returncode == 0, rm.stderr

        removable_after = time.monotonic() + 30  # 10 s fell short once beside another worker's engine tests

        def settled() -> bool:
            self.seen_at_init |= self.ipv4()
            names = self.networks()
            # The bridge's network can exist a moment before its interface has its address: remove it once its
            # address was seen (what the first test records), or after 30 s whatever was seen.
            seen = any(a.startswith("docker_gwbridge ") for a in self.seen_at_init)
            if "docker_gwbridge" in names and "ingress" not in names and (seen or time.monotonic() > removable_after):
                self.engine.docker("network", "rm", "docker_gwbridge", check=False)
            return names == {"host", "none"} and self.ipv4() == {"lo 127.0.0.1/8"}

        wait_for(settled, 60, interval=0.3, what="ingress and docker_gwbridge to be gone")
        self.node = self.client.info()["Swarm"]["NodeID"]

    def register_driver(self) -> None:
        """Make Swarm see the legacy driver: dockerd learns one at its first use (`docker volume ls` asks every
        socket it finds), and the node reports it to the scheduler at its next description update."""
        started = time.monotonic()
        self.engine.docker("volume", "ls")

        def reported() -> bool:
            plugins = self.client.api.inspect_node(self.node)["Description"]["Engine"]["Plugins"]
            return {"Type": "Volume", "Name": self.plugin.name} in plugins

        wait_for(reported, 90, interval=1, what=f"the node to report volume driver {self.plugin.name}")
        print(f"\nthe node reported the legacy driver {time.monotonic() - started:.1f}s after `docker volume ls`")

    def running(self, service: str) -> list:
        return self.client.containers.list(filters={"label": f"com.docker.swarm.service.name={service}"})

    def one_running(self, service: str):
        found = self.running(service)
        return found[0] if len(found) == 1 else None

    def redis_cli(self, container, port: int, *args: str) -> str:
        result = container.exec_run(["redis-cli", "-p", str(port), *args])
        return result.output.decode().strip()

    def info(self, container, port: int) -> dict[str, str]:
        return dict(line.split(":", 1) for line in self.redis_cli(container, port, "info", "persistence").split()
                    if ":" in line)


def host_ipv4() -> set[str]:
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    return {f"{line.split()[1]} {line.split()[3]}" for line in out.splitlines()}


@pytest.fixture(scope="module")
def swarm(redis_image, docker_client, ownvol_image) -> Swarm:
    engine = PluginEngine(new_name("swarm"), own_network=True)
    plugin = None
    try:
        engine.start()
        engine.load_image(redis_image)
        load_hook_image(engine, this_tree_image(docker_client, ownvol_image))
        plugin = PluginProcess(engine).start()
        s = Swarm(engine, plugin)
        s.init()
        s.register_driver()
        engine.docker("node", "update", "--label-add", "redis=true", s.node)  # where stack.yaml pins Redis
        yield s
    finally:
        if engine.proc:
            engine.docker("swarm", "leave", "--force", check=False)
        if plugin:
            plugin.destroy()
        engine.destroy()


class Stack:
    def __init__(self, swarm: Swarm, redis_image: str) -> None:
        self.swarm = swarm
        self.name = new_name("st")
        self.port = free_port()
        self.env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
                    "DOCKER_HOST": swarm.engine.host, "DOCKER_SOCKET": swarm.engine.sock,
                    "OWNVOL_DRIVER": swarm.plugin.name, "REDIS_IMAGE": redis_image, "REDIS_PORT": str(self.port),
                    "OWNVOL_METRICS_PORT": str(free_port()), "OWNVOL_HOOK": self.name}

    def deploy(self) -> None:
        result = subprocess.run(["docker", "stack", "deploy", "--resolve-image", "never", "-c", str(STACK_FILE),
                                 self.name], env=self.env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr

    def redis(self):
        def healthy():
            c = self.swarm.one_running(f"{self.name}_redis")
            return c if c and c.attrs["State"].get("Health", {}).get("Status") == "healthy" else None
        return wait_for(healthy, 120, interval=1, what=f"one healthy task of {self.name}_redis")

    def hook(self):
        return wait_for(lambda: self.swarm.one_running(f"{self.name}_hook"), 120, interval=1,
                        what=f"the task of {self.name}_hook")


@pytest.fixture(scope="module")
def stack(swarm, redis_image) -> Stack:
    s = Stack(swarm, redis_image)
    s.deploy()
    return s


def test_swarm_init_gives_private_addresses_at_once_and_here_only_in_the_engines_namespace(swarm):
    private = {a for a in swarm.seen_at_init
               if ipaddress.ip_interface(a.split()[1]).ip.is_private and not a.startswith("lo ")}
    print(f"\nswarm init handed out, before ingress could be removed: {sorted(private)}")
    assert any(a.startswith("docker_gwbridge ") for a in private), swarm.seen_at_init
    assert swarm.ipv4() == {"lo 127.0.0.1/8"} and swarm.networks() == {"host", "none"}
    assert host_ipv4() == swarm.host_before


def test_stack_deploys_the_hook_runs_and_redis_is_healthy_on_an_ownvol_volume(swarm, stack):
    hook = stack.hook()
    assert "Global" in swarm.client.api.inspect_service(f"{stack.name}_hook")["Spec"]["Mode"]
    host_config = hook.attrs["HostConfig"]
    assert host_config["NetworkMode"] == "host" and host_config["CapDrop"] == ["ALL"] and host_config["ReadonlyRootfs"]
    assert {m["Destination"] for m in hook.attrs["Mounts"]} >= {"/var/run/docker.sock", "/var/lib/ownvol/hook"}

    redis_c = stack.redis()
    assert redis_c.exec_run(["id", "-u"]).output.decode().strip() == "999"
    assert swarm.redis_cli(redis_c, stack.port, "set", "k", "v") == "OK"
    info = swarm.info(redis_c, stack.port)
    assert info["aof_enabled"] == "1" and info["aof_last_write_status"] == "ok"

    volume = swarm.client.api.inspect_volume(f"{stack.name}_data")
    assert volume["Driver"] == swarm.plugin.name
    assert (volume["Status"]["profile"], volume["Status"]["uid"], volume["Status"]["gid"]) == ("redis", 999, 999)
    assert volume["Status"]["mounts"] == 1
    aof = swarm.plugin.data_dir(f"{stack.name}_data") / "appendonlydir"
    assert (aof.stat().st_uid, aof.stat().st_gid) == (999, 999)
    wait_for(lambda: any(e["event"] == "watching" and e["container"] == redis_c.name for e in hook_events(hook)),
             30, what="the hook task to watch the Redis task")


def test_the_hook_service_heals_a_broken_redis_task(swarm, stack):
    hook, redis_c = stack.hook(), stack.redis()
    keys = {f"k{i}": str(i) for i in range(20)}
    for k, v in keys.items():
        assert swarm.redis_cli(redis_c, stack.port, "set", k, v) == "OK"
    data = swarm.plugin.data_dir(f"{stack.name}_data")
    for path in [data, *data.rglob("*")]:
        os.chown(path, 0, 0)
    swarm.redis_cli(redis_c, stack.port, "bgsave")

    def recovered() -> dict | None:
        return next((e for e in hook_events(hook) if e["event"] == "recovered" and e["container"] == redis_c.name),
                    None)

    done = wait_for(recovered, 60, interval=0.5, what="the hook task to report the Redis task recovered")
    incident = next(e for e in hook_events(hook) if e["event"] == "incident" and e["container"] == redis_c.name)
    assert incident["type"] == "permission-denied"
    heal_report("swarm: global hook service, run-time chown", done["seconds"])

    assert swarm.redis_cli(redis_c, stack.port, "set", "after", "heal") == "OK"
    assert swarm.info(redis_c, stack.port)["rdb_last_bgsave_status"] == "ok"
    assert [swarm.redis_cli(redis_c, stack.port, "get", k) for k in keys] == list(keys.values())
    assert [c.id for c in swarm.running(f"{stack.name}_redis")] == [redis_c.id]  # healed in place, same task


def test_a_task_that_crashed_on_a_root_owned_bind_mount_is_repaired_left_to_swarm_and_recovered(swarm, stack, host_dir,
                                                                                       redis_image):
    """Swarm replaces a failed task with a new container: the hook repairs the mount and never starts the
    retired one (that would run a second Redis outside the service, on the same port); the incident ends
    `recovered` by verifying the service's new task in the same slot."""
    hook = stack.hook()
    service, port = f"{stack.name}_broken", free_port()
    created = subprocess.run(
        ["docker", "service", "create", "--detach", "--name", service, "--user", "999:999", "--network", "host",
         "--container-label", f"ownvol.hook={stack.name}",
         "--mount", f"type=bind,source={host_dir},target=/data",
         "--health-cmd", f"redis-cli -p {port} ping", "--health-interval", "2s",
         redis_image, "redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", "/data",
         "--appendonly", "yes"], env=stack.env, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    try:
        def repaired() -> dict | None:
            return next((e for e in hook_events(hook) if e["event"] == "action" and e["action"] == "repair-ownership"
                         and e["container"].startswith(f"{service}.") and e["result"] == "ok"), None)

        repair = wait_for(repaired, 60, interval=0.5, what="the hook to repair the crashed task's mount")
        assert (host_dir.stat().st_uid, host_dir.stat().st_gid) == (999, 999)

        def healthy_task():
            c = swarm.one_running(service)
            return c if c and c.attrs["State"].get("Health", {}).get("Status") == "healthy" else None

        task = wait_for(healthy_task, 120, interval=1, what=f"a healthy task of {service}")
        assert task.name != repair["container"]
        assert swarm.info(task, port)["aof_enabled"] == "1"
        def closed() -> list[str]:
            return [e["event"] for e in hook_events(hook) if e.get("container") == repair["container"]
                    and e["event"] in ("recovered", "gave-up")]

        assert wait_for(closed, 60, interval=0.5, what="the crashed task's incident to close") == ["recovered"]
        restarts = [e for e in hook_events(hook) if e["event"] == "action" and e["action"] == "restart"
                    and e["container"] == repair["container"]]
        assert all(e["result"] == "skipped" and "Swarm task" in e["detail"]["why"] for e in restarts)
        assert swarm.client.containers.get(repair["container"]).status == "exited"
    finally:
        subprocess.run(["docker", "service", "rm", service], env=stack.env, capture_output=True, timeout=120)


def test_a_volume_keeps_the_options_it_was_made_with_whatever_a_later_task_asks(swarm, stack, redis_image):
    """A stack's driver_opts reach the driver only when a node creates the volume: a task that mounts it
    later with other options (a changed stack file, another service) gets the volume as it is."""
    volume = f"{stack.name}_data"
    stack.redis()
    service = f"{stack.name}_reader"
    created = subprocess.run(
        ["docker", "service", "create", "--detach", "--name", service, "--network", "host",
         "--mount", f"type=volume,source={volume},target=/seen,readonly,volume-driver={swarm.plugin.name},"
                    "volume-opt=mode=0700,volume-opt=uid=1000",
         redis_image, "sleep", "infinity"], env=stack.env, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    try:
        wait_for(lambda: swarm.one_running(service), 120, interval=1, what=f"the task of {service}")
        status = swarm.client.api.inspect_volume(volume)["Status"]
        assert (status["mode"], status["uid"], status["mounts"]) == ("0755", 999, 2)
        creates = [line for line in swarm.plugin.log().splitlines()
                   if "action=VolumeDriver.Create " in line and f"volume={volume} " in line]
        assert len(creates) == 1, creates
    finally:
        subprocess.run(["docker", "service", "rm", service], env=stack.env, capture_output=True, timeout=120)
