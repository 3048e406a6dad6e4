"""What the hook can do to a container: each action knows Docker and Redis, not strategies.

Every action returns an ActionResult: ok, failed or skipped (with why). None deletes data.
"""

from __future__ import annotations

import json
import os
import posixpath
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import docker
import redis

from ownvol.dockertime import state_time
from ownvol.ownership import PROGRESS_ENV, PROGRESS_LINE, OwnershipError, Progress, mode_to_set, repair
from ownvol.status import driver_name
from ownvol.system_paths import system_area

from . import failed_starts
from .data_path import data_path
from .health import disk_usage, no_room, redis_client, unknown_health, write_blocked
from .model import ActionResult, DataMount, Target
from .repair_helpers import helper_labels
from .services import Service, by_family
from .targets import engine_paths_reachable, tmpfs_of

HELPER_DEST = "/ownvol-target"
SWARM_TASK = "com.docker.swarm.task.id"  # the label Swarm gives its task containers


@dataclass
class Context:
    """What an action acts on: the engine's client, the container's facts (targets.facts), how to reach its mount
    (repair_via: auto | local | helper) and the image of the repair helper container."""

    client: docker.DockerClient
    target: Target
    repair_via: str = "auto"  # auto | local | helper
    helper_image: str = field(default_factory=lambda: os.environ.get("OWNVOL_IMAGE", "ownvol/ownvol:latest"))
    progress: Progress | None = None  # a repair's (entries walked, changed) as it goes, here or from the helper
    start_stopped: bool = False  # a person asked (`ownvol repair`): start a stopped container whatever its policy
    # The incident acted on: when it was opened (epoch seconds, its evidence's time when earlier) and whether the
    # server was answering then (detail "running_at_open", set by the watcher); None outside an incident.
    opened_at: float | None = None
    running_at_open: bool = False

    def container(self):
        """The container as docker-py's model, looked up now; raises docker.errors.NotFound when it is gone."""
        return self.client.containers.get(self.target.id)


def repair_route(ctx: Context) -> str:
    """local when this process can reach the mount's host path itself, else helper."""
    if ctx.repair_via in ("local", "helper"):
        return ctx.repair_via
    mount = ctx.target.mount
    if mount and engine_paths_reachable() and (os.path.isfile if mount.file else os.path.isdir)(mount.host_path):
        return "local"
    return "helper"


def _never_repaired(t: Target) -> str | None:
    """Why a mount with a known owner is never given to it (an idmapped ownvol volume, root, the host's own
    directories); None when it may be."""
    assert t.mount is not None
    if t.idmapped:
        return (f"{t.idmapped}: ownvol never chowns the data of an idmapped volume; the container runs as "
                f"{t.uid}:{t.gid}: if that is not the owner it shows, the map is wrong: recreate the volume (or a "
                f"view-of it) with -o uid={t.uid} -o gid={t.gid}")
    if t.uid == 0 and t.owner_source != "label":
        return (f"the owner would be root ({t.owner_source}): ownership does not stop a root server, and ownvol "
                "gives data to root only when labelled ownvol.uid=0")
    if t.mount.type == "bind" and (why := system_area(posixpath.normpath(t.mount.host_path))):
        return f"{t.mount.host_path} {why}: ownvol never gives the host's own directories to a container's user"
    return None


