"""What the driver and hook benchmarks share beyond bench.common: load notes, percentiles, scratch dirs."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# not OWNVOL_BENCH_DIR: the repair benchmark empties that one whole, whoever else is using it
SCRATCH = os.environ.get("OWNVOL_BENCH_SCRATCH", "/var/tmp/ownvol-bench-runs")


def load_note() -> str:
    """The machine's load averages now: these runs share 2 cores with other developers."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f}/{five:.2f}/{fifteen:.2f} (1/5/15 min) on {os.cpu_count()} cores"


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank q-th percentile (q in 0..100) of values."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User+system CPU a process (and, with children, its live children: gunicorn's workers) has used."""
    pids = [pid]
    if children:
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    total = 0
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@contextmanager
def scratch(prefix: str) -> Iterator[str]:
    """A root-owned directory of this run's own under SCRATCH, removed afterwards whatever happened."""
    os.makedirs(SCRATCH, exist_ok=True)
    path = tempfile.mkdtemp(prefix=prefix, dir=SCRATCH)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        try:
            os.rmdir(SCRATCH)  # only when no other run is using it
        except OSError:
            pass
