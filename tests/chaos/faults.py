"""Each fault kind (schedule.KINDS): how it is injected and when it counts as healed.

inject() does the fault and, for a fault that kills a process, what the supervisor does after it (Stack.restart_*);
it returns the time the fault's clock starts (time.monotonic(); for `fill`, the moment the space is freed again) and
the predicate that is true once the product has healed it: the data dir's owner and mode as the server needs them
(Server.state_ok), then a write acknowledged after that, and for process kills the process answering again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import docker

from tests.chaos.schedule import Step
from tests.chaos.servers import Server
from tests.chaos.stack import Stack
from tests.chaos.writers import Writer

FILL_WAIT = 20.0  # seconds the filled tmpfs may take to make its server fail a write
FILL_HOLD = 1.0  # seconds the space stays gone after that failure
MID_INCIDENT_WAIT = 5.0  # seconds the hook may take to act before it is killed anyway
MID_MOUNT_WAIT = 30.0  # seconds the Mount may take to begin its walk before the driver is killed anyway
RETRIED = "started again by the runner, as a user would"  # in a Fault's note: Fault.retried


@dataclass
class Fault:
    """One injected fault and what became of it (times in seconds after t0)."""

    kind: str
    target: str
    variant: str
    at: float  # seconds after the run's faults began
    t0: float = 0.0  # time.monotonic() its clock started
    heal: float | None = None  # None: not healed within the bound
    writes_again: float = 0.0  # from t0 until the first write acknowledged after the last one that failed
    note: str = ""
    # the product's part healed only after the runner retried `docker start` as a user would (Docker retries no
    # failed start: a restart policy acts on a container that started; docs.docker.com "Start containers
    # automatically"); not counted as healed by the product
    retried: bool = False
    writes_by_server: dict[str, float] = field(default_factory=dict)  # writes_again of each server that failed one
    hook_events: list[str] = field(default_factory=list)  # the hook's incident/recovered/gave-up meanwhile

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "t0"}


def chown_tree(path: str, uid: int, gid: int) -> None:
    subprocess.run(["chown", "-R", f"{uid}:{gid}", path], check=False, stderr=subprocess.DEVNULL)


def server_healed(server: Server, writer: Writer, stack: Stack) -> Callable[[], bool]:
    """True once the data dir is right and a write was acknowledged after it became so."""
    since: float | None = None

    def check() -> bool:
        nonlocal since
        if not server.state_ok():
            since = None
            return False
        if since is None:
            since = time.monotonic()
        return writer.acked_since(since)

    return check


def all_healed(stack: Stack, servers: list[Server], writers: dict[str, Writer],
               extra: Callable[[], bool]) -> Callable[[], bool]:
    """True once extra() holds and then every server's data dir is right and it acknowledged a write."""
    since: float | None = None

    def check() -> bool:
        nonlocal since
        if since is None:
            if not extra():
                return False
            since = time.monotonic()
        return all(s.state_ok() and writers[s.key].acked_since(since) for s in servers)

    return check


def _container(stack: Stack, server: Server):
    assert stack.client is not None
    return stack.client.containers.get(server.name)


def inject(step: Step, stack: Stack, servers: dict[str, Server], writers: dict[str, Writer]
           ) -> tuple[float, Callable[[], bool], str]:
    """Do step's fault; (t0, healed predicate, note)."""
    server = servers.get(step.target)
    writer = writers.get(step.target)
    every = list(servers.values())
    assert stack.hook is not None and stack.driver is not None
    note = ""
    t0 = time.monotonic()
    if step.kind == "chown-running":
        assert server
        chown_tree(server.host_dir, 0, 0)
    elif step.kind == "chmod-running":
        assert server
        if step.variant == "0700-root":
            os.chown(server.host_dir, 0, 0)
            os.chmod(server.host_dir, 0o700)
        else:
            os.chmod(server.host_dir, 0)
    elif step.kind == "startup-chown":
        assert server
        container = _container(stack, server)
        container.stop(timeout=10)
        t0 = time.monotonic()
        chown_tree(server.host_dir, 0, 0)
        container.start()
    elif step.kind == "recreate":
        assert server
        _container(stack, server).remove(force=True)
        server.run(stack.client)
    elif step.kind == "fill":
        assert server and writer
        t0, note = _fill(stack, writer)
    elif step.kind == "hook-kill":
        stack.hook.proc.send_signal(signal.SIGKILL)
        stack.restart_hook()
        return t0, _hook_answers(stack), note
    elif step.kind == "hook-kill-mid-incident":
        assert server
        mark = stack.hook.mark()
        chown_tree(server.host_dir, 0, 0)
        try:
            stack.hook.wait_event(lambda e: e.get("container") == server.name and e["event"] in ("incident", "action"),
                                  MID_INCIDENT_WAIT, "the hook to act", after=mark)
        except AssertionError:
            note = "killed before the hook acted"
        stack.hook.proc.send_signal(signal.SIGKILL)
        stack.restart_hook()
    elif step.kind == "driver-kill-group":
        os.killpg(stack.driver.proc.pid, signal.SIGKILL)
        stack.restart_driver()
        return t0, all_healed(stack, every, writers, stack.driver_answers), note
    elif step.kind == "driver-kill-arbiter":
        stack.driver.proc.send_signal(signal.SIGKILL)
        stack.restart_driver()
        return t0, all_healed(stack, every, writers, stack.driver_answers), note
    elif step.kind == "driver-kill-mid-mount":
        return _kill_mid_mount(stack, every, writers)
    elif step.kind == "dockerd-kill":
        stack.engine.kill()
        stack.restart_dockerd()
        return t0, all_healed(stack, every, writers, lambda: True), note
    else:
        raise ValueError(f"unknown fault kind {step.kind}")
    assert server and writer
    return t0, server_healed(server, writer, stack), note