def repair_ownership(ctx: Context) -> ActionResult:
    """Give the data mount back to the container's uid:gid with the core's symlink-safe walk, here or in a helper
    container, and the mode bits that stop that uid (ownvol.ownership.mode_for on the data dir: u+rwx, or the
    service's data_modes; below it, repair's usable: u+rwx on directories, u+rw on files): ok's detail lists each
    mode changed ("modes": `PATH OLD->NEW`, "." the data dir itself). Skipped (with why) without a mount or a known
    owner, or on a bind mount of the host's own directories."""
    t = ctx.target
    plan = t.path_plan or {}
    if plan.get("plan") == "diagnose":
        return ActionResult("skipped", {"why": plan["diagnosis"], "path_plan": plan})
    if t.mount is None:
        return ActionResult("skipped", {"why": f"{t.data_dir} is not on a bind mount or volume"})
    if t.uid is None or t.gid is None:
        mapped = [n for n in t.notes if n.startswith("the engine maps ids")]
        return ActionResult("skipped", {"why": "no uid:gid known; ownvol never repairs to a guess"
                                               + (f" ({mapped[-1]})" if mapped else "")})
    if why := _never_repaired(t):
        return ActionResult("skipped", {"why": why})
    route = repair_route(ctx)
    base: dict[str, object] = {"route": route, "path": t.mount.host_path, "owner": f"{t.uid}:{t.gid}",
                               "owner_source": t.owner_source}
    if t.conflict:
        base["conflict"] = t.conflict
    if plan:
        base["for"] = plan["path"]  # the path the server could not use; "path" is what is repaired
        base["target"] = t.data_dir
    if t.mount.file:
        return _repair_file(ctx, route, base)
    if route == "local":
        try:
            with data_path(t.mount) as path:
                held = os.stat(path)  # the owner found, for a foreign owner that keeps coming back (hooks/shared.py)
                base["found"] = f"{held.st_uid}:{held.st_gid}"
                mode = mode_to_set(path, t.data_modes)
                report = repair(path, t.uid, t.gid, mode, usable=True, progress=ctx.progress).as_dict()
                if mode is not None:
                    report["mode"] = f"{mode:04o}"
        except (OwnershipError, OSError) as exc:
            return ActionResult("failed", {**base, "error": str(exc)})
    else:
        try:
            report = _repair_in_helper(ctx, t.mount)
        except (docker.errors.DockerException, RuntimeError, ValueError) as exc:
            return ActionResult("failed", {**base, "error": str(exc)})
    if report.get("error") or report.get("errors"):
        if route == "helper" and t.engine_ids and t.engine_ids != (t.uid, t.gid) and \
                "Operation not permitted" in str(report.get("error") or report.get("errors")):
            base["why"] = (f"the repair helper is root in the rootless engine's user namespace, which may change only "
                           f"files whose owner is mapped there; {t.mount.host_path} belongs to a host id outside "
                           f"the engine's map (as a directory of the host's root does): give it to {t.uid}:{t.gid} "
                           "as the host's root, or run the hook on the host (--repair-via local)")
        return ActionResult("failed", {**base, **report})
    return ActionResult("ok", {**base, **report})


