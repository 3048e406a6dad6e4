"""A unix-socket proxy in front of the engine's socket that can be made to fail: the engine's socket dropping
under a client, as when dockerd dies or its socket is recreated."""

from __future__ import annotations

import json
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
        upstream = _upstream_for(client, self.upstream)
        if upstream is None:
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


LEGACY_EVENT_FIELDS = ("status", "id", "from")  # dropped from GET /events at API 1.52 (Engine API version history)


class EventsAsOf152:
    """Forwards every connection to `upstream` as it is, except the body of each GET .../events response, whose
    JSON messages lose `status`, `id` and `from`, as engines answering API 1.52 and later (Docker 29) send them.

    HTTP/1.1 without pipelining: a client sends its next request only after the last response, so when an events
    request is forwarded the response side is at a response boundary and reads that response's head and chunked
    body (one JSON message a line) from there. A request that upgrades the connection (attach, exec start) turns it
    into a raw pipe. `rewritten` counts the messages that went through with the fields removed, `events` keeps them."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.rewritten = 0
        self.events: list[dict] = []
        self.dir = tempfile.mkdtemp(prefix="ovproxy-")
        self.path = os.path.join(self.dir, "docker.sock")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def host(self) -> str:
        return f"unix://{self.path}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = _upstream_for(client, self.upstream)
            if upstream is None:
                continue
            events_next = threading.Event()
            threading.Thread(target=self._requests, args=(client, upstream, events_next), daemon=True).start()
            threading.Thread(target=self._responses, args=(upstream, client, events_next), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, events_next: threading.Event) -> None:
        reader = client.makefile("rb")
        try:
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                first = head.split(b"\r\n", 1)[0]
                lower = head.lower()
                if re.match(rb"GET \S*/events[?\s]", first):
                    events_next.set()
                upstream.sendall(head)
                length = re.search(rb"\r\ncontent-length:\s*(\d+)", lower)
                if length:
                    upstream.sendall(reader.read(int(length.group(1))))
                if b"\r\nupgrade:" in lower or b"transfer-encoding: chunked" in lower:
                    _pipe_raw(reader, upstream)
                    return
        except OSError:
            pass
        finally:
            _close(client, upstream)

    def _responses(self, upstream: socket.socket, client: socket.socket, events_next: threading.Event) -> None:
        reader = upstream.makefile("rb")
        try:
            while reader.peek(1):  # a response begins, or more of one goes on
                if not events_next.is_set():
                    client.sendall(reader.read1(65536))
                    continue
                self._events_response(reader, client)
                events_next.clear()
        except (OSError, ValueError):
            pass
        finally:
            _close(client, upstream)

    def _events_response(self, reader, client: socket.socket) -> None:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = reader.readline()
            if not line:
                raise OSError("the engine closed the events response")
            head += line
        client.sendall(head)
        if b"transfer-encoding: chunked" not in head.lower():
            raise ValueError("an events response that is not chunked")
        pending = b""
        while True:
            size = int(reader.readline().split(b";")[0].strip(), 16)
            if size == 0:
                reader.readline()
                client.sendall(b"0\r\n\r\n")
                return
            pending += reader.read(size)
            reader.readline()
            *lines, pending = pending.split(b"\n")
            out = b"".join(self._rewrite(line) + b"\n" for line in lines if line.strip())
            if out:
                client.sendall(b"%x\r\n%s\r\n" % (len(out), out))

    def _rewrite(self, line: bytes) -> bytes:
        message = json.loads(line)
        for field in LEGACY_EVENT_FIELDS:
            message.pop(field, None)
        self.events.append(message)
        self.rewritten += 1
        return json.dumps(message).encode()

    def close(self) -> None:
        self._server.close()
        try:
            os.unlink(self.path)
            os.rmdir(self.dir)
        except OSError:
            pass


def _upstream_for(client: socket.socket, path: str) -> socket.socket | None:
    """A connection to the engine's socket for one client; None (the client closed) when the engine refuses."""
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(path)
    except OSError:
        upstream.close()
        client.close()
        return None
    return upstream


def _pipe_raw(reader, dst: socket.socket) -> None:
    while data := reader.read1(65536):
        dst.sendall(data)


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
