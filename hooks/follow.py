"""Every followed container log on one thread: an asyncio loop holding one log stream per container.

A blocking docker-py stream needs a thread per container (53 threads at 50 containers); here an idle stream
is one open connection the loop waits on, and a line is handled as soon as the engine sends it. The streams
speak the engine's HTTP API themselves (asyncio streams, the standard library): aiohttp, with aiodocker,
cost 9 MB of imports and 45 KB a stream, a fifth of the hook's memory at 200 containers
(bench: watcher_rss_mb_200).
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import json
import os
import ssl
import threading
from collections.abc import AsyncIterator, Coroutine
from typing import Any
from urllib.parse import quote, urlsplit

DEFAULT_HOST = "unix:///var/run/docker.sock"  # docker-py's default too (docker/constants.py DEFAULT_UNIX_SOCKET)
HEAD_LIMIT = 64 * 1024  # bytes of status line and headers accepted
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


async def _head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The response's status code and headers (names lower-cased); EngineError when the connection ends first."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise EngineError("Connection closed by the engine before its response") from exc
    except asyncio.LimitOverrunError as exc:
        raise EngineError(f"response headers over {HEAD_LIMIT} bytes") from exc
    status, *fields = raw.decode("latin-1").split("\r\n")
    parts = status.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise EngineError(f"not an HTTP response: {status[:80]!r}")
    headers = {}
    for field in fields:
        name, sep, value = field.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> AsyncIterator[bytes]:
    """The response body as it arrives (chunked, sized by Content-Length, or until the connection ends).
    A chunked body the connection ends before its last chunk raises EngineError: the stream broke."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readline()
            if not size_line.endswith(b"\n"):
                raise EngineError("Connection closed by the engine in the middle of the stream")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return
            try:
                yield await reader.readexactly(size)
                await reader.readexactly(2)
            except asyncio.IncompleteReadError as exc:
                raise EngineError("Connection closed by the engine in the middle of a chunk") from exc
    elif "content-length" in headers:
        try:
            yield await reader.readexactly(int(headers["content-length"]))
        except asyncio.IncompleteReadError as exc:
            raise EngineError("Connection closed by the engine in the middle of the body") from exc
    else:
        while data := await reader.read(65536):
            yield data


async def _read_all(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    return b"".join([chunk async for chunk in _body(reader, headers)])


class LogStreams:
    """The loop thread (started at the first submit) and how it reaches the engine: host is DOCKER_HOST (else
    the engine's default unix socket), with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH for TLS over TCP, the
    variables docker-py's from_env reads."""

    def __init__(self, host: str | None = None) -> None:
        self.host = host or os.environ.get("DOCKER_HOST") or DEFAULT_HOST
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def submit(self, coro: Coroutine[Any, Any, None]) -> concurrent.futures.Future:
        """Run coro on the loop thread; its Future says whether it still runs."""
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="logs", daemon=True).start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _tls(self) -> ssl.SSLContext | None:
        if os.environ.get("DOCKER_TLS_VERIFY", "") in ("", "0"):
            return None
        certs = os.environ.get("DOCKER_CERT_PATH") or os.path.join(os.path.expanduser("~"), ".docker")
        context = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))
        context.load_cert_chain(os.path.join(certs, "cert.pem"), os.path.join(certs, "key.pem"))
        return context

    async def _request(self, path: str) -> tuple[int, dict[str, str], asyncio.StreamReader, asyncio.StreamWriter]:
        """GET path on a connection of its own (closed by the caller); OSError when the engine is not there.
        Paths carry no API version: the engine serves its own (a pinned old one is refused by engines whose
        minimum has moved past it), and these two endpoints answer alike in every version since 1.24."""
        if self.host.startswith("unix://"):
            reader, writer = await asyncio.open_unix_connection(self.host[len("unix://"):], limit=HEAD_LIMIT)
        else:
            tls = self._tls()
            where = urlsplit(self.host.replace("tcp://", "https://" if tls else "http://", 1))
            reader, writer = await asyncio.open_connection(where.hostname, where.port or (2376 if tls else 2375),
                                                           ssl=tls, limit=HEAD_LIMIT)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            status, headers = await asyncio.wait_for(_head(reader), ANSWER_TIMEOUT)
        except BaseException:
            writer.close()
            raise
        return status, headers, reader, writer

    async def _json(self, path: str) -> tuple[int, Any]:
        status, headers, reader, writer = await self._request(path)
        try:
            body = await asyncio.wait_for(_read_all(reader, headers), ANSWER_TIMEOUT)
        finally:
            writer.close()
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
        status, headers, reader, writer = await self._request(
            f"/containers/{quote(container_id)}/logs?follow=1&stdout=1&stderr=1&timestamps=1"
            f"&since={since_param(since_ns)}")
        try:
            if status != 200:
                body = await asyncio.wait_for(_read_all(reader, headers), ANSWER_TIMEOUT)
                raise EngineError(f"engine: {status} {body[:200].decode(errors='replace').strip()}")
            demux, decoder, buffer = Demux(tty), codecs.getincrementaldecoder("utf-8")("replace"), ""
            async for data in _body(reader, headers):
                lines, buffer = split_lines(buffer, decoder.decode(demux.feed(data)))
                for line in lines:
                    yield line
            buffer += decoder.decode(b"", final=True)
            if buffer:
                yield buffer
        finally:
            writer.close()
