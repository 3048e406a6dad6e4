"""The hook raises its soft open-files limit to the hard one at start (a descriptor or two per watched container)."""

from __future__ import annotations

import resource
import subprocess
import sys


def test_the_soft_open_files_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, hard)

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    code = ("import resource; from ownvol.hook.assembly import open_files_limit; "
            "before = resource.getrlimit(resource.RLIMIT_NOFILE)[0]; print(before, *open_files_limit(), "
            "resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    out = subprocess.run([sys.executable, "-c", code], preexec_fn=lower, capture_output=True, text=True, check=True)
    before, after, reported_hard, now = map(int, out.stdout.split())
    assert before == low and (after, reported_hard, now) == (hard, hard, hard), out.stdout
