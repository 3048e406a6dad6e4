"""How the driver learns its engine's id map (plugin/engine.py EngineIdentity): the kernel's map of dockerd first."""

from __future__ import annotations

import pytest

from ownvol.driver import engine as engine_module
from ownvol.driver import liveness
from ownvol.driver.engine import EngineIdentity
from ownvol.driver.errors import PluginError
from ownvol.driver.options import VolumeSpec
from ownvol.driver.settings import from_env
from ownvol.driver.store import Store
from ownvol.userns import IdMap, UnknownMapping, parse_map

ROOTLESS = IdMap(parse_map("0 1001 1\n1 100000 65536"), parse_map("0 1001 1\n1 100000 65536"))
ENGINE = liveness.Engine(4242, 1, "dockerd")


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "ownvol.db"))
    yield s
    s.close()


def _spec(uid: int) -> VolumeSpec:
    return VolumeSpec(uid=uid, gid=uid, mode=0o700, policy="on-root-mismatch")


def _engine_reads(monkeypatch, kernel: IdMap | Exception, info: dict | Exception) -> list[str]:
    asked: list[str] = []

    def from_process(pid: int, proc: str = "/proc") -> IdMap:
        asked.append("kernel")
        if isinstance(kernel, Exception):
            raise kernel
        return kernel

    def engine_info(pid: int, timeout: float = 10.0) -> dict:
        asked.append("info")
        if isinstance(info, Exception):
            raise info
        return info

    monkeypatch.setattr(engine_module.userns.IdMap, "from_process", staticmethod(from_process))
    monkeypatch.setattr(engine_module.liveness, "engine_info", engine_info)
    return asked


def test_a_rootless_engines_own_map_is_learned_from_the_kernel(monkeypatch, store):
    asked = _engine_reads(monkeypatch, ROOTLESS, OSError("not asked"))
    identity = EngineIdentity("auto", store)
    identity._learn_userns(ENGINE)
    assert asked == ["kernel"]
    assert identity.host_owner(_spec(999)) == (100998, 100998)
    assert identity.owner_text(_spec(999)) == "999:999 (host 100998:100998)"
    with pytest.raises(PluginError, match="uid 70000 is unmapped"):
        identity.host_owner(_spec(70000))


def test_an_engine_in_our_namespace_is_asked_its_docker_info(monkeypatch, store):
    """dockerd in the driver's own namespace (a rootful engine; --userns-remap maps containers, not dockerd)."""
    asked = _engine_reads(monkeypatch, IdMap.identity_map(), {"SecurityOptions": ["name=seccomp,profile=default"]})
    identity = EngineIdentity("auto", store)
    identity._learn_userns(ENGINE)
    assert asked == ["kernel", "info"] and identity.idmap() is None
    assert identity.host_owner(_spec(999)) == (999, 999)


def test_a_rootless_engine_whose_map_cannot_be_read_makes_the_driver_refuse(monkeypatch, store):
    _engine_reads(monkeypatch, UnknownMapping("the id map of process 4242 cannot be read: denied"),
                  {"SecurityOptions": ["name=seccomp,profile=default", "name=rootless"]})
    identity = EngineIdentity("auto", store)
    identity._learn_userns(ENGINE)
    with pytest.raises(PluginError, match="is rootless, and its /proc/PID/uid_map cannot be read"):
        identity.host_owner(_spec(999))
    assert identity.host_owner_text(_spec(999)).startswith("unknown: ")


def test_a_socket_given_to_a_user_gives_ids_only_through_a_learned_map(monkeypatch, store):
    refused = EngineIdentity("auto", store, rootless_only=True)
    with pytest.raises(PluginError, match="OWNVOL_SOCKET_OWNER"):
        refused.host_owner(_spec(999))
    _engine_reads(monkeypatch, ROOTLESS, OSError("not asked"))
    refused._learn_userns(ENGINE)
    assert refused.host_owner(_spec(999)) == (100998, 100998)


def test_the_socket_owner_setting():
    assert from_env({"OWNVOL_SOCKET_OWNER": "1001:1002"}).socket_owner == (1001, 1002)
    assert from_env({}).socket_owner is None
