"""The wheel `python -m build` makes: it installs in a fresh venv, `ownvol --help` runs, nothing is importable as
`plugin` or `hooks`, and `ownvol repair-mount` (the helper container's command) loads the core alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.common import ROOT

pytestmark = pytest.mark.slow
_NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".mypy_cache",
                                      ".pytest_cache", ".hypothesis", "run")
# what repair-mount loads, in the helper container (no argument: click prints its usage and exits 2)
_REPAIR_MOUNT = """
import json, sys
from ownvol.cli import main
try:
    main(["repair-mount", "--help"])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def _run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the wheel built from a copy of this tree installed (and its dependencies)."""
    work = tmp_path_factory.mktemp("package")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCES)
    built = _run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", work / "dist", source,
                 cwd=work)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = (work / "dist").glob("ownvol-*.whl")
    venv = work / "venv"
    assert _run(sys.executable, "-m", "venv", venv, cwd=work).returncode == 0
    pip = _run(venv / "bin" / "pip", "install", "-q", "--disable-pip-version-check", wheel, cwd=work)
    assert pip.returncode == 0, pip.stderr[-2000:]
    return venv


def test_the_wheel_installs_and_ownvol_help_runs(installed):
    result = _run(installed / "bin" / "ownvol", "--help", cwd=installed)
    assert result.returncode == 0, result.stderr
    for command in ("driver", "volumes", "watch", "status", "doctor", "repair", "history"):
        assert f"  {command} " in result.stdout, result.stdout
    assert "  plugin " not in result.stdout  # the driver's former name: a hidden alias


@pytest.mark.parametrize("name", ["plugin", "hooks"])
def test_nothing_is_importable_as_plugin_or_hooks(installed, name):
    result = _run(installed / "bin" / "python", "-c", f"import {name}", cwd=installed)
    assert result.returncode == 1 and f"No module named '{name}'" in result.stderr, result.stderr
    assert _run(installed / "bin" / "python", "-c", "import ownvol.driver.app, ownvol.hook.recovery",
                cwd=installed).returncode == 0


def test_repair_mount_loads_the_core_alone(installed):
    result = _run(installed / "bin" / "python", "-c", _REPAIR_MOUNT, cwd=installed)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["code"] == 0
    assert "ownvol" in report["modules"] and "click" in report["modules"]
    assert not {"flask", "gunicorn", "redis", "docker", "werkzeug", "pydantic"} & set(report["modules"])
