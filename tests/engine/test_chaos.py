"""The chaos run of `make chaos` for two minutes, seeded (tests/chaos; docs/development.md, The chaos run): every
fault kind but the SQL servers' MariaDB on a smaller set of servers, every invariant checked by the runner itself
(acknowledged writes kept, control untouched, every fault healed within the bound, no stuck reference, nothing left
behind)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.chaos.schedule import KINDS
from tests.support.common import ROOT

pytestmark = pytest.mark.engine

SEED = 2712
DURATION = 120


def test_a_two_minute_seeded_chaos_run_keeps_every_invariant(tmp_path):
    out = tmp_path / "chaos.json"
    run = subprocess.run([sys.executable, "-m", "tests.chaos", "--duration", str(DURATION), "--seed", str(SEED),
                          "--servers", "small", "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    print(run.stdout[-6000:])
    assert run.returncode == 0, f"{run.stdout[-4000:]}\n{run.stderr[-3000:]}"
    result = json.loads(out.read_text())
    assert result["broken"] == []
    kinds = {f["kind"] for f in result["faults"]}
    assert len(result["faults"]) >= 5 and kinds <= set(KINDS), kinds
    assert all(f["heal"] is not None for f in result["faults"])
    assert min(result["acknowledged"].values()) > 0, result["acknowledged"]
