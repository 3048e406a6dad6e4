"""Volumes and their references outlive the plugin process and the engine."""

from __future__ import annotations

import os
import signal

import pytest

from tests.support.driver import create, redis_answers, run_redis, status

pytestmark = pytest.mark.engine


def kill_hard(plugin) -> None:
    """SIGKILL the whole plugin (master and workers), as a crash would."""
    os.killpg(plugin.proc.pid, signal.SIGKILL)
    plugin.proc.wait()
    plugin.proc = None


@pytest.mark.parametrize("mount_root", [False, True], ids=["legacy", "mount-root"])
def test_plugin_restart_keeps_volumes_and_references(make_plugin, engine_client, ptracked, redis_image, unique_name,
                                                     port, mount_root):
    plugin = make_plugin(mount_root=mount_root)
    name = unique_name("vol")
    create(engine_client, plugin, ptracked, name)
    container = run_redis(ptracked, redis_image, name, port)
    redis_answers(port).set("k", "kept")
    kill_hard(plugin)
    plugin.start()
    assert name in [v["Name"] for v in plugin.call("List")["Volumes"]]
    assert status(engine_client, name)["mounts"] == 1
    if mount_root:
        assert plugin.is_mounted(plugin.mount_root / name)
    assert "in use" in plugin.err("Remove", Name=name)
    container.stop(timeout=10)
    assert status(engine_client, name)["mounts"] == 0
    if mount_root:
        assert not plugin.is_mounted(plugin.mount_root / name)
    plugin.restart()
    run_redis(ptracked, redis_image, name, port)
    assert redis_answers(port).get("k") == b"kept"


def test_engine_restart_keeps_volumes(plugin_engine, ownvol_plugin, ptracked, redis_image, unique_name, port):
    client = plugin_engine.client()
    name = unique_name("vol")
    create(client, ownvol_plugin, ptracked, name, profile="redis")
    container = run_redis(ptracked, redis_image, name, port)
    redis_answers(port).set("k", "kept")
    client = plugin_engine.restart()
    assert name in [v.name for v in client.volumes.list(filters={"driver": ownvol_plugin.name})]
    assert status(client, name)["mounts"] == 0, "the engine stopped the container and unmounted its volume"
    client.containers.get(container.id).start()
    assert redis_answers(port).get("k") == b"kept"
    assert status(client, name)["mounts"] == 1
