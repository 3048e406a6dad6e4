"""hooks/backoff.py: the least wait Docker's restart policy still holds a container for, from its events."""

from __future__ import annotations

import pytest

from ownvol.hook.backoff import held_until, wait_after_exit


def ev(kind: str, at: float, exit_code: str | None = None) -> dict:
    e: dict = {"status": kind, "timeNano": int(at * 1e9)}
    if exit_code is not None:
        e["Actor"] = {"Attributes": {"exitCode": exit_code}}
    return e


def loop(exits: int, run: float = 0.05, first: float = 100.0) -> list[dict]:
    """create, then `exits` short runs each ended by a die and followed by the policy's start after its wait."""
    events, t, wait = [ev("create", first - 1), ev("start", first)], first, 0.1
    for i in range(exits):
        t += run
        events.append(ev("die", t, "1"))
        if i < exits - 1:
            t += wait
            events.append(ev("start", t))
            wait *= 2
    return events


@pytest.mark.parametrize("exits, wait", [(1, 0.1), (2, 0.2), (3, 0.4), (5, 1.6), (12, 60.0)])
def test_each_short_run_in_a_row_doubles_the_least_wait(exits, wait):
    events = loop(exits)
    assert held_until(events, "always") == pytest.approx(events[-1]["timeNano"] / 1e9 + wait)


def test_a_run_of_ten_seconds_or_more_resets_the_wait():
    events = loop(4)
    events[-1] = ev("die", events[-2]["timeNano"] / 1e9 + 10.0, "1")
    assert held_until(events, "always") == pytest.approx(events[-1]["timeNano"] / 1e9 + 0.1)


def test_a_long_run_before_a_short_one_ends_the_chain():
    events = loop(4)
    long_die = events[-1]["timeNano"] / 1e9 + 20.0
    events += [ev("start", events[-1]["timeNano"] / 1e9 + 0.8), ev("die", long_die, "1"),
               ev("start", long_die + 0.1), ev("die", long_die + 0.2, "1")]
    assert held_until(events, "always") == pytest.approx(long_die + 0.2 + 0.2)


@pytest.mark.parametrize("between", ["kill", "stop", "restart", "create", "pause", "oom"])
def test_anything_but_the_policy_start_between_exits_ends_the_chain(between):
    events = loop(3)
    # a person's action between the 2nd exit and the last start: only the last exit is known to be the policy's
    events.insert(-2, ev(between, events[-3]["timeNano"] / 1e9 + 0.01))
    assert held_until(events, "always") == pytest.approx(events[-1]["timeNano"] / 1e9 + 0.1)


def test_a_start_sooner_than_any_wait_is_not_the_policy_s():
    events = [ev("start", 1.0), ev("die", 1.1, "1"), ev("start", 1.15), ev("die", 1.2, "1")]
    assert held_until(events, "always") == pytest.approx(1.2 + 0.1)


def test_on_failure_an_exit_0_stopped_it_so_a_later_start_was_a_person_s():
    events = [ev("start", 1.0), ev("die", 1.1, "0"), ev("start", 5.0), ev("die", 5.1, "1")]
    assert held_until(events, "on-failure") == pytest.approx(5.1 + 0.1)
    assert held_until(events, "always") == pytest.approx(5.1 + 0.2)


@pytest.mark.parametrize("events", [[], [ev("create", 1.0)], [ev("start", 1.0)], [ev("die", 1.0), ev("start", 1.2)]])
def test_nothing_held_unless_the_latest_event_is_a_die(events):
    assert held_until(events, "always") is None


def test_events_as_newer_engines_name_them():
    events = [{"Action": "start", "timeNano": int(1e9)}, {"Action": "die", "timeNano": int(1.05e9),
                                                           "Actor": {"Attributes": {"exitCode": "1"}}}]
    assert held_until(events, "always") == pytest.approx(1.05 + 0.1)


@pytest.mark.parametrize("exits, wait", [(0, 0.1), (1, 0.2), (4, 1.6)])
def test_the_wait_after_the_coming_exit_of_a_run_the_policy_started(exits, wait):
    """A run started by the policy after `exits` short runs in a row: its own failure will wait twice the last."""
    events = loop(exits) if exits else [ev("create", 99.0), ev("start", 100.0)]
    if exits:
        events.append(ev("start", events[-1]["timeNano"] / 1e9 + wait / 2))
    now = events[-1]["timeNano"] / 1e9 + 0.05
    assert wait_after_exit(events, "always", now) == pytest.approx(wait)
    assert wait_after_exit(events, "always", now + 10.0) == pytest.approx(0.1)  # a run of 10 s resets it
    assert wait_after_exit(events[:-1], "always", now) is None  # not running: held_until's question
