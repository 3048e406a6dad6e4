"""Fixtures for the hook: a real `ownvol watch` subprocess scoped to the test's own containers.

Each hook watches only containers labelled ownvol.hook=<its own id> (--selector), keeps its
journal in a temp state dir, serves /status on a free port, and its JSON events are read as they
are printed. Other developers' Redis containers on the same engine are never in its sight.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import docker
import pytest
import yaml

from tests.support.common import ROOT, free_port, image_lock, new_name
from tests.support.engine import redis_cmd, wait_for
from tests.support.process import stop_child

HOOK_LABEL = "ownvol.hook"  # a hook started elsewhere (make up) leaves these containers alone
OWNVOL = str(ROOT / ".venv" / "bin" / "ownvol")


class Hook:
    """One `ownvol watch` process (restartable on the same state dir); its events as dicts."""

    def __init__(self, state_dir: Path, strategies: Path | None = None, extra: tuple[str, ...] = (),
                 env: dict | None = None) -> None:
        self.id = new_name("hook")
        self.labels = {HOOK_LABEL: self.id}
        self.state_dir = state_dir
        self.db = state_dir / "journal.sqlite"
        self.strategies = strategies
        self.extra = extra
        self.env = {**os.environ, **(env or {})}
        self.port = free_port()
        self.events: list[dict] = []
        self.proc: subprocess.Popen | None = None
        self._cond = threading.Condition()
        self._stderr = state_dir / "hook.stderr"

    def start(self) -> Hook:
        cmd = [OWNVOL, "watch", "--state-dir", str(self.state_dir), "--metrics-addr", f"127.0.0.1:{self.port}",
               "--selector", f"{HOOK_LABEL}={self.id}", "--interval", "1", *self.extra]
        if self.strategies:
            cmd += ["--strategies", str(self.strategies)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(self._stderr, "ab"), text=True,
                                     env=self.env)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        pid = self.proc.pid  # a restarted hook (same events list): its own connection, not the last one's
        self.wait_event(lambda e: e["event"] == "engine-connected" and e["_pid"] == pid, 30,
                        "the hook to connect to the engine")
        return self

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            event["_pid"] = proc.pid
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()

    def wait_event(self, predicate: Callable[[dict], bool], timeout: float, what: str, after: int = 0) -> dict:
        """The first event (from index `after`) matching predicate; fails with the events seen."""
        deadline = time.monotonic() + timeout
        last_pass = False
        with self._cond:
            while True:
                for event in self.events[after:]:
                    if predicate(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or last_pass:
                    tail = "\n".join(json.dumps(e)[:300] for e in self.events[-25:])
                    err = self._stderr.read_text()[-2000:] if self._stderr.exists() else ""
                    raise AssertionError(f"no event: {what} within {timeout}s; last events:\n{tail}\nstderr:\n{err}")
                last_pass = self.proc is not None and self.proc.poll() is not None  # dead: one more look
                self._cond.wait(min(left, 0.5))

    def of(self, kind: str, container: str | None = None) -> list[dict]:
        with self._cond:
            return [e for e in self.events
                    if e["event"] == kind and (container is None or e.get("container") == container)]

    def mark(self) -> int:
        with self._cond:
            return len(self.events)

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        stop_child(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        stop_child(self.proc)

    def status(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/status", timeout=5) as reply:
            return json.load(reply)

    def page(self) -> str:
        """The status page as the server renders it (what a browser without JavaScript shows)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=5) as reply:
            return reply.read().decode()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as reply:
            return reply.read().decode()

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([OWNVOL, *args], capture_output=True, text=True, timeout=120)


