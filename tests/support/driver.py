"""Helpers for driver tests on an engine: volumes, a uid-999 Redis on one, its Status."""

from __future__ import annotations

import redis

from tests.support.engine import redis_cmd, wait_for

NO_HOOK = {"ownvol.watch": "false"}  # a running hook must not heal what the driver alone has to get right


def create(client, plugin, ptracked, name: str, **opts: str):
    ptracked.volume(name)
    return client.volumes.create(name, driver=plugin.name, driver_opts=opts, labels=ptracked.labels)


def run_redis(ptracked, image: str, volume: str, port: int, **kw):
    return ptracked.run(image, redis_cmd(port, data_dir="/bound"), user="999:999", network_mode="host",
                       volumes={volume: {"bind": "/bound", "mode": "rw"}}, labels=NO_HOOK, **kw)


def redis_answers(port: int) -> redis.Redis:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    wait_for(client.ping, 30, what=f"redis on {port} to answer PING")
    return client


def status(client, name: str) -> dict:
    return client.api.inspect_volume(name)["Status"]

