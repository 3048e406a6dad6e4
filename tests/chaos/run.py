"""The whole chaos run: build the stack and the servers, start the writers, inject the seeded faults one after the
other for the duration (each healed by the product within BOUND seconds, else done by hand and counted broken),
then the final checks (invariants.py), the table and the JSON, and the teardown whatever happened."""

from __future__ import annotations

import argparse
import bisect
import os
import signal
import sys
import threading
import time
from pathlib import Path

from tests.chaos import faults as chaos_faults
from tests.chaos import invariants, report
from tests.chaos.faults import Fault
from tests.chaos.schedule import schedule
from tests.chaos.servers import SETS, Server
from tests.chaos.stack import Stack
from tests.chaos.writers import Writer, writer_for
from tests.support.common import ROOT

DEFAULT_SEED = 27
BOUND = 60.0  # seconds the product may take to heal a fault before it counts as needing a hand
READY = 300.0  # seconds every server may take to acknowledge its first write (MariaDB's first start initialises)


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--duration", type=float, default=600, help="seconds of faults (default 600)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"schedule seed (default {DEFAULT_SEED})")
    parser.add_argument("--servers", choices=sorted(SETS), default="full", help="which servers (servers.SETS)")
    parser.add_argument("--json", type=Path, default=None, help="where the run's JSON goes (default build/chaos/)")
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def make_servers(stack: Stack, which: str) -> list[Server]:
    """The volumes and dirs of the set `which`, and its servers (not started)."""
    assert stack.client is not None and stack.driver is not None
    servers = []
    for key, family, storage in SETS[which]:
        name = f"{stack.engine.name}-{key}"
        if storage == "volume":
            stack.client.volumes.create(name, driver=stack.driver.name, driver_opts={"profile": family})
            servers.append(Server(key, family, storage, name, stack.port(), name, str(stack.driver.data_dir(name))))
            continue
        path = stack.small / "data" if storage == "tmpfs" else stack.base / "binds" / key
        path.mkdir(parents=True)
        owner = (0, 0) if storage == "control" else (999, 999)
        os.chown(path, *owner)
        path.chmod(0o755)
        servers.append(Server(key, family, storage, name, stack.port(), str(path), str(path), owner))
    for server in servers:
        server.labels = stack.labels
    return servers


STALL = 1.0  # seconds between two acknowledged writes of a server that count as writes not being accepted


def writes_again(fault: Fault, started: float, writers: list[Writer]) -> tuple[float, str]:
    """From t0 until the end of the last stall (no write acknowledged for more than STALL seconds, failed or
    waiting) that overlaps the fault's window; 0 when none did. (The longest over writers, that writer's key.)"""
    end = fault.t0 + (fault.heal if fault.heal is not None else BOUND)
    worst, who = 0.0, ""
    for w in writers:
        times = list(w.ack_times)
        first = max(bisect.bisect_left(times, started) - 1, 0)
        last = 0.0
        for a, b in zip(times[first:], [*times[first + 1:], end], strict=True):
            if a > end:
                break
            if b - a > STALL and b >= started:
                last = b
        if last:
            fault.writes_by_server[w.server.key] = round(last - fault.t0, 3)
            if last - fault.t0 > worst:
                worst, who = last - fault.t0, w.server.key
    return round(max(worst, 0.0), 3), who


def run_faults(stack: Stack, servers: dict[str, Server], writers: dict[str, Writer], seed: int, duration: float,
               broken: list[str], done: list[Fault]) -> None:
    """Inject the schedule's faults until duration is spent, each appended to done as it ends."""
    begin = time.monotonic()
    for step in schedule(seed, list(servers.values()), duration):
        if time.monotonic() - begin + step.pause > duration:
            break
        until = time.monotonic() + step.pause
        while time.monotonic() < until:
            broken += [f"{d} (no fault of ours)" for d in stack.keep_alive()]
            time.sleep(0.2)
        late = invariants.settled(writers, BOUND)
        if late:
            broken += [f"before {step.kind} at +{time.monotonic() - begin:.0f}s: {x}" for x in late]
        fault = Fault(step.kind, step.target, step.variant, round(time.monotonic() - begin, 1))
        mark = stack.hook.mark() if stack.hook else 0
        started = time.monotonic()
        try:
            fault.t0, healed, fault.note = chaos_faults.inject(step, stack, servers, writers)
            fault.retried = chaos_faults.RETRIED in fault.note
        except Exception as exc:  # noqa: BLE001 - the fault could not be made: said, and the run goes on
            fault.t0, fault.note = started, f"injection failed: {exc!r}"[:300]
            healed = invariants_never
        deadline = fault.t0 + BOUND
        while time.monotonic() < deadline:
            if healed():
                fault.heal = round(time.monotonic() - fault.t0, 3)
                break
            time.sleep(0.05)
        hit = [writers[step.target]] if step.target else list(writers.values())
        fault.writes_again, slowest = writes_again(fault, started, hit)
        if slowest and not step.target:
            fault.note = f"{fault.note} slowest {slowest}".strip()
        if stack.hook:
            fault.hook_events = [f"{e['event']} {e.get('container', '')}".strip() for e in stack.hook.events[mark:]
                                 if e["event"] in ("incident", "recovered", "gave-up")]
        if fault.heal is None and step.target:
            chaos_faults.by_hand(servers[step.target], stack)
        done.append(fault)
        heal = "NOT HEALED" if fault.heal is None else f"healed {fault.heal:.2f}s"
        log(f"+{fault.at:5.0f}s {step.kind} {step.target} {step.variant}: {heal}, writes again "
            f"{fault.writes_again:.2f}s {fault.note}")


