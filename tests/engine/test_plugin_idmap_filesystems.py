"""ownership=idmap on each filesystem this kernel has besides the host's ext4 (tests/engine/test_plugin_idmap.py)
and overlayfs (refused there): xfs and btrfs on loop images and tmpfs take it, Redis running through the map on an
adopted root-owned tree; FUSE (bindfs, whose server does not set FUSE_ALLOW_IDMAP) refuses it at Create, and auto
falls back to the walk. Each filesystem is mounted in the plugin engine's mount namespace, where the driver and
dockerd look (tests/support/filesystems.py), and is gone after the test, failed or not. NFS is not here: this
kernel has no nfs filesystem (docs/driver.md, "Filesystems")."""

from __future__ import annotations

import docker
import pytest

from tests.engine.test_plugin_idmap import redis_on_an_adopted_root_owned_tree
from tests.support.driver import create, status
from tests.support.filesystems import Filesystems

pytestmark = pytest.mark.engine


@pytest.fixture
def foreign(ownvol_plugin) -> Filesystems:
    """Filesystems mounted in the session plugin's engine namespace. A test takes it before ptracked, so that its
    containers and volumes are gone before the filesystems are unmounted (fixtures are undone in reverse)."""
    ownvol_plugin.engine._namespace()  # the namespace's holder, started again if it died
    filesystems = Filesystems(ownvol_plugin.engine.holder.pid)
    try:
        yield filesystems
    finally:
        filesystems.cleanup()


@pytest.mark.parametrize("kind", ["xfs", "btrfs", "tmpfs"])
def test_redis_through_the_map_on(kind, foreign, ownvol_plugin, engine_client, ptracked, redis_image, unique_name,
                                  port):
    top = foreign.mount(kind, ownvol_plugin.adopt / unique_name(kind))
    name = unique_name("fsi")
    redis_on_an_adopted_root_owned_tree(ownvol_plugin, engine_client, ptracked, redis_image, name, port, top / name,
                                        foreign.seen(top / name))
    assert status(engine_client, name)["ownership_note"] == f"idmapped mount on {kind} (probed at create)"


def test_fuse_is_refused_for_idmap_and_falls_back_for_auto(foreign, ownvol_plugin, engine_client, ptracked,
                                                           unique_name):
    top = foreign.mount("fuse", ownvol_plugin.adopt / unique_name("fuse"))
    for sub in ("a", "b"):
        (foreign.seen(top) / sub).mkdir()
    name = unique_name("fsr")
    ptracked.volume(name)
    with pytest.raises(docker.errors.APIError) as refused:
        engine_client.volumes.create(name, driver=ownvol_plugin.name,
                                     driver_opts={"ownership": "idmap", "path": str(top / "a")})
    words = str(refused.value)
    assert (f"volume {name}: ownership=idmap refused: idmapped mount refused on fuse at {top / 'a'}: "
            "mount_setattr: Invalid argument (EINVAL) (a FUSE filesystem takes an idmapped mount only where its "
            "server asks for one, FUSE_ALLOW_IDMAP on Linux 6.12 or later; this one does not)") in words, words
    assert "no such volume" in ownvol_plugin.err("Get", Name=name).lower()  # the refusal left nothing behind
    auto = unique_name("fsa")
    create(engine_client, ownvol_plugin, ptracked, auto, ownership="auto", path=str(top / "b"))
    st = status(engine_client, auto)
    assert (st["ownership"], st["ownership_asked"]) == ("walk", "auto"), st
    assert st["ownership_note"].startswith(f"auto fell back to the walk: idmapped mount refused on fuse at {top / 'b'}"
                                           ": mount_setattr: Invalid argument (EINVAL)"), st
    engine_client.volumes.get(auto).remove()
