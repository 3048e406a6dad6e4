"""The core's repair on a tree a real container filled with links to host paths."""

from __future__ import annotations

import os

import pytest

from ownvol.ownership import repair

pytestmark = pytest.mark.engine


def owner(path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def test_links_a_container_plants_never_lead_the_repair_out(tracked, redis_image, tmp_path, decoys):
    """A container (root inside) plants links to host paths in its bind mount; the host-side repair ignores them."""
    vol = tmp_path / "vol"
    vol.mkdir()
    script = (
        f"ln -s {decoys}/passwd /v/file-link && ln -s {decoys}/etc /v/dir-link && mkdir -p /v/sub "
        f"&& ln -s {decoys}/etc/shadow /v/sub/deep-link && echo x > /v/sub/data && ln /v/sub/data /v/sub/data2"
    )
    c = tracked.run(redis_image, ["sh", "-c", script], user="0:0", network_mode="none",
                    volumes={str(vol): {"bind": "/v", "mode": "rw"}}, labels={"ownvol.watch": "false"})
    assert c.wait(timeout=60)["StatusCode"] == 0, c.logs()
    report = repair(str(vol), 999, 999)
    for p in (decoys / "passwd", decoys / "etc", decoys / "etc" / "shadow"):
        assert owner(p) == (0, 0), p
    assert owner(vol / "file-link") == owner(vol / "dir-link") == owner(vol / "sub" / "deep-link") == (999, 999)
    assert report.skipped_hardlinks == 2 and owner(vol / "sub" / "data") == (0, 0)
