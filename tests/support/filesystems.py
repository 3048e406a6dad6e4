"""Filesystems of a given type mounted for a test where a plugin engine's driver looks: in that engine's mount
namespace (tests/support/fixtures_plugin.py, PluginEngine), whose mounts the host's namespace never sees. xfs and
btrfs on loop devices over sparse images in a temporary directory, tmpfs, and FUSE as bindfs (a passthrough whose
server does not set FUSE_ALLOW_IDMAP). Everything made is undone by cleanup, in reverse order, each step even when
another fails: unmount (lazily where busy), detach the loop device, stop bindfs, remove the images."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.support.engine import wait_for
from tests.support.process import stop_child

# MB of each sparse image: mkfs.xfs refuses a filesystem under 300 MB (xfsprogs 5.19 and later); btrfs takes 256
IMAGE_MB = {"xfs": 320, "btrfs": 256}
KINDS = ("xfs", "btrfs", "tmpfs", "fuse")


class Filesystems:
    """Mounts in the mount namespace of process ns_pid (entered with nsenter), undone by cleanup."""

    def __init__(self, ns_pid: int) -> None:
        self.ns_pid = ns_pid
        self.in_ns = ["nsenter", "-t", str(ns_pid), "-m", "--"]
        self.scratch = Path(tempfile.mkdtemp(prefix="ownvol-fs-", dir="/var/tmp"))
        self._undo: list[Callable[[], None]] = []
        self._count = itertools.count()
        self._made: list[Path] = []

    def seen(self, path: Path) -> Path:
        """path as this process reaches it: below /proc/PID/root, whose lookups cross the namespace's mounts."""
        return Path(f"/proc/{self.ns_pid}/root") / path.relative_to("/")

    def mounted(self, where: Path) -> bool:
        with open(f"/proc/{self.ns_pid}/mountinfo", encoding="utf-8") as f:
            return any(line.split()[4] == str(where) for line in f)

    def mount(self, kind: str, where: Path) -> Path:
        """A new, empty filesystem of kind (KINDS) mounted at where (made here: a directory on the host's
        filesystem, which the namespace shares), root-owned 0755; where."""
        where.mkdir(parents=True)
        self._made.append(where)
        self._undo.append(lambda: where.rmdir() if where.is_dir() and not self.mounted(where) else None)
        n = next(self._count)
        if kind in IMAGE_MB:
            image = self.scratch / f"{kind}-{n}.img"
            with open(image, "wb") as f:
                f.truncate(IMAGE_MB[kind] << 20)
            subprocess.run([f"mkfs.{kind}", "-q", str(image)], check=True, capture_output=True)
            loop = subprocess.run(["losetup", "--find", "--show", str(image)], check=True, capture_output=True,
                                  text=True).stdout.strip()
            self._undo.append(lambda: self._detach(loop))
            self._undo.append(lambda: self._unmount(where))
            self._in_ns("mount", "-t", kind, loop, str(where))
        elif kind == "tmpfs":
            self._undo.append(lambda: self._unmount(where))
            self._in_ns("mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", str(where))
        elif kind == "fuse":
            source = self.scratch / f"bindfs-{n}"
            source.mkdir()
            server = subprocess.Popen([*self.in_ns, "bindfs", "-f", str(source), str(where)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self._undo.append(lambda: stop_child(server, timeout=10))
            self._undo.append(lambda: self._unmount(where))
            wait_for(lambda: self.mounted(where) or server.poll() is not None, 30, what=f"bindfs at {where}")
            if server.poll() is not None:
                raise RuntimeError(f"bindfs {source} {where} exited {server.returncode}")
        else:
            raise ValueError(f"kind {kind!r}: one of {KINDS}")
        return where

    def _in_ns(self, *argv: str) -> None:
        subprocess.run([*self.in_ns, *argv], check=True, capture_output=True)

    def _unmount(self, where: Path) -> None:
        if subprocess.run([*self.in_ns, "umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run([*self.in_ns, "umount", "-l", str(where)], capture_output=True)

    def _detach(self, loop: str) -> None:
        # a device still held (a lazily unmounted filesystem) is marked autoclear: gone with its last user
        subprocess.run(["losetup", "-d", loop], capture_output=True)

    def cleanup(self) -> None:
        errors = []
        while self._undo:
            try:
                self._undo.pop()()
            except Exception as exc:  # noqa: BLE001 - every other step still runs
                errors.append(exc)
        shutil.rmtree(self.scratch, ignore_errors=True)
        left = [str(where) for where in self._made if self.mounted(where)]
        if left:
            errors.append(RuntimeError(f"still mounted in the namespace of {self.ns_pid}: {left}"))
        if errors:
            raise errors[0]
