"""Reach a directory below a root without following a symlink on the way, by descriptor.

What lies below a root may belong to someone else (a container's data, a directory an operator
adopted), who may swap any directory there for a symlink to the host. A path resolves every
component before the last, so /root/a/data with `a` a link to /etc is /etc/data; a check by lstat
followed by a use by name can be raced. Here each component is opened with O_NOFOLLOW relative to
the descriptor of the one above it, and the caller is handed /proc/self/fd/<parent>/<last>, which
ownership's inspect_root and repair open with O_NOFOLLOW in turn. Used by the driver (an adopted
`path=`) and the hook (the data dir below a mount's source).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from ownvol.ownership import OwnershipError

_STEP = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class NotBeneath(OwnershipError):
    """A component on the way is missing, a symlink or not a directory; the message names it."""

    def __init__(self, message: str, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


def _refusal(dir_fd: int, part: str, shown: str) -> NotBeneath:
    try:
        st = os.stat(part, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return NotBeneath(f"{shown} does not exist", missing=True)
    if stat.S_ISLNK(st.st_mode):
        return NotBeneath(f"{shown} is a symlink; ownvol never follows one")
    return NotBeneath(f"{shown} is not a directory")


def _descend(fd: int, parts: list[str], shown: str) -> int:
    """The descriptor of fd/parts..., each opened below the last with O_NOFOLLOW; fd is consumed (closed
    or returned). Raises NotBeneath naming the component as shown/...."""
    for part in parts:
        shown = os.path.join(shown, part)
        try:
            step = os.open(part, _STEP, dir_fd=fd)
        except OSError:
            refusal = _refusal(fd, part, shown)
            os.close(fd)
            raise refusal from None
        os.close(fd)
        fd = step
    return fd


def _parts(subpath: str) -> list[str]:
    return [p for p in subpath.split("/") if p]


@contextmanager
def beneath(root: str, subpath: str) -> Iterator[str]:
    """A path to root/subpath with no symlink followed below root (root itself is opened as given).

    subpath is relative, without '.' or '..' components. The path is valid inside the with block only.
    Raises NotBeneath naming the component that is a link (or missing, or no directory) as root/...; an
    OwnershipError raised inside the block has the descriptor path put back in those terms.
    """
    parts = _parts(subpath)
    if not parts:
        yield root
        return
    fd = _descend(os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC), parts[:-1], root)
    shown = os.path.join(root, *parts[:-1])
    here = f"/proc/self/fd/{fd}"
    try:
        yield f"{here}/{parts[-1]}"
    except OwnershipError as exc:
        raise OwnershipError(str(exc).replace(here, shown)) from None
    finally:
        os.close(fd)


def symlink_in(path: str) -> str | None:
    """The first component of the absolute path that is a symlink or not a directory, walking from / by
    descriptor; None when every component that exists is a directory (a missing one ends the walk)."""
    try:
        os.close(_descend(os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC), _parts(path), "/"))
    except NotBeneath as exc:
        return None if exc.missing else str(exc)
    return None
