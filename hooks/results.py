"""What actions and verifications report back to the recovery engine; free of Docker and Redis, so the
engine (recovery.py) and the telemetry are too."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Outcome = Literal["ok", "failed", "skipped"]
# A verification's states (health.evaluate decides which), from healthy to worst.
STATES = ("healthy", "latent", "refusing-writes", "loading", "unreachable", "down")


@dataclass
class ActionResult:
    """An action's outcome; detail is JSON-able and goes to the journal and the events as it is
    (`why` when skipped, `error` when failed, what was done when ok)."""

    result: Outcome
    detail: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.result == "ok"
