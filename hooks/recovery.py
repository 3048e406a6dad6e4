"""The recovery engine: incidents, strategies, verification, the breaker, learning.

It knows strategies and outcomes, not Docker or Redis: an Executor runs actions and verifies.
One recovery at a time per container; only a passed verification ends an incident; every
step is in the journal before and after it runs, so a restarted hook resumes where it was.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .breaker import Breaker
from .journal import Journal
from .model import ActionRecord, ActionResult, Incident
from .shared import advice, recurring, reported
from .telemetry import Telemetry

if TYPE_CHECKING:
    from .strategies import Config, Strategy  # types only: strategies loads the actions (Docker, Redis); this does not

# A log line read late (the hook lags when many containers fail at once) that was written before the
# container was last verified healthy describes a state already healed: it opens no incident. Log times
# are the engine's and verdicts the hook's: the hook runs beside its engine, on one clock; the margin
# keeps a line written while the verdict was being taken.
STALE_MARGIN = 0.5
# The actions that cannot help while the data mount's filesystem has no room (a save, a server's start): in a
# no-space incident the wait before one of them is a wait for room, read every ROOM_POLL seconds.
NEEDS_ROOM = ("persist-again", "restart")
ROOM_POLL = 0.1
# After a gave-up, further sightings of the same failure are counted; a `suppressed` event reports them at most
# this often (seconds), with how many there were since the last one.
SUPPRESSED_EVERY = 60.0


class Verdict(Protocol):
    """What a verification found: healthy or not, a state name and the reasons for it."""

    @property
    def healthy(self) -> bool: ...

    state: str
    reasons: list[str]


@dataclass
class Unverified:
    """A verification that could not be made (the executor raised): not healthy, and why."""

    reasons: list[str]
    state: str = "unknown"
    healthy: bool = False


class Executor(Protocol):
    """What the recovery engine needs from the world: run an action by name (actions.ACTIONS) on a container, and verify
    its health within timeout seconds."""

    def run(self, container_id: str, action: str, incident: Incident | None = None) -> ActionResult: ...

    def verify(self, container_id: str, timeout: float) -> Verdict: ...

    def sharers(self, container_id: str) -> list[dict]:
        """The other containers that mount the same source as this one's data mount ({"name", "status", ...})."""
        ...

    # optional: diagnosis(container_id, detail) -> the path plan (hooks/paths.py PathPlan.as_dict) of an incident
    # whose path no mount the hook may touch holds, else None (hooks/executor.py DockerExecutor.diagnosis)
    # optional: room(container_id) -> a check (why there is no room on the data mount's filesystem, None when there
    # is), or None when it cannot be told (hooks/executor.py DockerExecutor.room)
    # optional: restart_exiting(container_id, since) -> restart at once a container whose server said it exits, once
    # its cause is gone (hooks/executor.py DockerExecutor.restart_exiting)


# (service family, error type) -> that service's own plan, or None for the strategies file's (hooks/services
# Service.plan; assembly.build passes services.plan_of)
ServicePlans = Callable[[str, str], "tuple[str, ...] | None"]
# A check before a recovery step, given (incident, plan, step): the incident it closed (the step does not run), or None.
StepGuard = Callable[[Incident, list, int], "Incident | None"]


