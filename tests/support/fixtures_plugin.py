"""Fixtures for the driver: the real plugin (`ownvol driver`, gunicorn) on an engine of its own.

A legacy plugin's socket in /run/docker/plugins is seen by every dockerd on the host, and a
dockerd remembers every legacy driver it ever used: once the test plugin is gone, each lookup
of an unknown volume name on that engine waits for the dead socket. So the driver is never
shown to the shared engine. `plugin_engine` is a private dockerd in a mount namespace of its
own whose /run/docker/plugins is a directory of ours; the plugins run in that namespace too
(their MOUNT_ROOT binds are where that dockerd sees them), with a unique driver name, their
own OWNVOL_ROOT, allowed root for path= and mount root under a temporary directory.

That dockerd lives for the session, and it too never forgets a legacy driver: asked for a volume
name it does not know (`docker volume inspect`, the SDK's volumes.get), it asks every driver it has
seen, and a driver whose socket no longer answers costs that request the plugin client's whole
retry budget (moby pkg/plugins/client.go, callWithRetry; volume/service/store.go, getVolume). Nor
does it activate a driver name twice, so a name cannot be handed on to a new plugin (that one would
never learn which engine it serves). So after a test whose own plugin ran, the engine is restarted:
a new dockerd knows only the drivers it meets again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import docker
import pytest

from ownvol.driver import binds
from ownvol.driver.serve import UnixHTTPConnection, answers
from tests.support.common import ROOT, Tracked, new_name
from tests.support.engine import PrivateEngine, wait_for
from tests.support.process import stop_child

OWNVOL = str(ROOT / ".venv" / "bin" / "ownvol")


class PluginEngine(PrivateEngine):
    """A private dockerd in its own mount namespace, where /run/docker/plugins is `plugins_dir`."""

    def __init__(self, name: str, own_network: bool = False, extra_args: tuple[str, ...] = ()) -> None:
        super().__init__(name, extra_args=extra_args)
        self.plugins_dir = f"{self.data_root}.plugins"
        self.holder: subprocess.Popen | None = None
        # own_network: a network namespace of its own too, loopback only (Swarm's init gives addresses)
        self.own_network = own_network

    def _namespace(self) -> list[str]:
        if self.holder is None or self.holder.poll() is not None:
            os.makedirs(self.plugins_dir, mode=0o700, exist_ok=True)
            net, lo_up = (["--net"], "ip link set lo up && ") if self.own_network else ([], "")
            self.holder = subprocess.Popen(
                ["unshare", "--mount", *net, "--propagation", "private", "sh", "-c",
                 f"{lo_up}mount --bind {self.plugins_dir} /run/docker/plugins && echo ready && exec sleep infinity"],
                stdout=subprocess.PIPE, start_new_session=True)
            if self.holder.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"could not make the mount namespace of {self.name}")
        return ["nsenter", "-t", str(self.holder.pid), "-m", *(["-n"] if self.own_network else []), "--"]

    def start(self, timeout: float = 60) -> docker.DockerClient:
        self.prefix = self._namespace()
        return super().start(timeout)

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", "-H", self.host, *args], capture_output=True, text=True, check=check,
                              timeout=300)

    def destroy(self) -> None:
        super().destroy()
        stop_child(self.holder, signal.SIGKILL)
        shutil.rmtree(self.plugins_dir, ignore_errors=True)


class PluginProcess:
    """One `ownvol driver` process in an engine's namespace (or, engine None, on a socket no engine
    looks at): start, stop, restart, raw requests."""

    def __init__(self, engine: PluginEngine | None, mount_root: bool = False, **env: str) -> None:
        self.engine = engine
        self.name = new_name("ovp")
        self.base = Path(tempfile.mkdtemp(prefix="ownvol-plugin-", dir="/var/tmp"))
        self.root = self.base / "state"
        self.adopt = self.base / "adopt"
        self.mount_root = self.base / "mnt" if mount_root else None
        # as this side sees it
        self.socket = os.path.join(engine.plugins_dir if engine else str(self.base), f"{self.name}.sock")
        self.log_path = self.base / "plugin.log"
        self.adopt.mkdir()
        self.env = {
            **os.environ,
            "OWNVOL_DRIVER_NAME": self.name,
            "OWNVOL_ROOT": str(self.root),
            "OWNVOL_ALLOWED_ROOTS": str(self.adopt),
            "OWNVOL_MOUNT_ROOT": str(self.mount_root or ""),
            "OWNVOL_WORKERS": "2",
            **({} if engine else {"OWNVOL_SOCKET": self.socket}),
            **env,
        }
        self.proc: subprocess.Popen | None = None
        # a listening socket on self.socket held by the caller (hold_socket): each start is handed it as systemd's
        # socket activation hands ownvol-plugin.socket's (sd_listen_fds(3): fd 3, LISTEN_FDS=1, LISTEN_PID)
        self.listener: socket.socket | None = None

    def hold_socket(self) -> socket.socket:
        """Bind and listen on the driver's socket here, as ownvol-plugin.socket does (SocketMode=0600, the
        kernel's largest backlog, systemd's Backlog= default): a connection made while no driver runs waits in
        the backlog instead of being refused. Every later start gets it; destroy() closes it."""
        if self.listener is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(self.socket)
            os.chmod(self.socket, 0o600)
            sock.listen(socket.SOMAXCONN)
            self.listener = sock
        return self.listener

    def start(self, timeout: float = 30) -> PluginProcess:
        command = [OWNVOL, "driver"]
        if self.listener is not None:
            # the socket arrives on stdin and is moved to fd 3; LISTEN_PID is the shell's pid, which exec keeps
            command = ["sh", "-c", 'exec 3<&0 0</dev/null; export LISTEN_FDS=1 LISTEN_PID=$$; exec "$@"', "sh",
                       *command]
        with open(self.log_path, "ab") as log:
            prefix = self.engine._namespace() if self.engine else []
            self.proc = subprocess.Popen([*prefix, *command], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=self.listener.fileno() if self.listener else None,
                                         start_new_session=True)
        try:
            wait_for(lambda: self.proc.poll() is not None or answers(self.socket), timeout,
                     what=f"plugin {self.name}")
            if self.proc.poll() is not None:
                raise RuntimeError(f"plugin {self.name} exited {self.proc.returncode}")
        except (TimeoutError, RuntimeError) as exc:
            log = self.log()
            self.destroy()  # its log goes with the error: nothing of a plugin that did not start is left behind
            raise RuntimeError(f"{exc}:\n{log}") from None
        return self

    def stop(self) -> None:
        stop_child(self.proc, timeout=30, kill_group=True)  # SIGTERM to gunicorn's master, SIGKILL to all
        self.proc = None

    def restart(self) -> PluginProcess:
        self.stop()
        return self.start()

    def post(self, endpoint: str, body: bytes | dict | None = None) -> tuple[int, dict]:
        """POST to the socket as the daemon does; (HTTP status, decoded JSON reply)."""
        raw = body if isinstance(body, bytes) else json.dumps(body if body is not None else {}).encode()
        conn = UnixHTTPConnection(self.socket, timeout=120)
        try:
            conn.request("POST", endpoint, body=raw, headers={"Accept": "application/vnd.docker.plugins.v1.2+json"})
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"null")
        finally:
            conn.close()

    def call(self, method: str, **body) -> dict:
        """A protocol call that must succeed (Err empty); the reply."""
        status, reply = self.post(f"/VolumeDriver.{method}", body)
        assert status == 200 and reply.get("Err") == "", (method, status, reply)
        return reply

    def err(self, method: str, **body) -> str:
        """A protocol call that must fail; its Err."""
        status, reply = self.post(f"/VolumeDriver.{method}", body)
        assert status != 200 and reply.get("Err"), (method, status, reply)
        return reply["Err"]

    def data_dir(self, volume: str) -> Path:
        return self.root / "volumes" / volume

    def is_mounted(self, target: str | Path) -> bool:
        """Whether target is a mount point in the plugin's (and its engine's) namespace."""
        return str(target) in binds.mountpoints(f"/proc/{self.proc.pid}/mountinfo")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def destroy(self) -> None:
        self.stop()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def plugin_engine(redis_image: str) -> PluginEngine:
    """The driver tests' own dockerd (see the module docstring), with the Redis image loaded."""
    engine = PluginEngine(new_name("peng"))
    engine.start()
    engine.load_image(redis_image)
    yield engine
    engine.destroy()


