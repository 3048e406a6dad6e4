"""The protocol: Docker's volume-plugin endpoints over HTTP. Parse each body once into its request type
(protocol.py), call the driver, reply.

Nine POST endpoints, a JSON body in, a JSON reply out, so no framework: one dispatch with two faces. The server
(serve.py: uvicorn's workers under gunicorn) calls the ASGI one, `DriverApp.asgi`: the requests that never wait
long (a Mount that needs no walk, Unmount, Get, Path, Capabilities) are answered on the worker's event loop,
the others (a Mount that walks, Create, Remove, List, Activate) in its threads, so a walk keeps no other request
waiting; a hand-off to a thread costs more than such a request itself (bench mount_cpu_ms_per_pair). The WSGI
face (PEP 3333) answers everything in place: tests' werkzeug client. One error handler per exception class
(PluginError, HTTPRefusal, any other) turns it into an `{"Err": "..."}` reply; a traceback never leaves the
process. One log line per request says what was asked and how it ended.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from . import liveness
from .errors import InvalidRequest, PluginError
from .protocol import (
    ActivateResponse,
    CreateRequest,
    GetRequest,
    MountRequest,
    PathRequest,
    RemoveRequest,
    Reply,
    Request,
    UnmountRequest,
    VolumeDriver,
    parse,
    volume_name,
)
from .settings import Settings, from_env
from .store import Store
from .volumes import Volumes

if TYPE_CHECKING:
    from werkzeug.test import Client

MEDIA_TYPE = "application/vnd.docker.plugins.v1.1+json"
MAX_BODY = 64 * 1024
MAX_DIGITS = 64  # a number in a body; Python refuses more than 4300 digits with a ValueError of its own
MAX_ERR = 400  # characters of an Err, whatever went wrong
log = logging.getLogger("ownvol.plugin")


class HTTPRefusal(Exception):
    """A request refused by HTTP's own rules (unknown endpoint, wrong method, body too large)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _number(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise InvalidRequest(f"request body refused: a number of more than {MAX_DIGITS} digits")
    return int(text)


def _too_large() -> HTTPRefusal:
    return HTTPRefusal(413, f"request body larger than {MAX_BODY} bytes")


def _wsgi_body(environ: dict) -> bytes:
    """A WSGI request's body; at most MAX_BODY bytes are ever read."""
    length = environ.get("CONTENT_LENGTH") or ""
    if length:
        if not length.isdigit():
            raise InvalidRequest(f"Content-Length {length[:20]!r} is not a number of bytes")
        if int(length) > MAX_BODY:
            raise _too_large()
        return environ["wsgi.input"].read(int(length))
    raw = environ["wsgi.input"].read(MAX_BODY + 1)  # chunked, or none at all: one byte past the limit tells
    if len(raw) > MAX_BODY:
        raise _too_large()
    return raw


async def _asgi_body(receive: Callable[[], Awaitable[dict]]) -> bytes:
    """An ASGI request's body (http.request messages, ASGI spec); reading stops past MAX_BODY bytes."""
    raw = b""
    while True:
        message = await receive()
        raw += message.get("body", b"")
        if len(raw) > MAX_BODY:
            raise _too_large()
        if not message.get("more_body"):
            return raw


def _decode(raw: bytes) -> dict:
    """The request body as a JSON object ({} when empty)."""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw, parse_int=_number)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("request body is not valid JSON: nested too deeply") from None
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise InvalidRequest(f"request body must be a JSON object, got {type(body).__name__}")
    return body


def _printable(text: str) -> str:
    """text for one log line: escapes instead of line breaks and other controls (no forged lines)."""
    return text if text.isprintable() else text.encode("unicode_escape", "backslashreplace").decode("ascii")


@dataclass(frozen=True)
class _Own:
    """The reply of one of ownvol's own endpoints (`ownvol volumes`), not Docker's protocol."""

    payload: dict

    def wire(self) -> dict[str, object]:
        return self.payload


class _Later:
    """What an endpoint's at_once answers when the request needs its `answer` in a thread."""


