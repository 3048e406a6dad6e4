"""hooks/failed_starts.py: which failed starts the hook starts again (the driver's Mount, a restart policy that wants
the container running), and the sweep that reports them once the driver answers."""

from __future__ import annotations

import pytest

from ownvol.hook import failed_starts
from ownvol.hook.actions import ACTIONS, PLANNABLE
from ownvol.hook.strategies import load
from tests.support.fakes import FakeExecutor, engine, events

CUT = "error while mounting volume '': VolumeDriver.Mount: Name is required"


def attrs(error: str = CUT, policy: str = "unless-stopped", status: str = "exited", driver: str = "ownvol",
          labels: dict | None = None) -> dict:
    return {"Id": "c1" * 32, "Name": "/walker",
            "State": {"Status": status, "Running": status == "running", "Error": error, "ExitCode": 128},
            "HostConfig": {"RestartPolicy": {"Name": policy}},
            "Config": {"Image": "ownvol/redis:7", "Cmd": ["redis-server"], "Labels": labels or {}},
            "Mounts": [{"Type": "volume", "Name": "walk", "Driver": driver, "Destination": "/data"}]}


@pytest.mark.parametrize("policy", ["always", "unless-stopped", "on-failure"])
@pytest.mark.parametrize("status", ["exited", "created"])
def test_started_when_the_drivers_mount_failed_and_the_policy_wants_it_running(policy: str, status: str) -> None:
    start, why = failed_starts.decide(attrs(policy=policy, status=status), "ownvol")
    assert start and policy in why and "walk" in why


def test_a_managed_plugins_tag_is_the_same_driver() -> None:
    assert failed_starts.decide(attrs(driver="ownvol:latest"), "ownvol")[0]


@pytest.mark.parametrize("case,why", [
    ({"policy": "no"}, "restart policy is \"no\""),
    ({"policy": ""}, "restart policy is \"no\""),
    ({"error": "failed to mount local volume: no such file or directory"}, "another reason"),
    ({"driver": "local"}, "another driver"),
    ({"driver": "other"}, "another driver"),
])
def test_left_to_its_user(case: dict, why: str) -> None:
    start, said = failed_starts.decide(attrs(**case), "ownvol")
    assert not start and why in said


@pytest.mark.parametrize("case", [{"error": ""}, {"status": "running"}])
def test_no_failed_start_no_word(case: dict) -> None:
    assert failed_starts.decide(attrs(**case), "ownvol") == (False, "")


def test_the_configured_driver_name() -> None:
    assert failed_starts.decide(attrs(driver="ovp-1"), "ovp-1")[0]
    assert not failed_starts.decide(attrs(driver="ownvol"), "ovp-1")[0]


def test_candidates_are_stopped_with_a_volume_of_the_driver() -> None:
    summary = {"State": "exited", "Mounts": [{"Type": "volume", "Name": "walk", "Driver": "ownvol"}]}
    assert failed_starts.candidate(summary, "ownvol")
    assert failed_starts.candidate({**summary, "State": "created"}, "ownvol")
    assert not failed_starts.candidate({**summary, "State": "running"}, "ownvol")
    assert not failed_starts.candidate({**summary, "Mounts": [{"Type": "bind", "Source": "/x"}]}, "ownvol")


def test_start_is_an_action_no_strategy_plans_with_a_restarts_verification() -> None:
    assert "start" in ACTIONS and "start" not in PLANNABLE
    config = load()
    assert config.verify["start"] == config.verify["restart"]


class FakeApi:
    def __init__(self, containers: list[dict], warnings: list[str] | None = None) -> None:
        self.by_id = {c["Id"]: c for c in containers}
        self.warnings = warnings
        self.asked: list[dict] = []

    def containers(self, all: bool, filters: dict) -> list[dict]:  # noqa: A002 - docker-py's name
        self.asked.append(filters)
        return [{"Id": c["Id"], "State": c["State"]["Status"], "Mounts": c["Mounts"]} for c in self.by_id.values()]

    def inspect_container(self, cid: str) -> dict:
        return self.by_id[cid]

    def volumes(self, filters: dict) -> dict:
        return {"Volumes": [], "Warnings": self.warnings}


