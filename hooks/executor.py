"""The recovery engine's hands on the real engine: run an action, verify health."""

from __future__ import annotations

import os
import posixpath
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

import docker
from docker.models.containers import Container

from ownvol import userns
from ownvol.ownership import Progress
from ownvol.userns import IdMap

from . import actions
from .actions import SWARM_TASK, Context
from .health import mount_verdicts, owner_of, saving
from .model import ActionResult, Health, Incident, Target
from .services import by_family
from .targets import FactCache, LastRun, engine_paths_reachable, facts

IDMAP_TTL = 60.0  # seconds a `docker info` answer about user namespaces is trusted

SWARM_RESTART_DELAY_NS = 5_000_000_000
SWARM_START = 10.0  # seconds for a new Swarm task's container to be created and started on a busy node


class Runs(Protocol):
    """Where the owners of healthy runs are kept (hooks/journal.py Journal)."""

    def last_run(self, container_id: str) -> tuple[int, int] | None: ...

    def record_run(self, container_id: str, container_name: str, uid: int, gid: int) -> None: ...


def _crash_context(checked: str, wanted: str) -> dict:
    """An incident's context for a directory the server's uid cannot write (in the container): the entry it
    must create there when the setting's directory does not exist yet (its next component), else the
    directory itself, marked `directory` (a path the server writes in, not a file it creates)."""
    if wanted != checked and wanted.startswith(checked.rstrip("/") + "/"):
        return {"path": posixpath.join(checked, wanted[len(checked.rstrip("/")) + 1:].split("/")[0])}
    return {"path": checked, "directory": True}


