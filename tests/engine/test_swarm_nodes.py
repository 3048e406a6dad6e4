"""examples/stack.yaml on a three-node Swarm of real engines, the plugin and images from a registry.

tests/support/cluster.py builds it: three private dockerds, each in namespaces of its own on a private
link (198.18.16.0/24, inside those namespaces only), a manager and two workers, Debian's docker-registry
on the link. The plugin is installed on every node the way docs/install.md tells users (`docker plugin
install --alias ownvol --grant-all-permissions REGISTRY/ownvol`); the nodes pull the hook and Redis
images from the registry when the stack is deployed. `make test-swarm` runs this module (minutes).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.support.cluster import Cluster, Node, build_plugin_rootfs, registry_catalog
from tests.support.common import ROOT, free_port, new_name
from tests.support.engine import wait_for
from tests.support.hook_container import hook_events, this_tree_image

pytestmark = [pytest.mark.engine, pytest.mark.swarm]
STACK_FILE = ROOT / "examples" / "stack.yaml"
SETTINGS = {"OWNVOL_LOG_LEVEL": "DEBUG", "OWNVOL_WORKERS": "1"}


@pytest.fixture(scope="module")
def cluster(docker_client, redis_image, ownvol_image, tmp_path_factory) -> Cluster:
    c = Cluster(3)
    try:
        c.start()
        c.hook_image = c.push_image(this_tree_image(docker_client, ownvol_image), "ownvol/hook:latest")
        c.redis_image = c.push_image(redis_image, "ownvol/redis:7")
        plugin = c.push_plugin(build_plugin_rootfs(str(tmp_path_factory.mktemp("plugin")), ownvol_image))
        c.docker_all("plugin", "install", "--alias", "ownvol", "--grant-all-permissions", plugin)
        c.redis_node = c.workers[0]
        c.manager.docker("node", "update", "--label-add", "redis=true", c.redis_node.node_id)
        yield c
    finally:
        left = c.destroy()
    assert not left, f"left behind: {left}"


class Stack:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.name = new_name("sst")
        self.port = free_port()
        self.env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"),
                    "DOCKER_HOST": cluster.manager.host, "REDIS_IMAGE": cluster.redis_image,
                    "OWNVOL_HOOK_IMAGE": cluster.hook_image, "REDIS_PORT": str(self.port),
                    "OWNVOL_METRICS_PORT": str(free_port()), "OWNVOL_HOOK": self.name}
        self.volume = f"{self.name}_data"

    def deploy(self) -> None:
        result = subprocess.run(["docker", "stack", "deploy", "--resolve-image", "never", "-c", str(STACK_FILE),
                                 self.name], env=self.env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr

    def service(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", "service", *args], env=self.env, capture_output=True, text=True, timeout=120)

    def redis(self, exclude: str = ""):
        """The Redis task's container, running and healthy (not the one named exclude)."""
        def healthy():
            found = [c for c in self.cluster.redis_node.running(f"{self.name}_redis") if c.name != exclude]
            return found[0] if len(found) == 1 and health(found[0]) == "healthy" else None
        return wait_for(healthy, 180, interval=1, what=f"one healthy task of {self.name}_redis")

    def hook(self, node: Node):
        """The node's hook task, running and healthy."""
        def healthy():
            found = node.running(f"{self.name}_hook")
            return found[0] if len(found) == 1 and health(found[0]) == "healthy" else None
        return wait_for(healthy, 180, interval=1, what=f"a healthy hook task on {node.hostname}")

    def redis_cli(self, container, *args: str) -> str:
        return container.exec_run(["redis-cli", "-p", str(self.port), *args]).output.decode().strip()

    def data(self):
        return self.cluster.redis_node.ownvol_dir + f"/volumes/{self.volume}"


def health(container) -> str:
    container.reload()
    return container.attrs["State"].get("Health", {}).get("Status", "")


def chown_tree(path: str, uid: int) -> None:
    for root, dirs, files in os.walk(path):
        for name in [root, *[os.path.join(root, n) for n in dirs + files]]:
            os.chown(name, uid, uid)


