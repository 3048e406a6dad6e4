"""Which containers to watch, as the engine tells it: events, followed logs, steady health probes.

Event-driven: the engine's event stream (create, start, die, health_status, oom, destroy; each
container's events handled in order in a thread of its own while it has some pending) and every watched
container's followed log (one thread for them all: its json-file log read where dockerd writes it,
hooks/jsonfile.py, where this process sees the engine's files, else the engine's logs endpoint,
hooks/follow.py) feed detection; a probe loop feeds
health: a container is probed at once after an event or a log line of its own, else every interval, and
one healthy probe after another with nothing in between stretches its interval up to QUIET_MAX intervals.
Survives an engine restart (reconnects, picks the containers up again) and its own restart (picks up
containers already running; open incidents resume from the journal).
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import docker
import requests

from ownvol.dockertime import state_time_ns, timestamp_ns

from . import patterns
from .executor import DockerExecutor
from .follow import LogStreams
from .inspect_cache import InspectCache
from .jsonfile import TAIL, JsonFiles, readable
from .model import Health
from .recovery import Recovery
from .services import by_family, service_for
from .targets import engine_paths_reachable, is_watched
from .telemetry import Telemetry

EVENTS = ("create", "start", "die", "health_status", "oom", "destroy")
INCIDENT_STATES = ("refusing-writes", "latent")
# A container that exits non-zero within this many seconds of its start, or exits again after a restart,
# crashed at start-up: with a data mount not owned by its service's uid, that is evidence enough.
CRASH_WINDOW = 30.0
# A container healthy at probe after probe, with no event and no log line in between, is probed after 2, 4, 8
# then QUIET_MAX intervals (60 s at the default 5 s): 200 idle containers cost 3 probes a second, not 40
# (bench: watcher_cpu_pct_200). What only a probe sees (a data dir chowned under a server that has not yet
# written to it) waits that long; anything the server logs or the engine announces is probed at once.
QUIET_MAX = 12
# Threads that hand log detections to the recovery. Opening an incident writes the journal and starts a worker
# (1 to 60 ms while 20 recoveries run); made on the log thread, 20 lines at once were read one report after
# another, the last 160 ms late (bench: burst20_detect_p99_ms).
REPORTERS = 8
# Threads that probe the containers due at the same time (every container at the hook's start and at the engine's
# reconnect). One after another, an exec'd probe (PostgreSQL, MariaDB: their own client run in the container, its
# start facts read cold: 0.3-0.9 s) held up every container after it: a chowned Redis was found that much later
# behind one (bench/resume_bench.py).
PROBERS = 4


class Serial:
    """Calls run in order for each key, different keys at once: on a pool of `threads` threads made once (a thread
    start waits for the new thread to run: milliseconds when many are busy), or, with threads None, each key's in a
    short-lived thread of its own while it has calls pending (calls that may wait long, and must not hold up
    another key's). A call that raises is the call's to report; the key's next call still runs."""

    def __init__(self, threads: int | None, name: str) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix=name) if threads else None
        self._name = name
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Callable[[], None]]] = {}

    def submit(self, key: str, call: Callable[[], None]) -> None:
        with self._lock:
            queue = self._queues.setdefault(key, deque())
            queue.append(call)
            if len(queue) > 1:
                return
        if self._pool is not None:
            self._pool.submit(self._drain, key)
        else:
            threading.Thread(target=self._drain, args=(key,), name=f"{self._name}-{key[:12]}", daemon=True).start()

    def pending(self) -> int:
        """How many keys have calls not yet done."""
        with self._lock:
            return len(self._queues)

    def _drain(self, key: str) -> None:
        while True:
            with self._lock:
                call = self._queues[key][0]
            try:
                call()
            except Exception:  # noqa: BLE001, S110 - a call reports its own failure: the key's next call still runs
                pass
            with self._lock:
                queue = self._queues[key]
                queue.popleft()
                if not queue:
                    del self._queues[key]
                    return


class ProbeWake(threading.Event):
    """The probe loop's wake: set() asks for a probe of every container, poke(id) for one container only."""

    def __init__(self) -> None:
        super().__init__()
        self._guard = threading.Lock()
        self._everyone = False
        self._due: builtins.set[str] = builtins.set()

    def set(self) -> None:
        with self._guard:
            self._everyone = True
        super().set()

    def poke(self, container_id: str) -> None:
        with self._guard:
            self._due.add(container_id)
        super().set()

    def take(self) -> tuple[bool, builtins.set[str]]:
        """(whether every container is due, the ids poked) since the last take; clears the event."""
        with self._guard:
            self.clear()
            everyone, due, self._everyone, self._due = self._everyone, self._due, False, builtins.set()
        return everyone, due