def fast_strategies(path: Path, **overrides) -> Path:
    """The packaged strategies with short delays and verifications, so engine tests stay quick."""
    data = yaml.safe_load((ROOT / "hooks" / "strategies.yaml").read_text())
    data["defaults"].update(delay=0.2, backoff=1.5, max_delay=1)
    data["verify"] = {"repair-ownership": 2, "persist-again": 8, "restart": 8, "aof-off": 8}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def hook(tmp_path: Path):
    """start_hook(strategies=None, extra=(), env=None) -> a started Hook; all are stopped after the test."""
    hooks: list[Hook] = []

    def start_hook(strategies: Path | None = None, extra: tuple[str, ...] = (), state_dir: Path | None = None,
                   like: Hook | None = None, env: dict | None = None) -> Hook:
        if like is not None:  # the same hook again: same id, selector, state and strategies
            like.events.clear()
            return like.start()
        d = state_dir or tmp_path / f"hook-{len(hooks)}"
        d.mkdir(exist_ok=True)
        h = Hook(d, strategies, extra, env)
        hooks.append(h)
        return h.start()

    yield start_hook
    for h in hooks:
        h.stop()


def redis_spec(port: int, data: Path, labels: dict, *, read_only: bool = False, restart: bool = False,
               name: str | None = None, extra: tuple[str, ...] = ()) -> dict:
    """containers.run/create keyword arguments (with `command`) of a uid-999 Redis with AOF, host network on
    127.0.0.1:port, its /bound dir bind-mounted from data."""
    kwargs = {"restart_policy": {"Name": "on-failure"}} if restart else {}
    return {"command": redis_cmd(port, *extra, data_dir="/bound"), "user": "999:999", "network_mode": "host",
            "volumes": {str(data): {"bind": "/bound", "mode": "ro" if read_only else "rw"}},
            "labels": labels, "name": name or new_name(), **kwargs}


def run_redis(tracked, image: str, port: int, data: Path, labels: dict, *, read_only: bool = False,
              restart: bool = False, name: str | None = None, extra: tuple[str, ...] = ()):
    """A uid-999 Redis with AOF, host network on 127.0.0.1:port, its /bound dir bind-mounted from data."""
    spec = redis_spec(port, data, labels, read_only=read_only, restart=restart, name=name, extra=extra)
    return tracked.run(image, spec.pop("command"), **spec)


@pytest.fixture(scope="session")
def ownvol_image(docker_client: docker.DockerClient) -> str:
    """OWNVOL_IMAGE with this tree's `ownvol repair-mount` in it (built by scripts/images.sh if it lacks it or
    has another version of it)."""
    tag = os.environ.get("OWNVOL_IMAGE", "ownvol/ownvol:latest")

    helper_sources = ("cli.py", "ownership.py")  # what runs in the helper: `ownvol repair-mount` and the walk
    check = ("import hashlib, os, ownvol; d = os.path.dirname(ownvol.__file__); "
             f"print(*(hashlib.sha256(open(os.path.join(d, f), 'rb').read()).hexdigest() for f in {helper_sources!r}))")
    ours = " ".join(hashlib.sha256((ROOT / "ownvol" / f).read_bytes()).hexdigest() for f in helper_sources)

    def has_helper() -> bool:
        """The image's repair-mount is this tree's (an older build of the same tag is rebuilt)."""
        try:
            out = docker_client.containers.run(tag, ["python3", "-c", check], network_mode="none", remove=True,
                                               labels={"ownvol.watch": "false"})
            return out.decode().strip() == ours
        except docker.errors.DockerException:
            return False

    with image_lock(tag):
        if not has_helper():
            subprocess.run([str(ROOT / "scripts" / "images.sh"), "ownvol"], check=True, cwd=ROOT,
                           env={**os.environ, "OWNVOL_IMAGE": tag})
            assert has_helper(), f"{tag} has no `ownvol repair-mount` of this tree even after a rebuild"
    return tag


def heal_report(what: str, seconds: float) -> None:
    print(f"\nTIME TO HEAL [{what}]: {seconds:.3f}s")


__all__ = ["Hook", "HOOK_LABEL", "fast_strategies", "run_redis", "heal_report", "wait_for"]
