"""Reach a data dir below its mount's source without following a symlink on the way.

The mount's source is the engine's (a bind source an operator chose, a volume's directory); what
lies below it belongs to the container, which may swap any directory there for a symlink to the
host. ownership's walk refuses a symlink as its root, but a path resolves every component before
the last: /source/a/data with `a` a link to /etc would be /etc/data. So each component below the
source is opened with O_NOFOLLOW, and the walk is handed /proc/self/fd/<parent>/<last>.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from ownvol.hook.targets import DataMount
from ownvol.ownership import OwnershipError

_STEP = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _refusal(dir_fd: int, part: str, shown: str) -> OwnershipError:
    try:
        st = os.stat(part, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return OwnershipError(f"{shown} does not exist")
    if stat.S_ISLNK(st.st_mode):
        return OwnershipError(f"{shown} is a symlink; ownvol never follows one")
    return OwnershipError(f"{shown} is not a directory")


@contextmanager
def data_path(mount: DataMount) -> Iterator[str]:
    """A path to mount.host_path for ownership's inspect_root and repair, with no symlink followed below
    the mount's source. OwnershipError names the component that is a link (or missing, or no directory),
    in host terms."""
    if not mount.subpath:
        yield mount.source
        return
    parts = mount.subpath.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise OwnershipError(f"{mount.host_path}: the data dir is not below its mount {mount.source}")
    fd = os.open(mount.source, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        shown = mount.source
        for part in parts[:-1]:
            shown = os.path.join(shown, part)
            try:
                step = os.open(part, _STEP, dir_fd=fd)
            except OSError:
                raise _refusal(fd, part, shown) from None
            os.close(fd)
            fd = step
        here = f"/proc/self/fd/{fd}"
        try:
            yield f"{here}/{parts[-1]}"
        except OwnershipError as exc:
            raise OwnershipError(str(exc).replace(here, shown)) from None
    finally:
        os.close(fd)