@dataclass
class Watched:
    """A container the hook watches: the log position it read up to (ns since the epoch), its log follower (a
    Future of LogStreams: running while not done) or its json-file log's path (log_file: followed from the
    file for the container's life), its last health state and reasons, when it is next probed
    (time.monotonic()) and its current probe interval (seconds)."""

    id: str
    name: str
    last_log_ns: int = 0
    follower: concurrent.futures.Future | None = None
    health: str = "unknown"
    reasons: list[str] = field(default_factory=list)
    target: dict = field(default_factory=dict)
    reader: patterns.LogReader | None = None
    last_detection_ns: int = 0
    service: str = ""  # its family (hooks/services), carried in every incident's detail
    last: Health | None = None  # the last probe's result (the status page reads it)
    due: float = math.inf  # not scheduled before an event, a log line or a probe of every container asks
    quiet: float = 0.0
    tty: bool = False  # Config.Tty: its log comes raw, not in the engine's frames
    started_ns: int = 0  # when its current run started (the engine's StartedAt, or its start event)
    healthy_ns: int = 0  # when a probe last found it healthy
    log_file: str = ""  # its json-file log, when this process reads it there (hooks/jsonfile.py)
    file_followed: bool = False  # the file is followed

    @property
    def following(self) -> bool:
        return self.file_followed or bool(self.follower and not self.follower.done())

    def served(self, at_ns: int) -> bool:
        """Its server was running and had been found healthy in this run at at_ns (ns since the epoch): an
        incident seen then opened on a running server (detail "running_at_open"; hooks/actions.py
        start_decision starts it again if it then dies of the fault, whatever the hook read first)."""
        return 0 < self.healthy_ns and self.started_ns <= self.healthy_ns and self.started_ns <= at_ns


