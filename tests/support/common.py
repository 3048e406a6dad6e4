"""Names, ports and the record of what a test made on the engine, shared by fixtures and tests."""

from __future__ import annotations

import itertools
import socket
import uuid
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parents[2]
# Where each installed package's files come from in this checkout (pyproject.toml's package-dir).
PACKAGE_DIRS = {"ownvol": "ownvol", "ownvol.driver": "plugin", "ownvol.hook": "hooks"}


SESSION = uuid.uuid4().hex[:6]


SESSION_LABEL = "ownvol.test.session"


_counter = itertools.count(1)


def new_name(prefix: str = "ovt") -> str:
    return f"{prefix}-{SESSION}-{next(_counter)}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Tracked:
    """What a test made on the engine, removed after it whatever happened."""

    labels = {SESSION_LABEL: SESSION}

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.containers: list[str] = []
        self.volumes: list[str] = []
        self.plugins: list[str] = []
        self.paths: list[str] = []

    def run(self, image: str, command=None, **kwargs):
        """containers.run, detached, labelled, named uniquely unless a name is given, and tracked."""
        kwargs.setdefault("name", new_name())
        kwargs.setdefault("detach", True)
        kwargs["labels"] = {**self.labels, **kwargs.get("labels", {})}
        self.containers.append(kwargs["name"])
        return self.client.containers.run(image, command, **kwargs)

    def container(self, name: str) -> str:
        self.containers.append(name)
        return name

    def volume(self, name: str) -> str:
        self.volumes.append(name)
        return name

    def plugin(self, name: str) -> str:
        self.plugins.append(name)
        return name

    def cleanup(self) -> None:
        for name in reversed(self.containers):
            try:
                self.client.containers.get(name).remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                print(f"cleanup: container {name}: {exc}")
        for name in reversed(self.volumes):
            try:
                self.client.volumes.get(name).remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                print(f"cleanup: volume {name}: {exc}")
        for name in reversed(self.plugins):
            try:
                self.client.plugins.get(name).remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                print(f"cleanup: plugin {name}: {exc}")

