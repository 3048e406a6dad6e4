"""ownership=idmap|auto and views through the driver's WSGI app, with real idmapped mounts on this kernel (root
only), without the engine."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ownvol import idmap
from ownvol.driver import binds
from ownvol.driver.settings import from_env
from tests.unit.test_plugin_protocol import Driver

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="idmapped mounts need root")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "adopt").mkdir()
    return {"OWNVOL_ROOT": str(tmp_path / "state"), "OWNVOL_ALLOWED_ROOTS": str(tmp_path / "adopt")}


@pytest.fixture
def driver(env: dict[str, str]) -> Iterator[Driver]:
    d = Driver(from_env(env))
    yield d
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point.startswith(env["OWNVOL_ROOT"] + "/") or point.startswith(env["OWNVOL_ALLOWED_ROOTS"] + "/"):
            subprocess.run(["umount", "-l", point], check=False)


def snapshot(top: Path) -> dict[str, tuple[int, int, int, int]]:
    """(uid, gid, mode, mtime_ns) of every entry below top, by relative path."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [".", *dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            out[os.path.relpath(path, top)] = (st.st_uid, st.st_gid, st.st_mode, st.st_mtime_ns)
    return out


def options_at(target: str) -> set[str]:
    found = idmap.mount_options(target)
    return set(found[-1].split(",")) if found else set()


def test_an_idmap_volume_changes_nothing_on_disk_and_shows_its_owner(driver: Driver) -> None:
    driver.ok("Create", Name="v", Opts={"ownership": "idmap", "mode": "0750"})
    data = Path(driver.settings.volumes_dir) / "v"
    st = data.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o750)
    status = driver.ok("Get", Name="v")["Volume"]["Status"]
    assert (status["ownership"], status["ownership_asked"], status["view_of"]) == ("idmap", "idmap", "")
    assert "idmapped mount on ext4" in status["ownership_note"] or "idmapped mount on" in status["ownership_note"]
    target = driver.ok("Mount", Name="v", ID="m1")["Mountpoint"]
    assert target == os.path.join(driver.settings.root, "idmap", "v")
    assert os.stat(os.path.dirname(target)).st_mode & 0o777 == 0o700
    assert idmap.root_shown(target) == (999, 999)
    assert {"idmapped", "nosuid", "nodev"} <= options_at(target)
    assert driver.ok("Mount", Name="v", ID="m2")["Mountpoint"] == target
    assert len(idmap.mount_options(target)) == 1
    (Path(target) / "through").write_text("x")  # root through the map: lands as 999 on disk, no EOVERFLOW
    assert (data / "through").stat().st_uid == 999
    assert driver.ok("Get", Name="v")["Volume"]["Status"]["last_check_result"].startswith("idmap: on-disk 0:0")
    driver.ok("Unmount", Name="v", ID="m1")
    assert binds.is_mounted(target)
    driver.ok("Unmount", Name="v", ID="m2")
    assert not binds.is_mounted(target) and not os.path.exists(target)
    driver.ok("Remove", Name="v")
    assert not data.exists()


def test_an_adopted_tree_is_shown_through_the_map_and_never_touched(driver: Driver, env: dict[str, str]) -> None:
    tree = Path(env["OWNVOL_ALLOWED_ROOTS"]) / "redis"
    (tree / "appendonlydir").mkdir(parents=True)
    (tree / "dump.rdb").write_text("data")
    (tree / "other").write_text("x")
    os.chown(tree / "other", 1234, 1234)
    os.chmod(tree / "other", 0o640)
    before = snapshot(tree)
    driver.ok("Create", Name="r", Opts={"ownership": "idmap", "path": str(tree), "uid": "999", "gid": "999"})
    assert snapshot(tree) == before
    target = driver.ok("Mount", Name="r", ID="m")["Mountpoint"]
    assert os.stat(Path(target) / "dump.rdb").st_uid == 999
    other = os.stat(Path(target) / "other")
    assert (other.st_uid, other.st_gid, other.st_mode & 0o7777) == (1234, 1234, 0o640)
    driver.ok("Unmount", Name="r", ID="m")
    driver.ok("Remove", Name="r")
    assert snapshot(tree) == before


@pytest.fixture
def overlay(env: dict[str, str]) -> Iterator[Path]:
    base = Path(env["OWNVOL_ALLOWED_ROOTS"]) / "ov"
    dirs = [base / n for n in ("lower", "upper", "work", "merged")]
    for d in dirs:
        d.mkdir(parents=True)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={dirs[0]},upperdir={dirs[1]},workdir={dirs[2]}", str(dirs[3])], check=True)
    (dirs[3] / "data").mkdir()
    try:
        yield dirs[3] / "data"
    finally:
        subprocess.run(["umount", "-l", str(dirs[3])], check=False)


