"""The protocol: Docker's volume-plugin endpoints (docs.docker.com/engine/extend/plugins_volume/) as a Flask app.

`create_app` is the app factory. One view per endpoint parses the body once into its request type (protocol.py)
and calls the driver; one error handler per exception class (PluginError, werkzeug's HTTPException, any other)
turns what was raised into an `{"Err": "..."}` reply, so a traceback never leaves the process. One log line per
request says what was asked and how it ended. serve.py serves the app with gunicorn's workers; the
tests call it through Flask's test client.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

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
    UnmountRequest,
    VolumeDriver,
    parse,
    volume_name,
)
from .settings import Settings, from_env
from .store import Store
from .volumes import Volumes

MEDIA_TYPE = "application/vnd.docker.plugins.v1.1+json"
MAX_BODY = 64 * 1024
MAX_DIGITS = 64  # a number in a body; Python refuses more than 4300 digits with a ValueError of its own
MAX_ERR = 400  # characters of an Err, whatever went wrong
PEER_SOCKET = "gunicorn.socket"  # the WSGI environ's key for the connection's socket (gunicorn/http/wsgi.py)
log = logging.getLogger("ownvol.plugin")
_LOGGED = {"Name": "volume", "ID": "mount_id"}  # body keys each log line shows, as given


def _number(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise InvalidRequest(f"request body refused: a number of more than {MAX_DIGITS} digits")
    return int(text)


def _raw_body(environ: dict) -> bytes:
    """The request's body; at most MAX_BODY bytes are ever read (RequestEntityTooLarge past them)."""
    length = environ.get("CONTENT_LENGTH") or ""
    if length:
        if not length.isdigit():
            raise InvalidRequest(f"Content-Length {length[:20]!r} is not a number of bytes")
        if int(length) > MAX_BODY:
            raise RequestEntityTooLarge()
        return environ["wsgi.input"].read(int(length))
    raw = environ["wsgi.input"].read(MAX_BODY + 1)  # chunked, or none at all: one byte past the limit tells
    if len(raw) > MAX_BODY:
        raise RequestEntityTooLarge()
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


def _body() -> dict:
    """This request's body as a JSON object; its Name and ID are noted for the log line."""
    body = _decode(_raw_body(request.environ))
    for key, attr in _LOGGED.items():
        if isinstance(body.get(key), str):
            setattr(g, attr, body[key][:160])
    return body


def _printable(text: str) -> str:
    """text for one log line: escapes instead of line breaks and other controls (no forged lines)."""
    return text if text.isprintable() else text.encode("unicode_escape", "backslashreplace").decode("ascii")


def _json(payload: dict, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, content_type=MEDIA_TYPE)


def _reply(reply: Reply | None) -> Response:
    g.outcome = "ok"
    return _json({**(reply.wire() if reply else {}), "Err": ""})


def _own(payload: dict) -> Response:
    """The reply of one of ownvol's own endpoints (`ownvol volumes`), not Docker's protocol."""
    g.outcome = "ok"
    return _json({**payload, "Err": ""})


def _err(message: str, status: int) -> Response:
    """The one shape of a refusal: {"Err": message}, cut to MAX_ERR characters."""
    if len(message) > MAX_ERR:
        message = message[:MAX_ERR - 3] + "..."
    g.outcome = f"err: {message}"
    return _json({"Err": message}, status)


def _plugin_error(exc: PluginError) -> Response:
    return _err(str(exc), exc.status)


def _http_error(exc: HTTPException) -> Response:
    """HTTP's own refusals: werkzeug's routing (404, 405) and the body's size (413)."""
    status = exc.code or 500
    message = {
        404: f"unknown endpoint {request.path[:100]}; this is a Docker volume plugin (POST /VolumeDriver.*)",
        405: f"{request.path} takes POST, not {request.method[:20]}",
        413: f"request body larger than {MAX_BODY} bytes",
    }.get(status, exc.description or exc.name)
    return _err(message, status)


def _internal_error(exc: Exception) -> Response:
    log.exception("internal error on %s", _printable(request.path[:100]))
    return _err(f"internal error: {type(exc).__name__}: {exc}", 500)