class DockerExecutor:
    """The recovery's Executor on a real engine: actions from the registry (actions.ACTIONS), verification by probes
    (each service's probe, hooks/services). client is called for the engine's client each time (made once, lazily, by
    assembly.build). runs: the journal, where the owners of healthy runs are kept (None: not remembered)."""

    def __init__(self, client: Callable[[], docker.DockerClient], repair_via: str = "auto",
                 helper_image: str | None = None, runs: Runs | None = None) -> None:
        self.client = client
        self.repair_via = repair_via
        self.helper_image = helper_image
        self.runs = runs
        self.cache = FactCache()
        self.progress: Progress | None = None  # handed to each action's context: a repair reports to it
        self.start_stopped = False  # `ownvol repair`: a person asked, so a stopped container is started
        self._idmap: IdMap | userns.UnknownMapping | None = None
        self._idmap_at: float | None = None
        # container id -> (its labels, its restart policy's name) as the last target() inspected them: a
        # verification reads them there instead of asking again (dockerd answers an inspect only once that
        # container's start is done: 20 crash-looping containers made each such question wait)
        self._seen: dict[str, tuple[dict, str]] = {}

    def target(self, container_id: str) -> tuple[Container, Target]:
        """The container (docker-py's model) and the facts the hook reads from it, its owner in host ids when
        the engine remaps user namespaces; raises docker.errors.NotFound."""
        container = self.client().containers.get(container_id)
        last_run: LastRun | None = self.runs.last_run if self.runs else None
        target = facts(self.client(), container, self.cache, last_run)
        if len(self._seen) >= FactCache.LIMIT:
            self._seen.clear()
        self._seen[container_id] = (target.labels, target.restart_policy)
        return container, self._in_host_ids(target)

    def sharers(self, container_id: str) -> list[dict]:
        """The other containers, in any state, with a mount of the same source as this one's data mount: for a
        volume, those the engine lists for its name (`docker ps -a --filter volume=NAME`; the filter also matches a
        mount's destination, so each mount's Name or Source is checked), for a bind, every container's mounts with
        that Source (GET /containers/json lists each one's Mounts). [{"id" (12 hex), "name", "status",
        "destination"}]; [] without a data mount; raises docker.errors.DockerException."""
        container, target = self.target(container_id)
        mount = target.mount
        if mount is None:
            return []
        filters = {"volume": mount.name} if mount.type == "volume" and mount.name else None
        found = []
        for other in self.client().containers.list(all=True, sparse=True, filters=filters):
            if other.id == container.id:
                continue
            for m in other.attrs.get("Mounts") or []:
                if (mount.name and m.get("Name") == mount.name) or m.get("Source") == mount.source:
                    names = other.attrs.get("Names") or [other.id[:12]]
                    found.append({"id": other.id[:12], "name": names[0].lstrip("/"),
                                  "status": other.attrs.get("State") or "", "destination": m.get("Destination")})
                    break
        return found

    def idmap(self) -> IdMap | None:
        """The engine's user-namespace mapping from its `docker info` (asked at most once a minute); None when
        it does not remap; UnknownMapping when it does and the host ids cannot be told."""
        now = time.monotonic()
        if self._idmap_at is None or now - self._idmap_at > IDMAP_TTL:
            try:
                self._idmap = userns.from_engine(self.client().info())
            except userns.UnknownMapping as exc:
                self._idmap = exc
            self._idmap_at = now
        if isinstance(self._idmap, userns.UnknownMapping):
            raise self._idmap
        return self._idmap

    def _in_host_ids(self, target: Target) -> Target:
        if target.uid is None or target.gid is None:
            return target
        try:
            mapping = self.idmap()
            if mapping is None:
                return target
            if target.owner_source == "process":  # the engine's host process table (docker top, /proc): host ids
                return replace(target, owner_source="process (host ids under userns-remap)",
                               remapped=True)
            uid, gid = mapping.host_ids(target.uid, target.gid)
        except userns.UnknownMapping as exc:
            return replace(target, uid=None, gid=None, owner_source="unknown under userns-remap",
                           notes=[*target.notes, f"the engine remaps user namespaces: {exc}; nothing is repaired"])
        return replace(target, uid=uid, gid=gid, owner_source=f"{target.owner_source}, host ids of "
                                                              f"{target.uid}:{target.gid} under userns-remap",
                       remapped=True)

    def context(self, target: Target, incident: Incident | None = None) -> Context:
        """The actions' Context for target, with this executor's repair route, helper image and progress callback,
        and the incident acted on (when it opened, whether its server was answering then)."""
        ctx = Context(self.client(), target, self.repair_via, progress=self.progress,
                      start_stopped=self.start_stopped)
        if incident is not None:
            ctx.opened_at = min(incident.opened_at, incident.detected_at)
            ctx.running_at_open = bool(incident.detail.get("running_at_open"))
        if self.helper_image:
            ctx.helper_image = self.helper_image
        return ctx

    def run(self, container_id: str, action: str, incident: Incident | None = None) -> ActionResult:
        """Run the registry's action on the container (for incident, when one is open): its ActionResult; skipped when
        the container is gone, failed when the engine refused."""
        try:
            _, target = self.target(container_id)
        except docker.errors.NotFound:
            return ActionResult("skipped", {"why": "container is gone"})
        except docker.errors.DockerException as exc:
            return ActionResult("failed", {"error": f"engine: {exc}"})
        return actions.ACTIONS[action](self.context(target, incident))

    def health(self, container_id: str) -> Health:
        """One probe of the container: state, reasons, container status, PING reply, persistence, owner."""
        try:
            container, target = self.target(container_id)
        except docker.errors.NotFound:
            return Health("down", ["container is gone"], "gone", "")
        except docker.errors.DockerException as exc:
            return Health("unreachable", [f"engine: {exc}"], "unknown", "")
        health = by_family(target.service).probe(target, container.status,
                                                  self.repair_via != "helper" and engine_paths_reachable())
        if health.target is None:
            health.target = target.as_dict()  # every service's facts ride along (the status page, the drift watch)
        if health.healthy and target.owner_source == "process" and self.runs is not None \
                and target.uid is not None and target.gid is not None:
            self.runs.record_run(target.id, target.name, target.uid, target.gid)
        return health

    def crash_evidence(self, container_id: str) -> dict | None:
        """For a crash no line explained, with the facts as while it is down: the data mount's owner against
        the service's uid:gid (owner_of) when it is wrong; else the first writable mount that a setting of the
        server names (health.mount_verdicts: its binary log's, its sockets' directory...) and its uid cannot
        write, as owner_of's shape ("path" on the host, "ok", "problem", "uid", "gid", "mode") with "mount"
        (its destination), "context" ({"path": the directory in the container}), "needed_by" (the settings) and
        "mounts" (every failing verdict); else, when only mounts no setting names fail, {"ok": True,
        "unneeded": those verdicts} (reported, never repaired); else the data mount's owner, or None when
        nothing can be checked from here or no owner is known."""
        try:
            container, target = self.target(container_id)
        except docker.errors.DockerException:
            return None
        local = self.repair_via != "helper" and engine_paths_reachable()
        owner = owner_of(target, local and target.mount is not None and os.path.isdir(target.mount.host_path))
        if owner and not owner.get("ok", True):
            return owner
        failing = [v for v in mount_verdicts(target, container.attrs.get("Mounts") or [], local) if not v["ok"]]
        needed = [v for v in failing if set(v["needed_by"]) - {"data dir"}]
        if needed:
            first = needed[0]
            return {"path": first["host_path"], "ok": False, "problem": first["problem"],
                    **{k: first[k] for k in ("uid", "gid", "mode") if k in first},
                    "mount": first["destination"], "context": _crash_context(first["path"], first["wanted"]),
                    "needed_by": first["needed_by"], "mounts": failing}
        unneeded = [v for v in failing if not v["candidate"]]
        if unneeded:
            return {**(owner or {}), "ok": True, "unneeded": unneeded}
        return owner

    def unwritable(self, container_id: str) -> dict[str, str]:
        """setting -> the directory checked (in the container) of each setting of the server ("data dir",
        Settings.writes) on a writable mount where its uid cannot create entries now (health.mount_verdicts);
        {} when nothing is found or it cannot be checked from here."""
        try:
            container, target = self.target(container_id)
        except docker.errors.DockerException:
            return {}
        local = self.repair_via != "helper" and engine_paths_reachable()
        return {name: v["path"] for v in mount_verdicts(target, container.attrs.get("Mounts") or [], local)
                if not v["ok"] for name in v["needed_by"]}

    def _stays_down(self, container_id: str, health: Health) -> bool:
        """Stopped and no restart policy will bring it back: waiting cannot make it healthy."""
        if health.container not in ("exited", "created", "dead", "gone"):
            return False
        if health.container != "gone" and container_id in self._seen:
            return self._seen[container_id][1] == "no"
        try:
            policy = self.client().api.inspect_container(container_id)["HostConfig"].get("RestartPolicy") or {}
        except docker.errors.DockerException:
            return True
        return policy.get("Name") in (None, "", "no")

    def swarm_task(self, container_id: str) -> tuple[str, str, float] | None:
        """(service id, slot, restart delay in seconds) of a stopped Swarm task whose service may start a new
        task for its slot, else None (not a Swarm task, still running, or its service's restart condition is
        `none`).

        The slot is the middle of the task name `<service>.<slot>.<task id>` (a replica number, or the node id
        of a global service). The delay is the service's TaskTemplate.RestartPolicy.Delay; a worker's engine
        cannot read services (only managers can), so there it is swarmkit's default, 5 s
        (moby/swarmkit manager/orchestrator/restart/restart.go, defaultRestartDelay).
        """
        if container_id in self._seen and SWARM_TASK not in self._seen[container_id][0]:
            return None  # labels are fixed at create: never a task
        try:
            attrs = self.client().api.inspect_container(container_id)
        except docker.errors.DockerException:
            return None
        labels = attrs["Config"].get("Labels") or {}
        slot = labels.get("com.docker.swarm.task.name", "").split(".")[-2:-1]
        if SWARM_TASK not in labels or not slot or attrs["State"]["Status"] in ("running", "restarting"):
            return None
        service_id, delay = labels.get("com.docker.swarm.service.id", ""), SWARM_RESTART_DELAY_NS
        try:
            policy = self.client().api.inspect_service(service_id)["Spec"].get("TaskTemplate", {}).get(
                "RestartPolicy") or {}
        except docker.errors.APIError:
            policy = {}
        if policy.get("Condition") == "none":
            return None
        return service_id, slot[0], policy.get("Delay", delay) / 1e9

    def successor(self, service_id: str, slot: str) -> str | None:
        """The running container of a Swarm service's task in that slot on this engine, if there is one."""
        for c in self.client().containers.list(filters={"label": f"com.docker.swarm.service.id={service_id}"}):
            if c.labels.get("com.docker.swarm.task.name", "").split(".")[-2:-1] == [slot]:
                return c.id
        return None

    def verify(self, container_id: str, timeout: float, interval: float = 0.05) -> Health:
        """Healthy within timeout seconds (container running, PONG, persistence statuses ok), else the last look.

        Judged only once no save is in progress: a save Redis began before the action may still be
        running after it (a child that failed is only reaped at the next serverCron tick, redis
        server.c checkChildrenDone), and its outcome decides whether Redis refuses writes
        (rdb.c backgroundSaveDoneHandler, server.c writeCommandsDeniedByDiskError). With no save in
        progress, a Redis that refuses writes or whose last rewrite failed stays so until something
        starts a save: that verdict is final at once, and the next action can start the save.
        A stopped Swarm task is never started again: its service starts a new task for the same slot
        after its restart delay, and that task is what is verified (timeout is extended by the delay
        and SWARM_START).
        """
        task = self.swarm_task(container_id)
        if task:
            timeout += task[2] + SWARM_START
        deadline = time.monotonic() + timeout
        while True:
            subject = (self.successor(*task[:2]) if task else None) or container_id
            health = self.health(subject)
            if time.monotonic() >= deadline or (not task and self._stays_down(container_id, health)):
                return health
            if not saving(health) and (health.healthy or health.state in ("refusing-writes", "latent")):
                return health
            time.sleep(interval)
