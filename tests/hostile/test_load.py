"""Load: fifty containers started at once, each on an ownvol volume of its own made as it starts."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from docker.types import DriverConfig, Mount

from tests.support.driver import NO_HOOK, status
from tests.support.engine import wait_for

pytestmark = [pytest.mark.engine, pytest.mark.load]
COUNT = 50

# As uid 999: the volume must already be ours; write, then stay up so every mount is held at once.
SCRIPT = """set -e
test "$(stat -c %u:%g /bound)" = 999:999
mkdir /bound/sub
head -c 262144 /dev/urandom > /bound/sub/blob
sha256sum /bound/sub/blob | cut -d' ' -f1 > /bound/sum
touch /bound/ready
exec sleep 600
"""


def test_fifty_containers_at_once_on_fifty_volumes(make_plugin, engine_client, ptracked, redis_image, unique_name):
    plugin = make_plugin(mount_root=True)
    names = [ptracked.volume(unique_name("load")) for _ in range(COUNT)]

    def start(name: str):
        mount = Mount("/bound", name, type="volume", labels=ptracked.labels,
                      driver_config=DriverConfig(plugin.name, {"profile": "redis"}))
        return ptracked.run(redis_image, ["sh", "-c", SCRIPT], user="999:999", network_mode="none", labels=NO_HOOK,
                            mounts=[mount])

    with ThreadPoolExecutor(COUNT) as pool:
        containers = list(pool.map(start, names))
    for name, c in zip(names, containers, strict=True):
        ready = plugin.data_dir(name) / "ready"
        wait_for(lambda c=c, ready=ready: ready.exists() or c.reload() or c.status != "running", 180,
                 what=f"{c.name} to write its volume")
        c.reload()
        assert c.status == "running", (c.name, c.logs()[-500:])

    for name in names:
        data = plugin.data_dir(name)
        st = status(engine_client, name)
        assert (st["uid"], st["gid"], st["mounts"], st["state"], st["profile"]) == (999, 999, 1, "ok", "redis")
        assert (data.stat().st_uid, data.stat().st_gid) == (999, 999)
        blob = (data / "sub" / "blob").read_bytes()
        assert len(blob) == 262144 and hashlib.sha256(blob).hexdigest() == (data / "sum").read_text().strip()
        assert plugin.is_mounted(plugin.mount_root / name)
    assert {v["Name"] for v in plugin.call("List")["Volumes"]} == set(names)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda c: c.stop(timeout=1), containers))
    for name in names:
        assert status(engine_client, name)["mounts"] == 0
        assert not plugin.is_mounted(plugin.mount_root / name)
    errors = [line for line in plugin.log().splitlines() if "outcome=err" in line and "no such volume" not in line]
    assert "Traceback" not in plugin.log() and not errors, errors[:3]  # a Get before each Create is the daemon's way
