"""Serve the driver on its unix socket, in the foreground: gunicorn's arbiter (the socket, socket activation,
workers, graceful shutdown) with uvicorn's workers (an event loop each: uvloop, the httptools parser) running the
ASGI face of app.py."""

from __future__ import annotations

import http.client
import logging
import os
import socket

import httptools
from gunicorn.app.base import BaseApplication
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

from .activation import ActivationError, listening_socket
from .app import PEER_SOCKET
from .settings import Settings
from .store import Store
from .volumes import Volumes

log = logging.getLogger("ownvol.plugin")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


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


# A request's head, as gunicorn limits it (its limit_request_line, limit_request_field_size, limit_request_fields
# defaults: docs.gunicorn.org settings); httptools itself sets none.
LIMIT_REQUEST_LINE = 4094
LIMIT_FIELD_SIZE = 8190
LIMIT_FIELDS = 100


class RequestHeadRefused(httptools.HttpParserError):
    pass


class DriverProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol on httptools, with gunicorn's limits on a request's head (over them: uvicorn's
    400, before the app) and the connection's socket in each request's scope (extension PEER_SOCKET): Activate
    learns its caller with SO_PEERCRED (liveness.peer)."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {PEER_SOCKET: self.transport.get_extra_info("socket")}

    def eof_received(self) -> bool:  # type: ignore[override]  # uvicorn says None; asyncio.Protocol allows a bool
        """The client shut its side after a whole request (asyncio.Protocol: True keeps the transport open): the
        reply still goes out, then the connection closes, as gunicorn did. A request cut short is a disconnect."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return False
        if cycle.more_body:
            cycle.disconnected = True
            cycle.message_event.set()
            return False
        cycle.keep_alive = False
        return True

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > LIMIT_REQUEST_LINE:
            raise RequestHeadRefused(f"request line longer than {LIMIT_REQUEST_LINE} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) > LIMIT_FIELD_SIZE or len(self.headers) >= LIMIT_FIELDS:
            raise RequestHeadRefused(f"a header over {LIMIT_FIELD_SIZE} bytes, or over {LIMIT_FIELDS} headers")
        super().on_header(name, value)


class DriverWorker(UvicornWorker):
    """gunicorn's worker running uvicorn (uvicorn-worker): uvloop, DriverProtocol, no lifespan; kept-alive
    connections as gunicorn's keepalive says; on SIGTERM the requests in progress finish within
    graceful_timeout."""

    CONFIG_KWARGS = {"loop": "uvloop", "http": DriverProtocol, "interface": "asgi3", "lifespan": "off",
                     "server_header": False, "proxy_headers": False, "timeout_graceful_shutdown": 30}


class _Gunicorn(BaseApplication):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        for key, value in {
            "bind": [f"unix:{s.socket}"],
            "workers": s.workers,
            # dockerd keeps a connection open between requests (Go's http.Transport; moby pkg/plugins/client.go):
            # an event loop holds the idle ones for nothing, and answers the quick requests without a thread's
            # hand-off (bench: mount_cpu_ms_per_pair); app.py sends the long ones to the loop's threads.
            "worker_class": f"{__name__}.DriverWorker",
            "keepalive": 30,
            "umask": 0o077,  # the socket is born 0600: root only
            "timeout": 600,  # the workers' heartbeat; the loop keeps beating while a thread walks
            "graceful_timeout": DriverWorker.CONFIG_KWARGS["timeout_graceful_shutdown"],
            "loglevel": s.log_level.lower(),
            "errorlog": "-",
            "accesslog": None,
            "proc_name": f"ownvol-plugin-{s.driver_name}",
            "when_ready": lambda server: os.chmod(s.socket, 0o600),
            # gunicorn >= 25 opens ~/.gunicorn/gunicorn.ctl, one path for every instance on the host
            "control_socket_disable": True,
        }.items():
            if key in self.cfg.settings:
                self.cfg.set(key, value)

    def load(self):
        from .app import create_app

        return create_app(self.settings).asgi


def serve(settings: Settings) -> None:
    """Recover interrupted work once, then serve until SIGTERM/SIGINT: on the socket systemd passed (socket
    activation, see activation.py; it must be settings.socket) or else on one of its own.

    Raises AlreadyServing when another plugin answers on the socket, ActivationError for an unusable passed one.
    """
    logging.basicConfig(level=settings.log_level, format=LOG_FORMAT)
    # A line per request: no caller's frame, thread or process name is looked up for a format that shows none
    # (the logging HOWTO's "Optimization"; a quarter of the app's CPU per Mount+Unmount pair before).
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    inherited = listening_socket()
    if inherited is None and answers(settings.socket):
        raise AlreadyServing(f"a plugin already answers on {settings.socket}; stop it first")
    if inherited is not None and not _same_file(inherited, settings.socket):
        raise ActivationError(f"systemd passed the socket {inherited} but the settings name {settings.socket} "
                              "(OWNVOL_SOCKET, OWNVOL_DRIVER_NAME): make ListenStream= and them agree")
    os.makedirs(os.path.dirname(settings.socket), mode=0o755, exist_ok=True)
    os.makedirs(settings.root, mode=0o700, exist_ok=True)
    store = Store(settings.db_path)
    for line in Volumes(settings, store).recover():
        log.info("recover: %s", line)
    store.close()
    log.info("driver %s on %s%s (root %s, mount root %s, %d workers)", settings.driver_name, settings.socket,
             " (socket activation)" if inherited else "", settings.root, settings.mount_root or "-", settings.workers)
    _Gunicorn(settings).run()


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
