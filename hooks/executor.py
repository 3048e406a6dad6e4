"""The recovery engine's hands on the real engine: run an action, verify health."""

from __future__ import annotations

import os
import posixpath
import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

import docker
from docker.models.containers import Container

from ownvol import userns
from ownvol.dockertime import state_time
from ownvol.ownership import Progress
from ownvol.userns import IdMap

from . import actions, backoff, paths
from .actions import SWARM_TASK, Context
from .connection import UnsupportedHost, endpoint
from .health import disk_usage, mount_verdicts, no_room, owner_of, saving
from .inspect_cache import InspectCache
from .model import ActionResult, Health, Incident, Target
from .services import by_family
from .targets import (
    FactCache,
    LastRun,
    engine_paths_reachable,
    facts,
    host_dir_state,
    nearest_existing,
    restart_policy,
    volume_mountpoint,
)

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


# What start_held needs left of the restart policy's back-off to start a container: the restart must cancel the
# policy's pending start before it fires (moby daemon/kill.go killWithSignal, ExitOnNext, the restart's first step):
# HELD_ANSWERS times the time the engine took to answer the question just asked of it, and HELD_MARGIN seconds at
# least. Quiet, the engine answers in about 5 ms and a whole restart call takes 0.08 to 0.1 s.
HELD_MARGIN = 0.03
HELD_ANSWERS = 4
HELD_HISTORY = 600  # seconds of the container's events read back to learn its back-off


# The stop timeout of start_held's and restart_exiting's restarts (seconds; `docker restart -t`). Each stops a run
# that is ending on its own (a server that said it exits, or a container the policy holds, whose stop sends no
# signal: moby daemon/kill.go killWithSignal, container.Restarting): a stop still waiting after this is signalling
# a run the policy started first, whose PID 1 may ignore SIGTERM (a wrapper shell): that run is killed now, not 10 s on.
EARLY_STOP_TIMEOUT = 2


def _held_margin(took: float) -> float:
    """The seconds a restart's first step needs before the policy's start, the engine having answered in took."""
    return max(HELD_MARGIN, HELD_ANSWERS * took)


