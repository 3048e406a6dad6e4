"""Every followed container log on one thread: an asyncio loop holding one aiodocker stream per container.

A blocking docker-py stream needs a thread per container (53 threads at 50 containers); here an idle stream
is one open connection the loop waits on, and a line is handled as soon as the engine sends it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import aiodocker
import aiohttp

DEFAULT_HOST = "unix:///var/run/docker.sock"  # docker-py's default too (docker/constants.py DEFAULT_UNIX_SOCKET)


def since_param(ns: int) -> str:
    """ns since the epoch as the logs endpoint's `since`: seconds with up to nine decimals, exact (moby
    api/types/time/timestamp.go ParseTimestamps accepts `seconds.nanoseconds`)."""
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


def split_lines(buffer: str, chunk: str) -> tuple[list[str], str]:
    """(the whole lines of buffer + chunk, what is left after the last newline): a line may span frames."""
    *lines, rest = (buffer + chunk).split("\n")
    return lines, rest


class LogStreams:
    """The loop thread and its aiodocker client, both made at the first follow. host is DOCKER_HOST (else the
    engine's default unix socket), as docker-py's from_env reads it."""

    def __init__(self, host: str | None = None) -> None:
        self.host = host or os.environ.get("DOCKER_HOST") or DEFAULT_HOST
        self._loop: asyncio.AbstractEventLoop | None = None
        self._docker: aiodocker.Docker | None = None
        self._lock = threading.Lock()

    def submit(self, coro: Coroutine[Any, Any, None]) -> concurrent.futures.Future:
        """Run coro on the loop thread (started the first time); its Future says whether it still runs."""
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="logs", daemon=True).start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _client(self) -> aiodocker.Docker:
        """One client for every stream, made on the loop. Over a unix socket or plain TCP its connector has no
        limit on open connections (aiohttp's default is 100: the 101st stream would wait for one to end); over
        TLS, aiodocker's own connector (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH) and its limit of 100."""
        if self._docker is None:
            if self.host.startswith("unix://"):  # the URL's host is a placeholder, as aiodocker's own
                self._docker = aiodocker.Docker(url="unix://localhost",
                                                connector=aiohttp.UnixConnector(self.host[len("unix://"):], limit=0))
            elif self.host.startswith("tcp://") and os.environ.get("DOCKER_TLS_VERIFY", "") in ("", "0"):
                self._docker = aiodocker.Docker(url="http://" + self.host[len("tcp://"):],
                                                connector=aiohttp.TCPConnector(limit=0))
            else:
                self._docker = aiodocker.Docker(url=self.host)
        return self._docker

    async def lines(self, container_id: str, since_ns: int) -> AsyncIterator[str]:
        """The container's log lines (stdout and stderr, each `<RFC 3339 nano timestamp> <text>`) from since_ns
        (ns since the epoch) on, as the engine sends them; ends when the engine ends the stream (the container
        stopped, or the connection broke: aiodocker ends the iteration either way). Raises aiodocker.DockerError
        when the engine refuses or cannot be reached."""
        stream = self._client().containers.container(container_id).log(
            stdout=True, stderr=True, follow=True, timestamps=True, since=since_param(since_ns))
        buffer = ""
        async for chunk in stream:
            lines, buffer = split_lines(buffer, chunk)
            for line in lines:
                yield line
        if buffer:
            yield buffer

    async def running(self, container_id: str) -> bool:
        """Whether the engine says the container runs; raises aiodocker.DockerError when it cannot say."""
        info = await self._client().containers.container(container_id).show()
        return bool((info.get("State") or {}).get("Running"))
