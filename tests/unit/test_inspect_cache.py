"""The probes' kept inspects (hooks/inspect_cache.py InspectCache): kept until an event about the container, the event
stream's reconnection or the TTL; an inspect begun before an event is not kept after it; nothing kept while no event
stream forgets."""

from __future__ import annotations

import docker
import pytest

from ownvol.hook.inspect_cache import InspectCache


def _followed(ttl: float | None = None) -> InspectCache:
    cache = InspectCache() if ttl is None else InspectCache(ttl=ttl)
    cache.clear(followed=True)
    return cache


class _Engine:
    def __init__(self) -> None:
        self.asked: list[str] = []
        self.during = None  # called inside an inspect (an event arriving meanwhile)

    def inspect(self, cid: str) -> object:
        self.asked.append(cid)
        if self.during:
            self.during()
        if cid == "gone":
            raise docker.errors.NotFound("no such container")
        return object()


def test_kept_until_an_event_about_it() -> None:
    engine, cache = _Engine(), _followed()
    first = cache.get("a", engine.inspect)
    assert cache.get("a", engine.inspect) is first
    cache.get("b", engine.inspect)
    assert engine.asked == ["a", "b"]
    cache.forget("a")
    assert cache.get("a", engine.inspect) is not first
    assert cache.get("b", engine.inspect) is not None
    assert engine.asked == ["a", "b", "a"]


def test_an_event_during_the_inspect_is_not_overwritten() -> None:
    engine, cache = _Engine(), _followed()
    engine.during = lambda: cache.forget("a")
    cache.get("a", engine.inspect)
    engine.during = None
    cache.get("a", engine.inspect)
    assert engine.asked == ["a", "a"]


def test_clear_and_ttl() -> None:
    engine, cache = _Engine(), _followed()
    cache.get("a", engine.inspect)
    cache.clear(followed=True)
    engine.during = lambda: cache.clear(followed=True)  # a reconnection while inspecting: not kept either
    cache.get("a", engine.inspect)
    engine.during = None
    cache.get("a", engine.inspect)
    cache.get("a", engine.inspect)
    assert engine.asked == ["a", "a", "a"]
    expired = _followed(ttl=0.0)
    expired.get("a", engine.inspect)
    expired.get("a", engine.inspect)
    assert engine.asked[3:] == ["a", "a"]


def test_a_gone_container_is_not_kept() -> None:
    engine, cache = _Engine(), _followed()
    for _ in range(2):
        with pytest.raises(docker.errors.NotFound):
            cache.get("gone", engine.inspect)
    assert engine.asked == ["gone", "gone"]


def test_young_is_the_kept_inspect_while_younger_than_asked_and_no_event_came(monkeypatch) -> None:
    """young(cid, age): the kept model and when its inspect was asked, only while younger than age; never asks."""
    import hooks.inspect_cache as module

    clock = [100.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: clock[0])
    engine, cache = _Engine(), _followed()
    assert cache.young("a", 0.1) is None and engine.asked == []
    kept = cache.get("a", engine.inspect)
    clock[0] += 0.05
    assert cache.young("a", 0.1) == (kept, 100.0)
    clock[0] += 0.06
    assert cache.young("a", 0.1) is None and cache.young("a", 0.2) == (kept, 100.0)
    cache.forget("a")
    assert cache.young("a", 0.2) is None and engine.asked == ["a"]


def test_nothing_is_kept_while_no_event_stream_forgets() -> None:
    """A new cache (no watcher, or before its stream is open) and one whose stream ended ask the engine each time."""
    engine, cache = _Engine(), InspectCache()
    cache.get("a", engine.inspect)
    cache.get("a", engine.inspect)
    assert engine.asked == ["a", "a"] and cache.young("a", 60) is None
    cache.clear(followed=True)
    cache.get("a", engine.inspect)
    cache.get("a", engine.inspect)
    assert engine.asked == ["a", "a", "a"]
    cache.clear()  # the stream ended
    assert cache.young("a", 60) is None
    cache.get("a", engine.inspect)
    assert engine.asked == ["a", "a", "a", "a"]
