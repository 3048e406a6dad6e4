"""The hook's seams: the recovery engine knows strategies and outcomes, not Docker or Redis."""

from __future__ import annotations

import json
import subprocess
import sys


def _loaded_after(module: str) -> set[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {name.split(".")[0] for name in json.loads(out)}


def test_the_recovery_engine_loads_neither_docker_nor_redis():
    loaded = _loaded_after("ownvol.hook.recovery")
    assert "ownvol" in loaded
    assert not {"docker", "redis"} & loaded

