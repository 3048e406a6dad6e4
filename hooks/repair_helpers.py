"""Repair helpers (the containers actions._repair_in_helper starts): whose they are, and the sweep of those a
killed hook left behind.

A hook removes its helper once it has read the report; a hook SIGKILLed meanwhile cannot, so every helper carries
labels naming the process that started it (HookProcess), and a hook at start removes the helpers that have exited
and whose process is provably gone. A helper still running, one of a live hook, one of a process this hook cannot
see (another host, another pid namespace it is not the parent of) or one without these labels is left alone.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import uuid
from dataclasses import asdict, dataclass

import docker

from ownvol.dockertime import timestamp_ns

ROLE_LABEL, ROLE = "ownvol.role", "repair-helper"
FOR_LABEL = "ownvol.repair.for"  # the repaired container's name
CONTAINER_LABEL = "ownvol.repair.container"  # and its id
OWNER_PREFIX = "ownvol.helper."  # + each HookProcess field
INIT_PIDNS = "pid:[4026531836]"  # the initial pid namespace's inode, PROC_PID_INIT_INO (include/linux/proc_ns.h)
NOT_RUNNING = ("created", "exited", "dead")  # container states with no process (moby container/state.go)
# A container's /etc/hostname, hosts and resolv.conf are bind mounts of DATA_ROOT/containers/ID/NAME (moby
# daemon/daemon.go: repository = filepath.Join(config.Root, "containers"); container/container_unix.go HostnamePath)
OWN_CONTAINER = re.compile(r"/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf)$")


@dataclass(frozen=True)
class HookProcess:
    """The process that starts helpers: instance (a random id made when it first starts one), pid in its own pid
    namespace, start (its start time in clock ticks after boot, field 22 of /proc/PID/stat, proc(5)), pidns (the
    readlink of /proc/PID/ns/pid), boot (/proc/sys/kernel/random/boot_id: this kernel since its last boot), host
    (its hostname, for people) and container (the id of the Docker container it runs in, "" for none)."""

    instance: str
    pid: int
    start: str
    pidns: str
    boot: str
    host: str
    container: str

    def labels(self) -> dict[str, str]:
        return {OWNER_PREFIX + key: str(value) for key, value in asdict(self).items()}

    @classmethod
    def from_labels(cls, labels: dict[str, str]) -> HookProcess | None:
        """The process a helper's labels name; None when a label is missing or the pid is not a number."""
        def label(key: str) -> str:
            return labels[OWNER_PREFIX + key]

        try:
            return cls(label("instance"), int(label("pid")), label("start"), label("pidns"), label("boot"),
                       label("host"), label("container"))
        except (KeyError, ValueError):
            return None


def start_time(pid: int | str, proc: str = "/proc") -> str | None:
    """Field 22 of /proc/PID/stat (starttime, clock ticks after boot); None when there is no such process."""
    try:
        with open(f"{proc}/{pid}/stat") as f:
            after_name = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return after_name[19] if len(after_name) > 19 else None


@functools.cache
def this_process() -> HookProcess:
    """This process as its helpers' labels name it (made once)."""
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot = f.read().strip()
    with open("/proc/self/mountinfo") as f:
        container = own_container(f.read())
    return HookProcess(uuid.uuid4().hex, os.getpid(), start_time("self") or "", os.readlink("/proc/self/ns/pid"), boot,
                       socket.gethostname(), container)


def own_container(mountinfo: str) -> str:
    """The id of the Docker container whose mounts /proc/self/mountinfo (proc(5)) lists: the directory its
    /etc/hostname, /etc/hosts or /etc/resolv.conf is bound from; "" outside a container."""
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] in ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf"):
            if found := OWN_CONTAINER.search(fields[3]):
                return found.group(1)
    return ""


def hook_container_alive(client: docker.DockerClient, owner: HookProcess,
                         helper_created: str) -> tuple[bool | None, str]:
    """For a hook that ran in a container: alive while that container has run since before the helper was created
    (the hook is its main process, or its init's child: it does not die alone); gone when the container is stopped
    or was started again since; None when this engine has no such container (removed, or a container of another
    engine on this host). Raises docker.errors.APIError when the engine does not answer."""

    try:
        state = client.api.inspect_container(owner.container)["State"]
    except docker.errors.NotFound:
        return None, f"its hook's container {owner.container[:12]} is not on this engine"
    if not state.get("Running"):
        return False, f"its hook's container {owner.container[:12]} is not running"
    if timestamp_ns(state["StartedAt"]) > timestamp_ns(helper_created):
        return False, f"its hook's container {owner.container[:12]} was restarted at {state['StartedAt']}, after it"
    return True, f"its hook's container {owner.container[:12]} runs since before it"