def _left(name: str, how: str) -> Callable[[str], dict]:
    """start_held's answer for a container it left to its restart policy, given why."""
    return lambda why: {"started": False, "container": name, "how": how, "why": why}


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
        self.inspects = InspectCache()  # the probes' inspects (health(kept=True)); the watcher forgets on events
        self.progress: Progress | None = None  # handed to each action's context: a repair reports to it
        self.start_stopped = False  # `ownvol repair`: a person asked, so a stopped container is started
        self._idmap: IdMap | userns.UnknownMapping | None = None
        self._idmap_at: float | None = None
        self._rootless = False  # docker info: name=rootless (userns.rootless), as idmap() last asked
        # container id -> (the pid it was read from, the kernel's map of its processes): read once per start
        self._maps: dict[str, tuple[int, IdMap]] = {}
        # container id -> (its labels, its restart policy's name) as the last target() inspected them: a
        # verification reads them there instead of asking again (dockerd answers an inspect only once that
        # container's start is done: 20 crash-looping containers made each such question wait)
        self._seen: dict[str, tuple[dict, str]] = {}
        # container id -> (time.monotonic() before its inspect, the container, its facts) as run() read them for an
        # incident a fatal line opened: restart_exiting's, while young enough (_exiting_read)
        self._read_for_exit: dict[str, tuple[float, Container, Target]] = {}
        # called with (container id, the answer) after each start_held or restart_exiting (assembly: an
        # `early-start` event when it started the container, `early-start-left` with why when it did not)
        self.on_held: Callable[[str, dict], object] | None = None

    def target(self, container_id: str, kept: bool = False, ask_server: bool = True) -> tuple[Container, Target]:
        """The container (docker-py's model) and the facts the hook reads from it, its owner in host ids when
        the engine remaps user namespaces; with kept, from the inspect the last probe kept (InspectCache) while no
        event came about the container; ask_server as targets.facts takes it; raises docker.errors.NotFound."""
        return self._target_of(self._inspect(container_id, kept), ask_server)

    def _inspect(self, container_id: str, kept: bool = False) -> Container:
        if kept:
            return self.inspects.get(container_id, self.client().containers.get)
        return self.client().containers.get(container_id)

    def _target_of(self, container: Container, ask_server: bool = True) -> tuple[Container, Target]:
        container_id = container.id
        last_run: LastRun | None = self.runs.last_run if self.runs else None
        target = facts(self.client(), container, self.cache, last_run, ask_server=ask_server)
        if len(self._seen) >= FactCache.LIMIT:
            self._seen.clear()
        self._seen[container_id] = (target.labels, target.restart_policy)
        return container, self._in_host_ids(target, (container.attrs.get("State") or {}).get("Pid"))

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
                info = self.client().info()
                self._rootless = userns.rootless(info)
                self._idmap = userns.from_engine(info)
            except userns.UnknownMapping as exc:
                self._idmap = exc
            self._idmap_at = now
        if isinstance(self._idmap, userns.UnknownMapping):
            raise self._idmap
        return self._idmap

    def _kernel_map(self, container_id: str, pid: int | None) -> IdMap | None:
        """The map the kernel applies to the container's processes (userns.IdMap.from_process of its main pid,
        State.Pid, when this process sees the engine's processes), kept per container for the times it is down
        (a crash loop); else, for a rootless engine, the engine's own (its containers share its namespace); None
        when neither can be read here."""
        known = self._maps.get(container_id)
        if pid and (known is None or known[0] != pid) and engine_paths_reachable():
            try:
                found = IdMap.from_process(pid)
            except userns.UnknownMapping:
                pass
            else:
                if len(self._maps) >= FactCache.LIMIT:
                    self._maps.clear()
                self._maps[container_id] = known = (pid, found)
        if known is not None:
            return known[1]
        if self._rootless and engine_paths_reachable():
            try:
                path = endpoint().unix_path
            except (UnsupportedHost, docker.errors.DockerException):
                path = None
            engine_pid = userns.listener_pid(path) if path else None
            if engine_pid:
                try:
                    return IdMap.from_process(engine_pid)
                except userns.UnknownMapping:
                    return None
        return None

    def _in_host_ids(self, target: Target, pid: int | None = None) -> Target:
        """target with uid:gid in this host's ids, and remapped, when the engine maps ids (the kernel's map of the
        container, pid its State.Pid; else `docker info` for --userns-remap); uid:gid None, with a note saying
        why, when the engine maps ids and the host ids cannot be told: nothing is repaired then."""
        if target.uid is None or target.gid is None:
            return target
        try:
            configured = self.idmap()
            kernel = self._kernel_map(target.id, pid)
            if self._rootless and configured is not None:
                raise userns.UnknownMapping("docker info says both rootless and userns-remap")
            if kernel is not None and kernel.identity:
                return target
            if kernel is not None:
                return self._kernel_host_ids(target, kernel)
            if self._rootless:
                raise userns.UnknownMapping(
                    "the engine is rootless (docker info: name=rootless), so its containers' ids are subordinate "
                    "host ids, and neither the container's nor the engine's /proc/PID/uid_map can be read from here")
            if configured is None:
                return target
            if target.owner_source == "process":  # the engine's host process table (docker top, /proc): host ids
                return replace(target, owner_source="process (host ids under userns-remap)",
                               remapped=True)
            uid, gid = configured.host_ids(target.uid, target.gid)
        except userns.UnknownMapping as exc:
            why = "rootless" if self._rootless else "userns-remap"
            return replace(target, uid=None, gid=None, owner_source=f"unknown under {why}",
                           notes=[*target.notes, f"the engine maps ids ({why}): {exc}; nothing is repaired"])
        return replace(target, uid=uid, gid=gid, owner_source=f"{target.owner_source}, host ids of "
                                                              f"{target.uid}:{target.gid} under userns-remap",
                       remapped=True)

    def _kernel_host_ids(self, target: Target, kernel: IdMap) -> Target:
        """target's owner through the kernel's map: a configured owner is container ids, mapped; a process's
        owner is already this host's ids (read from this host's /proc/PID/status: `docker top` gives the engine's,
        which are not this host's under a rootless engine), checked against the map. engine_ids: what a root
        helper in the engine's own namespace gives (rootless: the container's ids; --userns-remap: the host's)."""
        assert target.uid is not None and target.gid is not None
        why = "rootless" if self._rootless else "userns-remap"
        if target.owner_source == "process":
            if not engine_paths_reachable():
                raise userns.UnknownMapping("the server's ids come from the engine's process table, in the engine's "
                                            "own ids, and this host's /proc cannot tell them in host ids")
            uid, gid = target.uid, target.gid  # read from this host's /proc (targets._look_for_server)
            inside = kernel.inside_ids(uid, gid)
            source = f"process (host ids of {inside[0]}:{inside[1]} under {why}, {kernel.describe()})"
        else:
            inside = (target.uid, target.gid)
            uid, gid = kernel.host_ids(target.uid, target.gid)
            source = f"{target.owner_source}, host ids of {target.uid}:{target.gid} under {why} ({kernel.describe()})"
        return replace(target, uid=uid, gid=gid, owner_source=source, remapped=True,
                       engine_ids=inside if self._rootless else (uid, gid))

    def context(self, target: Target, incident: Incident | None = None) -> Context:
        """The actions' Context for target, with this executor's repair route, helper image and progress callback,
        and the incident acted on (when it opened, whether its server was answering then)."""
        if incident is not None:
            target = self.for_path(target, incident.detail)
        ctx = Context(self.client(), target, self.repair_via, progress=self.progress,
                      start_stopped=self.start_stopped)
        if incident is not None:
            ctx.opened_at = min(incident.opened_at, incident.detected_at)
            ctx.running_at_open = bool(incident.detail.get("running_at_open"))
        if self.helper_image:
            ctx.helper_image = self.helper_image
        return ctx

    def for_path(self, target: Target, detail: dict) -> Target:
        """target with its repair aimed at the path an incident's detection names beside the data dir
        (hooks/paths.py: the mount of the container's own table that holds it, its subpath cut to the nearest
        existing directory when the engine's paths are local; data_dir the container path repaired), and the
        plan in path_plan; target as it is when the detection names no such path. A plan that diagnoses
        leaves the mount as it is: repair_ownership skips with the diagnosis. A path inside the data dir leaves
        the repair as it always was, the whole data dir (its mount and modes)."""
        found = paths.path_of_detection(detail, target.paths)
        if found is None:
            return target
        path, needs, setting = found
        local = self.repair_via != "helper" and engine_paths_reachable()
        plan = paths.plan(target.mounts, path, needs, self._cwd(target, local), target.uid, target.gid, setting,
                          self._source_is_dir if local else paths.volume_is_dir)
        if plan.mount is None:
            return replace(target, path_plan=plan.as_dict())
        if target.mount is not None and paths.inside(plan.target, target.data_dir) and \
                (plan.mount.type, plan.mount.destination) == (target.mount.type, target.mount.destination):
            # in the data dir: repaired as the data dir always is (the whole of it, its modes)
            return replace(target, path_plan={**plan.as_dict(), "target": target.data_dir,
                                              "mount": target.mount.as_dict()})
        mount = plan.mount
        if mount.type == "volume" and not mount.source:
            mount = replace(mount, source=volume_mountpoint(self.client(), mount.name))
        if local and mount.source and not mount.file:
            mount = nearest_existing(mount, host_dir_state(mount.source))
        same = target.mount is not None and (mount.source, mount.subpath) == (target.mount.source,
                                                                            target.mount.subpath)
        data_dir = posixpath.join(mount.destination, mount.subpath) if mount.subpath else mount.destination
        return replace(target, mount=mount, data_dir=data_dir, data_modes=target.data_modes if same else (),
                       conflict=target.conflict if same else None,
                       path_plan={**plan.as_dict(), "mount": mount.as_dict()})

    @staticmethod
    def _cwd(target: Target, local: bool) -> str:
        """The server process's working directory (/proc/PID/cwd, a container path) when it can be read here,
        else its data dir (Redis chdir()s there at start)."""
        if local and target.server_pid:
            try:
                return os.readlink(f"/proc/{target.server_pid}/cwd")
            except OSError:
                pass
        return target.data_dir

    @staticmethod
    def _source_is_dir(entry: dict) -> bool | None:
        """Whether a Mounts entry's source is a directory on the engine's host (a volume always is)."""
        if entry.get("Type") == "volume":
            return True
        try:
            return os.path.isdir(entry.get("Source") or "")
        except OSError:
            return None

    def diagnosis(self, container_id: str, detail: dict) -> dict | None:
        """The path plan of an incident's detection when it is a diagnosis (hooks/paths.py: nothing the hook may
        touch would fix it), else None."""
        if paths.path_of_detection(detail, {}) is None and not detail.get("path_of"):
            return None
        try:
            _, target = self.target(container_id)
        except docker.errors.DockerException:
            return None
        plan = self.for_path(target, detail).path_plan
        return plan if plan and plan.get("plan") == "diagnose" else None

    def room(self, container_id: str) -> Callable[[], str | None] | None:
        """A check of the room on the filesystem of the container's data mount, read afresh at each call without
        asking the engine again (health.no_room of its statvfs: why there is none, None when there is); None when
        that cannot be told from here (no data mount, the paths not this process's, the container gone)."""
        if self.repair_via == "helper" or not engine_paths_reachable():
            return None
        try:
            _, target = self.target(container_id)
        except docker.errors.DockerException:
            return None
        if target.mount is None:
            return None
        return lambda: no_room(disk_usage(target, True))

    def run(self, container_id: str, action: str, incident: Incident | None = None) -> ActionResult:
        """Run the registry's action on the container (for incident, when one is open): its ActionResult; skipped when
        the container is gone, failed when the engine refused. For an incident a fatal line opened, the server is
        not asked its settings (targets.facts, ask_server), and the probes' inspect is used when it is younger than
        backoff.FIRST_WAIT (the run it shows is still the last: _exiting_read), as one asked now waits while the
        engine handles the exit."""
        fatal = bool(incident and incident.detail.get("fatal"))
        young = self.inspects.young(container_id, backoff.FIRST_WAIT) if fatal else None
        read_at = young[1] if young else time.monotonic()
        try:
            container, target = self._target_of(young[0], False) if young else \
                self.target(container_id, ask_server=not fatal)
        except docker.errors.NotFound:
            return ActionResult("skipped", {"why": "container is gone"})
        except docker.errors.DockerException as exc:
            return ActionResult("failed", {"error": f"engine: {exc}"})
        if fatal:
            if len(self._read_for_exit) >= FactCache.LIMIT:
                self._read_for_exit.clear()
            self._read_for_exit[container_id] = (read_at, container, target)
        return actions.ACTIONS[action](self.context(target, incident))

    def health(self, container_id: str, kept: bool = False) -> Health:
        """One probe of the container: state, reasons, container status, PING reply, persistence, owner; with kept
        (the watcher's steady probes, a verification's looks), the container's inspect as target(kept=True) gives it."""
        try:
            container = self._inspect(container_id, kept)
            if container.status == "created":
                # its facts wait for its start: reading them copies files out of it (GET .../archive), and for a
                # container not running the engine then mounts its filesystems (each volume through its driver)
                # holding the container's lock, which its start waits for (moby daemon/archive.go
                # containerArchivePath): a `docker run` was held up to 0.7 s by such reads
                return Health("down", ["container created"], "created", "")
            container, target = self._target_of(container)
        except docker.errors.NotFound:
            return Health("down", ["container is gone"], "gone", "")
        except docker.errors.DockerException as exc:
            return Health("unreachable", [f"engine: {exc}"], "unknown", "")
        local = self.repair_via != "helper" and engine_paths_reachable()
        health = by_family(target.service).probe(target, container.status, local)
        if health.ping == "PONG" and self.cache.answered(container):  # its own settings, now it answers
            container, target = self._target_of(container)
            health = by_family(target.service).probe(target, container.status, local)
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
        return self._unwritable_of(container, target)

    def _unwritable_of(self, container: Container, target: Target) -> dict[str, str]:
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
            return restart_policy(self.client().api.inspect_container(container_id)) == "no"
        except docker.errors.DockerException:
            return True

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

    def start_held(self, container_id: str, tell: bool = True) -> dict:
        """Start now a container its restart policy holds "restarting" (between a `die` and the end of the policy's
        back-off: hooks/backoff.py), when what made it exit is gone by the facts read now (_cause_stays). The engine
        would start it at the back-off's end; this starts it now, through `POST /containers/{id}/restart` (moby
        daemon/restart.go: the stop of a restarting container only cancels the pending start, daemon/kill.go
        killWithSignal, ExitOnNext; then it is started; the policy stays, RestartCount is reset). Only while the
        policy holds it longer than the margin (backoff.held_until, from the container's events; HELD_ANSWERS
        times the engine's answer to that question, HELD_MARGIN at least): a restart that came after the engine's
        own start would stop a server just started.

        Returns:
            {"started": True, "container" (its name), "how": "held", "why", "restart_policy", "seconds" (the
            restart call's)}; {"started": False, "container", "how", "why"} when it was not: not held (or not long
            enough), a Swarm task, the paths not this process's (not told: nothing done), a cause still there
            ("cause": True: worth asking again), or the engine refused (the back-off then runs its course). With
            tell, on_held hears the answer.
        """
        answer = self._with_target(container_id, "held", self._start_held)
        return self._told(container_id, answer) if tell else answer

    def restart_exiting(self, container_id: str, since: float) -> dict:
        """Restart at once a running container whose server said it exits (a fatal line of its current run, read
        before since, epoch seconds), once what made it exit is gone by the facts read now (_cause_stays): the
        restart's stop cancels the restart policy's start before there is one (moby daemon/kill.go killWithSignal:
        ExitOnNext; daemon/monitor.go handleContainerExit: a cancelled restart manager does not restart), the
        server's own exit ends the stop, and the restart starts it without the policy's back-off. Only while that
        back-off, after the coming exit, is longer than start_held's margin (backoff.wait_after_exit, from the
        container's events): the exit's handling holds the container's lock, the policy's timer runs from inside
        it, and a stop that gets the lock after the policy's start signals the new run (a burst of 20 on a busy
        engine: a wrapper shell as PID 1 ignored the SIGTERM and the restart waited its 10 s out). One that exited
        already and is held "restarting" is start_held's. Nothing when its current run began at or after since
        (a start since the line: that run did not say it exits), nor, unless labelled ownvol.start=true or a
        person asked, under restart policy "no", which would not start it again: its start after the exit is
        actions.start_decision's, as for any stopped container.

        The container and facts the repair before it read (run) are used when they are young enough
        (_exiting_read); else they are read now.

        Returns:
            start_held's shape, "how": "exiting" (or "held").
        """
        if (read := self._exiting_read(container_id)) is not None:
            return self._told(container_id, self._restart_exiting(*read, since))
        return self._told(container_id, self._with_target(
            container_id, "exiting", lambda container, target: self._restart_exiting(container, target, since),
            ask_server=False))

    def _exiting_read(self, container_id: str) -> tuple[Container, Target] | None:
        """The container and its facts as run() read them for this fatal line, when the inspect they come from was
        asked less than backoff.FIRST_WAIT (0.1 s) ago and showed it running: its exit was not handled yet (moby
        daemon/monitor.go handleContainerExit sets it restarting or exited under the container's lock), and its
        restart policy starts a new run no sooner than 0.1 s after the exit is handled, so the run inspected is
        still the last one (a person's `docker restart` within those milliseconds is not seen, as none is between
        an inspect and the restart it decides). An inspect asked instead waits for that lock while the engine
        handles the exit: 10 to 45 ms measured, the time from the failure line to the restart doubled. None
        otherwise."""
        read = self._read_for_exit.pop(container_id, None)
        if read is None or read[1].status != "running" or time.monotonic() - read[0] >= backoff.FIRST_WAIT:
            return None
        return read[1], read[2]

    def _with_target(self, container_id: str, how: str, act: Callable[[Container, Target], dict],
                     ask_server: bool = True) -> dict:
        """act's answer on the container and its facts read now (ask_server as targets.facts takes it); the answer
        that says why not when the engine could not be asked."""
        try:
            container, target = self.target(container_id, ask_server=ask_server)
        except docker.errors.DockerException as exc:
            return _left(container_id[:12], how)(f"engine: {exc}"[:300])
        return act(container, target)

    def _restart_exiting(self, container: Container, target: Target, since: float) -> dict:
        if container.status == "restarting":
            return self._start_held(container, target)
        left = _left(target.name, "exiting")
        if container.status != "running":
            return left(f"{container.status}: not running")
        started = state_time((container.attrs.get("State") or {}).get("StartedAt"))
        if started is None or started >= since:
            return left("started again since its server said it exits")
        if target.restart_policy == "no" and not (target.start_opt_in or self.start_stopped):
            return left("its restart policy is \"no\": whether it is started after its exit is decided then "
                        "(actions.start_decision)")
        if why := self._cause_stays(container, target):
            return left(why)
        if target.restart_policy != "no":
            try:
                events, answered, took = self._policy_events(container)
            except docker.errors.DockerException as exc:
                return left(f"its events could not be read: {exc}"[:300])
            wait = backoff.wait_after_exit(events, target.restart_policy, answered)
            if wait is None:
                return left("its current run's start is not in the engine's events")
            if wait < (margin := _held_margin(took)):
                return left(f"its restart policy starts it {wait:.3f}s after its exit, within {margin:.3f}s (the "
                            f"engine answered in {took:.3f}s): the restart's stop may come after that start and stop "
                            "a server just started; left to the policy")
        return self._restart(container.id, target, "exiting",
                             "its server said it exits and the cause is gone: its uid can write what it needs and its "
                             "data mount has room; restarted at once instead of after its restart policy's back-off")

    def _told(self, container_id: str, answer: dict) -> dict:
        if self.on_held is not None:
            self.on_held(container_id, dict(answer))
        return answer

    def _start_held(self, container: Container, target: Target) -> dict:
        left = _left(target.name, "held")
        if container.status != "restarting":
            return left(f"{container.status}, not held by its restart policy")
        if why := self._cause_stays(container, target):
            return {**left(why), "cause": True}
        try:
            events, answered, took = self._policy_events(container)
        except docker.errors.DockerException as exc:
            return left(f"its events could not be read: {exc}"[:300])
        until = backoff.held_until(events, target.restart_policy)
        if until is None:
            return left("its last exit is not in the engine's events")
        if until - answered < (margin := _held_margin(took)):
            return left(f"its restart policy starts it within {margin:.3f}s (the engine answered in {took:.3f}s): "
                        "it may come first, and a restart then would stop a server just started")
        return self._restart(container.id, target, "held",
                             "held restarting by its restart policy's back-off, and the cause is gone: its uid can "
                             "write what it needs and its data mount has room; started now instead of at the "
                             "back-off's end")

    def _policy_events(self, container: Container) -> tuple[list[dict], float, float]:
        """The container's lifecycle events of the last HELD_HISTORY seconds (oldest first), when they were read
        (epoch seconds) and the seconds the engine took to answer. Raises docker.errors.DockerException."""
        now = time.time()
        events = list(self.client().api.events(since=now - HELD_HISTORY, until=now, decode=True,
                                               filters={"container": container.id, "type": "container",
                                                        "event": list(backoff.LIFECYCLE)}))
        answered = time.time()
        return events, answered, answered - now

    def _cause_stays(self, container: Container, target: Target) -> str | None:
        """Why what made the container's server exit may still be there (None when the facts read now say it is
        gone): a Swarm task (its service starts a new task), the paths not this process's (not known), its uid
        unable to write a directory it needs on a writable mount (health.mount_verdicts), no room on its data
        mount's filesystem (health.no_room)."""
        if SWARM_TASK in target.labels:
            return "a Swarm task: its service starts a new task"
        if self.repair_via == "helper" or not engine_paths_reachable():
            return "its paths cannot be read from here: whether the cause is gone is not known"
        if blocked := self._unwritable_of(container, target):
            return f"its uid still cannot write {', '.join(sorted(set(blocked.values())))}"
        if target.mount is not None and (full := no_room(disk_usage(target, True))):
            return full
        return None

    def _restart(self, container_id: str, target: Target, how: str, why: str) -> dict:
        began = time.monotonic()
        try:
            self.client().api.restart(container_id, timeout=EARLY_STOP_TIMEOUT)
        except docker.errors.APIError as exc:
            return _left(target.name, how)(f"the engine refused the restart: {exc}"[:300])
        return {"started": True, "container": target.name, "how": how, "why": why,
                "restart_policy": target.restart_policy, "seconds": round(time.monotonic() - began, 3)}

    def verify(self, container_id: str, timeout: float, interval: float = 0.05) -> Health:
        """Healthy within timeout seconds (container running, PONG, persistence statuses ok), else the last look.

        Judged only once no save is in progress: a save Redis began before the action may still be
        running after it (a child that failed is only reaped at the next serverCron tick, redis
        server.c checkChildrenDone), and its outcome decides whether Redis refuses writes
        (rdb.c backgroundSaveDoneHandler, server.c writeCommandsDeniedByDiskError). With no save in
        progress, a Redis that refuses writes or whose last rewrite failed stays so until something
        starts a save: that verdict is final at once, and the next action can start the save.
        A container its restart policy holds "restarting" is started at once when nothing the facts show would make
        it fail again (start_held): asked again at each look while a cause holds it, once otherwise.
        A stopped Swarm task is never started again: its service starts a new task for the same slot
        after its restart delay, and that task is what is verified (timeout is extended by the delay
        and SWARM_START).
        Each look after the first takes the kept inspect while no event came about the container (InspectCache, kept
        only while the watcher's event stream forgets): 20 recoveries looking every 50 ms asked the engine 400
        inspects a second, and the hook's detection of the next failures waited behind them (bench:
        burst20_detect_p99_ms).
        """
        task = self.swarm_task(container_id)
        if task:
            timeout += task[2] + SWARM_START
        deadline = time.monotonic() + timeout
        held_done, held_said = bool(task), ""
        self.inspects.forget(container_id)  # the first look inspects after the action; each change after it is an event
        while True:
            subject = (self.successor(*task[:2]) if task else None) or container_id
            health = self.health(subject, kept=True)
            if not held_done and health.container == "restarting":
                # asked again at each look while a cause is what holds it (the room a full disk gets back), said
                # once per reason
                answer = self.start_held(container_id, tell=False)
                held_done = answer["started"] or not answer.get("cause")
                if answer["started"] or (said := re.sub(r"[0-9.]+", "#", answer["why"])) != held_said:
                    held_said = "" if answer["started"] else said
                    self._told(container_id, answer)
                if answer["started"]:
                    continue
            if time.monotonic() >= deadline or (not task and self._stays_down(container_id, health)):
                return health
            if not saving(health) and (health.healthy or health.state in ("refusing-writes", "latent")):
                return health
            time.sleep(interval)
