"""Crash consistency: the driver's workers killed at random under load, then the whole plugin; dockerd
restarted under running containers. Afterwards the database and the disk agree and nothing is lost.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from tests.support.common import free_port
from tests.support.driver import NO_HOOK, create, status
from tests.support.engine import redis_cmd, wait_for

CYCLES = 200
CLIENTS = 8
KEEPERS = 4


class Died(Exception):
    """The worker serving the request was killed: the reply never came."""


def _workers(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


class Client:
    """The daemon's side of the protocol, careful as it should be when a reply never comes."""

    def __init__(self, plugin) -> None:
        self.plugin = plugin

    def post(self, method: str, **body) -> dict:
        try:
            return self.plugin.post(f"/VolumeDriver.{method}", body)[1]
        except (OSError, http.client.HTTPException, ValueError):
            raise Died(method) from None

    def until_answered(self, method: str, **body) -> dict:
        while True:
            try:
                return self.post(method, **body)
            except Died:
                time.sleep(0.02)

    def mount(self, name: str) -> tuple[str, str]:
        """(mountpoint, mount ID): a Mount whose reply was lost is unmounted before another ID is tried."""
        while True:
            mount_id = os.urandom(8).hex()
            try:
                reply = self.post("Mount", Name=name, ID=mount_id)
            except Died:
                assert self.until_answered("Unmount", Name=name, ID=mount_id)["Err"] == ""
                continue
            assert reply["Err"] == "", reply
            return reply["Mountpoint"], mount_id

    def unmount(self, name: str, mount_id: str) -> None:
        assert self.until_answered("Unmount", Name=name, ID=mount_id)["Err"] == ""


def _write(mountpoint: str, name: str, size: int) -> str:
    data = os.urandom(size)
    with open(os.path.join(mountpoint, name), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return hashlib.sha256(data).hexdigest()


def _digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.mark.load
def test_workers_killed_at_random_under_200_cycles_then_the_plugin(bare_plugin):
    plugin = bare_plugin(mount_root=True, OWNVOL_WORKERS="4")
    client = Client(plugin)
    keepers, held = {}, {}
    for i in range(KEEPERS):  # volumes that live through it all, mounted the whole time by a "container"
        name = f"keeper{i}"
        client.until_answered("Create", Name=name, Opts={"profile": "redis"})
        mountpoint, held[name] = client.mount(name)
        keepers[name] = _write(mountpoint, "data.bin", 1 << 20)

    kept, removed, stuck, errors = {}, set(), set(), []
    lock = threading.Lock()
    stop = threading.Event()
    kills = []

    def killer() -> None:
        rng = random.Random(7)
        while not stop.wait(rng.uniform(0.02, 0.15)):
            workers = _workers(plugin.proc.pid)
            if workers:
                victim = rng.choice(workers)
                try:
                    os.kill(victim, signal.SIGKILL)
                    kills.append(victim)
                except ProcessLookupError:
                    pass

    def cycle(n: int) -> None:
        rng = random.Random(n)
        name = f"cycle{n}"
        reply = client.until_answered("Create", Name=name, Opts={"uid": str(1000 + n), "mode": "0750"})
        if "being created" in reply["Err"]:
            with lock:
                stuck.add(name)  # the create's worker died holding the intent: the restart undoes it
            return
        assert reply["Err"] == "", reply
        mountpoint, mount_id = client.mount(name)
        digest = _write(mountpoint, "payload", rng.randint(1, 64) << 10)
        keeper = rng.choice(list(keepers))
        keeper_point, keeper_id = client.mount(keeper)  # a second container on a keeper, for a moment
        assert _digest(os.path.join(keeper_point, "data.bin")) == keepers[keeper]
        client.unmount(keeper, keeper_id)
        client.unmount(name, mount_id)
        if rng.random() < 0.5:
            reply = client.until_answered("Remove", Name=name)
            assert reply["Err"] in ("", f"no such volume: {name}"), reply  # "no such": a lost reply's retry
            with lock:
                removed.add(name)
        else:
            with lock:
                kept[name] = digest

    def guarded(n: int) -> None:
        try:
            cycle(n)
        except Exception as exc:  # noqa: BLE001 - reported below with every other failure
            with lock:
                errors.append(f"cycle {n}: {exc!r}")

    chaos = threading.Thread(target=killer, daemon=True)
    chaos.start()
    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(guarded, range(CYCLES)))
    stop.set()
    chaos.join()
    print(f"\n{CYCLES} cycles, {len(kills)} workers killed, {len(stuck)} creates interrupted, "
          f"{time.monotonic() - started:.1f}s")
    assert not errors, errors[:5]
    assert len(kills) >= 10

    os.killpg(plugin.proc.pid, signal.SIGKILL)  # and then the whole plugin, master and all
    plugin.proc.wait()
    plugin.proc = None
    plugin.start()

    listed = {v["Name"] for v in client.until_answered("List")["Volumes"]}
    assert listed == set(kept) | set(keepers), (listed ^ (set(kept) | set(keepers)))
    assert not listed & (removed | stuck)
    on_disk = set(os.listdir(plugin.root / "volumes"))
    assert on_disk == listed, on_disk ^ listed
    assert not (plugin.root / "trash").exists() or os.listdir(plugin.root / "trash") == []
    for name, digest in kept.items():
        assert _digest(plugin.data_dir(name) / "payload") == digest, name
        st = client.until_answered("Get", Name=name)["Volume"]["Status"]
        assert (st["uid"], st["mode"], st["mounts"], st["state"]) == (1000 + int(name[5:]), "0750", 0, "ok")
    for name, digest in keepers.items():
        assert _digest(plugin.data_dir(name) / "data.bin") == digest, name
        assert client.until_answered("Get", Name=name)["Volume"]["Status"]["mounts"] == 1
        assert plugin.is_mounted(plugin.mount_root / name), f"{name} is referenced but not bound"
    assert sorted(os.listdir(plugin.mount_root)) == sorted(keepers), "a bind outlived its references"
    print(plugin.log().count("recover: "), "recovery steps at restart")

    for name, mount_id in held.items():  # and everything still works: unmount, remove
        client.unmount(name, mount_id)
        assert not plugin.is_mounted(plugin.mount_root / name)
    for name in listed:
        assert client.until_answered("Remove", Name=name)["Err"] == ""
    assert os.listdir(plugin.root / "volumes") == []


