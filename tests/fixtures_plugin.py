"""Fixtures for the driver: the real plugin (`ownvol plugin`, gunicorn) under a driver name of its own.

Each plugin gets a unique driver name (so its socket, /run/docker/plugins/<name>.sock, collides
with nobody's, `make up` included), and its own OWNVOL_ROOT, allowed root for path= and
mount root under a temporary directory. Volumes left on the engine with its driver are
removed before it stops.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import docker
import pytest

from plugin.serve import UnixHTTPConnection, answers
from tests.conftest import ROOT, new_name
from tests.engine import wait_for

OWNVOL = str(ROOT / ".venv" / "bin" / "ownvol")


class PluginProcess:
    """One `ownvol plugin` process: start, stop, restart, and raw requests to its socket."""

    def __init__(self, base: Path, mount_root: bool = False, **env: str) -> None:
        self.name = new_name("ovp")
        self.base = base
        self.root = base / "state"
        self.adopt = base / "adopt"
        self.mount_root = base / "mnt" if mount_root else None
        self.socket = f"/run/docker/plugins/{self.name}.sock"
        self.log_path = base / "plugin.log"
        self.adopt.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "OWNVOL_DRIVER_NAME": self.name,
            "OWNVOL_ROOT": str(self.root),
            "OWNVOL_ALLOWED_ROOTS": str(self.adopt),
            "OWNVOL_MOUNT_ROOT": str(self.mount_root or ""),
            "OWNVOL_WORKERS": "2",
            **env,
        }
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> "PluginProcess":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([OWNVOL, "plugin"], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        wait_for(lambda: self.proc.poll() is not None or answers(self.socket), timeout, what=f"plugin {self.name}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"plugin {self.name} exited {self.proc.returncode}:\n{self.log()}")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def restart(self) -> "PluginProcess":
        self.stop()
        return self.start()

    def post(self, endpoint: str, body: bytes | dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
        """POST to the socket as the daemon does; (HTTP status, decoded JSON reply)."""
        raw = body if isinstance(body, bytes) else json.dumps(body if body is not None else {}).encode()
        conn = UnixHTTPConnection(self.socket, timeout=120)
        try:
            conn.request("POST", endpoint, body=raw,
                         headers={"Accept": "application/vnd.docker.plugins.v1.2+json", **(headers or {})})
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

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def remove_engine_volumes(self, client: docker.DockerClient) -> None:
        for v in client.volumes.list(filters={"driver": self.name}):
            try:
                for c in client.containers.list(all=True, filters={"volume": v.name}):
                    c.remove(force=True)
                v.remove(force=True)
            except docker.errors.APIError as exc:
                print(f"cleanup: volume {v.name}: {exc}")

    def destroy(self) -> None:
        self.stop()
        if self.mount_root and self.mount_root.exists():
            for entry in self.mount_root.iterdir():
                subprocess.run(["umount", "-l", str(entry)], stderr=subprocess.DEVNULL)
        shutil.rmtree(self.base, ignore_errors=True)


def _new_plugin(mount_root: bool = False, **env: str) -> PluginProcess:
    return PluginProcess(Path(tempfile.mkdtemp(prefix="ownvol-plugin-", dir="/var/tmp")), mount_root, **env)


@pytest.fixture(scope="session")
def ownvol_plugin(docker_client: docker.DockerClient) -> PluginProcess:
    """One started plugin for the session (legacy mode: Mount returns the data directory itself)."""
    plugin = _new_plugin().start()
    yield plugin
    plugin.remove_engine_volumes(docker_client)
    plugin.destroy()


@pytest.fixture
def make_plugin(docker_client: docker.DockerClient):
    """make_plugin(mount_root=False, **OWNVOL_env) -> a started plugin of the test's own, destroyed after it."""
    made: list[PluginProcess] = []

    def make(mount_root: bool = False, start: bool = True, **env: str) -> PluginProcess:
        plugin = _new_plugin(mount_root, **env)
        made.append(plugin)
        return plugin.start() if start else plugin

    yield make
    for plugin in made:
        plugin.remove_engine_volumes(docker_client)
        plugin.destroy()
