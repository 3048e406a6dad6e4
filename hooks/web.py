"""The hook's one listener: a small WSGI app with the status page (`/`, its live part `/board`), `/status`
(JSON) and `/metrics` (prometheus_client's WSGI app), served by werkzeug's threaded server in the hook.

The page is rendered on the server (readable with JavaScript off); hooks/static/page.js only fetches
`/board` every second and swaps it in, so a healed container turns green without a reload. Nothing is
loaded from anywhere but the hook.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

from flask import Flask, Response, jsonify, render_template
from prometheus_client import make_wsgi_app
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from ownvol.dockertime import ago

from .telemetry import Metrics

POLL_MS = 1000
# Only what the hook serves itself: no inline script, no other origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _clock(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S") if ts else ""


def _ago(ts: float | None) -> str:
    told = ago(ts)
    return f"{told} ago" if told else ""


def _size(n: float | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def tone(health: str) -> str:
    """The colour class of a health state: good (healthy), warn (latent, loading, not yet probed), bad."""
    if health == "healthy":
        return "good"
    return "warn" if health in ("latent", "loading", "unknown") else "bad"


def create_app(metrics: Metrics, status: Callable[[], dict], board: Callable[[], dict]) -> Flask:
    """The WSGI app: `/` and `/board` render board(), `/status` is status() as JSON, `/metrics` is the
    registry in Prometheus's text format."""
    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.jinja_env.filters.update(clock=_clock, ago=_ago, size=_size, tone=tone)

    @app.get("/")
    def page() -> str:
        return render_template("page.html", v=board(), poll_ms=POLL_MS)

    @app.get("/board")
    def live() -> str:
        return render_template("board.html", v=board())

    @app.get("/status")
    def status_json() -> Response:
        return jsonify(status())

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response

    metrics_app = make_wsgi_app(metrics.registry)
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/metrics": metrics_app})  # type: ignore[method-assign]
    return app


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:
        pass


def serve(address: str, app: Flask) -> BaseWSGIServer:
    """Serve app on host:port (host as given: the hook's default is 127.0.0.1) from a daemon thread, one
    thread per request. Stop with .shutdown() then .server_close()."""
    host, _, port = address.rpartition(":")
    server = make_server(host or "127.0.0.1", int(port), app, threaded=True, request_handler=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="status-http", daemon=True).start()
    return server
