"""The driver on a real engine under the faults of real hosts: dockerd SIGKILLed under running containers
(case 09), an adopted mount point whose filesystem is gone (case 10), a sidecar mounting a running database's
volume (case 12)."""

from __future__ import annotations

import os
import re
import subprocess

import docker
import pytest

from tests.support.common import new_name
from tests.support.driver import NO_HOOK, create, redis_answers, run_redis, status
from tests.support.engine import wait_for
from tests.support.fixtures_plugin import OWNVOL, PluginEngine, PluginProcess

pytestmark = pytest.mark.engine


@pytest.fixture
def killable_engine(redis_image):
    """A plugin engine of the test's own (it gets SIGKILLed) with a legacy plugin in its namespace."""
    engine = PluginEngine(new_name("keng"))
    plugin = None
    try:
        engine.start()
        engine.load_image(redis_image)
        plugin = PluginProcess(engine).start()
        yield engine, plugin
    finally:
        if plugin:
            plugin.destroy()
        engine.destroy()


def sleeper(client, image: str, volume: str, **kw):
    return client.containers.run(image, ["sleep", "infinity"], detach=True, network_mode="none", labels=NO_HOOK,
                                 mounts=[docker.types.Mount("/data", volume, type="volume", no_copy=True)], **kw)


def test_dockerd_killed_under_running_containers_leaves_no_reference_behind(killable_engine, redis_image):
    engine, plugin = killable_engine
    client = engine.client()
    names = [f"v{k}" for k in range(4)]
    for name in names:
        client.volumes.create(name, driver=plugin.name, driver_opts={"profile": "redis"})
    plain = [sleeper(client, redis_image, n) for n in names[:3]]
    always = sleeper(client, redis_image, names[3], restart_policy={"Name": "always"})
    assert [status(client, n)["mounts"] for n in names] == [1, 1, 1, 1]
    engine.kill()  # no Unmount will ever come for these mounts
    client = engine.start()
    wait_for(lambda: client.containers.get(always.id).status == "running", 60, what="the --restart always container")
    for container in plain:
        client.containers.get(container.id).remove(force=True)
    for name in names[:3]:
        client.volumes.get(name).remove()  # at once: no "in use"
        assert not plugin.data_dir(name).exists()
    assert "event=references-dropped" in plugin.log()
    activations = re.findall(r"event=engine-activated pid=(\d+) epoch=(\d+)", plugin.log())
    assert len({pid for pid, _ in activations}) == 2 and activations[-1][1] == "2", activations  # the restart seen
    # the restarted container holds its volume: a new reference, live
    assert status(client, names[3])["mounts"] == 1
    assert "in use" in plugin.err("Remove", Name=names[3])
    listing = subprocess.run([OWNVOL, "volumes", "--socket",
                              plugin.socket, "--json"], capture_output=True, text=True, check=True).stdout
    assert '"live": [' in listing and "(sleep) at /data" in listing
    assert "in use" in subprocess.run([OWNVOL, "volumes", "--socket", plugin.socket, "--release",
                                       names[3], "--yes"], capture_output=True, text=True).stderr
    client.containers.get(always.id).stop(timeout=1)
    client.containers.get(always.id).remove()
    client.volumes.get(names[3]).remove()
    assert client.volumes.list(filters={"driver": plugin.name}) == []


def test_an_adopted_mount_point_whose_filesystem_is_gone_is_refused(make_plugin, engine_client, ptracked,
                                                                    redis_image, unique_name, port):
    plugin = make_plugin()
    disk = plugin.adopt / "disk"
    disk.mkdir()
    in_namespace = plugin.engine._namespace()
    subprocess.run([*in_namespace, "mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], check=True)
    try:
        name = unique_name("vol")
        create(engine_client, plugin, ptracked, name, profile="redis", path=str(disk))
        assert "tmpfs tmpfs mounted at " + str(disk) in status(engine_client, name)["data"]
        container = run_redis(ptracked, redis_image, name, port)
        redis_answers(port).set("precious", "1")
        container.stop(timeout=10)
    finally:
        subprocess.run([*in_namespace, "umount", str(disk)], check=True)
    before = os.lstat(disk)
    with pytest.raises(docker.errors.APIError) as refused:
        container.start()
    assert "is not the one it was created with: it was on tmpfs tmpfs mounted at" in str(refused.value)
    assert "(the filesystem is not mounted?)" in str(refused.value)
    after = os.lstat(disk)
    assert os.listdir(disk) == [] and (after.st_uid, after.st_gid, after.st_mode) == \
        (before.st_uid, before.st_gid, before.st_mode)
    assert status(engine_client, name)["mounts"] == 0
    assert "refused: its data directory" in status(engine_client, name)["last_check_result"]


def test_a_sidecar_mounting_a_running_servers_volume_walks_nothing(make_plugin, engine_client, ptracked,
                                                                   redis_image, unique_name):
    plugin = make_plugin()
    name = unique_name("vol")
    create(engine_client, plugin, ptracked, name, profile="postgres")
    data = "/var/lib/postgresql/data"
    writer = ptracked.run(redis_image, ["sh", "-c", f"""
        chown -R 70:70 {data}; chmod 700 {data}
        exec setpriv --reuid=70 --regid=70 --clear-groups sh -c '
          while :; do date > {data}/hb.tmp && mv {data}/hb.tmp {data}/hb && echo ok || echo WRITE-FAILED; sleep 0.2
          done'"""], user="0:0", network_mode="none", labels=NO_HOOK,
        mounts=[docker.types.Mount(data, name, type="volume", no_copy=True)])
    wait_for(lambda: b"ok" in writer.logs(), 30, what="the uid-70 writer")
    before = status(engine_client, name)
    for _ in range(4):
        sidecar = ptracked.run(redis_image, ["ls", "-ldn", "/backup"], network_mode="none", labels=NO_HOOK,
                               mounts=[docker.types.Mount("/backup", name, type="volume", no_copy=True,
                                                          read_only=True)])
        assert sidecar.wait(timeout=30)["StatusCode"] == 0
    subprocess.run(["docker", "-H", plugin.engine.host, "cp", f"{writer.id}:{data}/hb", "-"], check=True,
                   stdout=subprocess.DEVNULL)
    after = status(engine_client, name)
    assert after["last_repair"] == before["last_repair"], "a walk under the running server"
    assert after["last_check_result"] == "mismatch, not repaired (held by a live mount): owner 70:70, want 999:999"
    st = os.lstat(plugin.data_dir(name) / "hb")
    assert (st.st_uid, st.st_gid) == (70, 70)
    writer.reload()
    assert writer.status == "running" and b"WRITE-FAILED" not in writer.logs()
