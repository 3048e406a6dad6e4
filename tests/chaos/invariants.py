"""What must hold at the end of a chaos run; each check returns the broken invariants it found, as sentences."""

from __future__ import annotations

import time

import docker

from tests.chaos.faults import Fault
from tests.chaos.servers import Server
from tests.chaos.writers import Writer

SETTLE = 120.0  # seconds every server may take to acknowledge writes again at the end


def settled(writers: dict[str, Writer], timeout: float = SETTLE) -> list[str]:
    """Every writer acknowledged a write within the last second, within timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.monotonic()
        late = [k for k, w in writers.items() if now - w.last_ack > 1.0]
        if not late:
            return []
        time.sleep(0.2)
    return [f"{k}: no write acknowledged within {timeout:.0f}s of settling ({writers[k].last_error})" for k in late]


def lost_writes(writers: dict[str, Writer], when: str, timeout: float = SETTLE) -> tuple[list[str], dict[str, int]]:
    """Every acknowledged write is there (each server asked until it answers, within timeout); (broken, acks per
    server)."""
    broken, counts = [], {}
    for key, writer in writers.items():
        counts[key] = len(writer.acks)
        deadline = time.monotonic() + timeout
        while True:
            try:
                missing = writer.missing()
                break
            except Exception as exc:  # noqa: BLE001 - not answering yet
                if time.monotonic() > deadline:
                    broken.append(f"{key}: could not be read {when}: {exc!r}")
                    missing = []
                    break
                time.sleep(1)
        if missing:
            broken.append(f"{key}: {len(missing)} of {len(writer.acks)} acknowledged writes lost {when}"
                          f" (first {missing[:5]})")
    return broken, counts


def control_untouched(control: Server, before: tuple[int, int, int, int], hook_events: list[dict]) -> list[str]:
    broken = []
    actions = [e for e in hook_events if e.get("container") == control.name and e["event"] in
               ("action", "incident", "gave-up")]
    if actions:
        broken.append(f"control: {len(actions)} hook actions/incidents, first {actions[0]}")
    after = control.stamp()
    if after != before:
        broken.append(f"control: data dir (uid, gid, mode, mtime_ns) {before} became {after}")
    return broken


def faults_healed(faults: list[Fault]) -> list[str]:
    return [f"{f.kind} on {f.target or '-'} at +{f.at:.0f}s not healed by the product ({f.note})"
            for f in faults if f.heal is None]


def no_gave_up(hook_events: list[dict]) -> list[str]:
    return [f"hook gave up on {e.get('container')}: {e.get('why', '')[:200]}" for e in hook_events
            if e["event"] == "gave-up"]


def no_stuck_reference(client: docker.DockerClient, volumes: list[str]) -> list[str]:
    """With every container gone, each volume's Status shows no mount and `docker volume rm` takes it."""
    broken = []
    for name in volumes:
        try:
            status = client.api.inspect_volume(name)["Status"]
            if status.get("mounts"):
                broken.append(f"volume {name}: Status still counts {status['mounts']} mounts")
            client.volumes.get(name).remove()
        except docker.errors.DockerException as exc:
            broken.append(f"volume {name}: {exc}")
    return broken
