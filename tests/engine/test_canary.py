"""The seed's failure, reproduced on the real engine. It stays here for good: every fix is proven against it."""

from __future__ import annotations

import pytest

from tests.support.engine import redis_cmd, wait_for

pytestmark = pytest.mark.engine

CANARY = "Can't open or create append-only dir appendonlydir: Permission denied"


def test_uid999_redis_with_aof_on_root_owned_bind_mount_crashes(tracked, redis_image, host_dir, port):
    container = tracked.run(
        redis_image,
        redis_cmd(port, data_dir="/bound"),
        user="999:999",
        network_mode="host",
        volumes={str(host_dir): {"bind": "/bound", "mode": "rw"}},
        labels={"ownvol.watch": "false"},  # a running hook must not heal the canary
    )
    container = wait_for(lambda: (c := tracked.client.containers.get(container.id)).status == "exited" and c, 30,
                         what="the canary container to exit")
    state = container.attrs["State"]
    log = container.logs().decode()
    assert state["ExitCode"] == 1, log
    assert CANARY in log
    assert host_dir.stat().st_uid == 0, "the crash must leave the directory as it was"


def test_uid999_redis_with_aof_on_owned_bind_mount_runs(tracked, redis_image, host_dir, port):
    """The control: the same container on a directory owned by 999 starts and answers."""
    import os

    import redis

    os.chown(host_dir, 999, 999)
    tracked.run(
        redis_image,
        redis_cmd(port, data_dir="/bound"),
        user="999:999",
        network_mode="host",
        volumes={str(host_dir): {"bind": "/bound", "mode": "rw"}},
    )
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    wait_for(client.ping, 30, what="redis to answer PING")
    assert client.set("k", "v")
    assert client.info("persistence")["aof_enabled"] == 1
    assert (host_dir / "appendonlydir").is_dir()
