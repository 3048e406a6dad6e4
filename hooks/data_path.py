"""Reach a mount's data dir below the mount's source without following a symlink on the way.

The mount's source is the engine's (a bind source an operator chose, a volume's directory); what
lies below it belongs to the container. ownvol.beneath walks it by descriptor.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ownvol.beneath import beneath
from ownvol.ownership import OwnershipError

from .model import DataMount


@contextmanager
def data_path(mount: DataMount) -> Iterator[str]:
    """A path to mount.host_path for ownership's inspect_root and repair, with no symlink followed below
    the mount's source. OwnershipError names the component that is a link (or missing, or no directory),
    in host terms, or says the data dir is not below its mount."""
    if mount.subpath and any(p in ("", ".", "..") for p in mount.subpath.split("/")):
        raise OwnershipError(f"{mount.host_path}: the data dir is not below its mount {mount.source}")
    with beneath(mount.source, mount.subpath) as path:
        yield path