LATER = _Later()
PEER_SOCKET = "ownvol.peer_socket"  # the scope's extension naming the connection's socket (serve.py puts it there)
Handler = Callable[[dict, "socket.socket | None"], "Reply | _Own | _Later | None"]  # (body, connection) -> reply
_LOGGED = {"Name": "volume", "ID": "mount_id"}  # body keys each log line shows, as given


@dataclass(frozen=True)
class Route:
    """An endpoint. answer does the whole request and may wait long (a walk, fsyncs, the engine); at_once, when
    given, answers on the server's event loop and must never wait long: it returns LATER, having changed
    nothing, when the request needs answer."""

    answer: Handler
    at_once: Handler | None = None


def _takes(kind: type[Request], method: Callable[[Request], Reply | None]) -> Handler:
    return lambda body, sock: method(parse(kind, body))


def _quick(handler: Handler) -> Route:
    """An endpoint that never waits long: answered on the event loop."""
    return Route(handler, handler)


def _activate(driver: VolumeDriver, sock: socket.socket | None) -> Reply:
    """Plugin.Activate: the caller (SO_PEERCRED on the connection) may be an engine that just started."""
    activate = getattr(driver, "activate", None)
    if activate:
        activate(liveness.peer(sock))
    return ActivateResponse()


def _own_routes(driver: VolumeDriver) -> dict[str, Route]:
    """ownvol's own endpoints on the same root-only socket, for `ownvol volumes`; the daemon never calls them."""
    if not isinstance(driver, Volumes):
        return {}
    return {
        "/Ownvol.References": Route(lambda body, sock: _Own({"Volumes": driver.references()})),
        "/Ownvol.Release": Route(lambda body, sock: _Own({"Released": driver.release(volume_name(body.get("Name")))})),
        "/Ownvol.Rebind": Route(
            lambda body, sock: _Own({"Data": driver.rebind(volume_name(body.get("Name"))).describe()})),
    }


def _routes(driver: VolumeDriver) -> dict[str, Route]:
    """Each endpoint's path and what answers it: the body parsed once into its request type, then the driver."""
    mount_now = getattr(driver, "mount_now", None)
    return {
        "/Plugin.Activate": Route(lambda body, sock: _activate(driver, sock)),
        "/VolumeDriver.Capabilities": _quick(lambda body, sock: driver.capabilities()),
        "/VolumeDriver.Create": Route(_takes(CreateRequest, driver.create)),
        "/VolumeDriver.Remove": Route(_takes(RemoveRequest, driver.remove)),
        "/VolumeDriver.Mount": Route(_takes(MountRequest, driver.mount), mount_now and (
            lambda body, sock: mount_now(parse(MountRequest, body)) or LATER)),
        "/VolumeDriver.Unmount": _quick(_takes(UnmountRequest, driver.unmount)),
        "/VolumeDriver.Path": _quick(_takes(PathRequest, driver.path)),
        "/VolumeDriver.Get": _quick(_takes(GetRequest, driver.get)),
        "/VolumeDriver.List": Route(lambda body, sock: driver.list()),  # 10,000 volumes: tens of ms
        **_own_routes(driver),
    }


def _plugin_error(exc: PluginError, path: str) -> tuple[int, str]:
    return exc.status, str(exc)


def _http_refusal(exc: HTTPRefusal, path: str) -> tuple[int, str]:
    return exc.status, str(exc)


def _internal_error(exc: Exception, path: str) -> tuple[int, str]:
    log.exception("internal error on %s", _printable(path[:100]))
    return 500, f"internal error: {type(exc).__name__}: {exc}"


# Each exception class's handler, most specific first: (HTTP status, Err).
_ERRORS: tuple[tuple[type[Exception], Callable[..., tuple[int, str]]], ...] = (
    (PluginError, _plugin_error), (HTTPRefusal, _http_refusal), (Exception, _internal_error))
_STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}
_HEADERS = [("Content-Type", MEDIA_TYPE)]
_ASGI_HEADERS = [(b"content-type", MEDIA_TYPE.encode())]


