"""`ownvol watch` assembled: journal, strategies, telemetry, executor, recovery, watcher, forecast, the web app."""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from dataclasses import dataclass, field

import docker
import requests

from . import connection, repair_helpers, web
from .board import Board, DriverVolumes
from .drift import DriftWatch
from .executor import DockerExecutor
from .failed_starts import FailedStarts
from .forecast import DEFAULT_THRESHOLD_HOURS, SpaceWatch
from .journal import Journal
from .model import Health
from .recovery import Recovery
from .services import plan_of
from .strategies import load
from .targets import engine_node, engine_paths_reachable
from .telemetry import Telemetry
from .watcher import Watched, Watcher

DEFAULT_STATE_DIR = "/var/lib/ownvol/hook"
DEFAULT_METRICS = "127.0.0.1:9808"


@dataclass
class Options:
    """`ownvol watch`'s options (the CLI's flags and their environment variables): state dir and journal, metrics
    address (host:port, None for none), webhook URL, label selector, strategies file, probe interval in seconds,
    repair route and helper image."""

    state_dir: str = DEFAULT_STATE_DIR
    db: str | None = None
    metrics_addr: str | None = DEFAULT_METRICS
    webhook: str | None = None
    selector: dict[str, str] = field(default_factory=dict)
    strategies: str | None = None
    interval: float = 5.0
    repair_via: str = "auto"
    helper_image: str | None = None
    fill_warning_hours: float = DEFAULT_THRESHOLD_HOURS
    drift_watch: bool = True  # inotify on the data dirs wakes a probe at once (hooks/drift.py)
    log_files: bool = True  # json-file logs read in the engine's files (hooks/jsonfile.py)

    @property
    def db_path(self) -> str:
        return self.db or os.path.join(self.state_dir, "journal.sqlite")


def engine() -> docker.DockerClient:
    """A client of the engine the environment names (hooks/connection.py: DOCKER_HOST, else the local socket, and
    DOCKER_TLS_VERIFY, DOCKER_CERT_PATH), with a 60 s timeout."""
    return connection.client(timeout=60)


def build(options: Options) -> tuple[Watcher, Recovery, Telemetry, Board, DriftWatch | str]:
    """The hook's parts wired together (journal, strategies, telemetry, executor, recovery, watcher, the data
    mounts' forecast, the status page's model, the data dirs' drift watch, else why it is off: turned off, or
    inotify refused, e.g. EMFILE past fs.inotify.max_user_instances); raises StrategyError for a bad strategies
    file."""
    os.makedirs(options.state_dir, exist_ok=True)
    journal = Journal(options.db_path)
    telemetry = Telemetry(webhook=options.webhook)
    config = load(options.strategies)
    holder: dict[str, docker.DockerClient] = {}

    def client() -> docker.DockerClient:
        if "c" not in holder:
            holder["c"] = engine()
        return holder["c"]

    executor = DockerExecutor(client, options.repair_via, options.helper_image, runs=journal)
    executor.on_held = lambda container_id, held: telemetry.emit(
        "early-start" if held.pop("started") else "early-start-left", id=container_id[:12], **held)
    recovery = Recovery(journal, config, telemetry, executor, plans=plan_of)
    watcher = Watcher(client, options.selector, recovery, telemetry, executor, options.interval,
                      log_files=options.log_files)
    watcher.periodic.append(FailedStarts(client, options.selector, recovery, telemetry).sweep)
    space = SpaceWatch(telemetry, options.fill_warning_hours)

    def observe_space(w: Watched, health: Health) -> None:
        space.observe(w.name, health.disk, health.at)

    watcher.on_probe.append(observe_space)
    drift: DriftWatch | str = "turned off (--drift-watch off)"
    if options.drift_watch:
        def wake(container_id: str) -> None:
            w = watcher.watched.get(container_id)
            telemetry.emit("drift", container=w.name if w else container_id[:12],
                           why="its data dir's owner or mode changed (inotify IN_ATTRIB): probing it now")
            watcher.probe_soon(container_id)

        try:
            drift = watch = DriftWatch(wake)
        except OSError as exc:
            drift = f"inotify unavailable ({exc}; see fs.inotify.max_user_instances)"
            telemetry.emit("drift-watch-off", why=drift)
        else:
            local = options.repair_via != "helper"

            def observe_drift(w: Watched, health: Health) -> None:
                watch.observe(w.id, health.container, health.target, local and engine_paths_reachable())

            watcher.on_probe.append(observe_drift)
            watcher.on_forget.append(watch.remove)
    volumes = DriverVolumes(client)
    telemetry.metrics.watch_volumes(volumes.read)
    board = Board(journal, lambda: list(watcher.watched.values()), recovery.busy, space, volumes)
    return watcher, recovery, telemetry, board, drift


