"""A unix-socket proxy in front of the engine's socket that can be made to fail: the engine's socket dropping
under a client, as when dockerd dies or its socket is recreated."""

from __future__ import annotations

import os
import re
import socket
import tempfile
import threading


class FailingProxy:
    """Forwards every connection to `upstream`. Once a request's first line matches `trigger` (a regex, e.g.
    POST .../containers/create), that connection is dropped without a reply and every later one is refused
    at once, until heal() (with once=True: only that connection is dropped; with every=True: each matching
    connection is dropped, counted in `dropped`, and no other is refused)."""

    def __init__(self, upstream: str, trigger: str, once: bool = False, every: bool = False) -> None:
        self.upstream = upstream
        self.once = once  # drop only the first matching connection; never refuse later ones
        self.every = every
        self.dropped = 0
        self.trigger = re.compile(trigger.encode())
        self.dir = tempfile.mkdtemp(prefix="ovproxy-")
        self.path = os.path.join(self.dir, "docker.sock")
        self.broken = threading.Event()
        self.tripped_on: bytes = b""
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(64)
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def host(self) -> str:
        return f"unix://{self.path}"

    def heal(self) -> None:
        self.broken.clear()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.broken.is_set():
                client.close()
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self.upstream)
        except OSError:
            client.close()
            return
        threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()
        self._pipe(client, upstream, True)

    def _pipe(self, src: socket.socket, dst: socket.socket, requests: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data or self.broken.is_set():
                    break
                if requests and (self.every or not self.tripped_on) and \
                        self.trigger.search(data.split(b"\r\n", 1)[0]):
                    self.tripped_on = self.tripped_on or data.split(b"\r\n", 1)[0]
                    self.dropped += 1
                    if not (self.once or self.every):
                        self.broken.set()
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def close(self) -> None:
        self._closed = True
        self._server.close()
        try:
            os.unlink(self.path)
            os.rmdir(self.dir)
        except OSError:
            pass
