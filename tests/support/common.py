"""Names, ports and the record of what a test made on the engine, shared by fixtures and tests."""

from __future__ import annotations

import fcntl
import itertools
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker

ROOT = Path(__file__).resolve().parents[2]
# Where each installed package's files come from in this checkout (pyproject.toml's package-dir).
PACKAGE_DIRS = {"ownvol": "ownvol", "ownvol.driver": "plugin", "ownvol.hook": "hooks"}
# The files of those folders an image of ownvol must carry as they are here (the compiled loop's .so is built from
# the .c): what the images' staleness checks compare.
SOURCE_SUFFIXES = (".py", ".yaml", ".c")


SESSION = uuid.uuid4().hex[:6]


SESSION_LABEL = "ownvol.test.session"


_counter = itertools.count(1)


def new_name(prefix: str = "ovt") -> str:
    return f"{prefix}-{SESSION}-{next(_counter)}"


@contextmanager
def image_lock(tag: str) -> Iterator[None]:
    """Held while a fixture checks an image and rebuilds it if stale: the suite's parallel workers
    (pytest-xdist) build it once, the others find it fresh after waiting."""
    path = Path("/var/lock") / f"ownvol-test-image-{tag.replace('/', '_').replace(':', '_')}.lock"
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


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
        """Remove, newest first, every container, then volume, then plugin recorded; one gone already is fine."""
        for kind, names, collection in (("container", self.containers, self.client.containers),
                                        ("volume", self.volumes, self.client.volumes),
                                        ("plugin", self.plugins, self.client.plugins)):
            for name in reversed(names):
                try:
                    collection.get(name).remove(force=True)
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError as exc:
                    print(f"cleanup: {kind} {name}: {exc}")



def server_image(client: docker.DockerClient, tag: str) -> str:
    """tag, built first (scripts/images.sh servers: offline, cached) when the engine does not have it."""
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        subprocess.run([str(ROOT / "scripts" / "images.sh"), "servers"], check=True, cwd=ROOT)
    return tag