def helper_labels(target_name: str, target_id: str) -> dict[str, str]:
    """The labels of a helper this process starts to repair the container target_name (target_id)."""
    return {"ownvol.watch": "false", ROLE_LABEL: ROLE, FOR_LABEL: target_name, CONTAINER_LABEL: target_id,
            **this_process().labels()}


def _pid_namespace_members(pidns: str, proc: str) -> tuple[set[tuple[int, str | None]], int]:
    """(pid in its own namespace, start time) of each process of pid namespace pidns that proc shows, and how many
    processes' namespaces could not be read (EACCES: without CAP_SYS_PTRACE, or a process of a more privileged
    user namespace)."""
    members: set[tuple[int, str | None]] = set()
    unreadable = 0
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(f"{entry.path}/ns/pid") != pidns:
                continue
            with open(f"{entry.path}/status") as f:
                nspid = next(line for line in f if line.startswith("NSpid:")).split()[-1]
        except PermissionError:
            unreadable += 1
            continue
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
        members.add((int(nspid), start_time(entry.name, proc)))
    return members, unreadable


def owner_alive(owner: HookProcess, me: HookProcess, proc: str = "/proc") -> tuple[bool | None, str]:
    """Whether the process that started a helper still runs: (True | False | None when this process cannot tell,
    why). A pid alone is not enough (pids are reused): the start time must match too."""
    if owner.instance == me.instance:
        return True, "this hook"
    if not owner.start or not owner.boot:
        return None, "its hook's start time or boot id is not known"
    if owner.boot != me.boot:
        return None, f"started on another host or before this host's last boot (boot id {owner.boot})"
    if owner.pidns == me.pidns:
        if start_time(owner.pid, proc) == owner.start:
            return True, f"its hook (pid {owner.pid}) runs"
        return False, f"its hook (pid {owner.pid}, started at tick {owner.start}) is gone"
    if me.pidns != INIT_PIDNS:
        return None, f"its hook ran in pid namespace {owner.pidns}, out of this hook's sight"
    members, unreadable = _pid_namespace_members(owner.pidns, proc)
    if (owner.pid, owner.start) in members:
        return True, f"its hook (pid {owner.pid} in {owner.pidns}) runs"
    if unreadable:
        return None, f"{unreadable} processes' pid namespaces cannot be read: its hook may be one of them"
    return False, f"its hook (pid {owner.pid} in {owner.pidns}, {len(members)} processes left there) is gone"


def sweep(client: docker.DockerClient, me: HookProcess | None = None) -> tuple[list[dict], list[dict]]:
    """Remove the helpers on the engine that have exited and whose hook is gone: (removed, kept), each a list of
    {"helper": its name, "container": the name of the container it repaired, "why"}. A running helper is kept (its
    walk ends on its own; the next start sweeps it); removal is not forced, so the engine refuses a helper that is
    running after all. Raises docker.errors.DockerException when the engine cannot list its containers."""
    me = me or this_process()
    removed: list[dict] = []
    kept: list[dict] = []
    for helper in client.containers.list(all=True, filters={"label": f"{ROLE_LABEL}={ROLE}"}):
        labels = helper.labels or {}
        seen = {"helper": helper.name, "container": labels.get(FOR_LABEL, "")}
        owner = HookProcess.from_labels(labels)
        if owner is None:
            kept.append({**seen, "why": "no labels naming its hook (started by an older ownvol)"})
            continue
        if helper.status not in NOT_RUNNING:
            kept.append({**seen, "why": f"{helper.status}: never removed while it may be walking"})
            continue
        alive, why = owner_alive(owner, me)
        if alive is None and owner.container and owner.boot == me.boot:
            alive, why = hook_container_alive(client, owner, helper.attrs["Created"])
        if alive is not False:
            kept.append({**seen, "why": why})
            continue
        try:
            helper.remove()
        except docker.errors.NotFound:
            continue  # another hook swept it first
        except docker.errors.APIError as exc:
            kept.append({**seen, "why": f"the engine refused its removal: {exc}"})
            continue
        removed.append({**seen, "why": why})
    return removed, kept
