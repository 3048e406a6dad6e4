"""The recovery engine's hands on the real engine: run an action, verify health."""

from __future__ import annotations

import time
from typing import Callable

import docker

from hooks import actions
from hooks.actions import ActionResult, Context
from hooks.health import Health, probe
from hooks.targets import Target, facts, in_container


class DockerExecutor:
    def __init__(self, client: Callable[[], docker.DockerClient], repair_via: str = "auto",
                 helper_image: str | None = None) -> None:
        self.client = client
        self.repair_via = repair_via
        self.helper_image = helper_image

    def target(self, container_id: str) -> tuple[object, Target]:
        container = self.client().containers.get(container_id)
        return container, facts(self.client(), container)

    def context(self, target: Target) -> Context:
        ctx = Context(self.client(), target, self.repair_via)
        if self.helper_image:
            ctx.helper_image = self.helper_image
        return ctx

    def run(self, container_id: str, action: str) -> ActionResult:
        try:
            _, target = self.target(container_id)
        except docker.errors.NotFound:
            return ActionResult("skipped", {"why": "container is gone"})
        except docker.errors.DockerException as exc:
            return ActionResult("failed", {"error": f"engine: {exc}"})
        return actions.ACTIONS[action](self.context(target))

    def health(self, container_id: str) -> Health:
        try:
            container, target = self.target(container_id)
        except docker.errors.NotFound:
            return Health("down", ["container is gone"], "gone", "")
        except docker.errors.DockerException as exc:
            return Health("unreachable", [f"engine: {exc}"], "unknown", "")
        return probe(target, container.status, local_paths=self.repair_via != "helper" and not in_container())

    def verify(self, container_id: str, timeout: float) -> Health:
        """Healthy within timeout (container running, PONG, persistence statuses ok), else the last look."""
        deadline = time.monotonic() + timeout
        while True:
            health = self.health(container_id)
            if health.healthy or time.monotonic() >= deadline:
                return health
            time.sleep(0.2)
