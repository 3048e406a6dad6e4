"""The chaos run's private stack: a dockerd of its own (tests/support PluginEngine: its own mount namespace, where
/run/docker/plugins is a directory of ours), its own driver (`ownvol driver` in that namespace, as
tests/support/fixtures_plugin.py starts it) on a listening socket the runner holds and hands to every start of the
driver, as systemd holds ownvol-plugin.socket (a connection made while the driver restarts waits, none is refused),
its own hook (`ownvol watch` on that engine, tests/support fixtures_hook.Hook), a small tmpfs for the fill fault,
and the teardown that leaves nothing behind.

The runner is the supervisor a real host would have (systemd's Restart=): it restarts the hook, the driver or dockerd
after the faults that kill them, the hook and the driver after their shipped units' RestartSec= (packaging/systemd,
read here: the run waits what systemd would), dockerd after RESTART_DELAY["dockerd"].
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
import redis

from ownvol.driver.serve import answers
from tests.chaos.servers import IMAGES, Server
from tests.support.common import ROOT, free_port, new_name
from tests.support.engine import umount_below, wait_for
from tests.support.fixtures_hook import Hook
from tests.support.fixtures_plugin import PluginEngine, PluginProcess
from tests.support.process import stop_child
from tests.support.systemd import restart_delay

RESTART_DELAY = {"hook": restart_delay("ownvol-hook.service"), "driver": restart_delay("ownvol-plugin.service"),
                 "dockerd": 0.5}  # seconds; dockerd's unit is not ours
TMPFS_SIZE = "16m"  # the fill fault's small filesystem


WALK_TREE = (30, 1000)  # the walk volume's tree: directories of files each, all given to root before every start


class WalkVolume:
    """The driver-kill-mid-mount fault's own volume (a Redis profile: 999:999) holding a tree whose walk takes the
    Mount a while, and its Redis container (the hook's labels, restart policy `always` as its user would set it:
    the hook starts it again when its start failed on the driver's Mount), made again for every fault."""

    def __init__(self, stack: Stack) -> None:
        assert stack.client is not None and stack.driver is not None
        self.name = f"{stack.engine.name}-walk"
        self.container = f"{stack.engine.name}-walker"
        self.owner = (999, 999)
        self.port = stack.port()
        stack.client.volumes.create(self.name, driver=stack.driver.name, driver_opts={"profile": "redis"})
        self.host_dir = str(stack.driver.data_dir(self.name))
        dirs, files = WALK_TREE
        for d in range(dirs):
            os.mkdir(os.path.join(self.host_dir, f"d{d}"))
            for f in range(files):
                with open(os.path.join(self.host_dir, f"d{d}", f"f{f}"), "w") as out:
                    out.write(f"{d}/{f}")
        self.files = dirs * files

    def create_container(self, client: docker.DockerClient, labels: dict[str, str]):
        mount = docker.types.Mount("/data", self.name, type="volume", no_copy=True)
        return client.containers.create(IMAGES["redis"], ["redis-server", "--port", str(self.port), "--bind",
                                                          "127.0.0.1", "--dir", "/data", "--appendonly", "yes"],
                                        name=self.container, network_mode="host", user="999:999", mounts=[mount],
                                        labels=labels, restart_policy={"Name": "always"})

    def remove_container(self, client: docker.DockerClient) -> None:
        try:
            client.containers.get(self.container).remove(force=True)
        except docker.errors.NotFound:
            pass

    def tree_right(self) -> bool:
        """Every entry below the data dir is the owner's and every file of the tree holds what it was made with."""
        dirs, files = WALK_TREE
        found = 0
        for top, subdirs, names in os.walk(self.host_dir):
            for entry in [top, *(os.path.join(top, n) for n in subdirs + names)]:
                st = os.lstat(entry)
                if (st.st_uid, st.st_gid) != self.owner:
                    return False
            found += sum(1 for n in names if n.startswith("f"))
        return found == self.files and Path(self.host_dir, f"d{dirs - 1}", f"f{files - 1}").read_text() == \
            f"{dirs - 1}/{files - 1}"

    def healthy(self, stack: Stack) -> bool:
        """The container runs, its Redis acknowledges a write, the driver counts one reference of the volume (the
        running container's, as dockerd sees it) and the tree is right."""
        assert stack.client is not None and stack.driver is not None
        try:
            if stack.client.containers.get(self.container).status != "running":
                return False
            client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=1)
            try:
                if not client.set("chaos:walk", "1"):
                    return False
            finally:
                client.close()
            _, reply = stack.driver.post("/Ownvol.References", {})
        except (docker.errors.DockerException, redis.RedisError, OSError, ValueError):
            return False
        refs = sum(r["count"] for v in reply.get("Volumes", []) if v["name"] == self.name for r in v["references"])
        return refs == 1 and self.tree_right()


