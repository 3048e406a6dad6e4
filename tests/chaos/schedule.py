"""The seeded fault schedule: which fault, on which server, after how long a pause. The same seed and servers give
the same schedule (random.Random(seed)); every round holds each kind once, in a shuffled order."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from tests.chaos.servers import Server

# kind: the storages of the servers it may hit (None: it hits a process, no server)
KINDS: dict[str, tuple[str, ...] | None] = {
    "chown-running": ("volume", "bind", "tmpfs"),  # chown -R 0:0 of the data dir under a running server
    "chmod-running": ("volume", "bind", "tmpfs"),  # chmod 000, or chown 0:0 + chmod 0700, of the data dir
    "startup-chown": ("volume", "bind"),  # stop, chown -R 0:0, start
    "recreate": ("volume", "bind"),  # docker rm -f, the same container again on the same data
    "fill": ("tmpfs",),  # the small tmpfs filled until the server fails a write, then freed
    "hook-kill": None,  # SIGKILL of the hook, restarted by the supervisor
    "hook-kill-mid-incident": ("volume", "bind"),  # chown-running, SIGKILL of the hook once it acts, restarted
    "driver-kill-group": None,  # SIGKILL of the driver's whole process group, restarted
    "driver-kill-arbiter": None,  # SIGKILL of gunicorn's arbiter alone (its workers must not outlive it), restarted
    "driver-kill-mid-mount": None,  # SIGKILL of the driver's group while a container's Mount walks its tree, restarted
    "dockerd-kill": None,  # SIGKILL of dockerd, restarted
}


@dataclass(frozen=True)
class Step:
    """Wait `pause` seconds, then inject `kind` on `target` (a server key, or "" for a process) with `variant`."""

    pause: float
    kind: str
    target: str
    variant: str


def interval_for(duration: float) -> float:
    """The mean pause between faults: 10 s for a 600 s run, shorter for shorter runs (at least 4 s)."""
    return max(4.0, min(10.0, duration / 60))


def schedule(seed: int, servers: list[Server], duration: float) -> Iterator[Step]:
    """An endless seeded schedule; the runner takes steps until its duration is spent."""
    rng = random.Random(seed)
    interval = interval_for(duration)
    while True:
        kinds = list(KINDS)
        rng.shuffle(kinds)
        for kind in kinds:
            storages = KINDS[kind]
            target, variant = "", ""
            if storages is not None:
                eligible = [s.key for s in servers if s.storage in storages]
                if not eligible:
                    continue
                target = rng.choice(eligible)
            if kind == "chmod-running":
                variant = rng.choice(["000", "0700-root"])
            yield Step(round(interval * rng.uniform(0.6, 1.4), 2), kind, target, variant)