def remove_all(stack: Stack, servers: list[Server]) -> list[str]:
    """Remove every container of the run (the servers', the walk volume's), then check the volumes: no stuck
    reference, and the walk volume's tree whole and its owner's; the broken invariants."""
    assert stack.client is not None
    for server in servers:
        stack.client.containers.get(server.name).remove(force=True)
    broken = []
    volumes = [s.source for s in servers if s.storage == "volume"]
    if stack.walk is not None:
        stack.walk.remove_container(stack.client)
        if not stack.walk.tree_right():
            broken.append(f"volume {stack.walk.name}: its tree is not whole and its owner's after the run")
        volumes.append(stack.walk.name)
    return broken + invariants.no_stuck_reference(stack.client, volumes)


def invariants_never() -> bool:
    return False


def main(argv: list[str]) -> int:
    args = parse(argv)
    log(f"seed {args.seed}, duration {args.duration:.0f}s, servers {args.servers}, "
        f"load average {os.getloadavg()[0]:.2f} ({os.cpu_count()} cpus)")
    signal.signal(signal.SIGTERM, _interrupt)
    stack = Stack(log)
    broken: list[str] = []
    done: list[Fault] = []
    writers: dict[str, Writer] = {}
    acks: dict[str, int] = {}
    servers: list[Server] = []
    load = [os.getloadavg()[0]]
    code = 0
    try:
        families = {family for _, family, _ in SETS[args.servers]}
        stack.start(families)
        servers = make_servers(stack, args.servers)
        for server in servers:
            server.run(stack.client)
        writers = {s.key: writer_for(s, stack.engine.host) for s in servers}
        for w in writers.values():
            w.start()
        late = invariants.settled(writers, READY)
        if late:
            raise RuntimeError(f"the servers did not start: {late}")
        control = next(s for s in servers if s.storage == "control")
        before = control.stamp()
        log(f"stack up: {len(servers)} servers, driver {stack.driver.name if stack.driver else '-'}; faults begin")
        run_faults(stack, {s.key: s for s in servers}, writers, args.seed, args.duration, broken, done)
        broken += invariants.faults_healed(done)
        broken += invariants.settled(writers)
        for w in writers.values():
            w.stop()
        lost, acks = invariants.lost_writes(writers, "after settling")
        broken += lost
        broken += invariants.control_untouched(control, before, stack.hook.events if stack.hook else [])
        log(f"faults done, every server settled, {sum(acks.values())} acknowledged writes all there; "
            "restarting every server")
        assert stack.client is not None
        restarts = [threading.Thread(target=stack.client.containers.get(s.name).restart, kwargs={"timeout": 30})
                    for s in servers]
        for t in restarts:
            t.start()
        for t in restarts:
            t.join()
        lost, _ = invariants.lost_writes(writers, "after a restart of every server")
        broken += lost
        broken += invariants.no_gave_up(stack.hook.events if stack.hook else [])
        log("every acknowledged write there after the restarts; removing the containers and volumes")
        broken += remove_all(stack, servers)
    except KeyboardInterrupt as exc:
        broken.append(f"interrupted ({exc or 'SIGINT'})")
        code = 130
    except Exception as exc:  # noqa: BLE001 - reported, and the teardown still runs
        broken.append(f"the run failed: {exc!r}")
        code = 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for w in writers.values():
            w.stop()
        events = list(stack.hook.events) if stack.hook else []
        path = args.json or ROOT / "build" / "chaos" / f"chaos-seed{args.seed}-{args.duration:.0f}s.json"
        try:
            stack.keep_logs(path.with_suffix(""))
        except OSError as exc:
            log(f"could not keep the logs: {exc}")
        log("tearing down")
        stack.teardown()
        left = stack.leftovers()
        broken += [f"left behind: {x}" for x in left]
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    load.append(os.getloadavg()[0])
    print()
    print(report.table(done))
    print()
    total = sum(acks.values())
    log(f"{total} acknowledged writes checked ({acks}); supervisor restarts {stack.supervisor_restarts}; "
        f"load average {load[0]:.2f} -> {load[1]:.2f}")
    counts: dict[str, int] = {}
    for e in events:
        counts[e["event"]] = counts.get(e["event"], 0) + 1
    report.write_json(path, {"seed": args.seed, "duration": args.duration, "servers": [s.key for s in servers],
                             "faults": [f.as_dict() for f in done], "table": report.rows(done), "broken": broken,
                             "acknowledged": acks, "supervisor_restarts": stack.supervisor_restarts,
                             "hook_events": counts, "load_average": load})
    log(f"JSON: {path}; logs in {path.with_suffix('')}/")
    if broken:
        log(f"{len(broken)} broken invariants:")
        for b in broken:
            print(f"  - {b}", flush=True)
        return code or 1
    log("every invariant held")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