def test_overlay_is_refused_for_idmap_and_falls_back_for_auto(driver: Driver, overlay: Path) -> None:
    before = snapshot(overlay)
    err = driver.err("Create", Name="o", Opts={"ownership": "idmap", "path": str(overlay)})
    assert "ownership=idmap refused" in err and "overlay" in err and "EINVAL" in err, err
    assert driver.ok("List")["Volumes"] == [] and snapshot(overlay) == before
    driver.ok("Create", Name="o", Opts={"ownership": "auto", "path": str(overlay)})
    status = driver.ok("Get", Name="o")["Volume"]["Status"]
    assert (status["ownership"], status["ownership_asked"]) == ("walk", "auto")
    assert "auto fell back to the walk" in status["ownership_note"] and "overlay" in status["ownership_note"]
    assert overlay.stat().st_uid == 999  # the walk, as ownership=walk does
    listed = {v["name"]: v for v in driver.volumes.references()}  # `ownvol volumes`
    assert listed["o"]["ownership"] == "walk" and "auto fell back" in listed["o"]["ownership_note"]


def test_auto_takes_idmap_where_it_can(driver: Driver) -> None:
    driver.ok("Create", Name="a", Opts={"ownership": "auto"})
    status = driver.ok("Get", Name="a")["Volume"]["Status"]
    assert (status["ownership"], status["ownership_asked"]) == ("idmap", "auto")


def test_idmap_is_refused_where_other_host_users_reach_the_data() -> None:
    top = Path(tempfile.mkdtemp(prefix="ownvol-reach-", dir="/tmp"))
    try:
        top.chmod(0o755)
        (top / "adopt" / "d").mkdir(parents=True)
        (top / "adopt").chmod(0o755)
        d = Driver(from_env({"OWNVOL_ROOT": str(top / "state"), "OWNVOL_ALLOWED_ROOTS": str(top / "adopt")}))
        err = d.err("Create", Name="x", Opts={"ownership": "idmap", "path": str(top / "adopt" / "d")})
        assert "lets other host users search it" in err, err
    finally:
        shutil.rmtree(top)


def test_views_show_one_dataset_to_several_owners(driver: Driver) -> None:
    driver.ok("Create", Name="base", Opts={"ownership": "idmap"})
    driver.ok("Create", Name="view", Opts={"view-of": "base", "uid": "1001", "gid": "1001"})
    status = driver.ok("Get", Name="view")["Volume"]["Status"]
    assert (status["ownership"], status["view_of"]) == ("idmap", "base")
    listed = {v["name"]: v for v in driver.volumes.references()}  # `ownvol volumes`
    assert (listed["view"]["ownership"], listed["view"]["view_of"], listed["base"]["ownership"]) == \
        ("idmap", "base", "idmap")
    a = driver.ok("Mount", Name="base", ID="a")["Mountpoint"]
    b = driver.ok("Mount", Name="view", ID="b")["Mountpoint"]
    assert idmap.root_shown(a) == (999, 999) and idmap.root_shown(b) == (1001, 1001)
    (Path(a) / "f").write_text("shared")
    assert (Path(b) / "f").read_text() == "shared"
    err = driver.err("Remove", Name="base")
    assert "has 1 view(s)" in err and "view" in err, err
    driver.ok("Unmount", Name="view", ID="b")
    driver.ok("Remove", Name="view")
    driver.ok("Unmount", Name="base", ID="a")
    driver.ok("Remove", Name="base")


@pytest.mark.parametrize(("view_of", "words"), [
    ("../etc", "never a path"), ("a/b", "never a path"), ("/srv/x", "never a path"),
    ("nothere", "is not a volume of this driver"), ("", "option view-of"),
])
def test_a_hostile_view_of_gets_an_err(driver: Driver, view_of: str, words: str) -> None:
    err = driver.err("Create", Name="v", Opts={"view-of": view_of})
    assert words in err, err
    assert driver.ok("List")["Volumes"] == []


def test_a_view_of_a_view_or_of_itself_or_with_walk_is_refused(driver: Driver) -> None:
    driver.ok("Create", Name="base", Opts={"ownership": "idmap"})
    driver.ok("Create", Name="v1", Opts={"view-of": "base"})
    assert "is itself a view of base" in driver.err("Create", Name="v2", Opts={"view-of": "v1"})
    assert "cannot be a view of itself" in driver.err("Create", Name="v3", Opts={"view-of": "v3"})
    assert "ownership=walk cannot make one" in driver.err("Create", Name="v4",
                                                          Opts={"view-of": "base", "ownership": "walk"})


