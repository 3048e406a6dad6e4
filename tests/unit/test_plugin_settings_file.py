"""scripts/plugin.sh set: a settings file is checked line by line before any engine is asked."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.common import ROOT


def apply(path: Path) -> subprocess.CompletedProcess:
    # NODES names an engine that does not exist: a file refused before any engine is asked never reaches it
    return subprocess.run([str(ROOT / "scripts" / "plugin.sh"), "set", str(path)], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "NODES": "unix:///nonexistent/docker.sock"}, timeout=60)


def apply_text(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    """apply() on a settings file of text."""
    path = tmp_path / "ownvol.settings"
    path.write_text(text)
    return apply(path)


def test_a_line_that_is_not_key_value_is_named_with_its_number(tmp_path):
    done = apply_text(tmp_path, "# defaults for every node\nOWNVOL_LOG_LEVEL=DEBUG\nOWNVOL_WORKERS 2\n")
    assert done.returncode == 1
    assert "line 3: 'OWNVOL_WORKERS 2' is not KEY=VALUE" in done.stderr
    assert "nonexistent" not in done.stderr  # no node was touched, not even with the good lines


def test_a_file_of_comments_only_sets_nothing(tmp_path):
    done = apply_text(tmp_path, "# nothing yet\n\n")
    assert done.returncode == 1 and "no settings in" in done.stderr


def test_a_missing_file_is_named(tmp_path):
    done = apply(tmp_path / "absent")
    assert done.returncode == 1 and f"cannot read settings file {tmp_path / 'absent'}" in done.stderr


def test_good_lines_reach_the_engine_step(tmp_path):
    done = apply_text(tmp_path, "OWNVOL_LOG_LEVEL=DEBUG  # chatty\ndata.source=/srv/ownvol\n")
    assert done.returncode == 1
    assert "unix:///nonexistent/docker.sock: no plugin ownvol" in done.stderr
