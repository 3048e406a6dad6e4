"""The recovery engine's hands on the real engine: run an action, verify health."""

from __future__ import annotations

import time
from collections.abc import Callable

import docker
from docker.models.containers import Container

from ownvol.hook import actions
from ownvol.hook.actions import Context
from ownvol.hook.health import Health, probe, saving
from ownvol.hook.results import ActionResult
from ownvol.hook.targets import Target, engine_paths_reachable, facts
from ownvol.ownership import Progress


class DockerExecutor:
    """The recovery's Executor on a real engine: actions from the registry (actions.ACTIONS), verification by probes
    (health.probe). client is called for the engine's client each time (made once, lazily, by service.build)."""

    def __init__(self, client: Callable[[], docker.DockerClient], repair_via: str = "auto",
                 helper_image: str | None = None) -> None:
        self.client = client
        self.repair_via = repair_via
        self.helper_image = helper_image
        self.progress: Progress | None = None  # handed to each action's context: a repair reports to it

    def target(self, container_id: str) -> tuple[Container, Target]:
        """The container (docker-py's model) and the facts the hook reads from it; raises docker.errors.NotFound."""
        container = self.client().containers.get(container_id)
        return container, facts(self.client(), container)

    def context(self, target: Target) -> Context:
        """The actions' Context for target, with this executor's repair route, helper image and progress callback."""
        ctx = Context(self.client(), target, self.repair_via, progress=self.progress)
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
        return probe(target, container.status, local_paths=self.repair_via != "helper" and engine_paths_reachable())

    def _stays_down(self, container_id: str, health: Health) -> bool:
        """Stopped and no restart policy will bring it back: waiting cannot make it healthy."""
        if health.container not in ("exited", "created", "dead", "gone"):
            return False
        try:
            policy = self.client().api.inspect_container(container_id)["HostConfig"].get("RestartPolicy") or {}
        except docker.errors.DockerException:
            return True
        return policy.get("Name") in (None, "", "no")

    def verify(self, container_id: str, timeout: float, interval: float = 0.05) -> Health:
        """Healthy within timeout seconds (container running, PONG, persistence statuses ok), else the last look.

        Judged only once no save is in progress: a save Redis began before the action may still be
        running after it (a child that failed is only reaped at the next serverCron tick, redis
        server.c checkChildrenDone), and its outcome decides whether Redis refuses writes
        (rdb.c backgroundSaveDoneHandler, server.c writeCommandsDeniedByDiskError). With no save in
        progress, a Redis that refuses writes or whose last rewrite failed stays so until something
        starts a save: that verdict is final at once, and the next action can start the save.
        """
        deadline = time.monotonic() + timeout
        while True:
            health = self.health(container_id)
            if time.monotonic() >= deadline or self._stays_down(container_id, health):
                return health
            if not saving(health) and (health.healthy or health.state in ("refusing-writes", "latent")):
                return health
            time.sleep(interval)
