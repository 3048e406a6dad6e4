"""FactCache.made: a container's start facts made once when several callers ask at the same time (a probe and a
resumed recovery's verification of a container a hook just picked up)."""

from __future__ import annotations

import threading
import time

import pytest

from ownvol.hook.model import Settings
from ownvol.hook.services import by_family
from ownvol.hook.targets import FactCache, StartFacts


def _facts() -> StartFacts:
    return StartFacts(by_family("redis"), Settings("/data", "redis://127.0.0.1:6379/0", None, {}, {}, ()))


def test_callers_at_the_same_time_share_one_making():
    cache, made, started = FactCache(), [], threading.Event()

    def make() -> StartFacts:
        made.append(1)
        started.set()
        time.sleep(0.2)
        return _facts()

    got: list[StartFacts] = []
    first = threading.Thread(target=lambda: got.append(cache.made(("c1", "t1"), make)))
    first.start()
    started.wait(5)
    others = [threading.Thread(target=lambda: got.append(cache.made(("c1", "t1"), make))) for _ in range(3)]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join(5)
    assert len(made) == 1
    assert len(got) == 4 and all(g is got[0] for g in got)
    assert cache.made(("c1", "t2"), _facts) is not got[0]  # another start: its own facts


def test_a_failed_making_is_the_callers_and_the_next_caller_makes_them():
    cache = FactCache()

    def broken() -> StartFacts:
        raise OSError("engine gone")

    with pytest.raises(OSError):
        cache.made(("c1", "t1"), broken)
    assert cache.get(("c1", "t1")) is None
    assert cache.made(("c1", "t1"), _facts) is cache.get(("c1", "t1"))
    assert not cache._making


class _Started:
    id = "c1"
    attrs = {"State": {"StartedAt": "t1"}}


def test_a_server_that_answers_is_asked_its_settings_at_once_if_not_known():
    """answered(): the server's CONFIG GET, refused at the start event and put off by the back-off, is due at once
    when a probe finds it answering; never asked again once known, nor for a start with no facts yet."""
    cache = FactCache()
    assert not cache.answered(_Started())  # no facts made for this start
    facts = cache.put(("c1", "t1"), _facts())
    facts.live_next = time.monotonic() + 1.0  # refused once: asked again in a second
    assert cache.answered(_Started()) and facts.live_next == 0.0
    assert not cache.answered(_Started())  # due already: nothing to change
    facts.live, facts.live_next = _facts().settings, time.monotonic() + 1.0
    assert not cache.answered(_Started()) and facts.live_next > 0  # known from the server: kept
