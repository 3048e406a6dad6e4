"""Both implementations of the walk's per-entry loop: ownvol._entries (compiled) and ownvol.ownership's Python
loop. A module that takes the fixture `walk_loop` runs each of its tests once with each."""

from __future__ import annotations

import pytest

from ownvol import ownership


@pytest.fixture(params=["compiled", "python"])
def walk_loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """"compiled": ownvol._entries, which must be built (setup.py; fails here if it is not, so a machine that
    lost its compiler does not pass on the Python loop alone); "python": the loop ownvol.ownership falls back to."""
    if request.param == "compiled":
        assert ownership._compiled is not None, "ownvol._entries is not built (setup.py needs gcc and Python.h)"
    else:
        monkeypatch.setattr(ownership, "_compiled", None)
    return request.param
