"""Containers whose start failed because ownvol's own driver did not answer their Mount, started again.

dockerd emits no event for a failed start: containerStart's deferred error path (moby daemon/start.go, 20.10)
sets State.Error and an ExitCode of 128 (when it was 0) and cleans up, with no LogContainerEvent; tried on a
20.10 engine, `docker events` shows nothing while `docker start` fails. And Docker never retries a failed start:
a restart policy acts only on a container that ran (docs.docker.com "Start containers automatically"). When
the driver is killed mid-Mount, dockerd's plugin client (moby pkg/plugins/client.go callWithRetry) retries the
cut call with the body already read, so the driver answers "Name is required" and the start fails with
`error while mounting volume '': VolumeDriver.Mount: Name is required`.

So at the watcher's periodic moments the hook lists the stopped containers, and one that

- failed its start with an error naming VolumeDriver.Mount (State.Error),
- mounts a volume of the driver the hook is configured with (ownvol.status.driver_name: OWNVOL_DRIVER_NAME,
  else "ownvol"),
- has a restart policy other than `no` (always, unless-stopped, on-failure: its user wants it running),

is reported as an incident whose one action is `start` (hooks/actions.py start_again), once the driver answers
dockerd again (the engine's volume list of that driver has no warning about it). Any other failed start (another
error, another driver's volume, policy `no`) is the user's own `docker start` to decide: left alone, said once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import docker
import requests

from ownvol.status import driver_name, is_driver

from .services import service_for
from .targets import is_watched, restart_policy


class Reports(Protocol):
    """What the sweep needs of hooks/recovery.py Recovery (not imported: the `start` action imports this module)."""

    def busy(self, container_id: str) -> bool: ...

    def report(self, container_id: str, name: str, error_type: str, origin: str, detail: dict) -> object: ...


class Emits(Protocol):
    """What the sweep needs of hooks/telemetry.py Telemetry."""

    def emit(self, event: str, **fields) -> object: ...

MOUNT_ERROR = "VolumeDriver.Mount"
ERROR_TYPE = "mount-failed"
STOPPED = ("created", "exited")  # a failed first start leaves "created", a failed later one "exited"


def driver_volumes(attrs: dict, driver: str) -> list[str]:
    """The names of the container's volume mounts of the driver called driver (docker inspect's or the container
    list's Mounts: Type, Name, Driver)."""
    return [m.get("Name") or "" for m in attrs.get("Mounts") or []
            if m.get("Type") == "volume" and is_driver(m.get("Driver") or "", driver)]


def candidate(summary: dict, driver: str) -> bool:
    """Whether a container of the engine's list (GET /containers/json: State, Mounts) is worth an inspect: stopped,
    with a volume of the driver."""
    return summary.get("State") in STOPPED and bool(driver_volumes(summary, driver))


def decide(attrs: dict, driver: str) -> tuple[bool, str]:
    """Whether the hook starts this container (docker inspect's attrs) again, and why. Pure.

    Started: stopped, State.Error names VolumeDriver.Mount, a volume of the driver mounted, restart policy other
    than `no`. Else (False, why); why is "" when the container did not fail a start at all."""
    state = attrs.get("State") or {}
    error = state.get("Error") or ""
    if not error or state.get("Running") or state.get("Status") not in STOPPED:
        return False, ""
    if MOUNT_ERROR not in error:
        return False, f"its start failed for another reason than the driver's Mount ({error[:160]}): left to its user"
    volumes = driver_volumes(attrs, driver)
    if not volumes:
        return False, f"its start failed on a volume of another driver than {driver}: left to its user"
    policy = restart_policy(attrs)
    if policy == "no":
        return False, ("its start failed on the driver's Mount, but its restart policy is \"no\": left to its user's "
                       "own `docker start`")
    return True, f"its start failed on {driver}'s Mount of {', '.join(volumes)}; restart policy {policy}"


def driver_answers(client: docker.DockerClient, driver: str) -> tuple[bool, str]:
    """Whether dockerd reaches the driver now: its volume list of that driver (GET /volumes, filter driver) came
    back with no warning naming it (dockerd turns a driver's failed List into a warning: moby volume/service/store.go
    list). (answers, why not)."""
    try:
        reply = client.api.volumes(filters={"driver": driver}) or {}
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        return False, f"the engine's volume list failed: {str(exc)[:160]}"
    warnings = [w for w in reply.get("Warnings") or [] if driver in w]
    return (False, warnings[0][:200]) if warnings else (True, "")


class FailedStarts:
    """The periodic check: sweep() finds the containers decide() starts and reports each to the recovery (an
    incident whose plan is ["start"]), once the driver answers; says once why any other failed start is left."""

    def __init__(self, client: Callable[[], docker.DockerClient], selector: dict[str, str], recovery: Reports,
                 telemetry: Emits, driver: str | None = None) -> None:
        self.client = client
        self.selector = selector
        self.recovery = recovery
        self.telemetry = telemetry
        self.driver = driver or driver_name()
        self._said: dict[str, str] = {}  # container id -> the State.Error already said (left alone, or waiting)

    def sweep(self) -> list[str]:
        """One check; the ids of the containers reported. Engine errors end the check quietly (the next one tries
        again)."""
        reported: list[str] = []
        try:
            client = self.client()
            filters: dict = {"status": list(STOPPED)}
            if self.selector:
                filters["label"] = [f"{k}={v}" for k, v in self.selector.items()]
            summaries = [s for s in client.api.containers(all=True, filters=filters) if candidate(s, self.driver)]
            for summary in summaries:
                if self.recovery.busy(summary["Id"]):
                    continue
                attrs = client.api.inspect_container(summary["Id"])
                if self._check(client, attrs):
                    reported.append(attrs["Id"])
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError):
            return reported
        return reported

    def _check(self, client: docker.DockerClient, attrs: dict) -> bool:
        cid, name = attrs["Id"], (attrs.get("Name") or "").lstrip("/")
        if not is_watched(attrs, self.selector):
            return False
        error = (attrs.get("State") or {}).get("Error") or ""
        start, why = decide(attrs, self.driver)
        if not start:
            if why and self._said.get(cid) != error:
                self._said[cid] = error
                self.telemetry.emit("start-failure-left", container=name, error=error[:300], why=why)
            return False
        answers, silent = driver_answers(client, self.driver)
        if not answers:
            if self._said.get(cid) != f"waiting {error}":
                self._said[cid] = f"waiting {error}"
                self.telemetry.emit("start-failure-waiting", container=name, error=error[:300],
                                    why=f"the driver {self.driver} does not answer ({silent}): started once it does")
            return False
        self._said.pop(cid, None)
        policy = restart_policy(attrs)
        service = service_for(attrs)
        detail = {"message": f"start failed: {error[:300]}", "error": error[:300], "restart_policy": policy,
                  "why": why, "plan": ["start"], "service": service.family if service else ""}
        return self.recovery.report(cid, name, ERROR_TYPE, "engine", detail) is not None
