"""restart_exiting's facts (hooks/executor.py DockerExecutor._exiting_read): those the repair read for the same
fatal line, only while the inspect they come from is younger than the restart policy's first wait and showed the
container running; taken once."""

from __future__ import annotations

import pytest

from ownvol.hook import backoff
from ownvol.hook import executor as module
from ownvol.hook.executor import DockerExecutor


class _Container:
    def __init__(self, status: str) -> None:
        self.status = status


@pytest.mark.parametrize(("status", "age", "used"), [
    ("running", 0.0, True),
    ("running", backoff.FIRST_WAIT * 0.9, True),
    ("running", backoff.FIRST_WAIT, False),  # the policy could have started a newer run: ask the engine
    ("restarting", 0.0, False),  # its exit was handled: start_held's question, asked now
    ("exited", 0.0, False),
])
def test_the_repairs_read_serves_the_restart_only_while_young_and_running(monkeypatch, status, age, used) -> None:
    clock = [50.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: clock[0])
    executor = DockerExecutor(lambda: None)
    container, target = _Container(status), object()
    executor._read_for_exit["c1"] = (clock[0], container, target)
    clock[0] += age
    assert executor._exiting_read("c1") == ((container, target) if used else None)
    assert executor._exiting_read("c1") is None  # taken once
