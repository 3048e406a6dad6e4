"""`make demo` (scripts/demo.sh) against a hook of the test's own: its address, journal and selector label given to
the script as make up's would be by default. The seed's crash, the heal, the incident and the cleanup, also on
Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import docker
import pytest

from tests.support.common import ROOT
from tests.support.engine import wait_for

pytestmark = pytest.mark.engine

CANARY = "Can't open or create append-only dir appendonlydir: Permission denied"


def demo_env(h, redis_image: str) -> dict[str, str]:
    return {**os.environ, "DEMO_HOOK_ADDR": f"127.0.0.1:{h.port}", "DEMO_HOOK_STATE": str(h.state_dir),
            "DEMO_HOOK_LOG": str(h.state_dir / "no-log-here"), "DEMO_LABEL": f"ownvol.hook={h.id}",
            "REDIS_IMAGE": redis_image}


def demo_leftovers(client: docker.DockerClient, pid: int, out: str) -> list[str]:
    """The demo's container (named after its pid) and directories (named in its output) still there."""
    containers = [c["Names"][0] for c in client.api.containers(all=True, filters={"name": f"ownvol-demo-{pid}"})]
    dirs = set(re.findall(r"/var/tmp/ownvol-demo\.\w+", out))
    assert dirs, out
    return containers + [d for d in dirs if os.path.exists(d)]


def test_demo_shows_the_crash_the_heal_and_the_incident_then_cleans_up(hook, redis_image, docker_client):
    h = hook()
    done = subprocess.run([str(ROOT / "scripts" / "demo.sh")], env=demo_env(h, redis_image), capture_output=True,
                          text=True, timeout=300)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "owned by root:root" in out and CANARY in out
    assert "health healthy" in out
    assert "PING PONG" in out and "SET OK" in out and "aof_enabled 1" in out and "is now 999:999" in out
    assert "permission-denied from its log" in out and "resolved, verified healthy after repair-ownership" in out
    assert f"the status page: http://127.0.0.1:{h.port}/" in out
    assert "removed the container ownvol-demo-" in out and "removed /var/tmp/ownvol-demo." in out
    name = out.split("removed the container ")[1].split()[0]
    assert any(e["event"] == "recovered" and e.get("container") == name for e in h.events)
    assert not demo_leftovers(docker_client, int(name.rsplit("-", 1)[1]), out)


def test_demo_interrupted_removes_its_container_and_directory(hook, redis_image, docker_client):
    """Ctrl-C (SIGINT to the demo's process group) once its Redis runs: nothing of it is left. The container gets a
    label the hook does not select, so the demo is still waiting for a heal when Ctrl-C comes (the hook heals the
    seed's crash in about 0.4 s, the whole demo could be over before the signal)."""
    h = hook()
    env = {**demo_env(h, redis_image), "DEMO_LABEL": f"ownvol.hook=not-{h.id}"}
    proc = subprocess.Popen([str(ROOT / "scripts" / "demo.sh")], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: docker_client.api.containers(all=True, filters={"name": f"ownvol-demo-{proc.pid}"}), 120,
                 what="the demo's Redis to exist")
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out
    assert "interrupted" in out and "removed the container" in out and "removed /var/tmp/ownvol-demo." in out
    assert not demo_leftovers(docker_client, proc.pid, out)