def _views(driver: VolumeDriver) -> dict[str, Callable[[], Response]]:
    """Each endpoint's path and its view: the body parsed once into its request type, then the driver."""

    def activate() -> Response:
        """The caller (SO_PEERCRED on the connection) may be an engine that just started."""
        _body()
        if hook := getattr(driver, "activate", None):
            hook(liveness.peer(request.environ.get(PEER_SOCKET)))
        return _reply(ActivateResponse())

    def capabilities() -> Response:
        _body()
        return _reply(driver.capabilities())

    def create() -> Response:
        driver.create(parse(CreateRequest, _body()))
        return _reply(None)

    def remove() -> Response:
        driver.remove(parse(RemoveRequest, _body()))
        return _reply(None)

    def mount() -> Response:
        """A Mount that walks a large tree does it here, in the worker answering this request; the other workers
        answer the other requests meanwhile."""
        return _reply(driver.mount(parse(MountRequest, _body())))

    def unmount() -> Response:
        driver.unmount(parse(UnmountRequest, _body()))
        return _reply(None)

    def path() -> Response:
        return _reply(driver.path(parse(PathRequest, _body())))

    def get() -> Response:
        return _reply(driver.get(parse(GetRequest, _body())))

    def list_() -> Response:
        _body()
        return _reply(driver.list())

    return {
        "/Plugin.Activate": activate,
        "/VolumeDriver.Capabilities": capabilities,
        "/VolumeDriver.Create": create,
        "/VolumeDriver.Remove": remove,
        "/VolumeDriver.Mount": mount,
        "/VolumeDriver.Unmount": unmount,
        "/VolumeDriver.Path": path,
        "/VolumeDriver.Get": get,
        "/VolumeDriver.List": list_,
    }


def _own_views(volumes: Volumes) -> dict[str, Callable[[], Response]]:
    """ownvol's own endpoints on the same root-only socket, for `ownvol volumes`; the daemon never calls them."""

    def references() -> Response:
        _body()
        return _own({"Volumes": volumes.references()})

    def release() -> Response:
        return _own({"Released": volumes.release(volume_name(_body().get("Name")))})

    def rebind() -> Response:
        return _own({"Data": volumes.rebind(volume_name(_body().get("Name"))).describe()})

    return {"/Ownvol.References": references, "/Ownvol.Release": release, "/Ownvol.Rebind": rebind}


def _started() -> None:
    g.started = time.monotonic()


def _log_request(response: Response) -> Response:
    seconds = time.monotonic() - g.get("started", time.monotonic())
    log.info("action=%s volume=%s id=%s outcome=%s seconds=%.4f", *(_printable(field) for field in (
        request.path.lstrip("/")[:100], g.get("volume", "-"), g.get("mount_id", "-"), g.get("outcome", "-"))),
        seconds)
    return response


def _checkpoint_after_reply(store: Store) -> Callable[[Response], Response]:
    """An after_request that leaves the store's checkpoint (Store.checkpoint_if_due) until the reply is sent: the
    WSGI server closes a response once its body is written (PEP 3333, close()), and the client has its answer."""
    def after(response: Response) -> Response:
        response.call_on_close(store.checkpoint_if_due)
        return response
    return after


def create_app(settings: Settings | None = None, volumes: VolumeDriver | None = None) -> Flask:
    """The driver's Flask app: settings from the environment unless given; one store per process (a worker)."""
    settings = settings or from_env()
    store = None
    if volumes is None:
        store = Store(settings.db_path, deferred_checkpoints=True)
        volumes = Volumes(settings, store)
    driver: VolumeDriver = volumes
    app = Flask("ownvol.driver")
    app.extensions["ownvol.volumes"] = driver
    views = _views(driver) | (_own_views(driver) if isinstance(driver, Volumes) else {})
    for path, view in views.items():
        # POST only: no automatic OPTIONS (a 405 like any other method)
        app.add_url_rule(path, endpoint=path, view_func=view, methods=["POST"], provide_automatic_options=False)
    app.before_request(_started)
    app.after_request(_log_request)
    if store is not None:
        app.after_request(_checkpoint_after_reply(store))
    app.register_error_handler(PluginError, _plugin_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _internal_error)
    return app
