"""A volume's data directory: how the driver reaches it, and whether it is still the directory the volume was
created with (its filesystem and inode, recorded at create; see store.DataIdentity)."""

from __future__ import annotations

import os
import stat
from contextlib import AbstractContextManager, nullcontext

from ownvol.beneath import beneath, symlink_in

from . import binds
from .store import DataIdentity, VolumeRecord


def identity_of(path: str, table: list[binds.MountEntry] | None = None) -> DataIdentity:
    """What identifies the data directory at path now: its filesystem as this process sees it, and its inode."""
    fs, _ = binds.filesystem_of(path, table)
    return DataIdentity(fs.mount_point, fs.fstype, fs.source, os.lstat(path).st_ino)


def _moved(recorded: DataIdentity, now_: DataIdentity) -> str:
    """What changed between the identity recorded and the one found, in words."""
    if (recorded.fstype, recorded.source) != (now_.fstype, now_.source):
        return (f"it was on {recorded.fstype} {recorded.source} mounted at {recorded.mount}, it is now on "
                f"{now_.fstype} {now_.source} mounted at {now_.mount} (the filesystem is not mounted?)")
    return f"it was inode {recorded.inode}, it is now inode {now_.inode} (replaced by another directory?)"


def reach(record: VolumeRecord) -> AbstractContextManager[str]:
    """The data directory's path for ownership's inspect and walk: an adopted one reached from / by descriptor
    (its components are not the plugin's), a managed one as it is (below the plugin's own root)."""
    return beneath("/", record.path) if record.adopted else nullcontext(record.path)


class DataDirs:
    """Checks of the volumes' data directories, remembering per volume the (st_dev, st_ino) last found to be its
    data, so that the mount table is read again only when that changes (hot path: Mount)."""

    def __init__(self) -> None:
        self._seen_on: dict[str, tuple[int, int]] = {}

    def forget(self, name: str) -> None:
        """The volume's data is (again) what its record says: check it afresh next time."""
        self._seen_on.pop(name, None)

    def problem(self, record: VolumeRecord, identity: bool = True,
                table: list[binds.MountEntry] | None = None) -> str | None:
        """Why the volume's data directory cannot be used now, in words; None when it can. identity: also
        whether it is still the directory it was created with."""
        try:
            st = os.lstat(record.path)
        except FileNotFoundError:
            return f"its data directory {record.path} is missing (deleted by hand?)"
        if not stat.S_ISDIR(st.st_mode):
            return f"its data directory {record.path} is not a directory"
        if record.adopted and (why := symlink_in(record.path)):
            return why
        if identity and record.identity is not None and self._seen_on.get(record.name) != (st.st_dev, st.st_ino):
            found = identity_of(record.path, table)
            if not found.same_data(record.identity):
                return (f"its data directory {record.path} is not the one it was created with: "
                        f"{_moved(record.identity, found)}; nothing was changed. Mount the data back, or, if the "
                        f"data really moved here, `ownvol volumes --rebind {record.name}`")
            self._seen_on[record.name] = (st.st_dev, st.st_ino)
        return None
