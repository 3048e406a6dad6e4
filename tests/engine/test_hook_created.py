"""The hook reads nothing out of a container that is only created: its start must not wait for the hook."""

from __future__ import annotations

import time

import docker
import pytest

from tests.support.driver import create
from tests.support.engine import redis_cmd

pytestmark = pytest.mark.engine


def mounts_of(plugin, volume: str) -> list[str]:
    return [line for line in plugin.log().splitlines() if "VolumeDriver.Mount " in line and f"volume={volume} " in line]


def test_a_created_container_is_not_read_before_its_start(plugin_engine, engine_client, make_plugin, ptracked,
                                                         redis_image, unique_name, port, hook):
    """Copying a file out of a container not running (GET /containers/ID/archive) makes the engine mount its
    filesystems, each volume through its driver, holding the container's lock, which its start waits for (moby
    daemon/archive.go containerArchivePath): the chaos run saw a recreated MariaDB's start held 0.7 s by eight such
    reads. Created, the container is seen by the hook (down, "container created") and its volume is not mounted;
    started, it is mounted once and the hook reads its facts then. The user is a name, so the facts include its
    /etc/passwd (read through the archive API)."""
    plugin = make_plugin()
    h = hook(env={"DOCKER_HOST": plugin_engine.host, "OWNVOL_DRIVER_NAME": plugin.name})
    volume = unique_name("crv")
    create(engine_client, plugin, ptracked, volume, profile="redis")
    container = engine_client.containers.create(
        redis_image, redis_cmd(port), name=ptracked.container(f"{volume}-redis"), network_mode="host",
        user="redis", mounts=[docker.types.Mount("/data", volume, type="volume", no_copy=True)],
        labels={**ptracked.labels, **h.labels})
    h.wait_event(lambda e: e["event"] == "health" and e.get("container") == container.name
                 and e["reasons"] == ["container created"], 30, "the hook's look at the created container")
    time.sleep(2.5)  # the hook looks again at each interval (1 s)
    assert mounts_of(plugin, volume) == []
    container.start()
    healthy = h.wait_event(lambda e: e["event"] == "health" and e.get("container") == container.name
                           and e["state"] == "healthy", 60, "the started container to be seen healthy")
    assert healthy["state"] == "healthy" and len(mounts_of(plugin, volume)) >= 1