class Stack:
    """Everything the run starts; teardown() undoes it all, whatever state a fault or an interruption left."""

    def __init__(self, log) -> None:
        self.log = log
        self.base = Path(tempfile.mkdtemp(prefix="ownvol-chaos-", dir="/var/tmp"))
        self.small = self.base / "small"
        self.engine = PluginEngine(new_name("chaos"))
        self.driver: PluginProcess | None = None
        self.hook: Hook | None = None
        self.client: docker.DockerClient | None = None
        self.servers: list[Server] = []
        self.supervisor_restarts = {"hook": 0, "driver": 0, "dockerd": 0}
        self.walk: WalkVolume | None = None
        self.ports: set[int] = set()

    def start(self, families: set[str]) -> None:
        """The tmpfs (before the engine's namespace is made, so that dockerd sees it too), the engine with the
        images of families loaded, the driver and the hook."""
        # the tree's bytecode, as an installed wheel has it (pip compiles at install): the hook and the driver the
        # supervisor starts then load it, rather than compile their sources at each start as they would here
        # under PYTHONDONTWRITEBYTECODE
        trees = [str(ROOT / d) for d in ("ownvol", "hooks", "plugin")]
        subprocess.run([sys.executable, "-m", "compileall", "-q", *trees], check=True, stdout=subprocess.DEVNULL)
        self.small.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0755", "ownvol-chaos", str(self.small)],
                       check=True)
        self.client = self.engine.start()
        for family in sorted(families):
            self.engine.load_image(IMAGES[family])
        self.driver = PluginProcess(self.engine)
        self.driver.hold_socket()
        self.driver.start()
        (self.base / "hook").mkdir()
        self.hook = Hook(self.base / "hook", env={"DOCKER_HOST": self.engine.host,
                                                  "OWNVOL_DRIVER_NAME": self.driver.name}).start()

    def port(self) -> int:
        """A free port of 127.0.0.1 that no other server of the run was given (free_port alone may hand out the same
        port twice: its socket is closed before the server binds it)."""
        while True:
            port = free_port()
            if port not in self.ports:
                self.ports.add(port)
                return port

    def walk_volume(self) -> WalkVolume:
        """The driver-kill-mid-mount fault's volume, made at its first use."""
        if self.walk is None:
            self.walk = WalkVolume(self)
        return self.walk

    @property
    def labels(self) -> dict[str, str]:
        assert self.hook is not None
        return self.hook.labels

    # the supervisor

    def restart_hook(self) -> None:
        assert self.hook is not None
        stop_child(self.hook.proc, signal.SIGKILL)  # reaps a killed one
        time.sleep(RESTART_DELAY["hook"])
        self.hook.start()
        self.supervisor_restarts["hook"] += 1

    def restart_driver(self) -> None:
        """After the driver's arbiter (or its group) died: reap it, start a new one on the same state."""
        assert self.driver is not None
        stop_child(self.driver.proc, signal.SIGKILL, kill_group=True)
        time.sleep(RESTART_DELAY["driver"])
        self.driver.start(timeout=60)
        self.supervisor_restarts["driver"] += 1

    def restart_dockerd(self) -> None:
        time.sleep(RESTART_DELAY["dockerd"])
        self.client = self.engine.start(timeout=120)
        self.supervisor_restarts["dockerd"] += 1

    def driver_answers(self) -> bool:
        return self.driver is not None and answers(self.driver.socket)

    def keep_alive(self) -> list[str]:
        """Restart what died with no fault of ours (each one named: a broken invariant)."""
        died = []
        if self.hook and self.hook.proc and self.hook.proc.poll() is not None:
            died.append(f"hook exited {self.hook.proc.returncode}")
            self.restart_hook()
        if self.driver and self.driver.proc and self.driver.proc.poll() is not None:
            died.append(f"driver exited {self.driver.proc.returncode}")
            self.restart_driver()
        if self.engine.proc and self.engine.proc.poll() is not None:
            died.append(f"dockerd exited {self.engine.proc.returncode}")
            self.engine.proc = None
            self.restart_dockerd()
        return died

    def keep_logs(self, into: Path) -> None:
        """Copy the dockerd's and the driver's logs, the hook's stderr and its events (JSON lines) into `into`."""
        into.mkdir(parents=True, exist_ok=True)
        copies = [(self.engine.log_path, "dockerd.log")]
        if self.driver:
            copies.append((str(self.driver.log_path), "driver.log"))
        if self.hook:
            copies.append((str(self.hook.state_dir / "hook.stderr"), "hook.stderr"))
            (into / "hook-events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in list(self.hook.events)))
        for source, name in copies:
            if os.path.exists(source):
                shutil.copyfile(source, into / name)

    # teardown

    def teardown(self) -> None:
        """Stop the hook, remove every container (the driver still answering their Unmount), stop the driver, destroy
        the engine, unmount the tmpfs, remove every directory. Each step runs even when one before failed."""
        steps = [("hook", lambda: self.hook and self.hook.stop()),
                 ("containers", self._remove_containers),
                 ("driver", lambda: self.driver and self.driver.destroy()),
                 ("engine", self.engine.destroy),
                 ("tmpfs", lambda: umount_below(str(self.small))),
                 ("dirs", lambda: shutil.rmtree(self.base, ignore_errors=True))]
        took = []
        for what, step in steps:
            started = time.monotonic()
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - the next steps still run
                self.log(f"teardown {what}: {exc!r}")
            took.append(f"{what} {time.monotonic() - started:.1f}s")
        self.log(f"torn down: {', '.join(took)}")
        if os.path.exists(self.engine.log_path):
            os.unlink(self.engine.log_path)

    def _remove_containers(self) -> None:
        if self.engine.proc is None or self.engine.proc.poll() is not None:
            return
        for c in self.engine.client().containers.list(all=True):
            try:
                c.remove(force=True)
            except docker.errors.DockerException as exc:
                self.log(f"teardown: container {c.name}: {exc}")

    def leftovers(self) -> list[str]:
        """What the teardown left: mounts, directories, processes of this run (by path, name or environment)."""
        marks = [str(self.base), self.engine.exec_root, self.engine.data_root, self.engine.plugins_dir]
        if self.driver:
            marks.append(str(self.driver.base))
        left = []
        with open("/proc/mounts") as f:
            left += [f"mount {line.split()[1]}" for line in f if any(m in line.split()[1] for m in marks)]
        left += [f"dir {m}" for m in marks if os.path.exists(m)]
        needles = [m.encode() for m in marks] + ([f"OWNVOL_DRIVER_NAME={self.driver.name}".encode()]
                                                   if self.driver else [])
        if self.hook:
            needles.append(self.hook.id.encode())
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    text = f.read()
                with open(f"/proc/{entry.name}/environ", "rb") as f:
                    text += f.read()
            except OSError:
                continue
            if any(n in text for n in needles):
                command = text.split(b"\0")[0].decode(errors="replace")
                left.append(f"process {entry.name} {command}")
        return left


def wait_answering(stack: Stack, timeout: float = 60) -> None:
    wait_for(stack.driver_answers, timeout, what="the driver to answer")
