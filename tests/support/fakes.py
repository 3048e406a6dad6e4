"""A fake executor and a recovery engine around it, for the hook's pure-logic tests."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

from ownvol.hook.journal import Journal
from ownvol.hook.model import ActionResult
from ownvol.hook.recovery import Recovery
from ownvol.hook.strategies import parse
from ownvol.hook.telemetry import Telemetry


@dataclass
class Verdict:
    healthy: bool
    state: str = "down"
    reasons: list = field(default_factory=list)


class FakeExecutor:
    """Actions always 'ok' (or as scripted); healthy once the action in `heals` has run."""

    def __init__(self, heals: str | None = None, results: dict | None = None) -> None:
        self.heals = heals
        self.results = results or {}
        self.ran: list[str] = []
        self.is_healthy = False
        self.others: list[dict] = []  # what sharers() answers: the other containers on the same source

    def run(self, cid, action, incident=None):
        self.ran.append(action)
        result = self.results.get(action, "ok")
        if action == self.heals and result == "ok":
            self.is_healthy = True
        return ActionResult(result, {})

    def verify(self, cid, timeout):
        return Verdict(self.is_healthy, "healthy" if self.is_healthy else "down")

    def sharers(self, cid):
        return list(self.others)


class IdleRecovery:
    """The watcher's Recovery with nothing to recover: no incident running, no AOF to turn back on."""

    def healthy(self, cid):
        pass

    def fallback_due(self, cid):
        return False

    def busy(self, cid):
        return False


def engine(tmp_path, executor, yaml_overrides=None):
    data = {"defaults": {"attempts": 2, "delay": 0, "backoff": 1, "max_delay": 0},
            "breaker": {"max_actions": 100, "window": 600, "cooldown": 600},
            "aof_fallback": {"retry": 0, "max_retry": 0},
            "types": {"persistence-failed": {"actions": ["repair-ownership", "persist-again", "restart", "aof-off"]}}}
    for k, v in (yaml_overrides or {}).items():
        data[k] = {**data.get(k, {}), **v}
    out = io.StringIO()
    rec = Recovery(Journal(tmp_path / "j.sqlite"), parse(data), Telemetry(out=out), executor, sleep=lambda s: None)
    return rec, out


def events(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]