class Watcher:
    """Engine events, followed logs and periodic probes, turned into Recovery reports. client is called for the engine's
    client; selector narrows the watch to containers with those labels; interval is seconds between probes; log_files:
    read json-file logs in the engine's files where this process sees them (hooks/jsonfile.py)."""

    def __init__(self, client: Callable[[], docker.DockerClient], selector: dict[str, str], recovery: Recovery,
                 telemetry: Telemetry, executor: DockerExecutor, interval: float = 5.0, log_files: bool = True) -> None:
        self.client = client
        self.selector = selector
        self.recovery = recovery
        self.telemetry = telemetry
        self.executor = executor
        # the probes' kept inspects, forgotten on each event (an executor without them, a test's, inspects each time)
        self.inspects: InspectCache | None = getattr(executor, "inspects", None)
        self.interval = interval
        self.watched: dict[str, Watched] = {}
        self._lock = threading.Lock()
        self.events = Serial(None, "events")  # each container's engine events handled in order (dispatch)
        self._wake = ProbeWake()
        self._stop = threading.Event()
        self._resumed = False
        self.logs = LogStreams()
        self.reports = Serial(REPORTERS, "reports")  # each container's detections reported in order
        self._probers = concurrent.futures.ThreadPoolExecutor(PROBERS, thread_name_prefix="probe")
        self.files: JsonFiles | None = None
        self.files_off = "turned off (--log-files off)"  # why no log is read from its file, when none is
        try:
            self.files = JsonFiles() if log_files else None
        except OSError as exc:
            self.files_off = f"inotify unavailable ({exc}; see fs.inotify.max_user_instances)"
        self.log_root: str | None = None  # the engine's DockerRootDir, when its files are this process's
        self.on_probe: list[Callable[[Watched, Health], None]] = []  # called after every probe (the forecast)
        self.on_forget: list[Callable[[str], None]] = []  # called with the id of a container destroyed
        self.periodic: list[Callable[[], object]] = []  # called every interval (hooks/failed_starts.py)

    # --- the main loop --------------------------------------------------------------------------
    def run(self) -> None:
        threading.Thread(target=self._probe_loop, name="health", daemon=True).start()
        threading.Thread(target=self._periodic_loop, name="periodic", daemon=True).start()
        backoff, connected_once = 0.5, False
        while not self._stop.is_set():
            try:
                client = self.client()
                client.ping()
                since = time.time()
                self.telemetry.emit("engine-connected", reconnect=connected_once)
                connected_once, backoff = True, 0.5
                self.log_root = self._files_root(client)
                # the events are asked for from the whole second (since=int(since)) and replayed from there, and a
                # start event's log is read from 2 s before it (_follow_from): the logs of the containers running now
                # are read from the same point, or a failure logged between the replayed start and this connection
                # would be read by neither (a CI run: a Valkey that failed before the hook had connected)
                self.pickup(client, (int(since) - 2) * 1_000_000_000)
                if not self._resumed:
                    self._resumed = True
                    self.recovery.resume(self._exists)
                filters: dict[str, str | list[str]] = {"type": "container"}
                if self.selector:
                    filters["label"] = [f"{k}={v}" for k, v in self.selector.items()]
                stream = client.api.events(decode=True, since=int(since), filters=filters)
                if self.inspects is not None:
                    self.inspects.clear(followed=True)  # the stream is open: its events forget what is kept now
                for event in stream:
                    self.dispatch(event)
                    if self._stop.is_set():
                        return
                self.telemetry.emit("engine-disconnected", error="event stream ended")
            except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
                if connected_once:
                    self.telemetry.emit("engine-disconnected", error=str(exc)[:200])
            finally:
                if self.inspects is not None:
                    self.inspects.clear()  # no stream forgets until the next one is open
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 10)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _files_root(self, client: docker.DockerClient) -> str | None:
        """The engine's DockerRootDir (`docker info`) when json-file logs can be read there, announced either way."""
        root, why = None, self.files_off
        if self.files is not None:
            if not engine_paths_reachable():
                why = "the engine's files are not this process's (a hook in a container, a remote engine)"
            else:
                try:
                    root = client.info().get("DockerRootDir") or None
                except docker.errors.DockerException as exc:
                    why = f"docker info: {exc}"
                if root and not os.path.isdir(os.path.join(root, "containers")):
                    root, why = None, f"{root}/containers is not readable here"
        self.telemetry.emit("logs", source=f"json-file logs under {root}/containers" if root else
                            "the engine's logs endpoint", why="" if root else why)
        return root

    def _exists(self, container_id: str) -> bool:
        try:
            self.client().containers.get(container_id)
            return True
        except docker.errors.NotFound:
            return False

    def pickup(self, client: docker.DockerClient, since_ns: int | None = None) -> None:
        """Start watching every matching container the engine has now, each log from since_ns (ns since the epoch:
        when the event stream was asked for; else now) on; scan the recent logs of those that exited with an
        error."""
        since_ns = since_ns or time.time_ns()
        filters = {"label": [f"{k}={v}" for k, v in self.selector.items()]} if self.selector else {}
        for container in client.containers.list(all=True, filters=filters):
            if not is_watched(container.attrs, self.selector):
                continue
            w = self.track(container)
            if container.status in ("restarting", "exited") and \
                    (container.attrs.get("State") or {}).get("ExitCode", 0) != 0:
                self.scan(container, w, tail=50)  # before the follow: the lines it reads are older than since_ns
                self.crashed(container, w)
            if container.status == "running" or w.log_file:
                self.follow(w, since_ns=w.last_log_ns or since_ns, running=True)
            self.probe_soon(w.id)

    def track(self, container) -> Watched:
        """The Watched entry of a docker-py container, made (and announced) the first time."""
        with self._lock:
            w = self.watched.get(container.id)
            if w is None:
                service = service_for(container.attrs)
                reader = patterns.LogReader(service.catalogue if service else patterns.CATALOGUE)
                log_file, why = readable(self.log_root if self.files else None, container.attrs)
                w = self.watched[container.id] = Watched(container.id, container.name, reader=reader,
                                                         service=service.family if service else "",
                                                         started_ns=state_time_ns((container.attrs.get("State") or {})
                                                                           .get("StartedAt")),
                                                         tty=bool((container.attrs.get("Config") or {}).get("Tty")),
                                                         log_file=log_file or "")
                self.telemetry.emit("watching", container=container.name, id=container.id[:12],
                                    image=(container.attrs.get("Config") or {}).get("Image"),
                                    logs=f"file {log_file}" if log_file else
                                    f"engine ({why or self.files_off})")
            return w

    # --- events ---------------------------------------------------------------------------------
    def dispatch(self, event: dict) -> None:
        """Hand an engine event to its container's handler thread (made while that container has events
        pending): each container's events in order, no container's behind another's. Handling asks the engine
        about the container, and dockerd answers an inspect only once that container's start or stop is done
        (the container's lock, moby daemon/start.go): handled in one thread, 20 containers starting at once
        held each other's detection for seconds (bench: burst20_detect_p99_ms)."""
        cid = event.get("id") or (event.get("Actor") or {}).get("ID")
        if cid:
            if self.inspects is not None:
                self.inspects.forget(cid)
            self.events.submit(cid, lambda: self._handle(cid, event))

    def _handle(self, cid: str, event: dict) -> None:
        try:
            self.on_event(event)
        except Exception as exc:  # noqa: BLE001 - one event's failure must not stop the container's next
            self.telemetry.emit("event-failed", id=cid[:12], action=event.get("Action"),
                                error=f"{type(exc).__name__}: {str(exc)[:200]}")

    def on_event(self, event: dict) -> None:
        """Handle one engine event (docker-py's decoded /events JSON): follow the logs of a container that starts,
        forget one destroyed, scan the logs of one that dies, note an oom; then wake the probes."""
        action = (event.get("Action") or event.get("status") or "").split(":")[0]
        if action not in EVENTS:
            return
        cid = event.get("id") or (event.get("Actor") or {}).get("ID")
        if not cid:
            return
        if action == "destroy":
            self._destroyed(cid)
            return
        with self._lock:
            known = self.watched.get(cid)
        if action == "start" and known is not None:  # followed at once: an inspect waits for the container's lock
            self._follow_from(known, event)
            self.probe_soon(known.id)
            return
        try:
            container = self.client().containers.get(cid)
        except docker.errors.NotFound:
            return
        if not is_watched(container.attrs, self.selector):
            return
        w = self.track(container)
        name = ((event.get("Actor") or {}).get("Attributes") or {}).get("name", cid[:12])
        if action == "start":
            self._follow_from(w, event)
        elif action == "create" and w.log_file:  # its file, from the first line of its first start
            self.follow(w, since_ns=int(event.get("timeNano") or time.time_ns()) - 2_000_000_000)
        elif action == "die":
            self._died(container, w, name, event)
        elif action == "oom":
            self.telemetry.emit("oom", container=name)
        self.probe_soon(w.id)

    def _destroyed(self, cid: str) -> None:
        """A container removed: no longer watched, its log file no longer followed, its metrics and the others'
        records of it (on_forget) dropped."""
        with self._lock:
            gone = self.watched.pop(cid, None)
        if not gone:
            return
        if gone.file_followed and self.files is not None:
            self.logs.submit(self.files.remove(cid))
        self.telemetry.metrics.forget(gone.name)
        self.telemetry.emit("unwatched", container=gone.name, why="destroyed")
        for forget in self.on_forget:
            forget(cid)

    def _died(self, container, w: Watched, name: str, event: dict) -> None:
        """A watched container's server ended: said with its exit code, its last logs scanned, a crash told."""
        exit_code = ((event.get("Actor") or {}).get("Attributes") or {}).get("exitCode")
        self.telemetry.emit("died", container=name, exit_code=exit_code)
        self.scan(container, w)
        self.crashed(container, w, exit_code)

    # --- logs -----------------------------------------------------------------------------------
    def _follow_from(self, w: Watched, start: dict) -> None:
        """Follow from the start event's time (less 2 s of clock slack) or the last line read, the later; the
        run's start is noted (Watched.served)."""
        started_ns = int(start.get("timeNano") or time.time_ns())
        w.started_ns = max(w.started_ns, started_ns)
        self.follow(w, since_ns=max(w.last_log_ns, started_ns - 2_000_000_000))

    def follow(self, w: Watched, since_ns: int, running: bool = False) -> None:
        """Follow the container's logs from since_ns (ns since the epoch) on the log thread, unless it is followed:
        its json-file log (running: it may hold much from before since_ns, so only the file's last TAIL bytes are
        read, lines older than since_ns skipped), else the engine's logs endpoint."""
        with self._lock:
            if w.following:
                return
            if w.log_file:
                w.last_log_ns = max(w.last_log_ns, since_ns - 1)
                w.follower = self.logs.submit(self._follow_file(w, since_ns, TAIL if running else None))
            else:
                w.follower = self.logs.submit(self._follow(w, since_ns))

    async def _follow_file(self, w: Watched, since_ns: int, tail: int | None) -> None:
        """Follow the container's json-file log for its life; one whose directory cannot be watched is followed
        through the engine instead, with an event saying why."""
        assert self.files is not None
        try:
            await self.files.add(w.id, w.log_file, lambda line: self.on_line(w, line), tail)
            w.file_followed = True
        except OSError as exc:
            self.telemetry.emit("logs", container=w.name, source="the engine's logs endpoint",
                                why=f"cannot watch {os.path.dirname(w.log_file)}: {exc}")
            w.log_file = ""
            await self._follow(w, since_ns)

    async def _follow(self, w: Watched, since_ns: int) -> None:
        """Follow a container's log until it stops. A follower that dies (the stream breaks, a line's handling
        raises) while the container still runs is restarted from the last line seen, with an event."""
        backoff = 0.5
        while not self._stop.is_set():
            try:
                async for line in self.logs.lines(w.id, since_ns, w.tty):
                    self.on_line(w, line)
                return  # the stream ended: the container stopped
            except Exception as exc:  # noqa: BLE001 - a follower must not die silently
                error = f"{type(exc).__name__}: {str(exc)[:200]}"
            if not await self._running(w.id):
                self.telemetry.emit("follower-stopped", container=w.name, error=error,
                                    why="the container is not running (or the engine cannot say): picked up "
                                        "again at its next start or the engine's reconnect")
                return
            self.telemetry.emit("follower-restarted", container=w.name, error=error, after=backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10)
            since_ns = max(since_ns, w.last_log_ns)

    def _from_engine(self, w: Watched, why: str) -> None:
        """Stop reading the container's file; follow it through the engine's logs endpoint from its current run."""
        self.telemetry.emit("logs", container=w.name, source="the engine's logs endpoint", why=why)
        if self.files is not None:
            self.logs.submit(self.files.remove(w.id))
        with self._lock:
            w.file_followed, w.log_file, w.follower = False, "", None
        self.follow(w, since_ns=max(w.last_log_ns, w.started_ns - 2_000_000_000))

    async def _running(self, container_id: str) -> bool:
        try:
            return await self.logs.running(container_id)
        except Exception:  # noqa: BLE001 - the engine cannot say
            return False

    def scan(self, container, w: Watched, tail: int | None = None) -> None:
        """Read what was logged since the last line seen (or the last `tail` lines): nothing is missed."""
        if tail is None and w.file_followed and self.files is not None:
            try:
                self.logs.submit(self.files.drain(w.id)).result(timeout=10)
            except (concurrent.futures.TimeoutError, OSError):
                pass
            return
        try:
            kwargs = {"tail": tail} if tail else {"since": w.last_log_ns / 1e9} if w.last_log_ns else {"tail": 50}
            text = container.logs(timestamps=True, **kwargs).decode(errors="replace")
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return  # the engine cannot say now: the crash check still runs
        for line in text.splitlines():
            self.on_line(w, line)

    def on_line(self, w: Watched, line: str) -> None:
        """One timestamped log line: skipped if already read, else read by its service's LogReader (multi-line
        blocks too) and a failure reported to the recovery."""
        stamp, _, text = line.partition(" ")
        try:
            ts = timestamp_ns(stamp)
        except ValueError:
            return
        with self._lock:
            if ts <= w.last_log_ns:
                return
            w.last_log_ns = ts
        detection = w.reader.feed(text) if w.reader else patterns.match(text)
        if detection is not None:
            self._detected(w, ts, detection)
        self.probe_soon(w.id)  # after the line's own report: the line is the faster, and the more precise, witness

    def _detected(self, w: Watched, ts: int, detection: patterns.Detection) -> None:
        w.last_detection_ns = ts
        lag = max(0.0, time.time() - ts / 1e9)
        self.telemetry.metrics.detection_seconds.observe(lag)
        self.telemetry.emit("detected", container=w.name, lag=round(lag, 3), **detection.as_dict())
        detail = {**detection.as_dict(), "service": w.service, "running_at_open": w.served(ts)}
        self.reports.submit(w.id, lambda: self._report(w, detection.error_type, detail, ts / 1e9))

    def _report(self, w: Watched, error_type: str, detail: dict, detected_at: float) -> None:
        try:
            detail = self._located(w, detail)
            self.recovery.report(w.id, w.name, error_type, "log", detail, detected_at=detected_at)
        except Exception as exc:  # noqa: BLE001 - a report that raises must not stop the container's next
            self.telemetry.emit("report-failed", container=w.name, type=error_type,
                                error=f"{type(exc).__name__}: {str(exc)[:200]}")

    def _located(self, w: Watched, detail: dict) -> dict:
        """detail with its context's `path` absolute in the container (Service.locate with the container's
        facts) when the line named a relative one, or none and its service knows the setting it is about;
        detail as it is otherwise, or when the facts cannot be read."""
        context = detail.get("context") or {}
        path = context.get("path") or ""
        try:
            service = by_family(w.service)
        except KeyError:
            return detail
        if path.startswith("/") or (not path and detail.get("pattern") not in service.path_settings):
            return detail
        several = len(service.path_settings.get(detail.get("pattern", ""), ())) > 1
        try:
            # the probes' kept inspect (its mounts and settings change only with an event, which forgets it) and,
            # for a line saying the server exits, no question to the server: a fresh inspect waits for the engine's
            # handling of the exit, and a server that fails at start-up accepts the question and never reads it
            # (bench: burst20_detect_p99_ms, the 20 incidents opened up to 0.27 s after their lines)
            _, target = self.executor.target(w.id, kept=True, ask_server=not detail.get("fatal"))
            unwritable = self.executor.unwritable(w.id) if several and not path else None
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            return detail  # the incident is reported all the same, with the path as the line gave it
        return {**detail, "context": service.locate(detail.get("pattern", ""), context, target, unwritable)}

    def crashed(self, container, w: Watched, exit_code: str | int | None = None) -> None:
        """A start-up crash no known line explained: an incident when the data mount is not owned by the
        service's uid, or a writable mount a setting of the server names (a log, socket or WAL directory) is not
        writable by it (executor.crash_evidence: the facts as while the server is down; the incident's context
        names that directory); mounts no setting names are reported, never repaired."""
        try:
            container.reload()
        except docker.errors.DockerException:
            return
        state = container.attrs.get("State") or {}
        given = str(exit_code) if exit_code is not None else ""
        code = int(given) if given.lstrip("-").isdigit() else int(state.get("ExitCode") or 0)
        if code == 0 or self.recovery.busy(w.id):
            return
        if code >= 128 and not state.get("Error"):
            return  # ended by a signal (`docker stop`, `docker kill`, the OOM killer): not a start-up crash
        started, finished = state_time_ns(state.get("StartedAt")), state_time_ns(state.get("FinishedAt"))
        uptime = (finished - started) / 1e9 if started and finished and finished >= started else None
        restarts = container.attrs.get("RestartCount") or 0
        if not (restarts or (uptime is not None and uptime < CRASH_WINDOW)) and not state.get("Error"):
            return
        if started and w.last_detection_ns >= started:
            return  # a known line of this run already opened (or joined) an incident
        owner = self.executor.crash_evidence(w.id)
        if owner and owner.get("unneeded"):
            self.telemetry.emit("crash-evidence", container=w.name, exit_code=code, uptime=uptime, restarts=restarts,
                                unneeded=owner["unneeded"],
                                why="no known line matched; mounts no setting of the server names cannot be "
                                    "written by it: reported, never repaired")
        if not owner or owner.get("ok", True):
            return
        when = f"{uptime:.1f}s after start" if uptime is not None else "at start"
        where = (f"mount {owner['mount']} ({', '.join(owner.get('needed_by') or [])}) {owner.get('path')}"
                 if owner.get("mount") else f"data mount {owner.get('path')}")
        message = (f"exited with code {code} {when} (restarts {restarts}); {where}: "
                   f"{owner.get('problem')}; no known line matched")
        if state.get("Error"):
            message += f"; engine: {state['Error'][:200]}"
        why = ("no known line matched; a mount the server's settings name is not writable by its uid"
               if owner.get("mount") else "no known line matched; the data mount is not owned by the service")
        self.telemetry.emit("crash-evidence", container=w.name, exit_code=code, uptime=uptime, restarts=restarts,
                            owner=owner, why=why)
        detail = {"message": message, "exit_code": code, "owner": owner, "matched": None, "service": w.service}
        if owner.get("context"):
            detail["context"] = owner["context"]
        self.recovery.report(w.id, w.name, "permission-denied", "exit", detail)

    # --- health ---------------------------------------------------------------------------------
    def probe_soon(self, container_id: str) -> None:
        """Probe that container alone at once, at its first interval again (an event, a log line of its own, its
        data dir changed: hooks/drift.py)."""
        self._wake.poke(container_id)

    def _periodic_loop(self) -> None:
        while not self._stop.wait(self.interval):
            for call in list(self.periodic):
                try:
                    call()
                except Exception as exc:  # noqa: BLE001 - one check's failure must not stop the next
                    self.telemetry.emit("periodic-failed", error=f"{type(exc).__name__}: {str(exc)[:200]}")

    def _probe_loop(self) -> None:
        while not self._stop.is_set():
            everyone, poked = self._wake.take()
            next_due = self.probe_due(everyone, poked)
            self._wake.wait(min(max(next_due - time.monotonic(), 0.0), self.interval))

    def probe_due(self, everyone: bool, poked: set[str]) -> float:
        """Probe every container (everyone), those poked and those whose time has come; when the next one is due
        (time.monotonic(); inf when none is scheduled). Several due are probed at once (PROBERS threads), each
        container by one thread; this returns once every one is done."""
        due = []
        for w in list(self.watched.values()):
            if w.id in poked:
                w.quiet = 0.0
            elif not everyone and w.due > time.monotonic():
                continue
            due.append(w)
        if len(due) > 1:
            list(self._probers.map(self._probe, due))
        elif due:
            self._probe(due[0])
        return min((w.due for w in list(self.watched.values())), default=math.inf)

    def _probe(self, w: Watched) -> None:
        try:
            self.check(w)
        except Exception as exc:  # noqa: BLE001 - one container's probe must not stop the others
            self.telemetry.emit("probe-failed", container=w.name, error=str(exc)[:200])
            w.quiet = 0.0
        w.due = time.monotonic() + (w.quiet or self.interval)

    def check(self, w: Watched) -> None:
        """Probe the container; report writes refused or at risk (INCIDENT_STATES) unless a recovery runs, note a
        healthy one and turn its AOF back on when due."""
        health = self.executor.health(w.id, kept=True) if self.inspects is not None else self.executor.health(w.id)
        if health.container == "gone":
            return
        if w.file_followed and health.container == "running" and not os.path.exists(w.log_file):
            self._from_engine(w, f"the engine runs it but has not written {w.log_file} (moby writes it before the "
                                 "container's process starts): read through the engine")
        settled = health.healthy and w.health == "healthy" and not self.recovery.busy(w.id)
        w.quiet = min(max(2 * w.quiet, self.interval), QUIET_MAX * self.interval) if settled else 0.0
        w.last = health
        for observer in self.on_probe:
            observer(w, health)
        if health.state != w.health:
            self.telemetry.emit("health", container=w.name, state=health.state, previous=w.health,
                                reasons=health.reasons)
            w.health = health.state
            self.telemetry.metrics.set_health(w.name, health.state)
        w.reasons = health.reasons
        if health.healthy:
            w.healthy_ns = time.time_ns()
            self.recovery.healthy(w.id)
            if self.recovery.fallback_due(w.id):
                self.recovery.restore_aof(w.id)
        elif health.state in INCIDENT_STATES and not self.recovery.busy(w.id):
            wrong_owner = health.owner is not None and bool(health.owner) and not health.owner.get("ok", True)
            self.recovery.report(w.id, w.name, "permission-denied" if wrong_owner else "persistence-failed",
                                 "health", {"state": health.state, "reasons": health.reasons,
                                            "message": "; ".join(health.reasons), "service": w.service,
                                            "running_at_open": True, **(health.about or {})})

    def status(self) -> dict:
        """The watched containers as /status shows them."""
        return {"containers": [{"id": w.id[:12], "name": w.name, "health": w.health, "reasons": w.reasons,
                                "following": w.following,
                                "logs": f"file {w.log_file}" if w.file_followed else "engine",
                                "incident": self.recovery.busy(w.id)} for w in list(self.watched.values())]}
