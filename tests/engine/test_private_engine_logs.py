"""Private engines' dockerd logs: removed after a passing test, kept and named in the report of a failing one
(tests/conftest.py pytest_runtest_makereport, tests/support/engine.py settle_logs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.common import ROOT

pytestmark = pytest.mark.engine

INNER = '''
import os
from pathlib import Path


def test_passes(private_engine):
    private_engine.start()
    Path(os.environ["OVT_RECORD"], "passed").write_text(private_engine.log_path)


def test_fails(private_engine):
    private_engine.start()
    Path(os.environ["OVT_RECORD"], "failed").write_text(private_engine.log_path)
    assert False, "failed on purpose"
'''


def test_a_passing_tests_engine_log_is_removed_a_failing_ones_kept_and_named(tmp_path):
    (tmp_path / "test_inner.py").write_text(INNER)
    record = tmp_path / "record"
    record.mkdir()
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
                          "-p", "no:xdist", "--rootdir", str(tmp_path), str(tmp_path / "test_inner.py")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OVT_RECORD": str(record)})
    kept = (record / "failed").read_text()
    try:
        assert "1 failed, 1 passed" in run.stdout, run.stdout[-3000:]
        assert not os.path.exists((record / "passed").read_text())
        assert os.path.exists(kept)
        assert "private engines' dockerd logs (kept)" in run.stdout and kept in run.stdout, run.stdout[-3000:]
    finally:
        Path(kept).unlink(missing_ok=True)
