"""A hook SIGKILLed while its repair helper runs leaves the helper behind; the next hook to start removes it, and
never the helper of a hook that still runs (hooks/repair_helpers.py)."""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import pytest

from ownvol.hook.repair_helpers import hook_container_alive, own_container, this_process
from tests.support.common import free_port, new_name
from tests.support.engine import wait_for
from tests.support.fixtures_hook import fast_strategies, run_redis

pytestmark = pytest.mark.engine


def root_owned(path: Path) -> Path:
    """A root-owned data dir with enough entries that its helper is still walking when the test acts on it."""
    path.mkdir()
    for d in range(4):
        (path / f"d{d}").mkdir()
        for f in range(500):
            (path / f"d{d}" / f"f{f}").touch()
    os.chown(path, 0, 0)
    return path


def test_a_killed_hooks_leftover_helper_is_removed_and_a_live_hooks_is_not(hook, tracked, docker_client, redis_image,
                                                                            ownvol_image, tmp_path):
    route = ("--repair-via", "helper", "--helper-image", ownvol_image)
    strategies = fast_strategies(tmp_path / "s.yaml")
    with ThreadPoolExecutor(2) as pool:  # two hooks start in the time of one
        killed, stopped = pool.map(lambda d: hook(strategies=strategies, extra=route, state_dir=tmp_path / d),
                                   ("killed", "stopped"))
    on_start: dict[str, Callable[[], None]] = {}  # repaired container -> what befalls its hook once its helper runs
    helpers: dict[str, str] = {}  # repaired container -> its helper's name
    stream = docker_client.api.events(decode=True, filters={"type": "container", "event": "start",
                                                            "label": "ownvol.role=repair-helper"})

    def watch() -> None:
        for event in stream:
            attributes = event["Actor"]["Attributes"]
            repaired = attributes.get("ownvol.repair.for")
            if repaired in on_start and repaired not in helpers:
                on_start[repaired]()
                helpers[repaired] = tracked.container(attributes["name"])

    threading.Thread(target=watch, daemon=True).start()
    try:
        for h, befall in ((killed, killed.kill), (stopped, stopped.pause)):
            name = new_name()
            on_start[name] = befall
            run_redis(tracked, redis_image, free_port(), root_owned(tmp_path / name), h.labels, restart=True,
                      name=name)
        wait_for(lambda: len(helpers) == 2, 120, what="both hooks' helpers to start")
    finally:
        stream.close()
    left, live = (helpers[name] for name in on_start)
    assert killed.proc.poll() is not None and stopped.proc.poll() is None
    wait_for(lambda: all(docker_client.containers.get(h).status == "exited" for h in (left, live)), 60,
             what="both helpers to finish their walk")

    sweeper = hook()
    removed = [e["helper"] for e in sweeper.of("helper-removed")]
    kept = {e["helper"]: e["why"] for e in sweeper.of("helper-kept")}
    # Every hook sweeps the engine's helpers at its start, whatever its selector: on this shared engine a hook that
    # another test started meanwhile may have removed the leftover first (a CI run, two workers). Either way it is
    # gone and the live hook's helper is not.
    assert left in removed or not docker_client.containers.list(all=True, filters={"name": left}), sweeper.events
    assert live not in removed, sweeper.events
    assert f"its hook (pid {stopped.proc.pid}) runs" == kept[live]
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(left)

    stopped.resume()  # the live hook goes on: it reads its helper's report and removes the helper itself
    wait_for(lambda: not docker_client.containers.list(all=True, filters={"name": live}), 60,
             what="the live hook to remove its own helper")


def test_a_container_hook_is_known_by_its_container_and_judged_by_its_start(tracked, docker_client, redis_image):
    """A hook in a container of its own (examples/compose.yaml) sees no other pid namespace: its helpers name its
    container, read from its mountinfo, and its hook is gone once that container stopped or started again."""
    hook_box = tracked.run(redis_image, ["sleep", "infinity"], network_mode="none")
    mountinfo = hook_box.exec_run(["cat", "/proc/self/mountinfo"]).output.decode()
    assert own_container(mountinfo) == hook_box.id
    owner = dataclasses.replace(this_process(), instance="elsewhere", pidns="pid:[1]", container=hook_box.id)

    def helper_created() -> str:
        return docker_client.containers.create(redis_image, ["true"], name=tracked.container(new_name()),
                                               network_mode="none", labels=tracked.labels).attrs["Created"]

    made = helper_created()
    assert hook_container_alive(docker_client, owner, made)[0] is True
    hook_box.restart(timeout=0)
    assert hook_container_alive(docker_client, owner, made)[0] is False
    assert hook_container_alive(docker_client, owner, helper_created())[0] is True
    hook_box.stop(timeout=0)
    assert hook_container_alive(docker_client, owner, made)[0] is False
    gone = dataclasses.replace(owner, container="0" * 64)
    assert hook_container_alive(docker_client, gone, made)[0] is None  # not on this engine: not judged
