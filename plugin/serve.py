"""Serve the driver on its unix socket, in the foreground: gunicorn (the socket, socket activation, workers and
their restarts, graceful shutdown) running app.py's Flask app in its single-threaded workers (gunicorn's sync
worker): each worker answers one request at a time and takes the next connection only when it is free, so a Mount
that walks a large tree holds one worker and the others answer meanwhile. A worker closes each connection after
its reply (`Connection: close`); dockerd's client then connects again for its next request (Go's http.Transport)."""

from __future__ import annotations

import http.client
import logging
import os
import queue
import signal
import socket

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from . import orphans
from .activation import ActivationError, listening_socket
from .settings import Settings, open_to_engine
from .store import Store
from .volumes import Volumes

log = logging.getLogger("ownvol.plugin")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
GRACEFUL_TIMEOUT = 30  # seconds a stopping worker gives the requests in progress
# Processes, not threads. gunicorn's threaded worker (gthread, 2 workers of 2 threads before) passed each request
# across a worker's threads (poller, pool thread, back), and each return from a syscall waited for the GIL held by
# the worker's other busy thread (py-spy: BENCHMARKS.md, mount_p99_ms); its kept connections also stay with the
# worker that accepted them, one queue per worker. A sync worker has one thread, and the waiting connections queue
# in the socket's one backlog, taken by whichever worker is free. Measured beside 2 gthread workers of 2 threads
# (two drivers, the bench's 8 clients, interleaved 10 s windows, 4 sync workers): Mount p99 6.8 and 8.3 against
# 10.1 and 10.4 ms at load 0.7 to 3.8; 16.6 against 24.3 ms (median of 6, better in each) at load 4.2 to 7.2; with
# _reply_sent too, 21.7 against 30.5 ms (median of 8, better in 6), CPU 2.00 against 2.28 ms a pair, load 2.3 to 5.3;
# at load 6 to 8 none seen (17.8 against 15.4 ms, better in 2 of 6; p50 3.7 against 4.5 ms). On a quiet machine
# (4 rounds): p99 7.65 against 8.80 ms, 1496 against 1096 pairs/s, CPU 1.04 against 1.33 ms a pair; docker run's
# start the same (container_start_ratio 1.039 against 1.043, 30 runs a side; BENCHMARKS.md, Issue 28).
WORKER_CLASS = "sync"


class AlreadyServing(RuntimeError):
    pass


def answers(sock_path: str, timeout: float = 2.0) -> bool:
    """Whether a plugin already answers Plugin.Activate on sock_path."""
    conn = UnixHTTPConnection(sock_path, timeout=timeout)
    try:
        conn.request("POST", "/Plugin.Activate", body=b"{}")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over AF_UNIX: what the daemon speaks to a plugin."""

    def __init__(self, sock_path: str, timeout: float = 60.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.sock_path = sock_path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.sock_path)


class _Gunicorn(BaseApplication):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        for key, value in {
            "bind": [f"unix:{s.socket}"],
            "workers": s.workers,
            # a request at a time per worker (a walking Mount holds one worker), each connection closed after its
            # reply; threads=1 keeps gunicorn from turning sync into gthread
            "worker_class": WORKER_CLASS,
            "threads": 1,
            "umask": 0o077,  # the socket is born 0600: root only
            # no heartbeat deadline: a sync worker beats only between requests, and a Mount may walk a tree of any
            # size (1,000,000 files: 6 s; BENCHMARKS.md, mount_idmap_1m_ms); the threaded worker's loop beat
            # through a walk, so no request was ever cut by it
            "timeout": 0,
            "graceful_timeout": GRACEFUL_TIMEOUT,
            "loglevel": s.log_level.lower(),
            "errorlog": "-",
            "accesslog": None,
            "proc_name": f"ownvol-plugin-{s.driver_name}",
            # the app (Flask, the volumes service) is made once in the arbiter and every worker is forked with it:
            # a worker answers as soon as it is forked. Nothing of it is per process before a request: the store
            # connects per process and thread (store.Store.conn), the rest holds settings only.
            "preload_app": True,
            "when_ready": lambda server: _own_socket(s),
            # a worker stops when its arbiter dies (SIGKILL of the arbiter alone), instead of serving unsupervised
            "post_fork": lambda server, worker: _forked(server),
            "post_request": lambda worker, req, environ, resp: _reply_sent(environ),
            # gunicorn >= 25 opens ~/.gunicorn/gunicorn.ctl, one path for every instance on the host
            "control_socket_disable": True,
        }.items():
            if key in self.cfg.settings:
                self.cfg.set(key, value)

    def load(self):
        from .app import create_app

        return create_app(self.settings)


def _forked(server: Arbiter) -> None:
    """In a worker just forked, before gunicorn installs its own handlers (workers/base.py init_signals, after
    its pipes and owner): a SIGTERM stops it at once. Until then the arbiter's handler, inherited, only queues a
    signal in the worker's copy of the arbiter's queue, so a worker that the arbiter's stop met in that window
    served on and held the stop for the whole graceful timeout (30 s; the arbiter forks its workers up to 0.1 s
    apart, so a stop right after a start could meet the last one). A SIGTERM already queued there ends it too.
    The worker has answered nothing yet. Then: SIGTERM when its arbiter dies (orphans.die_with_parent)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        try:
            if server.SIG_QUEUE.get_nowait() == signal.SIGTERM:
                os.kill(os.getpid(), signal.SIGTERM)
        except queue.Empty:
            break
    orphans.die_with_parent(server.pid)


