"""Who starts a stopped container after a repair (hooks/actions.py start_decision): the rule of issue 13 on
top of issue 11's, for PostgreSQL and Redis alike. The events are the engine's own shapes (moby daemon/kill.go,
stop.go, monitor.go: `kill` with its signal, `die` with its exitCode, `stop`, `start`)."""

from __future__ import annotations

import pytest

from ownvol.hook.actions import start_decision, stopped_by_someone

# How each family's server dies of a data dir taken from it at run time: PostgreSQL's backends PANIC and the
# container exits 139 (seen on 15 and 17, tests/engine/test_hook_databases.py); Redis under appendfsync always
# exits 1 ("Can't persist ... Exiting", hooks/patterns.py).
FAULT_EXIT = [pytest.param(139, id="postgres"), pytest.param(1, id="redis")]


def event(action: str, t: int, **attributes: str) -> dict:
    return {"Type": "container", "Action": action, "time": t, "timeNano": t * 10**9,
            "Actor": {"ID": "c0ffee", "Attributes": {"name": "db", **attributes}}}


def died(code: int, t: int = 2) -> dict:
    return event("die", t, exitCode=str(code))


def docker_stop(t: int = 2, exit_code: int = 0) -> list[dict]:
    return [event("kill", t, signal="15"), died(exit_code, t), event("stop", t)]


@pytest.mark.parametrize("code", FAULT_EXIT)
def test_running_at_open_and_dead_of_the_fault_is_started_whatever_its_policy(code):
    start, why = start_decision("no", False, False, True, [died(code)])
    assert start and "it was running when the incident opened" in why and f"exit {code}" in why


@pytest.mark.parametrize("code", FAULT_EXIT)
@pytest.mark.parametrize("stop", [docker_stop(), docker_stop(exit_code=143), [event("kill", 2, signal="9"), died(137)],
                                  [died(143)], [died(130)]],
                         ids=["docker-stop", "docker-stop-143", "docker-kill", "sigterm-from-outside", "sigint"])
@pytest.mark.parametrize("policy", ["no", "always", "unless-stopped", "on-failure"])
def test_stopped_by_someone_during_the_incident_is_never_started(code, stop, policy):
    """Even after the fault made it die once, and whatever its policy or ownvol.start says."""
    events = [died(code, 1), event("start", 1), *stop]
    start, why = start_decision(policy, True, False, True, events)
    assert not start and "stopped by someone" in why and "never started" in why


@pytest.mark.parametrize("code", FAULT_EXIT)
def test_the_hook_s_own_restart_is_not_someone_stopping_it(code):
    own_restart = [event("kill", 1, signal="15"), died(0, 1), event("stop", 1), event("start", 1),
                   event("restart", 1)]
    assert stopped_by_someone([*own_restart, died(code, 2)]) is None
    assert start_decision("no", False, False, True, [*own_restart, died(code, 2)])[0]


@pytest.mark.parametrize("code", FAULT_EXIT)
def test_a_start_up_failure_with_policy_no_keeps_issue_11_s_rule(code):
    """Not answering when its incident opened (initdb, a start-up crash): only ownvol.start=true starts it."""
    start, why = start_decision("no", False, False, False, [died(code)])
    assert not start and "ownvol.start=true" in why
    assert start_decision("no", True, False, False, [died(code)]) == (True, "started: labelled ownvol.start=true")


def test_running_at_open_but_no_death_seen_or_a_clean_exit_is_not_started():
    """The engine's events must show the death of the fault: none (the events no longer reach back), or a clean
    exit 0 (a shutdown someone asked for, e.g. PostgreSQL's smart shutdown on SIGTERM), start nothing."""
    for events in ([], [died(0)]):
        start, why = start_decision("no", False, False, True, events)
        assert not start and "no death of the fault" in why


def test_a_policy_that_says_run_and_a_person_asking_start_it():
    assert start_decision("on-failure", False, False, False, [died(1)]) == \
        (True, "started: its restart policy is on-failure")
    assert start_decision("no", False, True, False, docker_stop())[0]
    assert start_decision("no", False, False, False, None)[0] is False


def test_running_at_open_means_found_healthy_in_the_run_that_wrote_the_line():
    """The watcher's fact (hooks/watcher.py Watched.served): a line written in a run the hook had found healthy
    opens its incident on a running server, whatever the hook read first (a lagging hook reads the line after
    the die); a run never found healthy (a start-up failure) or a line of an earlier run does not."""
    from ownvol.hook.watcher import Watched

    w = Watched("c0ffee", "db", started_ns=100)
    assert not w.served(150)  # never found healthy: a start-up failure
    w.healthy_ns = 120
    assert w.served(150) and w.served(110)
    assert not w.served(90)  # written before this run started
    w.started_ns = 200  # started again since: not yet found healthy in this run
    assert not w.served(250)
