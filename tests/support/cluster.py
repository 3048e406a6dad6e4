"""A Swarm of real engines on a private test network, with a registry, for tests/engine/test_swarm_nodes.py.

Each node is a private dockerd in network, mount and UTS namespaces of its own (tests/support/netns.py
links them): its own hostname, data root, exec root, /run/docker/plugins, /var/lib/ownvol (the managed
plugin's default data.source) and /run/docker.sock (its own socket, so that the examples' default
DOCKER_SOCKET reaches the node's engine). The registry is Debian's docker-registry (distribution v2) in
the hub namespace, plain HTTP, each dockerd started with it as an insecure registry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import docker

from tests.support.common import ROOT, new_name
from tests.support.engine import wait_for
from tests.support.fixtures_plugin import PluginEngine
from tests.support.netns import Hub, host_links, in_netns
from tests.support.process import stop_child

OWNVOL_DATA = "/var/lib/ownvol"  # config.json's data.source default, as every node sees it
REGISTRY_PORT = 5000


class Node(PluginEngine):
    """A private dockerd that is one host of the swarm."""

    def __init__(self, hostname: str, version: str | None = None) -> None:
        super().__init__(new_name("swn"), own_network=True)
        if version:
            self.version = version
        self.hostname = hostname
        self.ownvol_dir = f"{self.data_root}.ownvol"
        self.address = ""
        self.node_id = ""

    def _namespace(self) -> list[str]:
        if self.holder is None or self.holder.poll() is not None:
            for d in (self.plugins_dir, self.ownvol_dir):
                os.makedirs(d, mode=0o700, exist_ok=True)
            self.holder = subprocess.Popen(
                ["unshare", "--mount", "--net", "--uts", "--propagation", "private", "sh", "-c",
                 f"hostname {self.hostname} && ip link set lo up && mount --bind {self.plugins_dir} /run/docker/plugins"
                 f" && mount --bind {self.ownvol_dir} {OWNVOL_DATA} && echo ready && exec sleep infinity"],
                stdout=subprocess.PIPE, start_new_session=True)
            if self.holder.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"could not make the namespaces of {self.name}")
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-n", "-u", "--"]

    def start(self, timeout: float = 60) -> docker.DockerClient:
        client = super().start(timeout)
        subprocess.run([*self._namespace(), "mount", "--bind", self.sock, "/run/docker.sock"], check=True)
        return client

    def running(self, service: str) -> list:
        return self.client().containers.list(filters={"label": f"com.docker.swarm.service.name={service}"})

    def container_mounts(self) -> list[str]:
        """Mount points containers hold in the node's mount namespace: their root filesystems and shm (under
        the data root's overlay2/ and containers/) and volumes bound under the plugin's propagated mount."""
        with open(f"/proc/{self.holder.pid}/mounts") as f:
            points = [line.split()[1] for line in f]
        return [p for p in points if p.startswith((f"{self.data_root}/overlay2/", f"{self.data_root}/containers/"))
                or "/propagated-mount/" in p]


class Registry:
    """docker-registry serving plain HTTP on the hub's address, storing under a temporary directory."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.address = f"{hub.address}:{REGISTRY_PORT}"
        self.dir = tempfile.mkdtemp(prefix="ownvol-registry-", dir="/var/tmp")
        self.proc: subprocess.Popen | None = None

    def start(self) -> Registry:
        if not shutil.which("docker-registry"):
            subprocess.run(["flock", "/var/lock/ownvol-apt.lock", "apt-get", "install", "-y", "-qq", "docker-registry"],
                           check=True, capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        config = os.path.join(self.dir, "config.yml")
        with open(config, "w") as f:
            json.dump({"version": 0.1, "log": {"level": "warn"},
                       "storage": {"filesystem": {"rootdirectory": os.path.join(self.dir, "data")},
                                   "delete": {"enabled": True}},
                       "http": {"addr": self.address}}, f)  # JSON is YAML
        log = open(os.path.join(self.dir, "registry.log"), "ab")
        self.proc = subprocess.Popen(["nsenter", "-t", str(self.hub.pid), "-n", "--", "docker-registry", "serve",
                                      config], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        probe = f"import urllib.request; urllib.request.urlopen('http://{self.address}/v2/', timeout=2)"
        wait_for(lambda: in_netns(self.hub.pid, "python3", "-c", probe, check=False).returncode == 0, 30,
                 interval=0.3, what=f"the registry on {self.address}")
        return self

    def stop(self) -> None:
        stop_child(self.proc, timeout=20)
        shutil.rmtree(self.dir, ignore_errors=True)


class Cluster:
    """A hub, a registry and nodes: node 1 the manager, the others workers."""

    def __init__(self, size: int = 3, version: str | None = None) -> None:
        self.hub = Hub()
        self.registry = Registry(self.hub)
        self.nodes = [Node(f"ovnode{i + 1}", version) for i in range(size)]
        self.made_ownvol_data = False
        self.links_before = host_links()

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    @property
    def workers(self) -> list[Node]:
        return self.nodes[1:]

    def start(self) -> Cluster:
        if not os.path.isdir(OWNVOL_DATA):  # the mount point of each node's own /var/lib/ownvol
            os.makedirs(OWNVOL_DATA)
            self.made_ownvol_data = True
        self.hub.start()
        self.registry.start()
        for number, node in enumerate(self.nodes, start=11):
            node._namespace()
            node.address = self.hub.link(node.holder.pid, number)
            node.extra_args = ["--insecure-registry", self.registry.address]
            node.start()
        self._swarm()
        return self

    def _swarm(self) -> None:
        m = self.manager
        m.docker("swarm", "init", "--advertise-addr", m.address, "--listen-addr", f"{m.address}:2377")
        # The ingress overlay is for published ports, which nothing here uses: removed before anyone joins.
        rm = subprocess.run(["docker", "-H", m.host, "network", "rm", "ingress"], input="y\n", capture_output=True,
                            text=True, timeout=60)
        assert rm.returncode == 0, rm.stderr

        def no_ingress() -> bool:
            names = {n.name for n in m.client().networks.list()}
            if "docker_gwbridge" in names and "ingress" not in names:
                m.docker("network", "rm", "docker_gwbridge", check=False)
            return names == {"host", "none"}

        wait_for(no_ingress, 60, interval=0.3, what="ingress and docker_gwbridge to be gone")
        token = m.docker("swarm", "join-token", "-q", "worker").stdout.strip()
        for w in self.workers:
            w.docker("swarm", "join", "--token", token, "--advertise-addr", w.address,
                     "--listen-addr", f"{w.address}:2377", f"{m.address}:2377")

        def all_ready() -> bool:
            nodes = m.client().nodes.list()
            return len(nodes) == len(self.nodes) and all(n.attrs["Status"]["State"] == "ready" for n in nodes)

        wait_for(all_ready, 120, interval=1, what="every node to be ready")
        for node in self.nodes:
            node.node_id = node.client().info()["Swarm"]["NodeID"]

    def node_of(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.node_id == node_id)

    def push_image(self, source: str, repository: str) -> str:
        """source (an image of the shared engine) in the registry as REGISTRY/repository, by way of the manager,
        which keeps no copy: every node pulls it."""
        target = f"{self.registry.address}/{repository}"
        self.manager.load_image(source)
        self.manager.docker("tag", source, target)
        self.manager.docker("push", "-q", target)
        self.manager.docker("image", "rm", source, target)
        return target

    def push_plugin(self, plugin_dir: str, repository: str = "ownvol") -> str:
        """`docker plugin create` + `docker plugin push` on the manager (then removed there: every node installs)."""
        target = f"{self.registry.address}/{repository}:latest"
        self.manager.docker("plugin", "create", target, plugin_dir)
        self.manager.docker("plugin", "push", target)
        self.manager.docker("plugin", "rm", target)
        return target

    def docker_all(self, *args: str) -> None:
        for node in self.nodes:
            node.docker(*args)

    def destroy(self) -> list[str]:
        """Tear everything down, whatever state it is in; returns what was left behind (should be nothing)."""
        for node in [*self.workers, self.manager]:
            if node.proc and node.proc.poll() is None:
                node.docker("swarm", "leave", "--force", check=False)
        for node in self.nodes:
            node.destroy()
            shutil.rmtree(node.ownvol_dir, ignore_errors=True)
        self.registry.stop()
        self.hub.stop()
        if self.made_ownvol_data:
            os.rmdir(OWNVOL_DATA)
        return self.leftovers()

    def leftovers(self) -> list[str]:
        left = [f"host link {link}" for link in host_links() - self.links_before]
        names = [n.name for n in self.nodes]
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if any(name in cmd for name in names) or self.registry.dir in cmd:
                    left.append(f"process {pid}: {cmd[:120]}")
        with open("/proc/mounts") as f:
            left += [f"mount {line.split()[1]}" for line in f if any(name in line for name in names)]
        left += [f"path {p}" for n in self.nodes for p in (n.data_root, n.exec_root, n.plugins_dir, n.ownvol_dir)
                 if os.path.exists(p)]
        return left


def build_plugin_rootfs(directory: str, image: str) -> str:
    """`make plugin-rootfs` into directory from image (scripts/plugin.sh rootfs)."""
    subprocess.run([str(ROOT / "scripts" / "plugin.sh"), "rootfs", directory], check=True, capture_output=True,
                   env={**os.environ, "OWNVOL_IMAGE": image})
    return directory


def registry_catalog(cluster: Cluster) -> list[str]:
    """The repositories the registry holds, as a node sees them over the test network."""
    probe = ("import json, urllib.request; "
             f"print(json.dumps(json.load(urllib.request.urlopen('http://{cluster.registry.address}/v2/_catalog'))))")
    return json.loads(in_netns(cluster.manager.holder.pid, "python3", "-c", probe).stdout)["repositories"]

