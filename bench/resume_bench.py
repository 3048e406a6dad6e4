"""A killed hook's successor, from its exec to the repair: two hooks' `ownvol watch` started in turn (interleaved) on
the same servers, each start timed by its events.

    python -m bench.resume_bench --hook main=/work/main/.venv/bin/ownvol --hook mine=.venv/bin/ownvol -n 7

On the engine of the environment, with host networking on 127.0.0.1: a Redis (ownvol/redis:7) and a PostgreSQL
(ownvol/postgres:17) as user 999 on host dirs under --root, restart policy `always`, as tests/chaos/servers.py runs
them. Two cases per server and hook:
  unseen       the data dir chowned to 0:0 while no hook runs, then a hook started (on a fresh journal);
  interrupted  a hook started, the data dir chowned once it found the server healthy, the hook SIGKILLed at its
               first `incident` or `action` event about it, and 250 ms later (the supervisor's restart delay) a
               hook started on the same journal.
Each start's line (JSON, seconds after the exec): hook-started, engine-connected, /status answered, watching, the
server's first health event, resumed, incident, action, recovered (or gave-up); then a table of medians. Every
event of a start is kept in its state dir (events.jsonl). Removes its containers on the way out; the host dirs stay
under --root.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable

import docker

LABEL = "ownvol.bench.resume"
SERVERS = {"redis": ("ownvol/redis:7", "/data"), "postgres": ("ownvol/postgres:17", "/var/lib/postgresql/data")}
MILESTONES = ("started", "connected", "status", "watching", "health", "resumed", "incident", "action", "recovered")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chown_tree(path: str, uid: int) -> None:
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, uid)
    os.lchown(path, uid, uid)


class Hook:
    """One `ownvol watch` (binary) on state, its events with `_t`: seconds after its exec; `_status` when /status
    first answered."""

    def __init__(self, binary: str, state: str, run: str) -> None:
        self.events: list[dict] = []
        self.cond = threading.Condition()
        self.port = free_port()
        self.t0 = time.time()
        with open(os.path.join(state, "stderr"), "ab") as err:
            self.proc = subprocess.Popen([binary, "watch", "--state-dir", state, "--metrics-addr",
                                          f"127.0.0.1:{self.port}", "--selector", f"{LABEL}={run}", "--interval", "1"],
                                         stdout=subprocess.PIPE, stderr=err, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._status, daemon=True).start()

    def _add(self, event: dict) -> None:
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self._add({**event, "_t": time.time() - self.t0})

    def _status(self) -> None:
        while self.proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/status", timeout=1) as reply:
                    json.load(reply)
            except OSError:
                time.sleep(0.02)
                continue
            self._add({"event": "_status", "_t": time.time() - self.t0})
            return

    def wait(self, predicate: Callable[[dict], bool], timeout: float) -> dict:
        end = time.time() + timeout
        with self.cond:
            while True:
                found = next((e for e in self.events if predicate(e)), None)
                if found is not None:
                    return found
                if time.time() >= end:
                    raise TimeoutError
                self.cond.wait(end - time.time())

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def timeline(events: list[dict], name: str) -> dict[str, float | None]:
    """The milestones' first times (seconds after the exec), None for those that did not come."""
    tests: dict[str, Callable[[dict], bool]] = {
        "started": lambda e: e["event"] == "hook-started",
        "connected": lambda e: e["event"] == "engine-connected",
        "status": lambda e: e["event"] == "_status",
        "recovered": lambda e: e["event"] in ("recovered", "gave-up") and e.get("container") == name,
    }
    for kind in ("watching", "health", "resumed", "incident", "action"):
        tests[kind] = lambda e, kind=kind: e["event"] == kind and e.get("container") == name
    return {k: next((round(e["_t"], 3) for e in events if test(e)), None) for k, test in tests.items()}


