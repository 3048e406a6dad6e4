"""`ownvol install` refusals, before anything is written (tests/engine/test_host_install.py installs for real)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ownvol.install import InstallError, install, uninstall


def test_install_refuses_a_file_that_is_not_an_ownvol_wheel(tmp_path: Path):
    other = tmp_path / "requests-2.0-py3-none-any.whl"
    other.write_bytes(b"PK")
    for wheel in (str(tmp_path / "ownvol-0.1.0-py3-none-any.whl"), str(other), str(tmp_path)):
        with pytest.raises(InstallError, match="--wheel: .* is not a built ownvol wheel"):
            install(wheel, str(tmp_path / "root"), echo=lambda line: None)
    assert not (tmp_path / "root").exists()


def test_uninstall_refuses_when_the_settings_put_state_inside_opt_ownvol(tmp_path: Path):
    (tmp_path / "etc/ownvol").mkdir(parents=True)
    (tmp_path / "etc/ownvol/ownvol.env").write_text("#OWNVOL_ROOT=/var/lib/ownvol\nOWNVOL_ROOT=/opt/ownvol/data\n")
    (tmp_path / "opt/ownvol/data").mkdir(parents=True)
    with pytest.raises(InstallError, match="OWNVOL_ROOT=/opt/ownvol/data is inside /opt/ownvol"):
        uninstall(str(tmp_path), echo=lambda line: None)
    assert (tmp_path / "opt/ownvol/data").is_dir() and (tmp_path / "etc/ownvol/ownvol.env").exists()