@pytest.fixture(scope="module")
def stack(cluster) -> Stack:
    s = Stack(cluster)
    s.deploy()
    return s


def test_one_settings_file_is_applied_to_the_plugin_on_every_node(cluster, tmp_path):
    settings = tmp_path / "ownvol.settings"
    settings.write_text("# docker plugin set arguments, one a line\n"
                        + "".join(f"{k}={v}\n" for k, v in SETTINGS.items()))
    nodes = " ".join(n.host for n in cluster.nodes)
    done = subprocess.run(["make", "-s", "-C", str(ROOT), "plugin-set", f"SETTINGS={settings}", f"NODES={nodes}"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    for node in cluster.nodes:
        plugin = node.client().api.inspect_plugin("ownvol")
        assert plugin["Enabled"], node.hostname
        assert {f"{k}={v}" for k, v in SETTINGS.items()} <= set(plugin["Settings"]["Env"]), node.hostname


def test_the_plugin_and_the_images_come_from_the_registry(cluster):
    assert {"ownvol", "ownvol/hook", "ownvol/redis"} <= set(registry_catalog(cluster))
    for node in cluster.nodes:
        plugin = node.client().api.inspect_plugin("ownvol")
        assert plugin["PluginReference"] == f"{cluster.registry.address}/ownvol:latest", node.hostname
        assert plugin["Enabled"]

        def volume_drivers(node: Node = node) -> set[str]:
            engine = cluster.manager.client().api.inspect_node(node.node_id)["Description"]["Engine"]
            return {p["Name"] for p in engine["Plugins"] if p["Type"] == "Volume"}

        # the node's description reaches the manager some seconds after the plugin is enabled again
        wait_for(lambda: "ownvol:latest" in volume_drivers(), 60, interval=1,
                 what=f"{node.hostname} to report the volume driver ownvol:latest (it reports {volume_drivers()})")


def test_the_hook_runs_healthy_on_every_node_and_redis_on_its_labelled_node(cluster, stack):
    for node in cluster.nodes:
        stack.hook(node)
    redis_c = stack.redis()
    assert stack.redis_cli(redis_c, "set", "k", "v") == "OK"
    assert [n.hostname for n in cluster.nodes if n.running(f"{stack.name}_redis")] == [cluster.redis_node.hostname]
    volume = cluster.redis_node.client().api.inspect_volume(stack.volume)
    assert (volume["Driver"], volume["Status"]["uid"]) == ("ownvol:latest", 999)
    for node in cluster.nodes:
        names = [v.name for v in node.client().volumes.list()]
        assert (stack.volume in names) == (node is cluster.redis_node), node.hostname
    assert os.stat(stack.data()).st_uid == 999  # the node's own /var/lib/ownvol, seen from here

    hook = stack.hook(cluster.redis_node)
    doctor = hook.exec_run(["ownvol", "doctor", "--json", redis_c.name])
    assert doctor.exit_code == 0, doctor.output
    node = json.loads(doctor.output)["node"]
    assert (node["name"], node["swarm_node"]) == (cluster.redis_node.hostname, cluster.redis_node.node_id)
    status = hook.exec_run(["ownvol", "status", "--json", "--addr", f"127.0.0.1:{stack.env['OWNVOL_METRICS_PORT']}"])
    assert json.loads(status.output)["node"]["name"] == cluster.redis_node.hostname


def test_a_run_time_fault_is_healed_by_that_nodes_hook(cluster, stack):
    redis_c, hook = stack.redis(), stack.hook(cluster.redis_node)
    assert stack.redis_cli(redis_c, "set", "before", "fault") == "OK"
    chown_tree(stack.data(), 0)
    stack.redis_cli(redis_c, "bgsave")

    def recovered():
        return next((e for e in hook_events(hook) if e["event"] == "recovered" and e["container"] == redis_c.name),
                    None)

    wait_for(recovered, 90, interval=0.5, what="the Redis node's hook to report the task recovered")
    assert stack.redis_cli(redis_c, "set", "after", "heal") == "OK"
    assert stack.redis_cli(redis_c, "get", "before") == "fault"
    for node in cluster.workers[1:] + [cluster.manager]:
        assert not [e for e in hook_events(stack.hook(node)) if e["event"] == "incident"], node.hostname


def test_a_start_up_fault_in_a_replacement_task_is_healed_at_mount(cluster, stack):
    """The volume's root owned by root when Swarm starts a new task: the driver repairs it at Mount."""
    redis_c = stack.redis()
    assert stack.redis_cli(redis_c, "set", "kept", "yes") == "OK"
    assert stack.redis_cli(redis_c, "bgsave")
    wait_for(lambda: os.path.exists(stack.data() + "/dump.rdb"), 30, what="the snapshot")
    api = cluster.redis_node.client().api
    repaired_before = api.inspect_volume(stack.volume)["Status"]["last_repair"]
    api.stop(redis_c.id, timeout=10)  # acknowledged writes saved at stop
    chown_tree(stack.data(), 0)
    replacement = stack.redis(exclude=redis_c.name)
    assert stack.redis_cli(replacement, "get", "kept") == "yes"
    assert os.stat(stack.data()).st_uid == 999
    repaired = api.inspect_volume(stack.volume)["Status"]["last_repair"]
    assert repaired and repaired != repaired_before and repaired["changed"] > 0, repaired
    hook = stack.hook(cluster.redis_node)
    assert not [e for e in hook_events(hook) if e["event"] == "incident" and e["container"] == replacement.name]


def test_a_crashed_task_is_repaired_and_its_incident_ends_recovered_on_the_new_task(cluster, stack):
    """Redis exits at start-up (`Fatal error: can't open the AOF manifest file ... for reading: Permission
    denied`: its AOF files root-owned, mode 0600; the volume's root still right, so the driver leaves it): the
    hook repairs the mount, Swarm starts the next task, and the hook verifies that one."""
    redis_c = stack.redis()
    hook = stack.hook(cluster.redis_node)
    aof = stack.data() + "/appendonlydir"
    chown_tree(aof, 0)
    for name in os.listdir(aof):
        os.chmod(os.path.join(aof, name), 0o600)
    cluster.redis_node.client().api.stop(redis_c.id, timeout=10)

    def closed():
        return next((e for e in hook_events(hook) if e["event"] in ("recovered", "gave-up")
                     and e["container"] != redis_c.name and e["container"].startswith(f"{stack.name}_redis.1.")),
                    None)

    outcome = wait_for(closed, 180, interval=1, what="the crashed task's incident to close")
    crashed = outcome["container"]
    repairs = [e for e in hook_events(hook) if e["event"] == "action" and e["container"] == crashed
               and e["action"] == "repair-ownership"]
    assert outcome["event"] == "recovered", outcome
    assert repairs and repairs[0]["result"] == "ok", repairs
    new_task = stack.redis(exclude=crashed)
    assert new_task.name.startswith(f"{stack.name}_redis.1.") and new_task.name != redis_c.name
    assert {os.stat(os.path.join(aof, n)).st_uid for n in os.listdir(aof)} == {999}
    assert stack.redis_cli(new_task, "get", "kept") == "yes"


def test_a_drained_node_loses_its_hook_task_and_gets_it_back(cluster, stack):
    node = cluster.workers[-1]
    stack.hook(node)
    cluster.manager.docker("node", "update", "--availability", "drain", node.node_id)
    try:
        wait_for(lambda: not node.client().containers.list(), 120, interval=1,
                 what=f"no container running on the drained {node.hostname}")
        assert node.container_mounts() == []
    finally:
        cluster.manager.docker("node", "update", "--availability", "active", node.node_id)
    hook = stack.hook(node)
    assert [c.name for c in node.client().containers.list()] == [hook.name]
    assert all(hook.id in m for m in node.container_mounts() if "/containers/" in m)
