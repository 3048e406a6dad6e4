"""The recovery engine's hands on the real engine: run an action, verify health."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Protocol

import docker
from docker.models.containers import Container

from ownvol.hook import actions
from ownvol.hook.actions import Context
from ownvol.hook.health import Health, owner_of
from ownvol.hook.results import ActionResult
from ownvol.hook.targets import FactCache, LastRun, Target, engine_paths_reachable, facts
from ownvol.ownership import Progress


class Runs(Protocol):
    """Where the owners of healthy runs are kept (hooks/journal.py Journal)."""

    def last_run(self, container_id: str) -> tuple[int, int] | None: ...

    def record_run(self, container_id: str, container_name: str, uid: int, gid: int) -> None: ...


class DockerExecutor:
    """The recovery's Executor on a real engine: actions from the registry (actions.ACTIONS), verification by probes
    (each service's probe, hooks/services). client is called for the engine's client each time (made once, lazily, by
    service.build). runs: the journal, where the owners of healthy runs are kept (None: not remembered)."""

    def __init__(self, client: Callable[[], docker.DockerClient], repair_via: str = "auto",
                 helper_image: str | None = None, runs: Runs | None = None) -> None:
        self.client = client
        self.repair_via = repair_via
        self.helper_image = helper_image
        self.runs = runs
        self.cache = FactCache()
        self.progress: Progress | None = None  # handed to each action's context: a repair reports to it
        self.start_stopped = False  # `ownvol repair`: a person asked, so a stopped container is started

    def target(self, container_id: str) -> tuple[Container, Target]:
        """The container (docker-py's model) and the facts the hook reads from it; raises docker.errors.NotFound."""
        container = self.client().containers.get(container_id)
        last_run: LastRun | None = self.runs.last_run if self.runs else None
        return container, facts(self.client(), container, self.cache, last_run)

    def context(self, target: Target) -> Context:
        """The actions' Context for target, with this executor's repair route, helper image and progress callback."""
        ctx = Context(self.client(), target, self.repair_via, progress=self.progress,
                      start_stopped=self.start_stopped)
        if self.helper_image:
            ctx.helper_image = self.helper_image
        return ctx

    def run(self, container_id: str, action: str) -> ActionResult:
        """Run the registry's action on the container: its ActionResult; skipped when the container is gone, failed when
        the engine refused."""
        try:
            _, target = self.target(container_id)
        except docker.errors.NotFound:
            return ActionResult("skipped", {"why": "container is gone"})
        except docker.errors.DockerException as exc:
            return ActionResult("failed", {"error": f"engine: {exc}"})
        return actions.ACTIONS[action](self.context(target))

    def health(self, container_id: str) -> Health:
        """One probe of the container: state, reasons, container status, PING reply, persistence, owner."""
        try:
            container, target = self.target(container_id)
        except docker.errors.NotFound:
            return Health("down", ["container is gone"], "gone", "")
        except docker.errors.DockerException as exc:
            return Health("unreachable", [f"engine: {exc}"], "unknown", "")
        from ownvol.hook.services import by_family

        health = by_family(target.service).probe(target, container.status,
                                                  self.repair_via != "helper" and engine_paths_reachable())
        if health.healthy and target.owner_source == "process" and self.runs is not None \
                and target.uid is not None and target.gid is not None:
            self.runs.record_run(target.id, target.name, target.uid, target.gid)
        return health

    def crash_evidence(self, container_id: str) -> dict | None:
        """The data mount's owner against the service's uid:gid (facts as while it is down), for a crash no
        line explained; None when it cannot be checked from here or no owner is known."""
        try:
            _, target = self.target(container_id)
        except docker.errors.DockerException:
            return None
        local = self.repair_via != "helper" and engine_paths_reachable()
        return owner_of(target, local and target.mount is not None and os.path.isdir(target.mount.host_path))

    def _stays_down(self, container_id: str, health: Health) -> bool:
        """Stopped and no restart policy will bring it back: waiting cannot make it healthy."""
        if health.container not in ("exited", "created", "dead", "gone"):
            return False
        try:
            policy = self.client().api.inspect_container(container_id)["HostConfig"].get("RestartPolicy") or {}
        except docker.errors.DockerException:
            return True
        return policy.get("Name") in (None, "", "no")

    def verify(self, container_id: str, timeout: float, settle: float = 1.5) -> Health:
        """Healthy within timeout (container running, PONG, persistence statuses ok), else the last look.

        A Redis that runs and answers but stays refusing or latent for `settle` seconds will not
        heal by waiting (it does not retry a failed save on its own that soon): no use waiting more.
        """
        deadline = time.monotonic() + timeout
        answering_since = None
        while True:
            health = self.health(container_id)
            now = time.monotonic()
            if health.healthy or now >= deadline or self._stays_down(container_id, health):
                return health
            if health.state in ("refusing-writes", "latent"):
                answering_since = answering_since or now
                if now - answering_since >= settle:
                    return health
            else:
                answering_since = None
            time.sleep(0.2)
