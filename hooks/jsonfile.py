"""Container logs read where dockerd writes them: the json-file driver's file, followed with inotify.

A log request to the engine (GET /containers/{id}/logs) is answered only once dockerd holds the container's
lock, and a container's start holds that lock until it is done (moby daemon/start.go containerStart; the
logs route finds the container's logger under it, daemon/logs.go): with 20 containers starting at once, a
line was read up to 0.8 s after dockerd had written it (bench: burst20_detect_p99_ms), and a follower had to
be asked for again after every restart. The json-file driver writes each line as it reads it from the
container (moby daemon/logger/jsonfilelog/jsonfilelog.go Log, one write(2) per entry) to
`<DockerRootDir>/containers/<id>/<id>-json.log` (moby container/container.go StartLogger,
GetRootResourcePath), one file for every start of the container, appended to. Where this process sees that
file, one inotify instance (inotify(7)) on the watcher's log loop wakes on each write and the new entries
are read at once; the engine is not asked anything, and one watch serves the container's whole life.

Each entry is one JSON object per line: {"log": text, "stream": "stdout"|"stderr", "time": RFC 3339 with
nanoseconds} (moby daemon/logger/jsonfilelog/jsonlog/jsonlogbytes.go); a line longer than 16 KiB is cut into
entries whose text does not end in a newline until the last (moby daemon/logger/copier.go, bufSize).
Rotation (--log-opt max-size) renames the file to `<id>-json.log.1` and creates a new one
(moby daemon/logger/loggerutils/logfile.go rotate): the rest of the old file is read through the
descriptor still open on it, then the new one from its start. When the file is deleted (the container removed:
moby daemon/delete.go) its rest is read and the descriptor closed, so the directory can go (the kernel
reports a directory's deletion only once no file in it is held open).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from inotify_simple import INotify, flags

DRIVER = "json-file"
MASK = (flags.MODIFY | flags.CREATE | flags.MOVED_TO | flags.DELETE | flags.DELETE_SELF | flags.ONLYDIR
        | flags.DONT_FOLLOW)
READ_LIMIT = 1 << 20  # bytes read from one file per wake: a chatty container cannot hold the loop
TAIL = 64 * 1024  # bytes of an existing file read when a container is picked up running (its recent lines)


def log_path(root: str, container_id: str) -> str:
    """Where the json-file driver writes the container's log under the engine's root (`docker info`
    DockerRootDir): moby container/container.go StartLogger."""
    return os.path.join(root, "containers", container_id, f"{container_id}-json.log")


def readable(root: str | None, attrs: dict) -> tuple[str | None, str]:
    """(the container's json-file log path, "") when this process can follow its file, else (None, why not).

    attrs: the engine's inspect of the container. The container's directory must be here and hold its
    config.v2.json (written by dockerd at create, moby container/container.go CheckpointTo): a directory of
    that name elsewhere is not taken for the engine's."""
    driver = ((attrs.get("HostConfig") or {}).get("LogConfig") or {}).get("Type") or ""
    if root is None:
        return None, "the engine's files are not this process's (a hook in a container, a remote engine)"
    if driver != DRIVER:
        return None, f"log driver {driver or 'unknown'}, not {DRIVER}"
    cid = attrs.get("Id") or ""
    path = log_path(root, cid)
    given = attrs.get("LogPath") or ""
    if given and given != path:
        return None, f"the engine logs to {given}, not {path}"
    if not os.path.isfile(os.path.join(os.path.dirname(path), "config.v2.json")):
        return None, f"{os.path.dirname(path)} is not readable here"
    return path, ""


@dataclass
class Entry:
    """One whole line of the log: dockerd's time (RFC 3339 with nanoseconds) and its text (no newline)."""

    time: str
    text: str


def entries(data: bytes, partial: list[Entry]) -> list[Entry]:
    """The whole lines in data (complete JSON lines of the file); partial holds the pieces of a line cut by the
    copier (texts without a newline) across calls and is updated. A line that is not a log entry is skipped."""
    out = []
    for raw in data.splitlines():
        try:
            entry = json.loads(raw)
            text, stamp = entry["log"], entry["time"]
        except (ValueError, KeyError, TypeError):
            continue
        if not isinstance(text, str) or not isinstance(stamp, str):
            continue
        if not text.endswith("\n"):
            partial.append(Entry(stamp, text))
            continue
        if partial:
            first = partial[0].time
            text = "".join(p.text for p in partial) + text
            partial.clear()
            stamp = first
        out.append(Entry(stamp, text[:-1]))
    return out


@dataclass
class _Followed:
    path: str
    on_line: Callable[[str], None]
    wd: int
    file: io.FileIO | None = None  # the open log file
    inode: int = 0
    tail: bytes = b""  # the end of the last read that is not yet a whole JSON line
    mid_line: bool = False  # opened in the middle of a line: what comes before the next newline is dropped
    partial: list[Entry] = field(default_factory=list)


class JsonFiles:
    """The followed json-file logs, keyed by container id; every method runs on the event loop given (the watcher's
    log loop, hooks/follow.py), which also reads the inotify descriptor. on_line is called with
    `<time> <text>` for each line, as the engine's logs endpoint gives it with timestamps. Raises OSError when
    the kernel refuses an inotify instance (fs.inotify.max_user_instances)."""

    def __init__(self) -> None:
        self._inotify = INotify()
        os.set_blocking(self._inotify.fileno(), False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._by_id: dict[str, _Followed] = {}
        self._by_wd: dict[int, str] = {}

    def _reader(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop.add_reader(self._inotify.fileno(), self._wake)

    async def add(self, container_id: str, path: str, on_line: Callable[[str], None], tail: int | None = None
                  ) -> None:
        """Follow path (the container's log, which may not exist yet) from its start, or, with tail, from its
        last tail bytes (the first line there, cut, is skipped; a file made later is read from its start); a
        container followed already is left as it is; the caller skips lines older than it wants by their time.
        Raises OSError when its directory cannot be watched or the file cannot be opened (ELOOP: a symlink, never
        followed; EMFILE: out of descriptors)."""
        self._reader()
        if container_id in self._by_id:
            return
        wd = self._inotify.add_watch(os.path.dirname(path), MASK)
        followed = self._by_id[container_id] = _Followed(path, on_line, wd)
        self._by_wd[wd] = container_id
        try:
            self._open(followed, tail)
        except OSError:
            await self.remove(container_id)
            raise
        self._read(followed)

    def following(self, container_id: str) -> bool:
        return container_id in self._by_id

    async def drain(self, container_id: str) -> None:
        """Read what the container's file holds that was not read yet (a `die` event may come before its
        last write's inotify event is read)."""
        followed = self._by_id.get(container_id)
        if followed is not None:
            self._reopen_if_rotated(followed)
            self._read(followed)

    async def remove(self, container_id: str) -> None:
        followed = self._by_id.pop(container_id, None)
        if followed is None:
            return
        self._by_wd.pop(followed.wd, None)
        self._close(followed)
        try:
            self._inotify.rm_watch(followed.wd)
        except OSError:
            pass  # gone with its directory (IN_IGNORED)

    async def close(self) -> None:
        for cid in list(self._by_id):
            await self.remove(cid)
        if self._loop is not None:
            self._loop.remove_reader(self._inotify.fileno())
        self._inotify.close()

    # --- the file ---------------------------------------------------------------------------------
    def _open(self, followed: _Followed, tail: int | None = None) -> None:
        """Open the file (none there yet: its IN_CREATE opens it); raises any other OSError."""
        try:
            fd = os.open(followed.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        file = io.FileIO(fd, "rb")
        st = os.fstat(fd)
        mid_line = False
        if tail is not None and st.st_size > tail:
            file.seek(st.st_size - tail)
            mid_line = True
        followed.file, followed.inode, followed.tail, followed.mid_line = file, st.st_ino, b"", mid_line
        followed.partial.clear()

    def _close(self, followed: _Followed) -> None:
        if followed.file is not None:
            followed.file.close()
            followed.file = None

    def _reopen_if_rotated(self, followed: _Followed) -> None:
        """The file at the path is another than the one open (rotated, or created since): finish the old one,
        open the new one from its start."""
        try:
            inode = os.stat(followed.path, follow_symlinks=False).st_ino
        except OSError:
            return
        if followed.file is not None and inode == followed.inode:
            return
        self._read(followed)
        self._close(followed)
        try:
            self._open(followed)
        except OSError:
            pass  # tried again at the file's next event; the watcher's probe falls back to the engine meanwhile

    def _read(self, followed: _Followed) -> None:
        file = followed.file
        if file is None:
            return
        try:
            if os.fstat(file.fileno()).st_size < file.tell():
                file.seek(0)  # truncated under us: what is there now is new
                followed.tail, followed.mid_line = b"", False
            chunk = file.read(READ_LIMIT)
        except OSError:
            return
        if not chunk:
            return
        data = followed.tail + chunk
        if followed.mid_line:
            start = data.find(b"\n") + 1
            data, followed.mid_line = (data[start:], False) if start else (b"", True)
        cut = data.rfind(b"\n") + 1
        followed.tail = data[cut:]
        for entry in entries(data[:cut], followed.partial):
            followed.on_line(f"{entry.time} {entry.text}")
        if len(chunk) == READ_LIMIT and self._loop is not None:
            self._loop.call_soon(self._read, followed)

    def _wake(self) -> None:
        try:
            events = self._inotify.read(timeout=0)
        except BlockingIOError:
            return
        touched: dict[str, bool] = {}  # container id -> its file was created or moved in
        for event in events:
            if event.mask & flags.Q_OVERFLOW:
                touched.update({cid: True for cid in self._by_id})
                continue
            cid = self._by_wd.get(event.wd)
            if cid is None:
                continue
            followed = self._by_id[cid]
            if event.mask & flags.IGNORED:
                self._read(followed)
                self._by_wd.pop(event.wd, None)
                self._by_id.pop(cid, None)
                self._close(followed)
            elif event.name != os.path.basename(followed.path):
                continue
            elif event.mask & flags.DELETE:
                self._read(followed)
                self._close(followed)
                touched.pop(cid, None)
            else:
                touched[cid] = touched.get(cid, False) or bool(event.mask & (flags.CREATE | flags.MOVED_TO))
        for cid, new_file in touched.items():
            if (current := self._by_id.get(cid)) is None:
                continue
            if new_file or current.file is None:
                self._reopen_if_rotated(current)
            self._read(current)