class Recovery:
    """Incidents from report to resolved or gave-up: plans from the strategies, one worker thread per container, the
    breaker, the AOF fallback. sleep and clock (epoch seconds) are injectable for tests."""

    def __init__(self, journal: Journal, config: Config, telemetry: Telemetry, executor: Executor,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time,
                 plans: ServicePlans | None = None) -> None:
        self.journal = journal
        self.plans = plans
        self.config = config
        self.telemetry = telemetry
        self.executor = executor
        self.sleep = sleep
        self.clock = clock
        self.breaker = Breaker(config.breaker_max_actions, config.breaker_window)
        self._lock = threading.Lock()
        self._workers: dict[str, threading.Thread] = {}
        self._last_healthy: dict[str, float] = {}
        self._seeded: set[str] = set()
        self._suppressed: dict[int, tuple[int, float]] = {}  # gave-up incident -> (repeats unreported, last report)
        # container id -> the foreign owner that keeps coming back to its data mount (hooks/shared.py), as
        # /status shows it
        self.shared: dict[str, dict] = {}

    # --- detection side -------------------------------------------------------------------------
    def report(self, container_id: str, name: str, error_type: str, origin: str, detail: dict,
               detected_at: float | None = None, background: bool = True) -> Incident | None:
        """A failure was seen: open an incident and recover it, or add evidence to the open one."""
        detected_at = detected_at or self.clock()
        with self._lock:
            healthy_at = self._last_healthy.get(container_id, 0)
            if origin == "log" and detected_at < healthy_at - STALE_MARGIN:
                self.telemetry.emit("stale", container=name, type=error_type, logged=round(detected_at, 3),
                                    healthy=round(healthy_at, 3),
                                    why="logged before the container was last verified healthy: already healed")
                return None
            current = self.journal.open_incident_for(container_id)
            if current:
                self.journal.add_evidence(current.id, f"{origin}: {detail.get('message') or detail}")
                return None
            gave_up = self.journal.last_gave_up(container_id)
            if gave_up and self._handed_off(container_id, gave_up):
                self._suppress(gave_up, name, error_type, f"{origin}: {detail.get('message') or detail}")
                return None
            incident = self.journal.open_incident(container_id, name, error_type, origin, detail, detected_at)
            self.telemetry.metrics.incidents.labels(type=error_type).inc()
            self.telemetry.emit("incident", incident=incident.id, container=name, type=error_type, origin=origin,
                                detail=detail)
            worker = self._new_worker(incident) if background else None
        if worker is not None:
            worker.start()  # outside the lock: a start waits for the new thread to run (ms when 20 are busy)
        if not background:
            self._supervised(incident)
        return incident

    def _diagnosed(self, incident: Incident) -> Incident | None:
        """An incident about a path nothing the hook may touch would fix (the executor's diagnosis: hooks/paths.py):
        a `diagnosis` event saying what cannot be written, by whom and the one change that fixes it, and the
        incident closed gave-up with it before any action; None when there is a plan to run."""
        if self.journal.actions(incident.id):
            return None
        diagnose = getattr(self.executor, "diagnosis", None)
        found = diagnose(incident.container_id, incident.detail) if diagnose else None
        if not found:
            return None
        self.telemetry.emit("diagnosis", incident=incident.id, container=incident.container_name,
                            path=found.get("path"), target=found.get("target"), where=found.get("where"),
                            message=found.get("diagnosis"), why="no mount the hook may touch holds it: nothing done")
        return self._give_up(incident, f"diagnosis, nothing done: {found.get('diagnosis')}", path_plan=found)

    def _suppress(self, gave_up: Incident, name: str, error_type: str, sighting: str) -> None:
        """Count a sighting after a gave-up; report the count at once the first time, then at most every
        SUPPRESSED_EVERY seconds (a crash-looping container is seen every second)."""
        repeats, reported = self._suppressed.get(gave_up.id, (0, float("-inf")))
        repeats += 1
        now = self.clock()
        if now - reported < SUPPRESSED_EVERY:
            self._suppressed[gave_up.id] = (repeats, reported)
            return
        self._suppressed[gave_up.id] = (0, now)
        self.journal.add_evidence(gave_up.id, f"after gave-up, {repeats} sighting(s), the last {sighting}")
        self.telemetry.emit("suppressed", incident=gave_up.id, container=name, type=error_type, repeats=repeats,
                            every=SUPPRESSED_EVERY,
                            why="gave up on it; left to people until it is healthy or the cooldown ends")

    def _handed_off(self, container_id: str, gave_up: Incident) -> bool:
        within = self.clock() < (gave_up.closed_at or 0) + self.config.breaker_cooldown
        return within and self._last_healthy.get(container_id, 0) < (gave_up.closed_at or 0)

    def healthy(self, container_id: str) -> None:
        """Note that the container was verified healthy now (a later log line written before this is stale)."""
        self._last_healthy[container_id] = self.clock()

    def busy(self, container_id: str) -> bool:
        """Whether a recovery of this container is running now."""
        with self._lock:
            worker = self._workers.get(container_id)
            return bool(worker and (worker.ident is None or worker.is_alive()))  # made and not started yet: busy

    def _new_worker(self, incident: Incident) -> threading.Thread | None:
        """The incident's worker thread, registered and not started (the caller holds the lock); None when the
        container has one running."""
        worker = self._workers.get(incident.container_id)
        if worker and (worker.ident is None or worker.is_alive()):
            return None
        worker = threading.Thread(target=self._supervised, args=(incident,), name=f"recover-{incident.id}",
                                  daemon=True)
        self._workers[incident.container_id] = worker
        return worker

    def resume(self, exists: Callable[[str], bool]) -> list[Incident]:
        """Pick up incidents a previous hook left open; those whose container is gone are closed. An incident this
        hook opened itself before resume ran (the containers picked up at start) has a live worker: not resumed."""
        resumed = []
        for incident in self.journal.open_incidents():
            if self.busy(incident.container_id):
                continue
            if not exists(incident.container_id):
                self._close(incident, "abandoned", "the container is gone")
                continue
            done = self.journal.actions(incident.id)
            self.telemetry.emit("resumed", incident=incident.id, container=incident.container_name,
                                type=incident.error_type, done=[f"{a.step}:{a.action}:{a.result or 'interrupted'}"
                                                                for a in done])
            with self._lock:
                worker = self._new_worker(incident)
            if worker is not None:
                worker.start()
            resumed.append(incident)
        return resumed

    # --- the recovery itself --------------------------------------------------------------------
    def plan_for(self, incident: Incident) -> Strategy:
        """The incident's strategy (hooks/strategies.py Config.strategy: the file's `services:` for its service,
        detail "service", else that service's own plan, else the file's `types:`), with actions that keep failing
        for its error type in its own service family moved last (a MariaDB whose initialisation outlasts a
        verification says nothing of what a running PostgreSQL needs)."""
        service = incident.detail.get("service") or ""
        strategy = self.config.strategy(incident.error_type, service, self.plans)
        rates = {a: r for (t, a), r in self.journal.rates(incident.error_type, service).items()}
        return self.config.ordered(strategy, rates)

    def _seed_breaker(self, container_id: str) -> None:
        if container_id in self._seeded:
            return
        self._seeded.add(container_id)
        for a in self.journal.failed_actions(container_id, self.clock() - self.config.breaker_window):
            checked = a.detail.get("verify") or {}
            self.breaker.record(container_id, a.started_at, _failure(a.incident_id, a.action, a.result or "interrupted",
                                                                     checked.get("state"), checked.get("reasons")))

    def _supervised(self, incident: Incident) -> None:
        """A worker's life: recover, and if that raises anyway, end the incident (gave-up, with why) rather
        than leave it open with nobody working on it."""
        try:
            self.recover(incident)
        except Exception as exc:  # noqa: BLE001 - whatever it was, the incident must not stay open
            why = f"the recovery worker failed: {type(exc).__name__}: {str(exc)[:200]}"
            self.telemetry.emit("worker-failed", incident=incident.id, container=incident.container_name, error=why)
            try:
                if self.journal.incident(incident.id).status == "open":
                    self._give_up(incident, why)
            except Exception as again:  # noqa: BLE001 - the journal itself failed: say so, nothing else to do
                self.telemetry.emit("worker-failed", incident=incident.id, container=incident.container_name,
                                    error=f"could not close the incident: {again}"[:300])

    def _run(self, incident: Incident, step: int, action: str) -> ActionResult:
        """One action; an exception (the engine's socket gone mid-action, an APIError) ends the step as failed
        with its reason, and the incident goes on. A repair that did its part for a server that said it exits (a
        fatal line) is followed by the executor's restart_exiting, when it has one: restarted at once rather than
        after the restart policy's back-off."""
        try:
            result = self.executor.run(incident.container_id, action, incident=incident)
            if result.ok and action == "repair-ownership" and incident.detail.get("fatal") \
                    and (restart := getattr(self.executor, "restart_exiting", None)) is not None:
                restart(incident.container_id, incident.detected_at)
            return result
        except Exception as exc:  # noqa: BLE001 - an action's failure is a result, not the worker's end
            error = f"{type(exc).__name__}: {str(exc)[:300]}"
            self.telemetry.emit("action-raised", incident=incident.id, container=incident.container_name, step=step,
                                action=action, error=error)
            return ActionResult("failed", {"error": error})

    def _verify(self, incident: Incident, timeout: float) -> Verdict:
        try:
            return self.executor.verify(incident.container_id, timeout)
        except Exception as exc:  # noqa: BLE001 - cannot tell: not healthy
            return Unverified([f"verification failed: {type(exc).__name__}: {str(exc)[:200]}"])

    def recover(self, incident: Incident) -> Incident:
        """Run the incident's plan from where the journal says it stopped, until a verification passes (resolved) or the
        plan or the breaker ends it (gave-up); the incident as closed."""
        self._seed_breaker(incident.container_id)
        if (diagnosed := self._diagnosed(incident)) is not None:
            return diagnosed
        strategy = self.plan_for(incident)
        plan = self._planned(incident, strategy)
        if not plan:
            return self._give_up(incident, f"no action is safe for {incident.error_type} on "
                                           f"{incident.detail.get('service') or 'this service'} "
                                           f"({incident.detail.get('message') or 'see the evidence'}): left to people")
        done = self.journal.actions(incident.id)
        if (resumed := self._resumed(incident, done)) is not None:
            return resumed
        last_finished = max((a.finished_at or a.started_at for a in done), default=0)
        # A resumed plan backs off per action that ran (an interrupted one ran), not per step: the steps after an
        # interrupted one are often skipped (they cannot help while its work is undone), and counting them would
        # put the next action that can help (the next round's) seconds away from a hook that was down already.
        ran = sum(1 for a in done if a.result != "skipped") if done else None
        # The last action did its part and Redis refuses writes (or its last rewrite failed) with no save in
        # progress: it waits for a save that only the next action starts, so no backoff before that one, and
        # the journal records that action's verification as undecided, not failed (see Journal.rates).
        awaits_save = False
        for step in range(len(done), len(plan)):
            action = plan[step]
            backoff_step = step if ran is None else max(ran, 1)
            wait = strategy.delay_before(backoff_step) - (self.clock() - last_finished if last_finished else 0)
            waited_for_room = self._wait_before(incident, action, step, wait, strategy, awaits_save)
            if (healed := self._healed_while_waiting(incident, plan, step, waited_for_room)) is not None:
                return healed
            for _name, guard in self._step_guards(step > len(done)):
                if (ended := guard(incident, plan, step)) is not None:
                    return ended
            self.journal.start_action(incident.id, step, action)
            started = self.clock()
            result = self._run(incident, step, action)
            ran = None if ran is None else ran + (result.result != "skipped")
            if result.result == "skipped":
                if (healed := self._skipped(incident, step, action, result)) is not None:
                    return healed
                if waited_for_room is not None:
                    last_finished = waited_for_room  # that wait was the delay the next step's counts from
                continue
            verdict = self._verify(incident, self.config.verify.get(action, 10))
            if not verdict.healthy:
                self.breaker.record(incident.container_id, started,
                                    _failure(incident.id, action, result.result, verdict.state, verdict.reasons))
            awaits_save = result.ok and verdict.state in ("refusing-writes", "latent")
            last_finished = self._record_step(incident, step, action, result, verdict, started, awaits_save)
            if action == "aof-off" and result.ok:
                self._aof_disabled(incident)
            if verdict.healthy:
                return self._resolve(incident, action, verdict)
        # The end is the verified state, not the last step's result: a plan whose last step was skipped, or a
        # resumed plan with nothing left, may end on a server its own restart or start-up has healed meanwhile.
        late = self._verify(incident, 0)
        if late.healthy:
            return self._resolve(incident, plan[-1] if plan else None, late)
        return self._give_up(incident, f"{len(plan)} planned actions did not make it healthy")

    def _skipped(self, incident: Incident, step: int, action: str, result: ActionResult) -> Incident | None:
        """A skipped step recorded; when it was skipped because its container's restart policy holds it
        "restarting", a verification (which starts it as soon as the facts allow: DockerExecutor.start_held), the
        incident resolved when it passes; else None (the plan goes on)."""
        self._record_step(incident, step, action, result)
        if result.detail.get("status") != "restarting":
            return None
        verdict = self._verify(incident, self.config.verify.get(action, 10))
        return self._resolve(incident, action, verdict) if verdict.healthy else None

    def _wait_before(self, incident: Incident, action: str, step: int, wait: float, strategy: Strategy,
                     awaits_save: bool) -> float | None:
        """The wait before a step: none before the first or after an action that left a save awaited, else the
        step's delay (wait seconds), or, before a step that needs room in a no-space incident while there is none,
        a wait for room (_wait_for_room: its start, returned)."""
        if awaits_save:
            return None
        if incident.error_type == "no-space":
            if action in NEEDS_ROOM:
                began = self._wait_for_room(incident, wait if step else strategy.delay_before(1))
                if began is not None:
                    return began
            if step and wait > 0:
                self._wait_unless_healthy(incident, wait)
            return None
        if step and wait > 0:
            self.sleep(wait)
        return None

    def _healed_while_waiting(self, incident: Incident, plan: list, step: int, began: float | None) -> Incident | None:
        """After the wait before a step of a no-space incident: when the watcher verified the container healthy
        meanwhile and it still is, the incident resolved (never act on a healthy service); else None."""
        if incident.error_type != "no-space" or not self._healthy_since(incident, began):
            return None
        late = self._verify(incident, 0)
        return self._resolve(incident, plan[step - 1] if step else None, late) if late.healthy else None

    def _healthy_since(self, incident: Incident, began: float | None) -> bool:
        """Whether the watcher verified the container healthy (Recovery.healthy) after began (the clock's time;
        None: after the incident's last step, or its detection)."""
        since = began if began is not None else max(
            [incident.detected_at, *(a.finished_at or a.started_at for a in self.journal.actions(incident.id))])
        return self._last_healthy.get(incident.container_id, 0) > since

    def _wait_unless_healthy(self, incident: Incident, seconds: float) -> None:
        """Sleep seconds, in ROOM_POLL slices, ending early once the watcher has verified the container healthy
        meanwhile (a no-space server that Docker's restart policy brought back once room came: its incident ends on
        the verified state, not after the rest of a plan's delays)."""
        began = self.clock()
        while self.clock() - began < seconds and not self._healthy_since(incident, began):
            self.sleep(min(ROOM_POLL, max(seconds - (self.clock() - began), 0.0)))

    def _wait_for_room(self, incident: Incident, bound: float) -> float | None:
        """Before a step that needs room in a no-space incident: when the data mount's filesystem has none now
        (the executor's room check), wait until it has, reading it every ROOM_POLL seconds, at most bound seconds
        (the step's delay; the strategy's first delay before the first step). The clock's time the wait began, or
        None when there was no wait (room now, or no check from here): the step's delay then applies as it is.
        After the wait the step runs and reads the facts itself (persist-again and restart skip while no room)."""
        check_of = getattr(self.executor, "room", None)
        check = check_of(incident.container_id) if check_of else None
        if check is None or check() is None:
            return None
        began = self.clock()
        while self.clock() - began < bound and check() is not None and not self._healthy_since(incident, began):
            self.sleep(min(ROOM_POLL, max(bound - (self.clock() - began), 0.0)))
        return began

    def _planned(self, incident: Incident, strategy: Strategy) -> list[str]:
        """The incident's plan (action names): the one in its detail, else strategy's, kept in the journal so
        that a resumed recovery follows the plan it began with."""
        plan = incident.detail.get("plan")
        if plan is None:
            plan = [a for _, a in strategy.plan()]
            incident.detail["plan"] = plan
            self.journal.set_plan(incident.id, incident.detail)
        return plan

    def _resumed(self, incident: Incident, done: list[ActionRecord]) -> Incident | None:
        """After a hook stopped mid-plan: its unfinished step marked interrupted (never repeated), and the container
        verified: the incident resolved when it is healthy; None when there is more to do."""
        for record in done:
            if record.result is None:
                self.journal.finish_action(incident.id, record.step, "interrupted", None,
                                           {"why": "the hook stopped while it ran; not repeated"})
        if done:
            verdict = self._verify(incident, self.config.verify.get("persist-again", 10))
            if verdict.healthy:
                return self._resolve(incident, None, verdict)
        return None

    def _step_guards(self, after_a_step: bool) -> list[tuple[str, StepGuard]]:
        """The checks made before each step, in order, by name (the healed-meanwhile check only after a step of
        this run)."""
        guards: list[tuple[str, StepGuard]] = [("healed-meanwhile", self._healed_meanwhile)] if after_a_step else []
        return [*guards, ("breaker", self._breaker_open), ("owner-conflict", self._owner_conflict)]

    def _healed_meanwhile(self, incident: Incident, plan: list, step: int) -> Incident | None:
        # A service whose own restart policy or start-up finished the job after the last
        # verification gave up on it is healthy now: never act on a healthy service.
        late = self._verify(incident, 0)
        return self._resolve(incident, plan[step - 1], late) if late.healthy else None

    def _breaker_open(self, incident: Incident, plan: list, step: int) -> Incident | None:
        now = self.clock()
        if self.breaker.allow(incident.container_id, now):
            return None
        failed = self.breaker.failures(incident.container_id, now)
        return self._give_up(incident, f"circuit breaker: {len(failed)} actions in {self.config.breaker_window:g}s "
                                       f"did not make it healthy: {_failures_text(failed)}", failed=failed)

    def _owner_conflict(self, incident: Incident, plan: list, step: int) -> Incident | None:
        if plan[step] == "repair-ownership" and (conflict := self.journal.conflict(incident.container_id)):
            return self._conflict(incident, conflict)
        return None

    def _record_step(self, incident: Incident, step: int, action: str, result: ActionResult,
                     verdict: Verdict | None = None, started: float = 0.0, awaits_save: bool = False) -> float:
        """A finished step, recorded once: its journal row, its `action` event and the recoveries metric. A skipped
        step has no verdict; a verified one's journal row learns from the verdict (undecided when it awaits
        the next action's save: learning counts it neither way). The time it finished (the clock's, 0.0 when
        skipped)."""
        if verdict is None:
            self.journal.finish_action(incident.id, step, result.result, None, result.detail)
            self.telemetry.emit("action", incident=incident.id, container=incident.container_name, step=step,
                                action=action, result=result.result, detail=result.detail)
            self.telemetry.metrics.recoveries.labels(action=action, result=result.result).inc()
            return 0.0
        checked = {"state": verdict.state, "reasons": verdict.reasons}
        self.journal.finish_action(incident.id, step, result.result, None if awaits_save else verdict.healthy,
                                   {**result.detail, "verify": checked})
        finished = self.clock()
        self.telemetry.metrics.recoveries.labels(action=action, result="ok" if verdict.healthy else "failed").inc()
        self.telemetry.emit("action", incident=incident.id, container=incident.container_name, step=step,
                            action=action, result=result.result, verified=verdict.healthy, state=verdict.state,
                            seconds=round(finished - started, 3), detail=result.detail)
        return finished

    def _aof_disabled(self, incident: Incident) -> None:
        """After an aof-off that did its part: the fallback kept (when to try AOF again) and said."""
        name = incident.container_name
        self.journal.set_fallback(incident.container_id, name, incident.id, self.clock() + self.config.aof_retry)
        self.telemetry.emit("aof-disabled", incident=incident.id, container=name,
                            message="AOF turned off (opted in by ownvol.aof-fallback=true): durability is "
                                    "reduced to RDB snapshots until a later repair lets the hook turn it "
                                    "back on")

    def _resolve(self, incident: Incident, action: str | None, verdict: Verdict) -> Incident:
        seconds = self.clock() - incident.detected_at
        closed = self._close(incident, "resolved", f"verified {verdict.state} after {action or 'resume'}")
        self.telemetry.metrics.recovery_seconds.labels(type=incident.error_type).observe(seconds)
        self.telemetry.emit("recovered", incident=incident.id, container=incident.container_name,
                            type=incident.error_type, by=action, seconds=round(seconds, 3))
        self.healthy(incident.container_id)
        self.breaker.close(incident.container_id)
        if action == "repair-ownership" and self.journal.fallback(incident.container_id):
            self.restore_aof(incident.container_id, repaired=True)
        self._shared_volume(incident)
        return closed

    def _shared_volume(self, incident: Incident) -> None:
        """After an incident whose repair found a foreign owner on the data mount: when that owner keeps coming
        back (hooks/shared.py recurring, within the breaker's window), keep the conflict for /status and report it
        as a `shared-volume` event at the 2nd, 4th, 8th, ... time, naming the other containers on the same source
        (the engine's answer; None when it could not be asked) and what ends it."""
        repairs = self.journal.foreign_owners(incident.container_id, self.clock() - self.config.breaker_window)
        conflict = recurring(repairs, incident.id)
        if conflict is None:
            return
        known = self.shared.get(incident.container_id) or {}
        others = known.get("others") if known.get("foreign_owner") == conflict["foreign_owner"] else None
        if reported(conflict["repeats"]) or others is None:
            try:
                others = self.executor.sharers(incident.container_id)
            except Exception as exc:  # noqa: BLE001 - the engine's answer only names them; the repair is done
                others = None
                conflict["others_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        message = advice(conflict, others)
        self.shared[incident.container_id] = {**conflict, "others": others, "message": message}
        if reported(conflict["repeats"]):
            self.telemetry.emit("shared-volume", incident=incident.id, container=incident.container_name,
                                kind="conflict", **conflict, others=others, message=message)

    def _conflict(self, incident: Incident, conflict: dict) -> Incident:
        """The container's user and its ownvol volume disagree and one repair was already made: the driver
        undoes any repair at the next mount, so the hook stops and says so (people choose the owner)."""
        fix = (f"recreate the volume with -o uid={conflict['container_owner'].split(':')[0]} "
               f"-o gid={conflict['container_owner'].split(':')[1]}, or drop the container's `user:` so it runs as "
               f"{conflict['volume_owner']}")
        self.telemetry.emit("conflict", incident=incident.id, container=incident.container_name, **conflict,
                            message=f"the container runs as {conflict['container_owner']} but its ownvol volume "
                                    f"{conflict['volume']} is for {conflict['volume_owner']}; one repair was made "
                                    f"and the driver restores the volume's owner at every mount: {fix}")
        return self._give_up(incident, f"conflict: container {conflict['container_owner']}, volume "
                                       f"{conflict['volume']} {conflict['volume_owner']}; {fix}")

    def _give_up(self, incident: Incident, why: str, **extra: object) -> Incident:
        """Close the incident gave-up with why; extra goes into the `gave-up` event as it is (JSON-able)."""
        closed = self._close(incident, "gave-up", why)
        self.telemetry.emit("gave-up", incident=incident.id, container=incident.container_name,
                            type=incident.error_type, why=why, **extra,
                            actions=[f"{a.action}:{a.result}" for a in self.journal.actions(incident.id)],
                            message="handed off to people: `ownvol doctor` and `ownvol repair` take it from here")
        self._shared_volume(incident)
        return closed

    def _close(self, incident: Incident, status: str, outcome: str) -> Incident:
        closed = self.journal.close_incident(incident.id, status, outcome)
        self.telemetry.metrics.outcomes.labels(type=incident.error_type, outcome=status).inc()
        return closed

    # --- AOF fallback ---------------------------------------------------------------------------
    def fallback_due(self, container_id: str) -> bool:
        """Whether the container's AOF is off by the fallback and the time to try it on again has come."""
        fb = self.journal.fallback(container_id)
        return fb is not None and bool(fb) and self.clock() >= fb["next_try"] and not self.busy(container_id)

    def restore_aof(self, container_id: str, repaired: bool = False) -> bool:
        """After an aof-off: repair (unless just done), turn AOF on, verify; else try again later."""
        fb = self.journal.fallback(container_id)
        if not fb:
            return False
        steps = [] if repaired else ["repair-ownership"]
        step = max((a.step for a in self.journal.actions(fb["incident_id"])), default=-1) + 1
        results = {}
        for action in [*steps, "aof-on"]:
            self.journal.start_action(fb["incident_id"], step, action)
            result = self.executor.run(container_id, action)
            results[action] = result
            self.journal.finish_action(fb["incident_id"], step, result.result, None, result.detail)
            step += 1
            if action == "repair-ownership" and result.result == "failed":
                break
        verdict = self.executor.verify(container_id, self.config.verify.get("persist-again", 10)) \
            if results.get("aof-on") and results["aof-on"].ok else None
        if verdict is not None and verdict.healthy:
            self.journal.clear_fallback(container_id)
            self.telemetry.emit("aof-restored", incident=fb["incident_id"], container=fb["container_name"],
                                message="AOF is back on after a successful repair and rewrite: durability restored")
            return True
        delay = min(self.config.aof_retry * 2 ** fb["tries"], self.config.aof_max_retry)
        self.journal.fallback_retry(container_id, self.clock() + delay)
        self.telemetry.emit("aof-restore-failed", incident=fb["incident_id"], container=fb["container_name"],
                            results={a: r.result for a, r in results.items()}, retry_in=delay)
        return False


def _failure(incident_id: int, action: str, result: str, state: str | None, reasons: list[str] | None) -> dict:
    """One action that did not make the server healthy, as the breaker keeps it (JSON-able)."""
    return {"incident": incident_id, "action": action, "result": result, "state": state or "unverified",
            "reasons": list(reasons or [])[:3]}


def _failures_text(failed: list[dict]) -> str:
    """The breaker's failures in words, the same ones counted once: "repair-ownership ok -> latent (why) x3; ..."."""
    counts: dict[str, int] = {}
    for f in failed:
        why = "; ".join(f.get("reasons") or [])[:160]
        key = f"{f.get('action')} {f.get('result')} -> {f.get('state')}" + (f" ({why})" if why else "")
        counts[key] = counts.get(key, 0) + 1
    return "; ".join(k if n == 1 else f"{k} x{n}" for k, n in counts.items())
