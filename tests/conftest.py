"""Fixtures that own the engine, the image, names, ports and cleanup.

Every container, volume and plugin a test makes through `tracked` is removed after it,
also when it fails; a session-end sweep removes anything labelled with this session's id.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import uuid
from pathlib import Path

import docker
import pytest

from tests.engine import PrivateEngine

ROOT = Path(__file__).resolve().parent.parent
SESSION = uuid.uuid4().hex[:6]
SESSION_LABEL = "ownvol.test.session"

pytest_plugins = ["tests.fixtures_plugin", "tests.fixtures_hook"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "engine" in item.keywords:
            item.add_marker(pytest.mark.timeout(900))


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"no Docker engine answers ({exc}); run `make engine` first", pytrace=False)
    yield client
    for c in client.containers.list(all=True, filters={"label": f"{SESSION_LABEL}={SESSION}"}):
        c.remove(force=True)
    for v in client.volumes.list(filters={"label": f"{SESSION_LABEL}={SESSION}"}):
        try:
            v.remove(force=True)
        except docker.errors.APIError:
            pass


@pytest.fixture(scope="session")
def redis_image(docker_client: docker.DockerClient) -> str:
    """The Redis image under test (REDIS_IMAGE, default the offline ownvol/redis:7), built if missing."""
    tag = os.environ.get("REDIS_IMAGE", "ownvol/redis:7")
    try:
        docker_client.images.get(tag)
    except docker.errors.ImageNotFound:
        subprocess.run([str(ROOT / "scripts" / "images.sh")], check=True, env={**os.environ, "REDIS_IMAGE": tag})
    return tag


_counter = itertools.count(1)


def new_name(prefix: str = "ovt") -> str:
    return f"{prefix}-{SESSION}-{next(_counter)}"


@pytest.fixture
def unique_name() -> "callable":
    """unique_name(prefix='ovt') -> a name no other test or run uses."""
    return new_name


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def port() -> int:
    """A free TCP port on 127.0.0.1."""
    return free_port()


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


@pytest.fixture
def tracked(docker_client: docker.DockerClient) -> Tracked:
    t = Tracked(docker_client)
    yield t
    t.cleanup()


@pytest.fixture
def private_engine() -> PrivateEngine:
    """A dockerd of the test's own (own data root and socket), for restart tests; destroyed after."""
    engine = PrivateEngine(new_name("eng"))
    yield engine
    engine.destroy()


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    """A root-owned directory on the host, as a bind-mount source; tmp_path is cleaned by pytest."""
    d = tmp_path / "data"
    d.mkdir()
    os.chown(d, 0, 0)
    d.chmod(0o755)
    return d