@pytest.fixture(scope="session")
def engine_client(plugin_engine: PluginEngine) -> docker.DockerClient:
    return plugin_engine.client()


@pytest.fixture
def ptracked(engine_client: docker.DockerClient) -> Tracked:
    """`tracked` on the plugin engine."""
    t = Tracked(engine_client)
    yield t
    t.cleanup()


@pytest.fixture(scope="session")
def ownvol_plugin(plugin_engine: PluginEngine) -> PluginProcess:
    """One started plugin for the session (legacy mode: Mount returns the data directory itself)."""
    plugin = PluginProcess(plugin_engine).start()
    yield plugin
    plugin.destroy()


@pytest.fixture
def make_plugin(plugin_engine: PluginEngine):
    """make_plugin(mount_root=False, start=True, **OWNVOL_env) -> a plugin of the test's own, destroyed after it;
    then the engine is restarted if the plugin ever ran (module docstring)."""
    made: list[PluginProcess] = []

    def make(mount_root: bool = False, start: bool = True, **env: str) -> PluginProcess:
        plugin = PluginProcess(plugin_engine, mount_root, **env)
        made.append(plugin)
        return plugin.start() if start else plugin

    yield make
    ran = any(plugin.log_path.exists() for plugin in made)
    for plugin in made:
        plugin.destroy()
    if ran:
        plugin_engine.restart()


@pytest.fixture
def bare_plugin():
    """bare_plugin(mount_root=False, **OWNVOL_env) -> a started plugin that no engine sees, destroyed after it."""
    made: list[PluginProcess] = []

    def make(mount_root: bool = False, **env: str) -> PluginProcess:
        plugin = PluginProcess(None, mount_root, **env)
        made.append(plugin)
        return plugin.start()

    yield make
    for plugin in made:
        plugin.stop()
        if plugin.mount_root and plugin.mount_root.exists():
            for entry in plugin.mount_root.iterdir():
                binds.unbind(str(entry))
        plugin.destroy()