def test_a_restarted_driver_checks_and_restores_its_idmapped_mounts(driver: Driver, env: dict[str, str]) -> None:
    driver.ok("Create", Name="v", Opts={"ownership": "idmap", "uid": "70", "gid": "71"})
    driver.ok("Create", Name="w", Opts={"ownership": "idmap"})
    v = driver.ok("Mount", Name="v", ID="m")["Mountpoint"]
    w = driver.ok("Mount", Name="w", ID="m")["Mountpoint"]
    binds.unbind(w)  # gone while referenced (a reboot, a hand's umount): mounted again at start
    stray = os.path.join(driver.settings.root, "idmap", "gone")
    idmap.idmapped_bind(str(Path(driver.settings.volumes_dir) / "v"), stray, idmap.Mapping(0, 0, 5, 5))
    again = Driver(from_env(env))
    done = again.volumes.recover()
    assert f"unmounted {stray}: an idmapped mount of no volume" in done, done
    assert not binds.is_mounted(stray)
    assert any(line.startswith("idmap check of v: ok: on-disk 0:0 shown as 70:71") for line in done), done
    assert any(line.startswith("mounted w again") for line in done), done
    assert idmap.root_shown(w) == (999, 999)
    status = again.ok("Get", Name="v")["Volume"]["Status"]
    assert status["last_check_result"].startswith("idmap check at start: ok"), status
    assert "maps uid 0 70 1,1 1 69,70 0 1,71 71 4294967224 gid 0 71 1,1 1 70,71 0 1,72 72 4294967223 (statmount)" \
        in status["last_check_result"], status
    again.ok("Unmount", Name="v", ID="m")
    again.ok("Unmount", Name="w", ID="m")
    assert not binds.is_mounted(v) and not binds.is_mounted(w)


def test_after_a_reboot_the_idmapped_mounts_come_back_below_a_0700_directory(driver: Driver,
                                                                             env: dict[str, str]) -> None:
    driver.ok("Create", Name="w", Opts={"ownership": "idmap"})
    w = driver.ok("Mount", Name="w", ID="m")["Mountpoint"]
    binds.unbind(w)
    shutil.rmtree(os.path.dirname(w))  # a reboot: no mounts, and say a fresh ROOT/idmap
    done = Driver(from_env(env)).volumes.recover()
    assert any(line.startswith(f"mounted w again at {w}") for line in done), done
    assert os.stat(os.path.dirname(w)).st_mode & 0o777 == 0o700 and idmap.root_shown(w) == (999, 999)
    driver.ok("Unmount", Name="w", ID="m")


def test_a_wrong_map_is_reported(driver: Driver, env: dict[str, str]) -> None:
    driver.ok("Create", Name="v", Opts={"ownership": "idmap"})
    target = driver.ok("Mount", Name="v", ID="m")["Mountpoint"]
    os.chown(Path(driver.settings.volumes_dir) / "v", 5, 5)  # the root's owner on disk changed under the map
    again = Driver(from_env(env))
    done = again.volumes.recover()
    assert any(line.startswith("idmap check of v: wrong: the root shows as 5:5 (want 999:999; on disk 5:5)")
               for line in done), done
    again.ok("Unmount", Name="v", ID="m")
    assert not binds.is_mounted(target)


def test_default_ownership_setting(env: dict[str, str]) -> None:
    d = Driver(from_env({**env, "OWNVOL_DEFAULT_OWNERSHIP": "auto"}))
    d.ok("Create", Name="v")
    assert d.ok("Get", Name="v")["Volume"]["Status"]["ownership_asked"] == "auto"
    with pytest.raises(ValueError, match="option ownership"):
        from_env({**env, "OWNVOL_DEFAULT_OWNERSHIP": "chown"})


def test_with_a_mount_root_the_idmapped_mount_is_there(env: dict[str, str], tmp_path: Path) -> None:
    """The managed plugin's case: OWNVOL_MOUNT_ROOT (its propagated mount) holds the idmapped mount itself, and a
    walk volume beside it keeps its plain bind."""
    d = Driver(replace(from_env(env), mount_root=str(tmp_path / "mnt")))
    try:
        d.ok("Create", Name="m", Opts={"ownership": "idmap"})
        d.ok("Create", Name="p")
        target = d.ok("Mount", Name="m", ID="1")["Mountpoint"]
        plain = d.ok("Mount", Name="p", ID="1")["Mountpoint"]
        assert (target, plain) == (str(tmp_path / "mnt" / "m"), str(tmp_path / "mnt" / "p"))
        assert {"idmapped", "nosuid", "nodev"} <= options_at(target) and "idmapped" not in options_at(plain)
        assert idmap.root_shown(target) == (999, 999) and os.stat(Path(d.settings.volumes_dir) / "m").st_uid == 0
        assert not os.path.exists(os.path.join(d.settings.root, "idmap"))
        done = Driver(replace(from_env(env), mount_root=str(tmp_path / "mnt"))).volumes.recover()
        assert any(line.startswith("idmap check of m: ok") for line in done), done
        d.ok("Unmount", Name="m", ID="1")
        d.ok("Unmount", Name="p", ID="1")
        assert not binds.is_mounted(target) and not binds.is_mounted(plain)
    finally:
        for entry in (tmp_path / "mnt").iterdir() if (tmp_path / "mnt").exists() else ():
            binds.unbind(str(entry))
