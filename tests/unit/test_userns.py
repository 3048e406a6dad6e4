"""The user-namespace mapping from an engine's `docker info` and the subordinate id files."""

from __future__ import annotations

import pytest

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
