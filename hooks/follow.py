"""Every followed container log on one thread: an asyncio loop holding one log stream per container.

A blocking docker-py stream needs a thread per container (53 threads at 50 containers); here an idle stream
is one open connection the loop waits on, and a line is handled as soon as the engine sends it. The streams
speak the engine's HTTP API themselves (asyncio streams, h11 for HTTP/1.1's framing): aiohttp, with aiodocker,
cost 9 MB of imports and 45 KB a stream, a fifth of the hook's memory at 200 containers
(bench: watcher_rss_mb_200). They connect where the SDK's client does (hooks/connection.py).
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import json
import ssl
import threading
from collections.abc import AsyncIterator, Coroutine
from typing import Any
from urllib.parse import quote

import docker
import h11

from . import connection
from .connection import Endpoint, UnsupportedHost

HEAD_LIMIT = 64 * 1024  # bytes of status line and headers accepted
READ_SIZE = 65536  # bytes asked of the connection at a time
ANSWER_TIMEOUT = 60.0  # seconds for the engine's response headers (an inspect's whole answer), as the hook's client


class EngineError(Exception):
    """The engine answered with an error status (its message in the text) or broke the HTTP exchange."""


def since_param(ns: int) -> str:
    """ns since the epoch as the logs endpoint's `since`: seconds with nine decimals, exact (moby
    api/types/time/timestamp.go ParseTimestamps reads `seconds.nanoseconds`)."""
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


def split_lines(buffer: str, chunk: str) -> tuple[list[str], str]:
    """(the whole lines of buffer + chunk, what is left after the last newline): a line may span frames."""
    *lines, rest = (buffer + chunk).split("\n")
    return lines, rest


class Demux:
    """The payload of a non-TTY container's log stream, whatever the pieces it arrives in: frames of an 8-byte
    header (stream: 0 stdin, 1 stdout, 2 stderr; three zero bytes; the payload's size, big-endian uint32) and
    the payload (moby pkg/stdcopy/stdcopy.go). A TTY container's stream is its raw output (tty=True)."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self._buffer = bytearray()

    def feed(self, data: bytes) -> bytes:
        """The payload bytes complete with data; a frame cut short waits for the rest."""
        if self.tty:
            return data
        self._buffer += data
        out = bytearray()
        while len(self._buffer) >= 8:
            size = int.from_bytes(self._buffer[4:8], "big")
            if len(self._buffer) < 8 + size:
                break
            out += self._buffer[8:8 + size]
            del self._buffer[:8 + size]
        return bytes(out)


class _Exchange:
    """One GET on a connection of its own, framed by h11 (HTTP/1.1, RFC 9112: chunked, sized by Content-Length,
    or until the connection ends)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> None:
        self.writer = writer
        self._reader = reader
        self._http = h11.Connection(h11.CLIENT, max_incomplete_event_size=HEAD_LIMIT)
        request = h11.Request(method="GET", target=path, headers=[("Host", "docker"), ("Connection", "close")])
        writer.write(self._http.send(request) + (self._http.send(h11.EndOfMessage()) or b""))

    async def _event(self) -> object:
        """The next HTTP event of the response (h11.Response, Data, EndOfMessage, ConnectionClosed...); EngineError
        when the engine breaks the exchange (a malformed response, the connection ended before its end)."""
        while True:
            try:
                event = self._http.next_event()
            except h11.RemoteProtocolError as exc:
                raise EngineError(f"broken HTTP exchange with the engine: {exc}") from exc
            if event is not h11.NEED_DATA:
                return event
            data = await self._reader.read(READ_SIZE)
            if not data and self._http.their_state is h11.SEND_RESPONSE:
                raise EngineError("Connection closed by the engine before its response")
            self._http.receive_data(data)

    async def head(self) -> tuple[int, dict[str, str]]:
        """The response's status code and headers (names lower-cased); EngineError when the connection ends first."""
        while True:
            event = await self._event()
            if isinstance(event, h11.Response):
                return event.status_code, {name.decode("latin-1"): value.decode("latin-1")
                                           for name, value in event.headers}

    async def body(self) -> AsyncIterator[bytes]:
        """The response body as it arrives. A body the connection ends before its end raises EngineError: the
        stream broke."""
        while True:
            event = await self._event()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return

    async def read_all(self) -> bytes:
        return b"".join([chunk async for chunk in self.body()])


class LogStreams:
    """The loop thread (started at the first submit) and how it reaches the engine: where the docker SDK's client
    does, from DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH read by the SDK's rules (hooks/connection.py),
    unless given an endpoint; a unix socket or TCP, with TLS or without."""

    def __init__(self, where: Endpoint | None = None) -> None:
        self._where = where
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def submit(self, coro: Coroutine[Any, Any, None]) -> concurrent.futures.Future:
        """Run coro on the loop thread; its Future says whether it still runs."""
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="logs", daemon=True).start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def endpoint(self) -> Endpoint:
        """Where the streams connect, read from the environment at the first call (one TLS context for every
        stream); raises EngineError when the settings name no engine the streams can reach (UnsupportedHost,
        the SDK's DockerException) or its certificates cannot be loaded."""
        if self._where is None:
            try:
                self._where = connection.endpoint()
            except (UnsupportedHost, docker.errors.DockerException, ssl.SSLError, OSError) as exc:
                raise EngineError(f"engine settings: {exc}") from exc
        return self._where

    async def _request(self, path: str) -> tuple[int, dict[str, str], _Exchange]:
        """GET path on a connection of its own (its writer closed by the caller); OSError when the engine is not
        there. Paths carry no API version: the engine serves its own (a pinned old one is refused by engines whose
        minimum has moved past it), and these two endpoints answer alike in every version since 1.24."""
        where = self.endpoint()
        if where.unix_path is not None:
            reader, writer = await asyncio.open_unix_connection(where.unix_path, limit=HEAD_LIMIT)
        else:
            reader, writer = await asyncio.open_connection(where.host, where.port, ssl=where.tls, limit=HEAD_LIMIT)
        try:
            exchange = _Exchange(reader, writer, path)
            await writer.drain()
            status, headers = await asyncio.wait_for(exchange.head(), ANSWER_TIMEOUT)
        except BaseException:
            writer.close()
            raise
        return status, headers, exchange

    async def _json(self, path: str) -> tuple[int, Any]:
        status, headers, exchange = await self._request(path)
        try:
            body = await asyncio.wait_for(exchange.read_all(), ANSWER_TIMEOUT)
        finally:
            exchange.writer.close()
        return status, json.loads(body) if body and "json" in headers.get("content-type", "") else body

    async def inspect(self, container_id: str) -> dict | None:
        """The engine's inspect of the container, None when it has none by that id; raises EngineError, OSError."""
        status, body = await self._json(f"/containers/{quote(container_id)}/json")
        if status == 404:
            return None
        if status != 200:
            raise EngineError(f"engine: {status} {body.get('message') if isinstance(body, dict) else body!r}")
        return body

    async def running(self, container_id: str) -> bool:
        """Whether the engine says the container runs; raises EngineError or OSError when it cannot say."""
        info = await self.inspect(container_id)
        return bool(info and (info.get("State") or {}).get("Running"))

    async def lines(self, container_id: str, since_ns: int, tty: bool = False) -> AsyncIterator[str]:
        """The container's log lines (stdout and stderr, each `<RFC 3339 nano timestamp> <text>`) from since_ns
        (ns since the epoch) on, as the engine sends them (GET /containers/{id}/logs with follow; moby
        api/server/router/container/container_routes.go getContainersLogs); tty: the container has one
        (Config.Tty: its output comes raw, not in frames). Ends when the engine ends the stream (the container
        stopped). Raises EngineError when the engine refuses or the stream breaks, OSError when the engine
        cannot be reached."""
        status, _, exchange = await self._request(
            f"/containers/{quote(container_id)}/logs?follow=1&stdout=1&stderr=1&timestamps=1"
            f"&since={since_param(since_ns)}")
        try:
            if status != 200:
                body = await asyncio.wait_for(exchange.read_all(), ANSWER_TIMEOUT)
                raise EngineError(f"engine: {status} {body[:200].decode(errors='replace').strip()}")
            demux, decoder, buffer = Demux(tty), codecs.getincrementaldecoder("utf-8")("replace"), ""
            async for data in exchange.body():
                lines, buffer = split_lines(buffer, decoder.decode(demux.feed(data)))
                for line in lines:
                    yield line
            buffer += decoder.decode(b"", final=True)
            if buffer:
                yield buffer
        finally:
            exchange.writer.close()