class FakeClient:
    def __init__(self, api: FakeApi) -> None:
        self.api = api


class FakeRecovery:
    def __init__(self) -> None:
        self.reports: list[tuple] = []

    def busy(self, cid: str) -> bool:
        return False

    def report(self, cid: str, name: str, error_type: str, origin: str, detail: dict) -> object:
        self.reports.append((cid, name, error_type, origin, detail))
        return object()


class FakeTelemetry:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def emit(self, event: str, **fields: object) -> dict:
        self.events.append((event, fields))
        return {"event": event, **fields}


def sweep(containers: list[dict], warnings: list[str] | None = None, selector: dict | None = None):
    api, recovery, telemetry = FakeApi(containers, warnings), FakeRecovery(), FakeTelemetry()
    starts = failed_starts.FailedStarts(lambda: FakeClient(api), selector or {}, recovery, telemetry,  # type: ignore[arg-type]
                                        driver="ownvol")
    return starts, recovery, telemetry, api


def test_the_sweep_reports_an_incident_whose_plan_is_start() -> None:
    starts, recovery, telemetry, api = sweep([attrs()])
    assert starts.sweep() == [attrs()["Id"]]
    (cid, name, error_type, origin, detail), = recovery.reports
    assert (name, error_type, origin, detail["plan"]) == ("walker", "mount-failed", "engine", ["start"])
    assert "VolumeDriver.Mount" in detail["message"] and detail["restart_policy"] == "unless-stopped"
    assert api.asked == [{"status": ["created", "exited"]}]


def test_the_sweep_waits_for_the_driver_to_answer() -> None:
    starts, recovery, telemetry, _ = sweep([attrs()], warnings=["ownvol: connection refused"])
    assert starts.sweep() == [] and starts.sweep() == []
    assert not recovery.reports
    assert [e for e, _ in telemetry.events] == ["start-failure-waiting"]  # said once


def test_the_sweep_leaves_policy_no_alone_and_says_so_once() -> None:
    starts, recovery, telemetry, _ = sweep([attrs(policy="no")])
    assert starts.sweep() == [] and starts.sweep() == []
    assert not recovery.reports
    assert [e for e, _ in telemetry.events] == ["start-failure-left"]


def test_the_sweep_keeps_to_its_selector() -> None:
    starts, recovery, _, api = sweep([attrs(labels={"ownvol.hook": "other"})], selector={"ownvol.hook": "mine"})
    assert starts.sweep() == [] and not recovery.reports
    assert api.asked[0]["label"] == ["ownvol.hook=mine"]


def incident_detail() -> dict:
    return {"message": f"start failed: {CUT}", "plan": ["start"], "service": "redis"}


def test_the_recovery_runs_the_one_start_verifies_and_resolves(tmp_path) -> None:
    executor = FakeExecutor(heals="start")
    rec, out = engine(tmp_path, executor)
    inc = rec.report("c1", "walker", failed_starts.ERROR_TYPE, "engine", incident_detail(), background=False)
    assert executor.ran == ["start"] and rec.journal.incident(inc.id).status == "resolved"
    action = next(e for e in events(out) if e["event"] == "action")
    assert (action["action"], action["result"], action["verified"]) == ("start", "ok", True)
    assert [e["by"] for e in events(out) if e["event"] == "recovered"] == ["start"]


def test_a_start_that_does_not_heal_gives_up_and_counts_in_the_breaker(tmp_path) -> None:
    executor = FakeExecutor(heals=None, results={"start": "failed"})
    rec, out = engine(tmp_path, executor)
    inc = rec.report("c1", "walker", failed_starts.ERROR_TYPE, "engine", incident_detail(), background=False)
    assert executor.ran == ["start"] and rec.journal.incident(inc.id).status == "gave-up"
    assert rec.breaker.count("c1", rec.clock()) == 1
    assert [e["actions"] for e in events(out) if e["event"] == "gave-up"] == [["start:failed"]]
