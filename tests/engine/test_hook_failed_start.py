"""A container whose start failed because the driver was killed mid-Mount: the hook starts it again when its restart
policy says its user wants it running (hooks/failed_starts.py), and leaves it to its user with policy `no`.

The driver (its own, on the driver tests' private engine, its socket held as systemd holds ownvol-plugin.socket) is
SIGKILLed, whole group, while a Mount walks a 30,000-file tree given to root, and started again; dockerd's plugin
client retries the cut Mount with an empty body (moby pkg/plugins/client.go callWithRetry), the driver answers
"Name is required" and `docker start` fails: State.Error names VolumeDriver.Mount, and Docker retries no failed start.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import docker
import pytest
import redis

from tests.support.driver import create, status
from tests.support.engine import redis_cmd, wait_for
from tests.support.fixtures_plugin import PluginProcess

pytestmark = pytest.mark.engine

TREE = (30, 1000)  # directories of files, all given to root: the Mount walks them
OWNER = (999, 999)  # the redis profile's


def fill(path: str) -> None:
    dirs, files = TREE
    for d in range(dirs):
        os.mkdir(os.path.join(path, f"d{d}"))
        for f in range(files):
            with open(os.path.join(path, f"d{d}", f"f{f}"), "w") as out:
                out.write(f"{d}/{f}")
    for top, subdirs, names in os.walk(path):
        for entry in [top, *(os.path.join(top, n) for n in subdirs + names)]:
            os.lchown(entry, 0, 0)


def failed_start_mid_mount(client: docker.DockerClient, plugin: PluginProcess, ptracked, image: str, volume: str,
                           port: int, policy: str, labels: dict[str, str]):
    """A Redis container on the volume, started while the driver is SIGKILLed in its Mount's walk and started
    again; the container, after its `docker start` failed with the engine's words (asserted)."""
    host_dir = str(plugin.data_dir(volume))
    fill(host_dir)
    name = ptracked.container(f"{volume}-redis")
    container = client.containers.create(
        image, redis_cmd(port), name=name, network_mode="host", user="999:999",
        mounts=[docker.types.Mount("/data", volume, type="volume", no_copy=True)],
        labels={**ptracked.labels, **labels}, restart_policy={"Name": policy})
    outcome: dict[str, str] = {}

    def start() -> None:
        try:
            container.start()
            outcome["started"] = "yes"
        except docker.errors.APIError as exc:
            outcome["error"] = str(exc.explanation or exc)

    starter = threading.Thread(target=start, daemon=True)
    starter.start()
    wait_for(lambda: os.stat(host_dir).st_uid == OWNER[0] or not starter.is_alive(), 30, interval=0.005,
             what="the Mount's walk to begin (the volume's root repaired first)")
    assert starter.is_alive(), f"the start ended before the walk could be cut: {outcome}"
    os.killpg(plugin.proc.pid, signal.SIGKILL)
    plugin.proc.wait()
    plugin.start(timeout=60)
    starter.join(120)
    assert "VolumeDriver.Mount" in outcome.get("error", ""), f"docker start did not fail on the Mount: {outcome}"
    container.reload()
    assert container.status in ("created", "exited") and "VolumeDriver.Mount" in container.attrs["State"]["Error"]
    return container


@pytest.fixture
def held_plugin(make_plugin) -> PluginProcess:
    plugin = make_plugin(start=False)
    plugin.hold_socket()
    return plugin.start()


@pytest.mark.parametrize("policy", ["unless-stopped", "always"])
def test_a_start_failed_on_the_drivers_mount_is_started_by_the_hook(plugin_engine, engine_client, held_plugin,
                                                                    ptracked, redis_image, unique_name, port, hook,
                                                                    policy):
    h = hook(env={"DOCKER_HOST": plugin_engine.host, "OWNVOL_DRIVER_NAME": held_plugin.name})
    volume = unique_name("fsv")
    create(engine_client, held_plugin, ptracked, volume, profile="redis")
    container = failed_start_mid_mount(engine_client, held_plugin, ptracked, redis_image, volume, port, policy,
                                       h.labels)
    failed_at = time.monotonic()
    incident = h.wait_event(lambda e: e["event"] == "incident" and e.get("container") == container.name, 30,
                            "the hook to open an incident on the failed start")
    assert incident["type"] == "mount-failed" and incident["origin"] == "engine"
    assert "VolumeDriver.Mount" in incident["detail"]["message"] and incident["detail"]["plan"] == ["start"]
    opened = incident["incident"]
    action = h.wait_event(lambda e: e["event"] == "action" and e.get("incident") == opened, 60, "the hook's start")
    assert (action["action"], action["result"], action["verified"]) == ("start", "ok", True), action
    recovered = h.wait_event(lambda e: e["event"] in ("recovered", "gave-up") and e.get("incident") == opened, 30,
                             "the incident's end")
    assert recovered["event"] == "recovered" and recovered["by"] == "start", recovered
    print(f"\n{policy}: started by the hook {time.monotonic() - failed_at:.2f}s after the failed start "
          f"(incident to recovered {recovered['seconds']}s)")
    container.reload()
    assert container.status == "running"
    assert redis.Redis(host="127.0.0.1", port=port, socket_timeout=2).set("after", "start")
    assert status(engine_client, volume)["mounts"] == 1


def test_a_failed_start_with_policy_no_is_left_to_its_user(plugin_engine, engine_client, held_plugin, ptracked,
                                                           redis_image, unique_name, port, hook):
    h = hook(env={"DOCKER_HOST": plugin_engine.host, "OWNVOL_DRIVER_NAME": held_plugin.name})
    volume = unique_name("fsv")
    create(engine_client, held_plugin, ptracked, volume, profile="redis")
    container = failed_start_mid_mount(engine_client, held_plugin, ptracked, redis_image, volume, port, "no",
                                       h.labels)
    left = h.wait_event(lambda e: e["event"] == "start-failure-left" and e.get("container") == container.name, 30,
                        "the hook to say it leaves the failed start to its user")
    assert "restart policy is \"no\"" in left["why"] and "VolumeDriver.Mount" in left["error"]
    time.sleep(5)  # five more of the hook's periodic checks
    container.reload()
    assert container.status in ("created", "exited")
    assert not [e for e in h.events if e.get("container") == container.name and e["event"] in ("incident", "action")]
    container.start()  # the user's own start: the driver answers, the Mount walks again
    wait_for(lambda: container.reload() or container.status == "running", 60, what="the user's start")
