"""The protocol: Docker's volume-plugin endpoints over HTTP. Parse, validate, call the service, reply.

One error handler turns every exception into an `{"Err": "..."}` reply; a traceback never
leaves the process. One log line per request says what was asked and how it ended.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ownvol.driver import liveness
from ownvol.driver.errors import InvalidRequest, PluginError
from ownvol.driver.options import validate_name
from ownvol.driver.settings import Settings, from_env
from ownvol.driver.store import Store
from ownvol.driver.volumes import Volumes, VolumeView

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


def _field(body: dict, key: str, required: bool = True) -> str:
    value = body.get(key)
    if value is None and not required:
        return ""
    if value is None:
        raise InvalidRequest(f"{key} is required")
    if not isinstance(value, str):
        raise InvalidRequest(f"{key} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidRequest(f"{key} must not be empty")
    if key == "ID" and (len(value) > 256 or not value.isprintable()):
        raise InvalidRequest("ID must be printable and at most 256 characters")
    return value


def _named(body: dict) -> str:
    name = _field(body, "Name")
    g.volume = name[:160]
    try:
        return validate_name(name)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def _mount_id(body: dict) -> str:
    mount_id = _field(body, "ID")
    g.mount_id = mount_id
    return mount_id


def _printable(text: str) -> str:
    """text for one log line: escapes instead of line breaks and other controls (no forged lines)."""
    return text if text.isprintable() else text.encode("unicode_escape", "backslashreplace").decode("ascii")


def _volume(view: VolumeView) -> dict:
    return {"Name": view.name, "Mountpoint": view.mountpoint, "CreatedAt": view.created_at, "Status": view.status}


def _routes(volumes: Volumes) -> dict[str, Callable[[dict], dict]]:
    def create(body: dict) -> dict:
        volumes.create(_named(body), body.get("Opts"))
        return {}

    def remove(body: dict) -> dict:
        volumes.remove(_named(body))
        return {}

    def mount(body: dict) -> dict:
        name = _named(body)
        return {"Mountpoint": volumes.mount(name, _mount_id(body))}

    def unmount(body: dict) -> dict:
        name = _named(body)
        volumes.unmount(name, _mount_id(body))
        return {}

    def path(body: dict) -> dict:
        return {"Mountpoint": volumes.path(_named(body))}

    def get(body: dict) -> dict:
        return {"Volume": _volume(volumes.get(_named(body)))}

    def list_(body: dict) -> dict:
        return {"Volumes": [{"Name": v.name, "Mountpoint": v.mountpoint} for v in volumes.list()]}

    def activate(body: dict) -> dict:
        volumes.activate(liveness.peer(request.environ.get("gunicorn.socket")))
        return {"Implements": ["VolumeDriver"]}

    def release(body: dict) -> dict:
        return {"Released": volumes.release(_named(body))}

    def rebind(body: dict) -> dict:
        return {"Data": volumes.rebind(_named(body)).describe()}

    return {
        "/Plugin.Activate": activate,
        # ownvol's own, for `ownvol volumes` (same root-only socket; the daemon never calls them)
        "/Ownvol.References": lambda body: {"Volumes": volumes.references()},
        "/Ownvol.Release": release,
        "/Ownvol.Rebind": rebind,
        "/VolumeDriver.Capabilities": lambda body: {"Capabilities": {"Scope": "local"}},
        "/VolumeDriver.Create": create,
        "/VolumeDriver.Remove": remove,
        "/VolumeDriver.Mount": mount,
        "/VolumeDriver.Unmount": unmount,
        "/VolumeDriver.Path": path,
        "/VolumeDriver.Get": get,
        "/VolumeDriver.List": list_,
    }


def create_app(settings: Settings | None = None, volumes: Volumes | None = None) -> Flask:
    """The driver's WSGI app: settings from the environment unless given; one store per process."""
    settings = settings or from_env()
    volumes = volumes or Volumes(settings, Store(settings.db_path))
    app = Flask("ownvol.plugin")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.extensions["ownvol.volumes"] = volumes

    def endpoint(handler: Callable[[dict], dict]) -> Callable[[], Response]:
        def view() -> Response:
            reply = handler(_body())
            g.outcome = "ok"
            return _reply({**reply, "Err": ""})
        return view

    for path, handler in _routes(volumes).items():
        app.add_url_rule(path, endpoint=path, view_func=endpoint(handler), methods=["POST"])

    @app.before_request
    def started() -> None:
        g.started = time.monotonic()

    @app.errorhandler(Exception)
    def err(exc: Exception) -> Response:
        if isinstance(exc, PluginError):
            status, message = exc.status, str(exc)
        elif isinstance(exc, HTTPException):
            status = exc.code or 500
            message = {
                404: f"unknown endpoint {request.path[:100]}; this is a Docker volume plugin (POST /VolumeDriver.*)",
                405: f"{request.path} takes POST, not {request.method}",
                413: f"request body larger than {MAX_BODY} bytes",
            }.get(status, exc.description or exc.name)
        else:
            log.exception("internal error on %s", request.path)
            status, message = 500, f"internal error: {type(exc).__name__}: {exc}"
        if len(message) > MAX_ERR:
            message = message[:MAX_ERR - 3] + "..."
        g.outcome = f"err: {message}"
        return _reply({"Err": message}, status)

    @app.after_request
    def log_request(response: Response) -> Response:
        seconds = time.monotonic() - g.get("started", time.monotonic())
        log.info("action=%s volume=%s id=%s outcome=%s seconds=%.4f", *(_printable(field) for field in (
                 request.path.lstrip("/")[:100], g.get("volume", "-"), g.get("mount_id", "-"), g.get("outcome", "-"))),
                 seconds)
        return response

    return app
