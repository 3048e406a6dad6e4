"""What can go wrong with a request, in words a person understands; app.py turns each into an Err reply."""

from __future__ import annotations

import errno


class PluginError(Exception):
    """A request that cannot be done; the message is the Err the daemon shows."""

    status = 500


class InvalidRequest(PluginError):
    """The request itself is wrong: bad JSON, a missing field, a bad name or option."""

    status = 400


class NoSuchVolume(PluginError):
    """Get, Path, Mount or Remove of a name the driver does not hold (ready)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no such volume: {name}")


class VolumeInUse(PluginError):
    """Remove of a volume that still has mount references."""


# What a person can do about each refusal of the filesystem (errno meanings: errno(3), chown(2), mkdir(2)).
ADVICE = {
    errno.EPERM: "this filesystem does not allow it here (NFS root_squash, CIFS/SMB, an immutable directory: "
                 "lsattr shows 'i'?): use the uid:gid and mode the directory already has (-o uid= -o gid= -o mode=), "
                 "or policy=never",
    errno.EACCES: "access denied to root (NFS root_squash, AppArmor/SELinux?): use the uid:gid the directory already "
                  "has, or policy=never",
    errno.EROFS: "the filesystem is mounted read-only: remount it read-write, or use the owner it already has with "
                 "policy=never",
    errno.ENOSPC: "no space left on the device: free some, then try again",
    errno.EDQUOT: "disk quota exceeded: raise the quota or free space, then try again",
}


class FilesystemRefused(PluginError):
    """The filesystem said no to an operation on a path (chown, chmod, mkdir...): path, operation, errno, advice.

    status 500 like every PluginError the daemon shows; `errno` keeps the number for the caller."""

    def __init__(self, operation: str, path: str, exc: OSError) -> None:
        self.errno = exc.errno
        words = exc.strerror or str(exc)
        name = errno.errorcode.get(exc.errno or 0, "")
        advice = ADVICE.get(exc.errno or 0, "check the directory and its filesystem, then try again")
        super().__init__(f"{operation} {path} failed: {words}{f' ({name})' if name else ''}; {advice}")
