"""`ownvol repair` on a real crashed Redis whose data dir holds a large root-owned tree, repaired here or in the
helper container: the repair's progress and summary on stdout (entries walked and changed, rate), the hook's
JSON events on stderr, Redis healed."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.engine import wait_for
from tests.support.fixtures_hook import OWNVOL, fast_strategies, run_redis

pytestmark = pytest.mark.engine

DIRS, FILES = 40, 250


@pytest.mark.parametrize("route", ["local", "helper"])
def test_repair_shows_the_walk_and_a_summary(tracked, redis_image, host_dir, port, tmp_path, route, request):
    image = request.getfixturevalue("ownvol_image") if route == "helper" else "unused"
    for d in range(DIRS):
        sub = host_dir / "bulk" / f"d{d:02}"
        sub.mkdir(parents=True)
        for f in range(FILES):
            (sub / f"f{f:03}").touch()
    canary = run_redis(tracked, redis_image, port, host_dir, {"ownvol.watch": "false"})
    wait_for(lambda: tracked.client.containers.get(canary.id).status == "exited", 60, what="the canary to crash")
    env = {"COLUMNS": "200", "PATH": "/usr/bin:/bin", "OWNVOL_IMAGE": image}
    done = subprocess.run([OWNVOL, "repair", canary.name, "--state-dir", str(tmp_path / "state"), "--repair-via",
                           route, "--strategies", str(fast_strategies(tmp_path / "s.yaml"))], capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    entries = 1 + 1 + DIRS * (1 + FILES)  # the data dir, bulk/, each dN/ and its files
    summary = next(line for line in done.stdout.splitlines() if "repair-ownership" in line)
    assert f"{entries:,} walked, {entries:,} changed in" in summary and "entries/s" in summary
    assert f"({route})" in summary
    # the progress line's last state: through the helper, from its stderr as it went
    assert f"{entries:,} walked" in done.stdout.split("incident #")[0]
    assert "resolved" in done.stdout
    assert '"event": "recovered"' in done.stderr and '"event"' not in done.stdout
    assert tracked.client.containers.get(canary.id).status == "running"
