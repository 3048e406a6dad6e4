"""A compose file that declares an ownvol volume with driver_opts (Compose v2)."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.support.driver import NO_HOOK, redis_answers
from tests.support.engine import compose_binary, redis_cmd

pytestmark = pytest.mark.engine
COMPOSE = compose_binary()


def test_compose_volume_with_driver_opts(plugin_engine, ownvol_plugin, engine_client, redis_image, unique_name, port,
                                         tmp_path):
    project = unique_name("proj")
    spec = {
        "services": {"redis": {
            "image": redis_image, "user": "999:999", "network_mode": "host", "labels": NO_HOOK,
            "command": redis_cmd(port, data_dir="/bound"), "volumes": ["data:/bound"],
        }},
        "volumes": {"data": {"driver": ownvol_plugin.name, "driver_opts": {"profile": "redis", "mode": "0750"}}},
    }
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(spec))
    env = {"PATH": "/usr/bin:/bin", "DOCKER_HOST": plugin_engine.host}

    def compose(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([COMPOSE, "-p", project, "-f", str(tmp_path / "compose.yaml"), *args], env=env,
                              capture_output=True, text=True, timeout=300)

    try:
        up = compose("up", "-d")
        assert up.returncode == 0, up.stderr
        redis_answers(port).set("k", "v")
        volume = engine_client.api.inspect_volume(f"{project}_data")
        assert volume["Driver"] == ownvol_plugin.name
        assert (volume["Status"]["uid"], volume["Status"]["mode"], volume["Status"]["mounts"]) == (999, "0750", 1)
        assert (ownvol_plugin.data_dir(f"{project}_data") / "appendonlydir").is_dir()
    finally:
        down = compose("down", "-v", "--timeout", "5")
    assert down.returncode == 0, down.stderr
    assert f"{project}_data" not in [v["Name"] for v in ownvol_plugin.call("List")["Volumes"]]
    assert not ownvol_plugin.data_dir(f"{project}_data").exists()
    assert f"{project}_data" not in plugin_engine.docker("volume", "ls", "--format", "{{.Name}}").stdout.split()