@dataclass
class _Exchange:
    """One request as the log line tells it, and its reply."""

    path: str
    started: float
    logged: tuple[str, str] = ("-", "-")  # volume, mount_id
    status: int = 200
    data: bytes = b""
    outcome: str = "ok"

    def took(self, body: dict) -> None:
        """Note the body's volume and mount ID for the log line."""
        self.logged = tuple(body[key][:160] if isinstance(body.get(key), str) else "-"  # type: ignore[assignment]
                            for key in _LOGGED)

    def reply(self, reply: Any) -> None:
        self.data = json.dumps({**(reply.wire() if reply else {}), "Err": ""}).encode()

    def failed(self, exc: Exception) -> None:
        """The one place an exception becomes an Err reply, by its class's handler."""
        self.status, message = next(handle for kind, handle in _ERRORS if isinstance(exc, kind))(exc, self.path)
        if len(message) > MAX_ERR:
            message = message[:MAX_ERR - 3] + "..."
        self.data, self.outcome = json.dumps({"Err": message}).encode(), f"err: {message}"

    def log(self) -> None:
        log.info("action=%s volume=%s id=%s outcome=%s seconds=%.4f",
                 *(_printable(field) for field in (self.path.lstrip("/")[:100], *self.logged, self.outcome)),
                 time.monotonic() - self.started)


class DriverApp:
    """The driver's app: the path picks the endpoint, the body is parsed once, the reply is JSON. Called as a
    WSGI app, or through `asgi`."""

    def __init__(self, driver: VolumeDriver) -> None:
        self.driver = driver
        self.routes = _routes(driver)

    def _route(self, path: str, method: str) -> Route:
        route = self.routes.get(path)
        if route is None:
            raise HTTPRefusal(404, f"unknown endpoint {path[:100]}; this is a Docker volume plugin "
                                   "(POST /VolumeDriver.*)")
        if method != "POST":
            raise HTTPRefusal(405, f"{path} takes POST, not {method[:20]}")
        return route

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        exchange = _Exchange(environ.get("PATH_INFO", ""), time.monotonic())
        try:
            route = self._route(exchange.path, environ.get("REQUEST_METHOD", ""))
            body = _decode(_wsgi_body(environ))
            exchange.took(body)
            exchange.reply(route.answer(body, None))
        except Exception as exc:  # noqa: BLE001 - every exception becomes an Err reply
            exchange.failed(exc)
        start_response(_STATUS_LINES.get(exchange.status, f"{exchange.status} Error"),
                       [*_HEADERS, ("Content-Length", str(len(exchange.data)))])
        exchange.log()
        return [exchange.data]

    async def asgi(self, scope: dict, receive: Callable[[], Awaitable[dict]],
                   send: Callable[[dict], Awaitable[None]]) -> None:
        """The ASGI 3 app (asgi.readthedocs.io, HTTP connection scope): at_once on the event loop, the rest in
        the loop's default executor (a thread pool); the connection's socket from the scope's PEER_SOCKET."""
        if scope["type"] != "http":
            return
        exchange = _Exchange(scope["path"], time.monotonic())
        try:
            route = self._route(exchange.path, scope["method"])
            body = _decode(await _asgi_body(receive))
            exchange.took(body)
            sock = scope.get("extensions", {}).get(PEER_SOCKET)
            reply = route.at_once(body, sock) if route.at_once else LATER
            if reply is LATER:
                reply = await asyncio.get_running_loop().run_in_executor(None, route.answer, body, sock)
            exchange.reply(reply)
        except Exception as exc:  # noqa: BLE001 - every exception becomes an Err reply
            exchange.failed(exc)
        await send({"type": "http.response.start", "status": exchange.status,
                    "headers": [*_ASGI_HEADERS, (b"content-length", b"%d" % len(exchange.data))]})
        await send({"type": "http.response.body", "body": exchange.data})
        exchange.log()

    def test_client(self) -> Client:
        """A werkzeug test client on the app (tests: requests without a server; werkzeug comes with Flask)."""
        from werkzeug.test import Client
        from werkzeug.wrappers import Response

        return Client(self, Response)


def create_app(settings: Settings | None = None, volumes: VolumeDriver | None = None) -> DriverApp:
    """The driver's app: settings from the environment unless given; one store per process."""
    settings = settings or from_env()
    return DriverApp(volumes or Volumes(settings, Store(settings.db_path)))
