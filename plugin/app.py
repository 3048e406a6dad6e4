"""The protocol: Docker's volume-plugin endpoints over HTTP. Parse each body once into its request type
(protocol.py), call the driver, reply.

One error handler per exception class (PluginError, HTTPException, any other) turns it into an
`{"Err": "..."}` reply; a traceback never leaves the process. One log line per request says what was asked
and how it ended.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

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

MEDIA_TYPE = "application/vnd.docker.plugins.v1.1+json"
MAX_BODY = 64 * 1024
MAX_DIGITS = 64  # a number in a body; Python refuses more than 4300 digits with a ValueError of its own
MAX_ERR = 400  # characters of an Err, whatever went wrong
log = logging.getLogger("ownvol.plugin")


def _reply(payload: dict, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, mimetype=MEDIA_TYPE)


def _number(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise InvalidRequest(f"request body refused: a number of more than {MAX_DIGITS} digits")
    return int(text)


def _body() -> dict:
    raw = request.get_data(cache=False)
    if len(raw) >= MAX_BODY and request.content_length is None:
        raise RequestEntityTooLarge()  # a chunked body: werkzeug stops reading at the limit, without a word
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


Handler = Callable[[dict], "Reply | _Own | None"]
_LOGGED = {"Name": "volume", "ID": "mount_id"}  # body keys each log line shows, as given


def _takes(kind: type[Request], method: Callable[[Request], Reply | None]) -> Handler:
    return lambda body: method(parse(kind, body))


@dataclass(frozen=True)
class _Own:
    """The reply of one of ownvol's own endpoints (`ownvol volumes`), not Docker's protocol."""

    payload: dict

    def wire(self) -> dict[str, object]:
        return self.payload


def _activate(driver: VolumeDriver) -> Reply:
    """Plugin.Activate: the caller (SO_PEERCRED on gunicorn's socket) may be an engine that just started."""
    activate = getattr(driver, "activate", None)
    if activate:
        activate(liveness.peer(request.environ.get("gunicorn.socket")))
    return ActivateResponse()


def _own_routes(driver: VolumeDriver) -> dict[str, Handler]:
    """ownvol's own endpoints on the same root-only socket, for `ownvol volumes`; the daemon never calls them."""
    if not isinstance(driver, Volumes):
        return {}
    return {
        "/Ownvol.References": lambda body: _Own({"Volumes": driver.references()}),
        "/Ownvol.Release": lambda body: _Own({"Released": driver.release(volume_name(body.get("Name")))}),
        "/Ownvol.Rebind": lambda body: _Own({"Data": driver.rebind(volume_name(body.get("Name"))).describe()}),
    }


def _routes(driver: VolumeDriver) -> dict[str, Handler]:
    """Each endpoint's path and what answers it: the body parsed once into its request type, then the driver."""
    return {
        "/Plugin.Activate": lambda body: _activate(driver),
        "/VolumeDriver.Capabilities": lambda body: driver.capabilities(),
        "/VolumeDriver.Create": _takes(CreateRequest, driver.create),
        "/VolumeDriver.Remove": _takes(RemoveRequest, driver.remove),
        "/VolumeDriver.Mount": _takes(MountRequest, driver.mount),
        "/VolumeDriver.Unmount": _takes(UnmountRequest, driver.unmount),
        "/VolumeDriver.Path": _takes(PathRequest, driver.path),
        "/VolumeDriver.Get": _takes(GetRequest, driver.get),
        "/VolumeDriver.List": lambda body: driver.list(),
        **_own_routes(driver),
    }


def _err(message: str, status: int) -> Response:
    """The one shape of a refusal: {"Err": message}, cut to MAX_ERR characters."""
    if len(message) > MAX_ERR:
        message = message[:MAX_ERR - 3] + "..."
    g.outcome = f"err: {message}"
    return _reply({"Err": message}, status)


def _plugin_error(exc: PluginError) -> Response:
    return _err(str(exc), exc.status)


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    message = {
        404: f"unknown endpoint {request.path[:100]}; this is a Docker volume plugin (POST /VolumeDriver.*)",
        405: f"{request.path} takes POST, not {request.method}",
        413: f"request body larger than {MAX_BODY} bytes",
    }.get(status, exc.description or exc.name)
    return _err(message, status)


def _internal_error(exc: Exception) -> Response:
    log.exception("internal error on %s", request.path)
    return _err(f"internal error: {type(exc).__name__}: {exc}", 500)


def create_app(settings: Settings | None = None, volumes: VolumeDriver | None = None) -> Flask:
    """The driver's WSGI app: settings from the environment unless given; one store per process."""
    settings = settings or from_env()
    driver: VolumeDriver = volumes or Volumes(settings, Store(settings.db_path))
    app = Flask("ownvol.plugin")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.extensions["ownvol.volumes"] = driver

    def endpoint(handler: Handler) -> Callable[[], Response]:
        def view() -> Response:
            body = _body()
            for key, attr in _LOGGED.items():
                if isinstance(body.get(key), str):
                    setattr(g, attr, body[key][:160])
            reply = handler(body)
            g.outcome = "ok"
            return _reply({**(reply.wire() if reply else {}), "Err": ""})
        return view

    for path, handler in _routes(driver).items():
        app.add_url_rule(path, endpoint=path, view_func=endpoint(handler), methods=["POST"])

    @app.before_request
    def started() -> None:
        g.started = time.monotonic()

    app.register_error_handler(PluginError, _plugin_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _internal_error)

    @app.after_request
    def log_request(response: Response) -> Response:
        seconds = time.monotonic() - g.get("started", time.monotonic())
        log.info("action=%s volume=%s id=%s outcome=%s seconds=%.4f", *(_printable(field) for field in (
                 request.path.lstrip("/")[:100], g.get("volume", "-"), g.get("mount_id", "-"), g.get("outcome", "-"))),
                 seconds)
        return response

    return app