@pytest.mark.engine
def test_dockerd_restarted_under_running_containers_brings_them_back_with_their_data(
        plugin_engine, make_plugin, ptracked, redis_image, unique_name):
    """Redis containers (restart unless-stopped) on ownvol volumes in bind-mount mode, one volume shared with
    a second container; the engine restarts; all come back by themselves, every key there, references right."""
    plugin = make_plugin(mount_root=True)
    client = plugin_engine.client()
    redises, ports = [], []
    for _ in range(4):
        name = unique_name("vol")
        create(client, plugin, ptracked, name, profile="redis")
        port = free_port()
        c = ptracked.run(redis_image, redis_cmd(port, "--appendfsync", "always", data_dir="/bound"), user="999:999",
                         network_mode="host", labels=NO_HOOK, restart_policy={"Name": "unless-stopped"},
                         volumes={name: {"bind": "/bound", "mode": "rw"}})
        redises.append((name, c))
        ports.append(port)
    shared = ptracked.run(redis_image, ["sleep", "infinity"], user="999:999", network_mode="none", labels=NO_HOOK,
                          restart_policy={"Name": "unless-stopped"},
                          volumes={redises[0][0]: {"bind": "/bound", "mode": "rw"}})
    for (name, _), port in zip(redises, ports, strict=True):
        r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
        wait_for(r.ping, 60, what=f"redis on {port}")
        for k in range(100):
            r.set(f"{name}:{k}", k)

    client = plugin_engine.restart()

    for c in [*(c for _, c in redises), shared]:
        wait_for(lambda c=c: client.containers.get(c.id).status == "running", 120, what=f"{c.name} back")
    for (name, _), port in zip(redises, ports, strict=True):
        r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
        wait_for(r.ping, 60, what=f"redis on {port} after the restart")
        assert r.mget([f"{name}:{k}" for k in range(100)]) == [str(k).encode() for k in range(100)]
        assert status(client, name)["mounts"] == (2 if name == redises[0][0] else 1)
        assert plugin.is_mounted(plugin.mount_root / name)
    for _, c in redises:
        client.containers.get(c.id).stop(timeout=10)
    client.containers.get(shared.id).stop(timeout=10)
    assert all(status(client, name)["mounts"] == 0 for name, _ in redises)
    assert not any(plugin.is_mounted(plugin.mount_root / name) for name, _ in redises)
