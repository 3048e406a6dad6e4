"""Where the time goes: py-spy on a process while a benchmark measures it, and a plain-text summary.

    OWNVOL_BENCH_PROFILE=/tmp/prof make bench BENCH="mount watcher"   # records while measuring
    python -m bench.profile /tmp/prof/watcher-50.txt [FILTER]           # top frames, self and inclusive

py-spy samples from outside (--nonblocking: the target is never paused), so the figure measured
beside it stays the target's own; the sampler's CPU still loads the machine, so compare runs alike.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROFILE_DIR = os.environ.get("OWNVOL_BENCH_PROFILE", "")


def _py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


@contextmanager
def profiled(pid: int, name: str, subprocesses: bool = False, idle: bool = False) -> Iterator[None]:
    """With OWNVOL_BENCH_PROFILE=DIR set, record pid's stacks into DIR/<name>.txt (collapsed) meanwhile."""
    spy = _py_spy()
    if not PROFILE_DIR or not spy:
        if PROFILE_DIR:
            print("bench: OWNVOL_BENCH_PROFILE is set but py-spy is not installed (scripts/venv.sh)", file=sys.stderr)
        yield
        return
    os.makedirs(PROFILE_DIR, exist_ok=True)
    out = os.path.join(PROFILE_DIR, f"{name}.txt")
    cmd = [spy, "record", "--pid", str(pid), "--format", "raw", "--output", out, "--rate", "100", "--nonblocking"]
    cmd += ["--subprocesses"] * subprocesses + ["--idle"] * idle
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print(f"bench: profile of {name} in {out}", flush=True)


def summary(path: str, only: str = "", top: int = 25) -> str:
    """The frames that hold the most samples, by themselves (self) and with what they call (inclusive)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or (only and not any(only in f for f in frames)):
            continue
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    lines = [f"{total} samples" + (f" with a frame matching {only!r}" if only else ""), "self:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["inclusive:"] + [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(sys.argv[1], *sys.argv[2:3]))