class Bench:
    def __init__(self, root: str) -> None:
        self.client = docker.from_env()
        self.run = f"rsb{os.getpid()}"
        self.root = root
        self.servers: dict[str, tuple] = {}

    def make(self, family: str) -> None:
        image, target = SERVERS[family]
        path = os.path.join(self.root, f"{self.run}-{family}")
        os.makedirs(path, exist_ok=True)
        os.chown(path, 999, 999)
        os.chmod(path, 0o700 if family == "postgres" else 0o755)
        port = free_port()
        command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", "/data", "--appendonly",
                   "yes", "--appendfsync", "always"] if family == "redis" else \
            ["postgres", "-p", str(port), "-c", "listen_addresses=127.0.0.1"]
        container = self.client.containers.run(
            image, command, name=f"{self.run}-{family}", detach=True, network_mode="host", user="999:999",
            environment={"POSTGRES_PASSWORD": "bench"} if family == "postgres" else {},
            mounts=[docker.types.Mount(target, path, type="bind")], labels={LABEL: self.run},
            restart_policy={"Name": "always"})
        self.servers[family] = (container, path, port)

    def ready(self, family: str, timeout: float = 60) -> bool:
        """Whether the server acknowledges a write within timeout seconds."""
        container, _, port = self.servers[family]
        end = time.time() + timeout
        while time.time() < end:
            if family == "redis":
                r = container.exec_run(["redis-cli", "-p", str(port), "set", "bench", "1"])
            else:
                r = container.exec_run(["psql", "-U", "postgres", "-h", "127.0.0.1", "-p", str(port), "-c",
                                        "select txid_current()"], environment={"PGPASSWORD": "bench"})
            if r.exit_code == 0 and b"ERR" not in r.output and b"MISCONF" not in r.output:
                return True
            time.sleep(0.3)
        return False

    def case(self, binary: str, family: str, kind: str, state: str) -> tuple[dict, list[dict]]:
        container, path, _ = self.servers[family]
        name = container.name
        if kind == "unseen":
            chown_tree(path, 0)
        else:
            first = Hook(binary, state, self.run)
            first.wait(lambda e: e["event"] == "health" and e.get("container") == name
                       and e.get("state") == "healthy", 60)
            chown_tree(path, 0)
            first.wait(lambda e: e.get("container") == name and e["event"] in ("incident", "action"), 30)
            first.kill()
            time.sleep(0.25)
        hook = Hook(binary, state, self.run)
        try:
            ok = hook.wait(lambda e: e["event"] in ("recovered", "gave-up") and e.get("container") == name,
                           60)["event"] == "recovered"
        except TimeoutError:
            ok = False
        hook.kill()
        return {**timeline(hook.events, name), "ok": ok, "owner": os.stat(path).st_uid}, hook.events

    def close(self) -> None:
        for container, _, _ in self.servers.values():
            container.remove(force=True)


def table(rows: list[dict]) -> str:
    lines = ["family kind hook n healed load | " + " ".join(MILESTONES)]
    for family in SERVERS:
        for kind in ("unseen", "interrupted"):
            for hook in dict.fromkeys(r["hook"] for r in rows):
                mine = [r for r in rows if (r["family"], r["kind"], r["hook"]) == (family, kind, hook)]
                if not mine:
                    continue

                def median(key: str, mine: list[dict] = mine) -> str:
                    values = [r[key] for r in mine if r[key] is not None]
                    return f"{statistics.median(values):.2f}" if values else "-"
                lines.append(f"{family} {kind} {hook} {len(mine)} {sum(r['ok'] for r in mine)} "
                             f"{statistics.median(r['load'] for r in mine):.1f} | "
                             + " ".join(median(k) for k in MILESTONES))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hook", action="append", required=True, metavar="NAME=BINARY")
    parser.add_argument("-n", type=int, default=7, help="starts per hook, server and case")
    parser.add_argument("--family", action="append", choices=list(SERVERS))
    parser.add_argument("--kind", action="append", choices=["unseen", "interrupted"])
    parser.add_argument("--root", default="/tmp/ownvol-resume-bench")
    args = parser.parse_args()
    hooks = dict(h.split("=", 1) for h in args.hook)
    bench = Bench(args.root)
    rows = []
    try:
        for family in args.family or list(SERVERS):
            bench.make(family)
            assert bench.ready(family), f"{family} never answered"
        for i in range(args.n):
            order = list(hooks) if i % 2 == 0 else list(reversed(hooks))
            for family in bench.servers:
                for kind in args.kind or ["unseen", "interrupted"]:
                    for name in order:
                        state = os.path.join(args.root, f"{bench.run}-state-{name}-{family}-{kind}-{i}")
                        os.makedirs(state)
                        found, events = bench.case(hooks[name], family, kind, state)
                        bench.ready(family)
                        row = {"hook": name, "family": family, "kind": kind, "i": i, **found,
                               "load": os.getloadavg()[0]}
                        rows.append(row)
                        print(json.dumps(row), flush=True)
                        with open(os.path.join(state, "events.jsonl"), "w") as out:
                            out.writelines(json.dumps(e) + "\n" for e in events)
    finally:
        bench.close()
    print(table(rows))


if __name__ == "__main__":
    main()