def status_of(watcher: Watcher, recovery: Recovery, drift: DriftWatch | str = "turned off") -> dict:
    """What /status shows: the watched containers (each with its drift watch: "on: PATH" or "off: why", and the
    foreign owner that keeps coming back to its data mount: Recovery.shared, None without one), open
    incidents, success rates per (error type, action)."""
    journal = recovery.journal
    rates = [{"type": t, "action": a, "succeeded": ok, "failed": bad}
             for (t, a), (ok, bad) in sorted(journal.rates().items())]
    shown = watcher.status()
    ids = {w.id[:12]: w.id for w in list(watcher.watched.values())}
    for c in shown["containers"]:
        c["drift"] = drift.why(ids.get(c["id"], c["id"])) if isinstance(drift, DriftWatch) \
            else f"off: {drift}; the periodic probe finds it"
        c["shared"] = recovery.shared.get(ids.get(c["id"], c["id"]))
    return {**shown,
            "node": engine_node(watcher.client()),
            "open_incidents": [{"id": i.id, "container": i.container_name, "type": i.error_type,
                                "origin": i.origin} for i in journal.open_incidents()],
            "success_rates": rates}


def sweep_helpers(client: Callable[[], docker.DockerClient], telemetry: Telemetry) -> None:
    """Remove the repair helpers that killed hooks left (repair_helpers.sweep): a helper-removed event for each removed,
    helper-kept for each left; helper-sweep-failed when the engine does not answer (the next start tries again)."""
    try:
        removed, kept = repair_helpers.sweep(client())
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        telemetry.emit("helper-sweep-failed", error=str(exc)[:200])
        return
    for event, found in (("helper-removed", removed), ("helper-kept", kept)):
        for helper in found:
            telemetry.emit(event, **helper)


def open_files_limit() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit, as Go's runtime does for dockerd (Go 1.19,
    os/rlimit.go): the hook holds a descriptor or two per watched container (its json-file log, its probe's
    connection), and systemd's default soft limit is 1024. Returns (soft, hard) after; unchanged where refused."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft, hard


def run(options: Options) -> None:
    """`ownvol watch`: serve the status page, /status and /metrics when asked, then watch until stopped."""
    files_limit = open_files_limit()
    watcher, recovery, telemetry, board, drift = build(options)
    server = None
    if options.metrics_addr:
        app = web.create_app(telemetry.metrics, lambda: status_of(watcher, recovery, drift), board.view)
        server = web.serve(options.metrics_addr, app)
    telemetry.emit("hook-started", pid=os.getpid(), db=options.db_path, selector=options.selector,
                   metrics=options.metrics_addr, strategies=recovery.config.source, repair_via=options.repair_via,
                   drift_watch=True if isinstance(drift, DriftWatch) else drift, open_files=files_limit[0])
    sweep_helpers(watcher.client, telemetry)
    try:
        watcher.run()
    finally:
        if isinstance(drift, DriftWatch):
            drift.close()
        if server:
            server.shutdown()
