"""Helpers for the hostile tests: raw requests on a unix socket, tree snapshots, owners, racing link swaps."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import stat
from pathlib import Path

MEDIA = "application/vnd.docker.plugins.v1.2+json"


def raw_request(sock_path: str, endpoint: str, body: bytes, method: str = "POST", chunked: bool = False,
                timeout: float = 60) -> tuple[int, bytes, dict]:
    """One HTTP request written by hand (so a body of megabytes or a refused one can be sent at all):
    (status, body bytes, headers). The reply is read even when the server stops reading our body early."""
    head = f"{method} {endpoint} HTTP/1.1\r\nHost: plugin\r\nAccept: {MEDIA}\r\nConnection: close\r\n"
    if chunked:
        step = 64 * 1024
        payload = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + step]), body[i:i + step])
                           for i in range(0, len(body), step)) + b"0\r\n\r\n"
        head += "Transfer-Encoding: chunked\r\n"
    else:
        payload = body
        head += f"Content-Length: {len(body)}\r\n"
    return raw_bytes(sock_path, head.encode() + b"\r\n" + payload, timeout)


def raw_bytes(sock_path: str, data: bytes, timeout: float = 60) -> tuple[int, bytes, dict]:
    """Send bytes as they are; (status, body, headers) of whatever HTTP reply comes back (0 when none)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(sock_path)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)  # all there is: a partial request ends here rather than wait
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking all of it: its reply is still there
        reply = b""
        try:
            while chunk := s.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
    head, _, content = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/"):
        return 0, reply, {}
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), content, headers


def json_reply(status: int, content: bytes) -> dict:
    try:
        return json.loads(content)
    except ValueError:
        raise AssertionError(f"HTTP {status}: the reply is not JSON: {content[:300]!r}") from None


def snapshot(top: str | Path, skip: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Every entry below top (top included), links not followed: type, owner, mode, size, mtime, link target.
    Names in skip (relative to top) are left out with everything below them."""
    top = str(top)
    out = {}
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        rel_dir = os.path.relpath(dirpath, top)
        dirnames[:] = [d for d in dirnames if os.path.normpath(os.path.join(rel_dir, d)) not in skip]
        for name in [".", *dirnames, *filenames]:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel in skip:
                continue
            path = os.path.join(top, rel)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
            out[rel] = (stat.S_IFMT(st.st_mode), st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode),
                        st.st_size if not stat.S_ISDIR(st.st_mode) else 0, st.st_mtime_ns, link)
    return out


def owners(paths) -> dict[str, tuple[int, int, int]]:
    """(uid, gid, mode) of each path, links not followed."""
    out = {}
    for p in paths:
        st = os.lstat(p)
        out[str(p)] = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
    return out


def make_decoys(top: Path) -> Path:
    """Host files and directories outside any volume, root-owned: what a link attack aims at.
    top/etc/{shadow, redis/, data/} and top/passwd; `data` and `redis` are names a data dir might have."""
    (top / "etc" / "redis").mkdir(parents=True)
    (top / "etc" / "data" / "deep").mkdir(parents=True)
    (top / "etc" / "shadow").write_text("secret")
    (top / "etc" / "data" / "deep" / "file").write_text("host data")
    (top / "passwd").write_text("root:x:0:0")
    for p in [top, *top.rglob("*")]:
        os.chown(p, 0, 0, follow_symlinks=False)
    return top


def _swap_forever(directory: str, name: str, intruder: str, park: str, stop) -> None:
    """Put the intruder (a link parked outside the tree) in the place of directory/name and back, as fast
    as it goes; the real entry goes back to root:root each time, so every walk finds work on that name."""
    real = os.path.join(directory, name)
    while not stop.is_set():
        try:
            os.rename(real, park)      # the real entry leaves its name ...
            os.rename(intruder, real)  # ... the intruder takes it ...
            os.rename(real, intruder)
            os.rename(park, real)      # ... and the real entry comes back, wrongly owned again
            os.chown(real, 0, 0, follow_symlinks=False)
        except FileNotFoundError:
            pass


class Swapper:
    """A separate process swapping directory/name with `intruder` (a symlink or hard link parked on the same
    filesystem, outside the walked tree) and back, until stopped; `park` is where the real entry waits."""

    def __init__(self, directory: str | Path, name: str, intruder: str | Path, park: str | Path) -> None:
        ctx = multiprocessing.get_context("fork")
        self.stop_event = ctx.Event()
        self.real, self.intruder, self.park = os.path.join(directory, name), str(intruder), str(park)
        self.proc = ctx.Process(target=_swap_forever, daemon=True,
                                args=(str(directory), name, self.intruder, self.park, self.stop_event))

    def __enter__(self) -> Swapper:
        self.proc.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        if os.path.lexists(self.park):  # stopped mid-swap: put both back where they belong
            if os.path.lexists(self.real):
                os.rename(self.real, self.intruder)
            os.rename(self.park, self.real)
