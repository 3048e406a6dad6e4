"""hooks/jsonfile.py on a real inotify in a tmp dir laid out as dockerd lays out a container's json-file log: lines
are read as they are written, from the file's start or its end, across a split JSON line, a line the copier cut,
a rotation, a truncation and the container's removal; and which containers are read from their file at all."""

from __future__ import annotations

import asyncio
import errno
import io
import json
import os
import shutil
import time
from collections.abc import Awaitable, Callable

import pytest

from ownvol.dockertime import timestamp_ns
from ownvol.hook.jsonfile import Entry, JsonFiles, entries, log_path, readable
from ownvol.hook.model import Health
from ownvol.hook.telemetry import Telemetry
from ownvol.hook.watcher import Watched, Watcher
from tests.support.fakes import IdleRecovery

CID = "c" * 64


def entry(text: str, stamp: str, stream: str = "stderr") -> bytes:
    return (json.dumps({"log": text, "stream": stream, "time": stamp}) + "\n").encode()


def stamp(i: int) -> str:
    return f"2026-11-30T08:00:{i:02d}.123456789Z"


@pytest.fixture
def root(tmp_path) -> str:
    d = tmp_path / "containers" / CID
    d.mkdir(parents=True)
    (d / "config.v2.json").write_text("{}")
    return str(tmp_path)


