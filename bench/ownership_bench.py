"""repair_vs_chown_ratio: ownvol's full repair against GNU `chown -R` on identical trees."""

from __future__ import annotations

import os
import shutil
import subprocess

from bench.common import Result, interleave, make_tree, median, timed
from ownvol import ownership

WORK = os.environ.get("OWNVOL_BENCH_DIR", "/var/tmp/ownvol-bench")
RATIO_GOAL = 0.8  # issue 28


def repair_vs_chown(files: int = 100_000, runs: int = 5) -> list[Result]:
    ours, theirs = os.path.join(WORK, "repair"), os.path.join(WORK, "chown")

    def run_repair(_: int) -> float:
        make_tree(ours, files)
        return timed(lambda: ownership.repair(ours, 999, 999))

    def run_chown(_: int) -> float:
        make_tree(theirs, files)
        return timed(lambda: subprocess.run(["chown", "-R", "999:999", theirs], check=True))

    try:
        repair_s, chown_s = interleave(runs, run_repair, run_chown)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    ratio = median(repair_s) / median(chown_s)
    return [
        Result("repair_vs_chown_ratio", round(ratio, 3), "ratio", "GNU chown -R", 1.0, f"<= {RATIO_GOAL:g}",
               f"{files} files, {runs} runs each interleaved; median repair {median(repair_s):.3f} s, "
               f"chown -R {median(chown_s):.3f} s", ratio <= RATIO_GOAL),
    ]
