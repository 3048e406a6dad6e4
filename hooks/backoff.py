"""How long, at least, Docker's restart policy still holds a container "restarting", from its engine events.

After each exit the policy waits before it starts the container again: 100 ms after an exit that ends a run of 10 s
or more (or the first exit its restart manager sees), else twice the previous wait, at most a minute (moby
restartmanager/restartmanager.go: defaultTimeout, backoffMultiplier, maxRestartTimeout, ShouldRestart). The manager
is made anew at each start by a person (`docker start`, `docker restart`: daemon/start.go ResetRestartManager) and
when dockerd starts, and its wait is not shown by the API; its timer starts just before the `die` event is logged
(daemon/monitor.go handleContainerExit). So from the container's own events the wait is known from below: k exits
in a row, each followed only by the policy's `start` and all but the first ending a run shorter than 10 s, mean
at least 100 ms x 2^(k-1). Events the engine no longer keeps (it keeps its last 256: daemon/events/events.go
eventsLimit) only shorten the chain, so the bound stays a bound.
"""

from __future__ import annotations

FIRST_WAIT = 0.1  # seconds: moby restartmanager defaultTimeout
LONGEST_WAIT = 60.0  # seconds: maxRestartTimeout
SHORT_RUN = 10.0  # seconds: a run at least this long resets the wait to FIRST_WAIT
TIMER_SLACK = 0.001  # seconds: event times are rounded; the policy's start comes no sooner than its wait
# What the events are asked for: any of these between two exits but `start` means the chain is not the policy's alone
LIFECYCLE = ("create", "start", "die", "kill", "stop", "restart", "pause", "unpause", "oom")


def held_until(events: list[dict], policy: str) -> float | None:
    """The epoch seconds before which the restart policy will not start the container again, at least.

    Args:
        events: the container's engine events of the LIFECYCLE kinds, oldest first, as `GET /events` gives them
            (each with "status" or "Action", "timeNano", and for a `die` its "exitCode" attribute).
        policy: the container's restart policy's name (HostConfig.RestartPolicy.Name).

    Returns:
        the latest `die`'s time plus the policy's least possible wait after it (the module docstring), or None
        when the latest event is not a `die` (nothing held by the policy is known). An earlier exit counts only
        when the policy restarted after it: the `start` after it came no sooner than the wait allows, and under
        `on-failure` its exit code was not 0 (which stops the container, and a person's later start makes a new
        restart manager).
    """
    kinds = [(e.get("status") or e.get("Action") or "", e.get("timeNano", 0) / 1e9,
              ((e.get("Actor") or {}).get("Attributes") or {}).get("exitCode")) for e in events]
    if not kinds or kinds[-1][0] != "die":
        return None
    exits, i = 0, len(kinds) - 1
    while i >= 1 and kinds[i - 1][0] == "start":
        exits += 1
        if kinds[i][1] - kinds[i - 1][1] >= SHORT_RUN:
            break  # this exit's wait was the first one
        earlier = i - 2
        if earlier < 0 or kinds[earlier][0] != "die" or kinds[i - 1][1] - kinds[earlier][1] < FIRST_WAIT - TIMER_SLACK \
                or (policy == "on-failure" and kinds[earlier][2] == "0"):
            break
        i = earlier
    return kinds[-1][1] + min(FIRST_WAIT * 2 ** (max(exits, 1) - 1), LONGEST_WAIT)


def wait_after_exit(events: list[dict], policy: str, exit_at: float) -> float | None:
    """The least seconds the restart policy waits after the coming exit of the container's current run, were it to
    fail at exit_at (epoch seconds): held_until with that exit added. None when the latest event is not a `start`
    (the current run's beginning is not known)."""
    if not events or (events[-1].get("status") or events[-1].get("Action")) != "start":
        return None
    coming = {"status": "die", "timeNano": int(exit_at * 1e9), "Actor": {"Attributes": {"exitCode": "1"}}}
    until = held_until([*events, coming], policy)
    return None if until is None else until - exit_at