def append(path: str, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


Steps = Callable[[Callable[[int], Awaitable[None]]], Awaitable[None]]


def follow(path: str, tail: int | None, steps: Steps) -> tuple[list[str], JsonFiles]:
    """Follow path in a fresh loop, run steps(until) (until(n) waits for n lines in all), return the lines."""
    lines: list[str] = []
    files = JsonFiles()

    async def main() -> None:
        async def until(n: int) -> None:
            for _ in range(400):
                if len(lines) >= n:
                    return
                await asyncio.sleep(0.01)
            raise AssertionError(f"{n} lines expected, read {lines}")

        await files.add(CID, path, lines.append, tail)
        try:
            await steps(until)
        finally:
            await files.close()

    asyncio.run(main())
    return lines, files


def test_entries_join_a_cut_line_under_its_first_time_and_skip_what_is_not_an_entry() -> None:
    partial: list[Entry] = []
    data = entry("a" * 10, stamp(1)) + b"not json\n" + entry("b\n", stamp(2)) + b'{"log": 3}\n'
    first = entries(data, partial)
    assert [(e.time, e.text) for e in first] == [(stamp(1), "a" * 10 + "b")]
    assert entries(entry("c", stamp(3)), partial) == [] and len(partial) == 1
    assert [(e.time, e.text) for e in entries(entry("d\n", stamp(4)), partial)] == [(stamp(3), "cd")]
    assert partial == []


def test_a_file_made_after_the_watch_is_read_from_its_start_as_it_is_written(root) -> None:
    path = log_path(root, CID)
    assert not os.path.exists(path)

    async def steps(until) -> None:
        append(path, entry("first\n", stamp(1)))
        await until(1)
        data = entry("# Can't open or create append-only dir appendonlydir: Permission denied\n", stamp(2))
        append(path, data[:20])  # dockerd's write is whole, but a reader may find half of it
        await asyncio.sleep(0.05)
        append(path, data[20:])
        await until(2)

    lines, _ = follow(path, None, steps=steps)
    assert lines == [f"{stamp(1)} first",
                     f"{stamp(2)} # Can't open or create append-only dir appendonlydir: Permission denied"]


def test_a_tail_reads_the_files_last_bytes_from_the_first_whole_line_on(root) -> None:
    path = log_path(root, CID)
    old = b"".join(entry(f"old line {i}\n", stamp(1)) for i in range(100))
    append(path, old + entry("recent\n", stamp(2)))
    tail = len(entry("recent\n", stamp(2))) + 30  # 30 bytes of the line before: cut, skipped

    async def steps(until) -> None:
        await until(1)
        append(path, entry("new\n", stamp(3)))
        await until(2)

    lines, _ = follow(path, tail, steps=steps)
    assert lines == [f"{stamp(2)} recent", f"{stamp(3)} new"]


def test_a_tail_longer_than_the_file_reads_it_all(root) -> None:
    path = log_path(root, CID)
    append(path, entry("one\n", stamp(1)))

    async def steps(until) -> None:
        await until(1)

    lines, _ = follow(path, 1 << 16, steps=steps)
    assert lines == [f"{stamp(1)} one"]


def test_a_rotation_reads_the_old_files_rest_then_the_new_file(root) -> None:
    path = log_path(root, CID)
    append(path, entry("one\n", stamp(1)))

    async def steps(until) -> None:
        await until(1)
        append(path, entry("two\n", stamp(2)))  # written just before the rotation, not read yet
        os.rename(path, path + ".1")
        append(path, entry("three\n", stamp(3)))
        await until(3)
        append(path, entry("four\n", stamp(4)))
        await until(4)

    lines, _ = follow(path, None, steps=steps)
    assert [line.split(" ", 1)[1] for line in lines] == ["one", "two", "three", "four"]


def test_a_truncated_file_is_read_again_from_its_start(root) -> None:
    path = log_path(root, CID)
    append(path, entry("one\n", stamp(1)) + entry("two\n", stamp(2)))

    async def steps(until) -> None:
        await until(2)
        os.truncate(path, 0)
        append(path, entry("3\n", stamp(3)))
        await until(3)

    lines, _ = follow(path, None, steps=steps)
    assert [line.split(" ", 1)[1] for line in lines] == ["one", "two", "3"]


def test_a_removed_container_is_no_longer_followed_and_drain_reads_what_is_left(root) -> None:
    path = log_path(root, CID)
    seen: dict[str, bool] = {}

    lines: list[str] = []
    files = JsonFiles()

    async def main() -> None:
        await files.add(CID, path, lines.append)
        try:
            append(path, entry("one\n", stamp(1)))
            await files.drain(CID)  # the die event's read: no wait for inotify
            assert len(lines) == 1
            shutil.rmtree(os.path.dirname(path))
            for _ in range(200):
                if not files.following(CID):
                    break
                await asyncio.sleep(0.01)
            seen["following"] = files.following(CID)
        finally:
            await files.close()

    asyncio.run(main())
    assert lines == [f"{stamp(1)} one"] and seen == {"following": False}


def test_a_symlinked_log_is_refused_and_not_followed(root, tmp_path) -> None:
    path = log_path(root, CID)
    secret = tmp_path / "secret.log"
    secret.write_bytes(entry("secret\n", stamp(1)))
    os.symlink(secret, path)
    lines: list[str] = []
    files = JsonFiles()

    async def main() -> None:
        try:
            with pytest.raises(OSError) as refused:
                await files.add(CID, path, lines.append)
            assert refused.value.errno == errno.ELOOP
            assert not files.following(CID)  # the caller reads it through the engine instead
            append(str(secret), entry("more\n", stamp(2)))
            await asyncio.sleep(0.1)
        finally:
            await files.close()

    asyncio.run(main())
    assert lines == []


def attrs(driver: str = "json-file", log_path_: str = "") -> dict:
    return {"Id": CID, "LogPath": log_path_, "HostConfig": {"LogConfig": {"Type": driver}}}


def test_readable_names_why_a_log_is_read_through_the_engine(root, tmp_path) -> None:
    assert readable(root, attrs()) == (log_path(root, CID), "")
    assert readable(root, attrs(log_path_=log_path(root, CID)))[0] == log_path(root, CID)
    assert readable(None, attrs())[1].startswith("the engine's files are not this process's")
    assert readable(root, attrs("local")) == (None, "log driver local, not json-file")
    assert readable(root, attrs(log_path_="/elsewhere/x-json.log"))[1] == \
        f"the engine logs to /elsewhere/x-json.log, not {log_path(root, CID)}"
    other = tmp_path / "other"
    (other / "containers" / CID).mkdir(parents=True)  # the directory, but not dockerd's: no config.v2.json
    assert readable(str(other), attrs()) == (None, f"{other}/containers/{CID} is not readable here")


class _Running:
    """An executor whose every probe finds a healthy running container."""

    def health(self, cid: str) -> Health:
        return Health("healthy", [], "running", "PONG")


def test_a_running_container_whose_file_the_engine_never_wrote_is_read_through_the_engine(root) -> None:
    """Where the engine's layout is not moby's (no file at the path while the container runs), the probe notices and
    the log is followed through the engine's endpoint from the current run, with an event saying why."""
    out = io.StringIO()
    watcher = Watcher(lambda: None, {}, IdleRecovery(), Telemetry(out=out), _Running(), interval=3600, log_files=False)
    w = Watched(CID, "canary", log_file=log_path(root, CID), file_followed=True, started_ns=10_000_000_000)
    followed: list[tuple[str, int]] = []
    watcher.follow = lambda w_, since_ns, running=False: followed.append((w_.id, since_ns))  # type: ignore[method-assign]
    watcher.check(w)
    assert (w.file_followed, w.log_file) == (False, "") and followed == [(CID, 8_000_000_000)]
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e for e in events if e["event"] == "logs" and "has not written" in e["why"]], events
    watcher.check(w)  # read through the engine now: not switched again
    assert len(followed) == 1


