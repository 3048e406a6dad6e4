"""The driver's view of its engine (plugin/engine.py) while that dockerd restores: its socket listens but answers
nothing until its restarts are done, and those restarts wait for the driver's Mounts (found by the chaos run: every
Mount after a dockerd SIGKILL took 10 s, the restore of six volumes 20 to 40 s)."""

from __future__ import annotations

import http.server
import json
import os
import socket
import socketserver
import threading
import time

import pytest

from ownvol.driver import engine as engine_mod
from ownvol.driver import liveness
from ownvol.driver.engine import EngineIdentity
from ownvol.driver.store import Store


@pytest.fixture
def identity(tmp_path, monkeypatch):
    sock = str(tmp_path / "docker.sock")
    monkeypatch.setattr(liveness, "engine_socket", lambda pid: sock)
    return EngineIdentity("auto", Store(str(tmp_path / "ownvol.db"))), sock


def this_process_as_dockerd() -> liveness.Engine:
    return liveness.Engine(os.getpid(), liveness.process_start(os.getpid()) or 0, "dockerd")


def test_an_engine_that_listens_but_does_not_answer_holds_no_request_for_long(identity, monkeypatch):
    ident, sock = identity
    ident.store.set_meta("userns", "")  # learned from the engine's run before: no remapping
    monkeypatch.setattr(engine_mod, "ASK_TIMEOUT", 0.3)
    restoring = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    restoring.bind(sock)
    restoring.listen(16)  # connections queue in the backlog, none is accepted: dockerd before its API serves
    try:
        started = time.monotonic()
        assert ident.activate(this_process_as_dockerd())
        for _ in range(4):  # the Mounts of the containers it restarts
            ident.userns_pending()
        took = time.monotonic() - started
    finally:
        restoring.close()
    assert took < engine_mod.ASK_TIMEOUT + 1.5, took
    assert ident.store.meta("userns_pending") == str(os.getpid())


class _Info(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps({"SecurityOptions": ["name=seccomp,profile=default"]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:
        return "unix"

    def log_message(self, *args) -> None:
        pass


def test_the_engine_is_asked_again_once_the_pause_is_over_and_its_answer_learned(identity, monkeypatch):
    ident, sock = identity
    ident.store.set_meta("userns_pending", str(os.getpid()))
    ident.store.set_meta("userns_ask_after", str(time.time() + 60))
    server = socketserver.UnixStreamServer(sock, _Info)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ident.userns_pending()
        assert ident.store.meta("userns_pending") == str(os.getpid())  # within the pause: not asked
        ident.store.set_meta("userns_ask_after", str(time.time() - 1))
        ident.userns_pending()
    finally:
        server.shutdown()
        server.server_close()
    assert ident.store.meta("userns_pending") == "" and ident.store.meta("userns") == ""


def test_with_no_mapping_learned_yet_every_request_asks_and_waits_as_long_as_before(identity, monkeypatch):
    ident, _ = identity
    asked: list[float] = []

    def unanswered(pid: int, timeout: float = 10.0) -> dict:
        asked.append(timeout)
        raise OSError("timed out")

    monkeypatch.setattr(liveness, "engine_info", unanswered)
    ident.activate(this_process_as_dockerd())
    ident.userns_pending()
    ident.userns_pending()
    assert asked == [engine_mod.FIRST_ASK_TIMEOUT] * 3 and ident.store.meta("userns") is None
