"""The protocol: Docker's volume-plugin endpoints over HTTP. Parse each body once into its request type
(protocol.py), call the driver, reply.

A plain WSGI app (PEP 3333) under gunicorn: nine POST endpoints, a JSON body in, a JSON reply out, so no
framework's routing, request and context objects (they were half of a Mount's CPU: bench
mount_cpu_ms_per_pair). One error handler per exception class (PluginError, HTTPRefusal, any other) turns it
into an `{"Err": "..."}` reply; a traceback never leaves the process. One log line per request says what was
asked and how it ended.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING

from ownvol.driver import liveness
from ownvol.driver.errors import InvalidRequest, PluginError
from ownvol.driver.protocol import (
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
from ownvol.driver.settings import Settings, from_env
from ownvol.driver.store import Store
from ownvol.driver.volumes import Volumes

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


def _body(environ: dict) -> dict:
    """The request body as a JSON object ({} when empty); at most MAX_BODY bytes are ever read."""
    length = environ.get("CONTENT_LENGTH") or ""
    too_large = HTTPRefusal(413, f"request body larger than {MAX_BODY} bytes")
    if length:
        if not length.isdigit():
            raise InvalidRequest(f"Content-Length {length[:20]!r} is not a number of bytes")
        if int(length) > MAX_BODY:
            raise too_large
        raw = environ["wsgi.input"].read(int(length))
    else:  # chunked, or none at all: read one byte past the limit to know
        raw = environ["wsgi.input"].read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            raise too_large
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


Handler = Callable[[dict, dict], "Reply | _Own | None"]  # (body, WSGI environ) -> reply
_LOGGED = {"Name": "volume", "ID": "mount_id"}  # body keys each log line shows, as given


def _takes(kind: type[Request], method: Callable[[Request], Reply | None]) -> Handler:
    return lambda body, environ: method(parse(kind, body))


@dataclass(frozen=True)
class _Own:
    """The reply of one of ownvol's own endpoints (`ownvol volumes`), not Docker's protocol."""

    payload: dict

    def wire(self) -> dict[str, object]:
        return self.payload


def _activate(driver: VolumeDriver, environ: dict) -> Reply:
    """Plugin.Activate: the caller (SO_PEERCRED on gunicorn's socket) may be an engine that just started."""
    activate = getattr(driver, "activate", None)
    if activate:
        activate(liveness.peer(environ.get("gunicorn.socket")))
    return ActivateResponse()


def _own_routes(driver: VolumeDriver) -> dict[str, Handler]:
    """ownvol's own endpoints on the same root-only socket, for `ownvol volumes`; the daemon never calls them."""
    if not isinstance(driver, Volumes):
        return {}
    return {
        "/Ownvol.References": lambda body, environ: _Own({"Volumes": driver.references()}),
        "/Ownvol.Release": lambda body, environ: _Own({"Released": driver.release(volume_name(body.get("Name")))}),
        "/Ownvol.Rebind": lambda body, environ: _Own({"Data": driver.rebind(volume_name(body.get("Name"))).describe()}),
    }


def _routes(driver: VolumeDriver) -> dict[str, Handler]:
    """Each endpoint's path and what answers it: the body parsed once into its request type, then the driver."""
    return {
        "/Plugin.Activate": lambda body, environ: _activate(driver, environ),
        "/VolumeDriver.Capabilities": lambda body, environ: driver.capabilities(),
        "/VolumeDriver.Create": _takes(CreateRequest, driver.create),
        "/VolumeDriver.Remove": _takes(RemoveRequest, driver.remove),
        "/VolumeDriver.Mount": _takes(MountRequest, driver.mount),
        "/VolumeDriver.Unmount": _takes(UnmountRequest, driver.unmount),
        "/VolumeDriver.Path": _takes(PathRequest, driver.path),
        "/VolumeDriver.Get": _takes(GetRequest, driver.get),
        "/VolumeDriver.List": lambda body, environ: driver.list(),
        **_own_routes(driver),
    }


def _plugin_error(exc: PluginError, environ: dict) -> tuple[int, str]:
    return exc.status, str(exc)


def _http_refusal(exc: HTTPRefusal, environ: dict) -> tuple[int, str]:
    return exc.status, str(exc)


def _internal_error(exc: Exception, environ: dict) -> tuple[int, str]:
    log.exception("internal error on %s", _printable(environ.get("PATH_INFO", "")[:100]))
    return 500, f"internal error: {type(exc).__name__}: {exc}"


# Each exception class's handler, most specific first: (HTTP status, Err).
_ERRORS: tuple[tuple[type[Exception], Callable[..., tuple[int, str]]], ...] = (
    (PluginError, _plugin_error), (HTTPRefusal, _http_refusal), (Exception, _internal_error))
_STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}
_HEADERS = [("Content-Type", MEDIA_TYPE)]


class DriverApp:
    """The driver's WSGI app: PATH_INFO picks the endpoint, the body is parsed once, the reply is JSON."""

    def __init__(self, driver: VolumeDriver) -> None:
        self.driver = driver
        self.routes = _routes(driver)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.monotonic()
        path = environ.get("PATH_INFO", "")
        logged = {"volume": "-", "mount_id": "-"}
        try:
            handler = self.routes.get(path)
            if handler is None:
                raise HTTPRefusal(404, f"unknown endpoint {path[:100]}; this is a Docker volume plugin "
                                       "(POST /VolumeDriver.*)")
            if environ.get("REQUEST_METHOD") != "POST":
                raise HTTPRefusal(405, f"{path} takes POST, not {environ.get('REQUEST_METHOD', '')[:20]}")
            body = _body(environ)
            for key, attr in _LOGGED.items():
                if isinstance(body.get(key), str):
                    logged[attr] = body[key][:160]
            reply = handler(body, environ)
            status, payload, outcome = 200, {**(reply.wire() if reply else {}), "Err": ""}, "ok"
        except Exception as exc:  # noqa: BLE001 - every exception becomes an Err reply, by its class's handler
            status, message = next(handle for kind, handle in _ERRORS if isinstance(exc, kind))(exc, environ)
            if len(message) > MAX_ERR:
                message = message[:MAX_ERR - 3] + "..."
            payload, outcome = {"Err": message}, f"err: {message}"
        data = json.dumps(payload).encode()
        start_response(_STATUS_LINES.get(status, f"{status} Error"),
                       [*_HEADERS, ("Content-Length", str(len(data)))])
        log.info("action=%s volume=%s id=%s outcome=%s seconds=%.4f",
                 *(_printable(field) for field in (path.lstrip("/")[:100], logged["volume"], logged["mount_id"],
                                                   outcome)),
                 time.monotonic() - started)
        return [data]

    def test_client(self) -> Client:
        """A werkzeug test client on the app (tests: requests without a server; werkzeug comes with Flask)."""
        from werkzeug.test import Client
        from werkzeug.wrappers import Response

        return Client(self, Response)


def create_app(settings: Settings | None = None, volumes: VolumeDriver | None = None) -> DriverApp:
    """The driver's WSGI app: settings from the environment unless given; one store per process."""
    settings = settings or from_env()
    return DriverApp(volumes or Volumes(settings, Store(settings.db_path)))
