"""The user-namespace mapping from an engine's `docker info` and the subordinate id files."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from ownvol.hook.executor import DockerExecutor
from ownvol.hook.targets import Target
from ownvol.userns import IdMap, UnknownMapping, from_engine

INFO = {"SecurityOptions": ["name=seccomp,profile=default", "name=userns"],
        "DockerRootDir": "/var/lib/docker/200000.300000"}


@pytest.fixture
def subids(tmp_path):
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text("alice:100000:65536\ndockremap:200000:1000\ndockremap:500000:65536\n")
    subgid.write_text("alice:100000:65536\ndockremap:300000:65536\n")
    return str(subuid), str(subgid)


def test_an_engine_that_does_not_remap_has_no_mapping(subids):
    assert from_engine({"SecurityOptions": ["name=seccomp,profile=default"], "DockerRootDir": "/x"}, *subids) is None


def test_the_remap_users_ranges_laid_end_to_end(subids):
    mapping = from_engine(INFO, *subids)
    assert mapping.host_ids(999, 999) == (200999, 300999)
    assert mapping.host_ids(1000, 1000) == (500000, 301000)  # the second uid range starts at container id 1000
    assert IdMap.parse(str(mapping)) == mapping
    with pytest.raises(UnknownMapping, match="outside"):
        mapping.host_ids(70000, 0)


@pytest.mark.parametrize("info, words", [
    ({**INFO, "DockerRootDir": "/var/lib/docker"}, "does not end in <uid>.<gid>"),
    ({**INFO, "DockerRootDir": "/var/lib/docker/123.123"}, "0 users"),
    ({**INFO, "DockerRootDir": "/var/lib/docker/200000.999"}, "do not start at the engine's root"),
])
def test_facts_that_disagree_make_the_mapping_unknown(subids, info, words):
    with pytest.raises(UnknownMapping, match=words):
        from_engine(info, *subids)


def test_a_process_owner_is_already_in_host_ids_and_a_configured_one_is_mapped():
    """Under userns-remap, `docker top` (ps on the engine's host) and /proc give the server's host ids: mapped
    again they fell outside the ranges and the owner became unknown (a canary caught alive before its crash was
    left unrepaired, tests/engine/test_userns_remap.py on 28.5); a configured user is a container id, mapped."""
    executor = DockerExecutor(client=lambda: None)
    executor._idmap, executor._idmap_at = IdMap(((0, 100000, 65536),), ((0, 100000, 65536),)), time.monotonic()
    seen = Target("c0ffee", "canary", "ownvol/redis:7", "restarting", {}, None, None, "/data", None,
                  100999, 100999, "process", False)
    host = executor._in_host_ids(seen)
    assert (host.uid, host.gid, host.remapped) == (100999, 100999, True)
    assert host.owner_source.startswith("process")
    configured = executor._in_host_ids(replace(seen, uid=999, gid=999, owner_source="user"))
    assert (configured.uid, configured.gid, configured.remapped) == (100999, 100999, True)
    assert configured.owner_source == "user, host ids of 999:999 under userns-remap"