def _kill_mid_mount(stack: Stack, every: list[Server], writers: dict[str, Writer]
                    ) -> tuple[float, Callable[[], bool], str]:
    """A container started on the walk volume (stack.walk_volume: its tree given to root, so the Mount walks it
    all), the driver's group SIGKILLed once the walk began (the volume's root is repaired first, then the tree)
    and restarted. Healed when the container runs with the whole tree its owner's and every file there, its Redis
    acknowledges a write, the driver counts exactly one reference of the volume (the container's), and every
    server acknowledged a write. When `docker start` failed (dockerd retries the cut Mount with an empty body:
    "VolumeDriver.Mount: Name is required"), the runner does not start it: only the hook does
    (hooks/failed_starts.py, the container's restart policy `always`), within the run's bound."""
    assert stack.client is not None and stack.driver is not None
    walk = stack.walk_volume()
    walk.remove_container(stack.client)
    chown_tree(walk.host_dir, 0, 0)
    container = walk.create_container(stack.client, stack.labels)
    outcome: dict[str, str] = {}

    def start() -> None:
        try:
            container.start()
            outcome["started"] = "yes"
        except docker.errors.DockerException as exc:
            outcome["error"] = _why(exc)

    starter = threading.Thread(target=start, daemon=True)
    starter.start()
    deadline = time.monotonic() + MID_MOUNT_WAIT
    while time.monotonic() < deadline and starter.is_alive() and os.stat(walk.host_dir).st_uid != walk.owner[0]:
        time.sleep(0.005)
    walking = starter.is_alive() and os.stat(walk.host_dir).st_uid == walk.owner[0]
    t0 = time.monotonic()
    os.killpg(stack.driver.proc.pid, signal.SIGKILL)
    stack.restart_driver()
    starter.join(120)
    notes = [] if walking else ["the Mount was not walking when the driver was killed"]
    if "error" in outcome:
        notes.append(f"docker start failed: {outcome['error'][:160]}; left to the hook")
    healed = all_healed(stack, every, writers, lambda: stack.driver_answers() and walk.healthy(stack))
    return t0, healed, "; ".join(notes)


def _why(exc: docker.errors.DockerException) -> str:
    """The engine's own words for a refusal (an APIError's explanation), else the exception's."""
    return str(getattr(exc, "explanation", None) or exc)


def _hook_answers(stack: Stack) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return stack.hook is not None and bool(stack.hook.status())
        except OSError:
            return False
    return check


def _fill(stack: Stack, writer: Writer) -> tuple[float, str]:
    """Fill the tmpfs until its server fails a write (or FILL_WAIT passes), hold, free it; (the time it was freed,
    note)."""
    filler = stack.small / "filler"
    started = time.monotonic()
    try:
        with open(filler, "wb") as f:
            block = b"\0" * (1 << 20)
            while True:
                f.write(block)
                f.flush()
    except OSError:
        pass
    deadline = started + FILL_WAIT
    while time.monotonic() < deadline and not any(t >= started for t in writer.fail_times):
        time.sleep(0.05)
    note = "" if any(t >= started for t in writer.fail_times) else f"no failed write within {FILL_WAIT}s"
    time.sleep(FILL_HOLD)
    filler.unlink()
    return time.monotonic(), note


def by_hand(server: Server, stack: Stack) -> None:
    """What a person would do for a fault the product did not heal: the owner and mode back, the container
    started."""
    chown_tree(server.host_dir, *server.owner)
    os.chmod(server.host_dir, 0o700 if server.family == "postgres" else 0o755)
    try:
        container = _container(stack, server)
        if container.status != "running":
            container.start()
    except docker.errors.DockerException:
        pass