class _Container:
    """What pickup reads of a docker-py container: a running Redis logging with json-file."""

    def __init__(self) -> None:
        self.id, self.name, self.status = CID, "canary", "running"
        self.attrs = {"Id": CID, "Path": "redis-server", "Args": ["--dir", "/data"], "LogPath": "",
                      "Config": {"Image": "redis:7", "Labels": {}}, "State": {"Status": "running"},
                      "HostConfig": {"LogConfig": {"Type": "json-file"}}}


class _Client:
    def __init__(self) -> None:
        self.containers = self

    def list(self, all: bool = False, filters: dict | None = None) -> list[_Container]:  # noqa: A002 - docker-py's
        return [_Container()]


class _Reports(IdleRecovery):
    def __init__(self) -> None:
        self.reported: list[str] = []

    def report(self, cid, name, error_type, origin, detail, detected_at=None):
        self.reported.append(detected_at)


def test_a_running_container_picked_up_has_its_lines_since_the_hooks_connection_read(root) -> None:
    """pickup(client, since_ns): a line the server wrote after the hook asked for the engine's events (since_ns) and
    before the pickup is read from the file's tail; one from before that is not (a CI run lost the first kind when the
    file was followed from its end)."""
    path = log_path(root, CID)
    line = "1:M 30 Nov 2026 08:00:0{}.123 # Can't open or create append-only dir appendonlydir: Permission denied\n"
    old, new = line.format(1), line.format(3)
    append(path, b"".join(entry(f"filler {i}\n", stamp(0)) for i in range(2000)) + entry(old, stamp(1))
           + entry(new, stamp(3)))
    reports = _Reports()
    out = io.StringIO()
    watcher = Watcher(lambda: _Client(), {}, reports, Telemetry(out=out), _Running(), interval=3600)
    watcher.log_root = root
    since_ns = timestamp_ns(stamp(2))
    watcher.pickup(_Client(), since_ns)
    try:
        for _ in range(300):
            if reports.reported:
                break
            time.sleep(0.01)
        time.sleep(0.1)
        assert reports.reported == [timestamp_ns(stamp(3)) / 1e9], (reports.reported, out.getvalue())
        assert watcher.watched[CID].file_followed
    finally:
        watcher.logs.submit(watcher.files.close()).result(5)