def _repair_file(ctx: Context, route: str, base: dict) -> ActionResult:
    """A single-file bind's host file given to the server's uid:gid, and u+r (u+rw when it was writable by
    someone) when its owner could not read it; only from the engine's host (no helper mounts a file), never
    through a link (O_NOFOLLOW). ok's detail says the file alone was changed: `changed` 0 or 1, `modes`."""
    t = ctx.target
    assert t.mount is not None and t.uid is not None and t.gid is not None
    if route != "local":
        return ActionResult("skipped", {**base, "why": "a single-file bind is repaired only where the engine's "
                                                       "files are this process's (no repair helper mounts a file)"})
    try:
        fd = os.open(t.mount.source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return ActionResult("failed", {**base, "error": str(exc)})
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return ActionResult("skipped", {**base, "why": f"{t.mount.source} is not a regular file"})
        changed, modes = 0, []
        base["found"] = f"{st.st_uid}:{st.st_gid}"
        if (st.st_uid, st.st_gid) != (t.uid, t.gid):
            os.fchown(fd, t.uid, t.gid)
            changed = 1
        old = stat.S_IMODE(st.st_mode)
        new = old | stat.S_IRUSR | (stat.S_IWUSR if old & 0o222 else 0)
        if new != old:
            os.fchmod(fd, new)
            modes.append(f". {old:04o}->{new:04o}")
            changed = 1
    except OSError as exc:
        return ActionResult("failed", {**base, "error": str(exc)})
    finally:
        os.close(fd)
    return ActionResult("ok", {**base, "file": True, "changed": changed, "visited": 1, "modes": modes})


def _repair_in_helper(ctx: Context, mount: DataMount) -> dict:
    """Run `ownvol repair-mount` in a short-lived root container, no network, on the same mount source.

    Returns the helper's JSON report (RepairReport.as_dict) plus helper_image; raises RuntimeError when the
    helper failed without a report, docker.errors.DockerException when the engine refused it.
    """
    t = ctx.target
    source = mount.name if mount.type == "volume" else mount.source
    path = posixpath.join(HELPER_DEST, mount.subpath) if mount.subpath else HELPER_DEST
    modes = ",".join(f"{m:04o}" for m in t.data_modes)
    uid, gid = t.engine_ids or (t.uid, t.gid)
    helper = ctx.client.containers.run(
        ctx.helper_image, ["ownvol", "repair-mount", path, "--uid", str(uid), "--gid", str(gid), "--modes", modes],
        name=f"ownvol-repair-{t.id[:12]}-{time.time_ns() % 10**9}", detach=True, user="0:0", network_mode="none",
        # remapped: the helper runs in the engine's own user namespace (docker run --userns=host), where
        # engine_ids are the ids to give: the host's under userns-remap, the container's under rootless
        **({"userns_mode": "host"} if t.remapped else {}),
        volumes={source: {"bind": HELPER_DEST, "mode": "rw"}},
        environment={PROGRESS_ENV: "1"} if ctx.progress else {},
        labels=helper_labels(t.name, t.id))
    try:
        if ctx.progress:
            _follow_progress(helper, ctx.progress)
        code = helper.wait(timeout=120).get("StatusCode")
        out = helper.logs(stdout=True, stderr=False).decode().strip().splitlines()
        err = "\n".join(line for line in helper.logs(stdout=False, stderr=True).decode().strip().splitlines()
                        if not line.startswith(PROGRESS_LINE))
    finally:
        helper.remove(force=True)
    report = json.loads(out[-1]) if out else {}
    if code != 0 and not report.get("error"):
        raise RuntimeError(f"repair helper exited {code}: {err[-300:]}")
    return {**report, "helper_image": ctx.helper_image}


def _follow_progress(helper, progress: Progress) -> None:
    """Hand the helper's progress lines (stderr, see ownvol.cli repair-mount) to progress until it exits."""
    buffer = ""
    for chunk in helper.logs(stream=True, follow=True, stdout=False, stderr=True):
        buffer += chunk.decode(errors="replace")
        *lines, buffer = buffer.split("\n")
        for line in lines:
            if line.startswith(PROGRESS_LINE):
                counts = json.loads(line[len(PROGRESS_LINE):])
                progress(int(counts["walked"]), int(counts["changed"]))


def _info(client: redis.Redis) -> dict:
    return client.info("persistence")


def _wait_background(client: redis.Redis, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        info = _info(client)
        busy = info.get("rdb_bgsave_in_progress") or info.get("aof_rewrite_in_progress") or \
            info.get("aof_rewrite_scheduled") or info.get("rdb_bgsave_scheduled")
        if not busy or time.monotonic() > deadline:
            return info
        time.sleep(0.1)


REDIS_FAMILIES = ("redis", "valkey")


def _redis_or_skip(ctx: Context) -> redis.Redis | ActionResult:
    """A client for the running container's Redis, or the skipped result that says why there is none."""
    if ctx.target.service not in REDIS_FAMILIES:
        return ActionResult("skipped", {"why": f"a Redis step (BGSAVE, CONFIG SET); {ctx.target.service} has none"})
    try:
        status = ctx.container().status
    except docker.errors.NotFound:
        return ActionResult("skipped", {"why": "container is gone"})
    if status != "running":
        return ActionResult("skipped", {"why": f"container is {status}", "status": status})
    client = redis_client(ctx.target, timeout=5)
    if client is None:
        return ActionResult("skipped", {"why": "no Redis address known"})
    return client


def data_dir_blocked(ctx: Context) -> str | None:
    """health.write_blocked on the target's data dir when this process can reach it (repair_route local), read now;
    None when the server's uid can write there or it cannot be told from here."""
    t = ctx.target
    if t.mount is None or ctx.repair_via == "helper" or not engine_paths_reachable():
        return None
    return write_blocked(t, os.path.isdir(t.mount.host_path))


def data_dir_full(ctx: Context) -> str | None:
    """health.no_room of the filesystem of the target's data mount when this process can reach it (as
    data_dir_blocked), read now; None when there is room or it cannot be told from here."""
    t = ctx.target
    if t.mount is None or ctx.repair_via == "helper":
        return None
    return no_room(disk_usage(t, engine_paths_reachable()))


def persist_again(ctx: Context) -> ActionResult:
    """BGSAVE (and BGREWRITEAOF when the AOF failed) and wait for them: clears Redis's error state. Skipped while
    the server's uid cannot write its data dir (data_dir_blocked) or its filesystem has no room (data_dir_full):
    the save would fail there, and a failed BGSAVE makes a Redis that serves refuse writes (MISCONF,
    stop-writes-on-bgsave-error)."""
    client = _redis_or_skip(ctx)
    if isinstance(client, ActionResult):
        return client
    if ctx.target.role == "sentinel":
        return _flush_sentinel(client)
    if blocked := data_dir_blocked(ctx):
        client.close()
        return ActionResult("skipped", {"why": f"{blocked}: a BGSAVE there would fail and make Redis refuse writes "
                                               "(MISCONF); not saved", "blocked": blocked})
    if full := data_dir_full(ctx):
        client.close()
        return ActionResult("skipped", {"why": f"{full}: a BGSAVE there would fail (no space) and make Redis refuse "
                                               "writes (MISCONF); not saved", "no_room": full})
    done = []
    try:
        before = _wait_background(client, 30)
        if before.get("aof_enabled") == 1 and (before.get("aof_last_bgrewrite_status") == "err"
                                               or before.get("aof_last_write_status") == "err"):
            client.bgrewriteaof()
            done.append("BGREWRITEAOF")
            _wait_background(client, 60)
        client.bgsave(schedule=True)
        done.append("BGSAVE")
        after = _wait_background(client, 60)
    except redis.exceptions.RedisError as exc:
        return ActionResult("failed", {"commands": done, "error": str(exc)})
    finally:
        client.close()
    failed = [k for k in ("rdb_last_bgsave_status", "aof_last_bgrewrite_status")
              if after.get(k) == "err"]
    if after.get("aof_enabled") == 1 and after.get("aof_last_write_status") == "err":
        failed.append("aof_last_write_status")
    return ActionResult("failed" if failed else "ok", {"commands": done, "still_err": failed})


def _flush_sentinel(client: redis.Redis) -> ActionResult:
    """SENTINEL FLUSHCONFIG: a Sentinel's only persistence is its config file (src/sentinel.c; an error since
    Redis 7.0 when it cannot save)."""
    try:
        client.execute_command("SENTINEL", "FLUSHCONFIG")
    except redis.exceptions.RedisError as exc:
        return ActionResult("failed", {"commands": ["SENTINEL FLUSHCONFIG"], "error": str(exc)})
    finally:
        client.close()
    return ActionResult("ok", {"commands": ["SENTINEL FLUSHCONFIG"]})


def unpersisted_writes(ctx: Context) -> bool:
    """Would a restart now lose acknowledged writes? (Redis runs and its last save or AOF write failed.)"""
    client = _redis_or_skip(ctx)
    if isinstance(client, ActionResult):
        return False
    try:
        info = _info(client)
    except redis.exceptions.RedisError:
        return False
    finally:
        client.close()
    aof_on = info.get("aof_enabled") == 1
    if aof_on:
        return info.get("aof_last_write_status") == "err"
    return info.get("rdb_last_bgsave_status") == "err" and info.get("rdb_changes_since_last_save", 0) > 0


def _started_at(container) -> float | None:
    """The container's State.StartedAt in epoch seconds (to the second), None if unknown."""
    moment = state_time((container.attrs.get("State") or {}).get("StartedAt"))
    return None if moment is None else float(int(moment))


def _running_for(container) -> float | None:
    """Seconds since the container's State.StartedAt, None if unknown."""
    started = _started_at(container)
    return None if started is None else max(0.0, time.time() - started)


# Seconds a restart waits for what makes it unsafe (Service.restart_hazard: open write transactions, a recovery)
# to pass before it refuses.
HAZARD_WAIT = 2.0


NOT_ANSWERING = ("unreachable", "loading")
START_POLL = 0.5  # seconds between looks at a server starting up


def restart(ctx: Context) -> ActionResult:
    """Restart a running (or restarting) container, start a stopped one (start_decision says whether); skipped for a
    Swarm task, for a data dir on the container's own tmpfs (targets.tmpfs_of), while Redis holds writes it could
    not persist (unpersisted_writes), while a running server's uid cannot write its data dir (data_dir_blocked: the
    cause is still there), while its data dir's filesystem has no room (data_dir_full) and while the server's
    health cannot be told (health.unknown_health); while its service says a restart is unsafe (restart_hazard) it
    waits up to HAZARD_WAIT seconds (ok then says what it waited for), then refuses with the reason (skipped,
    `refused`). A server that does not answer yet within its service's startup_grace is waited for, not restarted:
    ok with how "none" when its start-up ends healthy."""
    try:
        container = ctx.container()
    except docker.errors.NotFound:
        return ActionResult("skipped", {"why": "container is gone"})
    for _name, guard in RESTART_GUARDS:
        if why := guard(ctx, container):
            return ActionResult("skipped", {"why": why})
    service = by_family(ctx.target.service)
    waited: dict = {}
    if container.status == "running":
        waited, hazard = _wait_out_hazard(ctx, service)
        if hazard:
            return ActionResult("skipped", {"why": f"refused after waiting {HAZARD_WAIT:g}s: {hazard}; not restarted",
                                            "refused": hazard})
        if (settled := _not_to_restart(ctx, container, service)) is not None:
            return settled
    why = "running: restarted"
    if container.status not in ("running", "restarting"):
        start, why = _start_stopped(ctx, container)
        if not start:
            return ActionResult("skipped", {"why": why, "restart_policy": ctx.target.restart_policy})
    try:
        if container.status in ("running", "restarting"):
            container.restart(timeout=10)
            how = "restart"
        else:
            container.start()
            how = "start"
    except docker.errors.APIError as exc:
        return ActionResult("failed", {"error": str(exc)})
    return ActionResult("ok", {"how": how, "restart_policy": ctx.target.restart_policy, "why": why, **waited})


def _swarm_task(ctx: Context, container) -> str | None:
    if SWARM_TASK in (container.labels or {}):
        return ("a Swarm task: its service replaces it with a new task; starting this container again would run "
                "Redis outside the service")
    return None


def _own_tmpfs(ctx: Context, container) -> str | None:
    if ctx.target.mount is None and (tmpfs := tmpfs_of(container.attrs, ctx.target.data_dir)):
        return (f"{ctx.target.data_dir} is on the container's own tmpfs {tmpfs}: a restart makes it anew with the "
                "same owner (and loses what it held); `ownvol doctor` names the --tmpfs options that set it")
    return None


def _writes_at_stake(ctx: Context, container) -> str | None:
    if container.status == "running" and unpersisted_writes(ctx):
        return "Redis holds writes it could not persist; a restart would lose them"
    return None


def _cause_remains(ctx: Context, container) -> str | None:
    if container.status == "running" and (blocked := data_dir_blocked(ctx)):
        return (f"{blocked}: a restart cannot help while the cause is there (the server would not start again "
                "there); not restarted")
    return None


def _no_room(ctx: Context, container) -> str | None:
    if full := data_dir_full(ctx):
        return (f"{full}: a restart cannot help while there is no room (the server could not create its files "
                "there); not restarted")
    return None


# What makes restart skip a container before it looks at its server, in order: (name, check giving why or None).
RESTART_GUARDS: tuple[tuple[str, Callable[[Context, object], str | None]], ...] = (
    ("swarm-task", _swarm_task),
    ("own-tmpfs", _own_tmpfs),
    ("unpersisted-writes", _writes_at_stake),
    ("cause-remains", _cause_remains),
    ("no-room", _no_room),
)


def _wait_out_hazard(ctx: Context, service: Service) -> tuple[dict, str | None]:
    """Wait up to HAZARD_WAIT seconds for what makes a restart unsafe (Service.restart_hazard) to pass:
    ({"waited": seconds, "for": the first hazard} or {} when there was none, the hazard still there or None)."""
    hazard = service.restart_hazard(ctx.target)
    if not hazard:
        return {}, None
    began, first = time.monotonic(), hazard
    while hazard and time.monotonic() - began < HAZARD_WAIT:
        time.sleep(0.2)
        hazard = service.restart_hazard(ctx.target)
    return {"waited": round(time.monotonic() - began, 1), "for": first}, hazard


def _not_to_restart(ctx: Context, container, service: Service) -> ActionResult | None:
    """Why a running server is not to be restarted, asked of its probe: healthy, its health unknown, or a start-up
    within its service's startup_grace that ends healthy (waited for); None: restart it."""
    health = service.probe(ctx.target, "running", False)
    if health.healthy:
        return ActionResult("skipped", {"why": "healthy now: a healthy service is never restarted"})
    if why := unknown_health(health):
        return ActionResult("skipped", {"why": f"{why}; a running server is never restarted on a guess"})
    age = _running_for(container)
    if age is not None and age < service.startup_grace and health.state in NOT_ANSWERING:
        # starting up (its entrypoint's initialisation, a recovery): a restart would interrupt it; wait
        # for it to answer, up to the grace after its start
        deadline = time.monotonic() + service.startup_grace - age
        while health.state in NOT_ANSWERING and container.status == "running" and time.monotonic() < deadline:
            time.sleep(START_POLL)
            health = service.probe(ctx.target, "running", False)
            container.reload()
        if health.healthy:
            return ActionResult("ok", {"how": "none", "why": f"its start-up ended healthy within "
                                                             f"{service.startup_grace:g}s: not restarted"})
    return None


def _start_stopped(ctx: Context, container) -> tuple[bool, str]:
    """start_decision for a stopped container, given who stopped it (its events since shortly before the incident
    opened, when an incident was opened and no person asked)."""
    since = None
    if ctx.opened_at is not None and not ctx.start_stopped:
        # a stop can be what made the server fail (PostgreSQL's shutdown checkpoint on a data dir taken from
        # it): its kill event comes before the line that opened the incident
        since = max(ctx.opened_at - STOP_LOOKBACK, _started_at(container) or 0.0)
    return start_decision(ctx.target.restart_policy, ctx.target.start_opt_in, ctx.start_stopped,
                          ctx.running_at_open, _events_since(ctx, since) if since is not None else None)


# Exit codes of a server ended by a signal someone sent it from outside (128 + SIGINT, 128 + SIGTERM).
STOP_EXITS = {130: "SIGINT", 143: "SIGTERM"}
START_EVENTS = ("start", "die", "kill", "stop")
# Seconds before an incident opened that its container's events are read back (never before its last start):
# `docker stop` gives the server 10 s before its SIGKILL, and a stop may be what made it fail.
STOP_LOOKBACK = 30.0


def stopped_by_someone(events: list[dict]) -> str | None:
    """Who stopped the container, from the engine's events of it (decoded /events JSON, oldest first): a `kill`
    or `stop` event after its last `start` (`docker stop`, `docker kill`; the hook's own restart starts it again
    after its kill), or a `die` with the exit code of SIGINT or SIGTERM; None when nobody did. Sources: moby
    daemon/kill.go (kill, with the signal), daemon/stop.go (stop), daemon/monitor.go (die, with exitCode)."""
    why = None
    for event in events:
        action = (event.get("Action") or event.get("status") or "").split(":")[0]
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        if action == "start":
            why = None
        elif action in ("kill", "stop") and why is None:
            signal = f" (signal {attributes['signal']})" if action == "kill" and attributes.get("signal") else ""
            why = f"stopped by someone: the engine's {action} event{signal}"
        elif action == "die" and why is None and (code := _exit_code(attributes)) is not None and code in STOP_EXITS:
            why = f"stopped by someone: {STOP_EXITS[code]} from outside (exit {code})"
    return why


def _exit_code(attributes: dict) -> int | None:
    code = str(attributes.get("exitCode", ""))
    return int(code) if code.lstrip("-").isdigit() else None


def start_decision(policy: str, opt_in: bool, asked: bool, running_at_open: bool,
                   events: list[dict] | None) -> tuple[bool, str]:
    """Whether the hook starts a stopped container after a repair, and why (the one place starts are decided).

    events: the engine's events of the container since its incident opened (None outside an incident). In order:
    a person running `ownvol repair` starts it; one stopped by someone during the incident (stopped_by_someone)
    is never started; one whose restart policy says it should run is started; with policy `no`, one whose server
    was answering when its incident opened and that died during it of the fault (a `die` with another exit code
    than 0, SIGINT's or SIGTERM's) is started, since that restores the state the incident found; else only when
    labelled ownvol.start=true (a start-up failure: issue 11's rule)."""
    if asked:
        return True, "started: asked by `ownvol repair`"
    if events and (who := stopped_by_someone(events)):
        return False, f"{who} during the incident: never started by the hook"
    if policy != "no":
        return True, f"started: its restart policy is {policy}"
    died = [code for e in events or () if (e.get("Action") or e.get("status")) == "die"
            for code in [_exit_code((e.get("Actor") or {}).get("Attributes") or {})]]
    if running_at_open and died and died[-1] not in (0, None, *STOP_EXITS):
        return True, f"started: it was running when the incident opened (it died during it, exit {died[-1]})"
    if opt_in:
        return True, "started: labelled ownvol.start=true"
    if running_at_open and events is not None:
        return False, ("stopped with restart policy \"no\": running when the incident opened, but the engine's "
                       "events since show no death of the fault (" + (f"exit {died[-1]}" if died else "no die event")
                       + "); not started (label ownvol.start=true lets the hook start it after a repair)")
    return False, ("stopped with restart policy \"no\": not started (label ownvol.start=true lets the hook start it "
                   "after a repair)")


def _events_since(ctx: Context, since: float) -> list[dict]:
    """The engine's events of the target container from since (epoch seconds) to now, oldest first
    (GET /events with since, until and filters; moby api/server/router/system/system_routes.go)."""
    try:
        return list(ctx.client.api.events(since=f"{since:.6f}", until=f"{time.time():.6f}", decode=True,
                                          filters={"type": "container", "container": ctx.target.id,
                                                   "event": list(START_EVENTS)}))
    except docker.errors.DockerException:
        return []


def aof_off(ctx: Context) -> ActionResult:
    """CONFIG SET appendonly no, then a BGSAVE: only for a container labelled ownvol.aof-fallback=true; ok carries the
    warning that durability is reduced to RDB snapshots."""
    if not ctx.target.aof_fallback:
        return ActionResult("skipped", {"why": "not opted in (label ownvol.aof-fallback=true)"})
    client = _redis_or_skip(ctx)
    if isinstance(client, ActionResult):
        return client
    try:
        if _info(client).get("aof_enabled") != 1:
            return ActionResult("skipped", {"why": "AOF is already off"})
        client.config_set("appendonly", "no")
        client.bgsave(schedule=True)
        after = _wait_background(client, 60)
    except redis.exceptions.RedisError as exc:
        return ActionResult("failed", {"error": str(exc)})
    finally:
        client.close()
    return ActionResult("ok", {"appendonly": "no", "rdb_last_bgsave_status": after.get("rdb_last_bgsave_status"),
                               "warning": "AOF is off: durability is reduced to RDB snapshots until AOF is back on"})


def aof_on(ctx: Context) -> ActionResult:
    """Turn AOF back on and wait for its rewrite; on failure leave it off again (never half on)."""
    client = _redis_or_skip(ctx)
    if isinstance(client, ActionResult):
        return client
    try:
        client.config_set("appendonly", "yes")
        after = _wait_background(client, 60)
        ok = after.get("aof_enabled") == 1 and after.get("aof_last_bgrewrite_status") == "ok"
        if not ok:
            client.config_set("appendonly", "no")
    except redis.exceptions.RedisError as exc:
        return ActionResult("failed", {"error": str(exc)})
    finally:
        client.close()
    return ActionResult("ok" if ok else "failed", {k: after.get(k) for k in
                                                   ("aof_enabled", "aof_last_bgrewrite_status")})


def start_again(ctx: Context) -> ActionResult:
    """Start a stopped container whose start failed on the driver's Mount (hooks/failed_starts.py decide, asked
    again now: skipped when it no longer holds, e.g. its user started or removed it meanwhile)."""
    container = ctx.container()
    if container.status in ("running", "restarting"):
        return ActionResult("skipped", {"why": f"{container.status}: started meanwhile"})
    start, why = failed_starts.decide(container.attrs, driver_name())
    if not start:
        return ActionResult("skipped", {"why": why or "its last start did not fail"})
    try:
        container.start()
    except docker.errors.APIError as exc:
        return ActionResult("failed", {"error": str(exc)[:300]})
    return ActionResult("ok", {"how": "start", "restart_policy": ctx.target.restart_policy, "why": why})


# The action registry: every action by the name strategies, the journal and the events use.
ACTIONS: dict[str, Callable[[Context], ActionResult]] = {
    "repair-ownership": repair_ownership,
    "persist-again": persist_again,
    "restart": restart,
    "aof-off": aof_off,
    "aof-on": aof_on,
    "start": start_again,
}
# What a strategy may plan: all but aof-on, the AOF fallback's own step (Recovery.restore_aof), and start, the
# failed start's own step (hooks/failed_starts.py).
PLANNABLE = tuple(name for name in ACTIONS if name not in ("aof-on", "start"))
