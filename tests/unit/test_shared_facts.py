"""Facts the driver and the hook share, from one source each (ownvol/status.py, ...)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ownvol.driver.protocol import CreateRequest, GetRequest
from ownvol.driver.settings import from_env
from ownvol.driver.store import Store
from ownvol.driver.volumes import Volumes
from ownvol.hook.targets import DataMount, _ownvol_volume_owner
from ownvol.status import VolumeStatus, driver_name, owner


class _Engine:
    """inspect_volume as docker-py's low-level API answers it, from a Status the driver wrote."""

    def __init__(self, status: dict) -> None:
        self.api = SimpleNamespace(inspect_volume=lambda name: {"Name": name, "Status": status})


def test_the_hook_reads_the_owner_the_driver_writes(tmp_path):
    volumes = Volumes(from_env({"OWNVOL_ROOT": str(tmp_path)}), Store(str(tmp_path / "ownvol.db")))
    volumes.create(CreateRequest("v", {"uid": "1234", "gid": "4321"}))
    status = volumes.get(GetRequest("v")).volume.status
    assert status is not None
    assert set(status) == set(VolumeStatus.__annotations__)
    assert owner(status) == (1234, 4321)


@pytest.mark.parametrize("env,mount_driver,found", [
    ({}, "ownvol", True), ({}, "ownvol:latest", True), ({}, "local", False),
    ({"OWNVOL_DRIVER_NAME": "ov2"}, "ov2:latest", True), ({"OWNVOL_DRIVER_NAME": "ov2"}, "ownvol", False),
])
def test_the_hook_honours_the_driver_name(monkeypatch, env, mount_driver, found):
    monkeypatch.delenv("OWNVOL_DRIVER_NAME", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    mount = DataMount("volume", "/var/lib/ownvol/volumes/v", "/data", "", name="v", driver=mount_driver)
    got = _ownvol_volume_owner(_Engine({"uid": 70, "gid": 71}), mount)
    assert got == ((70, 71) if found else None)
    assert driver_name() == env.get("OWNVOL_DRIVER_NAME", "ownvol")