def _reply_sent(environ: dict) -> None:
    """After a request, its reply written: the connection's read side shut (shutdown(2) SHUT_RD), so the worker's
    closing of it (gunicorn's util.close_graceful: SHUT_WR, then reading until the peer closes, 2 s at most) still
    reads what of the request is left unread but waits no longer for the client to close its end. py-spy put 17 % of
    a sync worker's time in that wait under the bench's 8 clients (a client on a busy machine closes when it next
    gets a core); without it: 948 against 865 pairs/s, Mount p50 3.3 against 4.2 ms (5 interleaved windows)."""
    from .app import PEER_SOCKET  # loaded already (preload_app); here, as in load(), to keep the CLI off Flask

    sock = environ.get(PEER_SOCKET)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass


def _own_socket(s: Settings) -> None:
    """The socket 0600, root's, or OWNVOL_SOCKET_OWNER's: a rootless engine connects as its user (a root that its
    user namespace gives no right over a file of the host's root, user_namespaces(7))."""
    os.chmod(s.socket, 0o600)
    if s.socket_owner:
        os.chown(s.socket, *s.socket_owner)


def serve(settings: Settings) -> None:
    """Recover interrupted work once, then serve until SIGTERM/SIGINT: on the socket systemd passed (socket
    activation, see activation.py; it must be settings.socket) or else on one of its own.

    Raises AlreadyServing when another live plugin answers on the socket (workers whose arbiter died are stopped
    instead: orphans.py), ActivationError for an unusable passed one.
    """
    logging.basicConfig(level=settings.log_level, format=LOG_FORMAT)
    # A line per request: no caller's frame, thread or process name is looked up for a format that shows none
    # (the logging HOWTO's "Optimization"; a quarter of the app's CPU per Mount+Unmount pair before).
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    inherited = listening_socket()
    if inherited is None and answers(settings.socket):
        _take_over(settings.socket)
    if inherited is not None and not _same_file(inherited, settings.socket):
        raise ActivationError(f"systemd passed the socket {inherited} but the settings name {settings.socket} "
                              "(OWNVOL_SOCKET, OWNVOL_DRIVER_NAME): make ListenStream= and them agree")
    os.makedirs(os.path.dirname(settings.socket), mode=0o755, exist_ok=True)
    os.makedirs(settings.root, mode=0o700, exist_ok=True)
    open_to_engine(settings.root, settings)
    store = Store(settings.db_path)
    for line in Volumes(settings, store).recover():
        log.info("recover: %s", line)
    store.close()
    log.info("driver %s on %s%s (root %s, mount root %s, %d workers)", settings.driver_name,
             settings.socket, " (socket activation)" if inherited else "", settings.root, settings.mount_root or "-",
             settings.workers)
    _Gunicorn(settings).run()


def _take_over(sock_path: str) -> None:
    """The socket answers: stop the workers of a dead arbiter serving it (orphans.py); AlreadyServing when a
    live driver does."""
    left = orphans.orphans(sock_path)
    if left is None:
        raise AlreadyServing(f"a plugin already answers on {sock_path}; stop it first")
    if not left:
        return
    log.warning("event=orphans-stopped pids=%s: they served %s after their arbiter died",
                ",".join(map(str, sorted(left))), sock_path)
    orphans.stop(left)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
