"""Facts the driver and the hook share, from one source each (ownvol/status.py, ownvol/beneath.py, ownvol/sqlite.py)."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from ownvol.beneath import NotBeneath, beneath, symlink_in
from ownvol.driver.errors import PluginError
from ownvol.driver.protocol import CreateRequest, GetRequest, MountRequest
from ownvol.driver.settings import from_env
from ownvol.driver.store import Store
from ownvol.driver.volumes import Volumes
from ownvol.hook.journal import Journal
from ownvol.hook.model import DataMount
from ownvol.hook.targets import _ownvol_idmap, _ownvol_volume_owner
from ownvol.ownership import OwnershipError, inspect_root
from ownvol.sqlite import SchemaTooNew
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


@pytest.mark.skipif(os.geteuid() != 0, reason="idmapped mounts need root")
def test_the_hook_reads_that_the_driver_shows_a_volume_through_an_idmapped_mount(tmp_path, monkeypatch):
    monkeypatch.delenv("OWNVOL_DRIVER_NAME", raising=False)
    volumes = Volumes(from_env({"OWNVOL_ROOT": str(tmp_path)}), Store(str(tmp_path / "ownvol.db")))
    volumes.create(CreateRequest("v", {"ownership": "idmap", "uid": "1234", "gid": "4321"}))
    volumes.create(CreateRequest("w", {"view-of": "v", "uid": "7", "gid": "8"}))
    volumes.create(CreateRequest("plain", {}))
    mount = DataMount("volume", "/x", "/data", "", name="v", driver="ownvol")
    status = {name: volumes.get(GetRequest(name)).volume.status for name in ("v", "w", "plain")}
    assert _ownvol_idmap(_Engine(status["v"]), mount) == \
        "ownvol volume v is an idmapped mount showing its data as 1234:4321"
    assert _ownvol_idmap(_Engine(status["w"]), mount).endswith("as 7:8, a view of v")
    assert _ownvol_idmap(_Engine(status["plain"]), mount) is None


def test_symlink_in_names_the_first_link_or_file_on_the_way(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "a")
    (tmp_path / "file").write_text("")
    assert symlink_in(str(tmp_path / "a" / "b")) is None
    assert symlink_in(str(tmp_path / "a" / "missing" / "x")) is None
    assert symlink_in(str(tmp_path / "link" / "b")) == f"{tmp_path}/link is a symlink; ownvol never follows one"
    assert symlink_in(str(tmp_path / "file" / "x")) == f"{tmp_path}/file is not a directory"


def test_beneath_hands_over_the_last_component_by_descriptor_and_refuses_a_link(tmp_path):
    (tmp_path / "a" / "data").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "a")
    with beneath(str(tmp_path), "a/data") as path:
        assert path.startswith("/proc/self/fd/") and os.path.samefile(path, tmp_path / "a" / "data")
    with pytest.raises(NotBeneath, match=f"{tmp_path}/link is a symlink"), beneath(str(tmp_path), "link/data"):
        pass
    with pytest.raises(OwnershipError, match=f"{tmp_path}/a/data/gone"), beneath(str(tmp_path), "a/data") as path:
        inspect_root(path + "/gone", 0, 0)


@pytest.mark.parametrize(("open_it", "synchronous"), [
    (lambda path: Store(path).conn, 2),  # FULL: the volume records
    (lambda path: Journal(path)._db, 1),  # NORMAL: the hook's history (hooks/journal.py says why)
])
def test_store_and_journal_share_one_setup_and_refuse_a_newer_schema(tmp_path, open_it, synchronous):
    path = str(tmp_path / "state.sqlite")
    conn = open_it(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == synchronous
    assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    with pytest.raises(SchemaTooNew, match="has schema 999, newer than this ownvol"):
        open_it(path)


def test_an_adopted_directory_whose_way_became_a_symlink_is_not_mounted(tmp_path):
    adopt = tmp_path / "adopt"
    (adopt / "a" / "data").mkdir(parents=True)
    settings = from_env({"OWNVOL_ROOT": str(tmp_path / "state"), "OWNVOL_ALLOWED_ROOTS": str(adopt)})
    volumes = Volumes(settings, Store(settings.db_path))
    volumes.create(CreateRequest("v", {"path": str(adopt / "a" / "data"), "uid": "5"}))
    (adopt / "a").rename(adopt / "elsewhere")
    (adopt / "a").symlink_to(adopt / "elsewhere")
    with pytest.raises(PluginError, match=f"{adopt}/a is a symlink; ownvol never follows one"):
        volumes.mount(MountRequest("v", "m1"))
    assert os.stat(adopt / "elsewhere" / "data").st_uid == 5
    assert volumes.store.refs("v") == 0


def test_the_status_page_shows_how_a_volume_shows_its_owner(monkeypatch):
    from ownvol.hook.board import DriverVolumes

    statuses = {"m": {"uid": 999, "gid": 999, "ownership": "idmap", "ownership_note": "idmapped mount on ext4"},
                "w": {"uid": 999, "gid": 999, "ownership": "walk", "ownership_note": "auto fell back to the walk: x"},
                "old": {"uid": 999, "gid": 999}}
    api = SimpleNamespace(volumes=lambda: {"Volumes": [{"Name": n, "Driver": "ownvol"} for n in statuses]},
                          inspect_volume=lambda name: {"Name": name, "Status": statuses[name]})
    volumes, error = DriverVolumes(lambda: SimpleNamespace(api=api), "ownvol").read()
    assert error is None
    assert [(v["name"], v["ownership"], v["ownership_note"]) for v in volumes] == [
        ("m", "idmap", "idmapped mount on ext4"), ("old", "walk", ""), ("w", "walk", "auto fell back to the walk: x")]


def test_the_hooks_metrics_say_how_each_volume_shows_its_owner_and_where_auto_fell_back():
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from ownvol.hook.board import DriverVolumes
    from ownvol.hook.telemetry import Metrics

    statuses = {"m": {"uid": 999, "gid": 999, "ownership": "idmap", "ownership_asked": "auto",
                      "ownership_note": "idmapped mount on ext4 (probed at create)"},
                "w": {"uid": 999, "gid": 999, "ownership": "walk", "ownership_asked": "auto",
                      "ownership_note": "auto fell back to the walk: idmapped mount refused on overlay"},
                "i": {"uid": 999, "gid": 999, "ownership": "idmap", "ownership_asked": "idmap"},
                "old": {"uid": 999, "gid": 999}}
    engine_up = [True]

    def volumes():
        if not engine_up[0]:
            raise OSError("engine gone")
        return {"Volumes": [{"Name": n, "Driver": "ownvol"} for n in statuses] + [{"Name": "x", "Driver": "local"}]}

    api = SimpleNamespace(volumes=volumes, inspect_volume=lambda name: {"Name": name, "Status": statuses[name]})
    metrics = Metrics()
    metrics.watch_volumes(DriverVolumes(lambda: SimpleNamespace(api=api), "ownvol", ttl=0).read)

    def series() -> tuple[str, set[tuple[str, str, str, float]]]:
        text = generate_latest(metrics.registry).decode()
        family = next(f for f in text_string_to_metric_families(text) if f.name == "ownvol_hook_volume_ownership")
        assert family.type == "gauge"
        return text, {(s.labels["volume"], s.labels["ownership"], s.labels["asked"], s.value) for s in family.samples}

    text, shown = series()
    assert shown == {("m", "idmap", "auto", 1.0), ("w", "walk", "auto", 1.0), ("i", "idmap", "idmap", 1.0),
                     ("old", "walk", "walk", 1.0)}
    assert "refused on overlay" not in text  # the reason stays in Status: label values stay bounded
    engine_up[0] = False
    text, shown = series()
    assert shown == set() and "# TYPE ownvol_hook_volume_ownership gauge" in text
