"""What can go wrong with a request, in words a person understands; app.py turns each into an Err reply."""

from __future__ import annotations


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
