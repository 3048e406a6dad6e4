"""Docker's volume-plugin protocol as types: a request and a response per endpoint, and the driver's interface.

Shaped like docker/go-plugins-helpers' volume/api.go (one request and one response type per endpoint, an
eight-method Driver interface, the transport owned by the caller); the wire format is Docker's
https://docs.docker.com/engine/extend/plugins_volume/. `parse` turns a decoded JSON body into its request type,
checking every field once; the service receives only requests that parsed. The Err field of every reply is
app.py's: a method either returns its response or raises a PluginError.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, TypeVar

from .errors import InvalidRequest
from .options import option_strings, validate_name

MOUNT_ID_MAX = 256  # characters of a mount ID (the daemon sends 64 hex digits)


def _text(key: str, value: object) -> str:
    if value is None:
        raise InvalidRequest(f"{key} is required")
    if not isinstance(value, str):
        raise InvalidRequest(f"{key} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidRequest(f"{key} must not be empty")
    return value


def volume_name(value: object) -> str:
    """A request's Name: a volume name Docker accepts (options.validate_name); raises InvalidRequest."""
    try:
        return validate_name(_text("Name", value))
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def mount_id(value: object) -> str:
    """A request's ID: the daemon's mount reference, printable, at most MOUNT_ID_MAX characters."""
    text = _text("ID", value)
    if len(text) > MOUNT_ID_MAX or not text.isprintable():
        raise InvalidRequest(f"ID must be printable and at most {MOUNT_ID_MAX} characters")
    return text


def volume_options(value: object) -> dict[str, str]:
    """Create's Opts: known option names with string values (their meaning is the service's to check)."""
    try:
        return option_strings(value)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def _wire(key: str, parse: Callable[[object], object]) -> Any:
    """A request field read from the body's `key` through `parse` (which raises InvalidRequest)."""
    return field(metadata={"wire": key, "parse": parse})


@dataclass(frozen=True)
class CreateRequest:
    """/VolumeDriver.Create: the name and Opts (option strings; their meaning is the service's to check)."""

    name: str = _wire("Name", volume_name)
    options: dict[str, str] = _wire("Opts", volume_options)


@dataclass(frozen=True)
class RemoveRequest:
    name: str = _wire("Name", volume_name)


@dataclass(frozen=True)
class MountRequest:
    """/VolumeDriver.Mount: id is the daemon's reference for this use of the volume (one per container)."""

    name: str = _wire("Name", volume_name)
    id: str = _wire("ID", mount_id)


@dataclass(frozen=True)
class UnmountRequest:
    """/VolumeDriver.Unmount: the reference a Mount gave."""

    name: str = _wire("Name", volume_name)
    id: str = _wire("ID", mount_id)


@dataclass(frozen=True)
class PathRequest:
    name: str = _wire("Name", volume_name)


@dataclass(frozen=True)
class GetRequest:
    name: str = _wire("Name", volume_name)


Request = TypeVar("Request", CreateRequest, RemoveRequest, MountRequest, UnmountRequest, PathRequest, GetRequest)


def parse(kind: type[Request], body: Mapping[str, object]) -> Request:
    """kind from a decoded JSON object, its fields checked in declaration order; raises InvalidRequest
    naming the first missing or bad key. Keys the type does not declare are ignored, as the daemon's are."""
    return kind(**{f.name: f.metadata["parse"](body.get(f.metadata["wire"])) for f in fields(kind)})


@dataclass(frozen=True)
class Volume:
    """A volume as Get and List show it; created_at (RFC 3339) and status are left out when empty."""

    name: str
    mountpoint: str
    created_at: str = ""
    status: Mapping[str, object] | None = None

    def wire(self) -> dict[str, object]:
        out: dict[str, object] = {"Name": self.name, "Mountpoint": self.mountpoint}
        if self.created_at:
            out["CreatedAt"] = self.created_at
        if self.status is not None:
            out["Status"] = self.status
        return out


@dataclass(frozen=True)
class MountResponse:
    mountpoint: str

    def wire(self) -> dict[str, object]:
        return {"Mountpoint": self.mountpoint}


@dataclass(frozen=True)
class PathResponse:
    mountpoint: str

    def wire(self) -> dict[str, object]:
        return {"Mountpoint": self.mountpoint}


@dataclass(frozen=True)
class GetResponse:
    volume: Volume

    def wire(self) -> dict[str, object]:
        return {"Volume": self.volume.wire()}


@dataclass(frozen=True)
class ListResponse:
    volumes: list[Volume]

    def wire(self) -> dict[str, object]:
        return {"Volumes": [v.wire() for v in self.volumes]}


@dataclass(frozen=True)
class CapabilitiesResponse:
    """scope: "local" (this engine's volumes) or "global" (one volume for a whole cluster)."""

    scope: str = "local"

    def wire(self) -> dict[str, object]:
        return {"Capabilities": {"Scope": self.scope}}


@dataclass(frozen=True)
class ActivateResponse:
    """The handshake's reply (/Plugin.Activate): the plugin interfaces implemented."""

    implements: tuple[str, ...] = ("VolumeDriver",)

    def wire(self) -> dict[str, object]:
        return {"Implements": list(self.implements)}


Reply = MountResponse | PathResponse | GetResponse | ListResponse | CapabilitiesResponse | ActivateResponse


class VolumeDriver(Protocol):
    """What a volume driver does, endpoint by endpoint; each method raises a PluginError to refuse."""

    def create(self, req: CreateRequest) -> None: ...

    def remove(self, req: RemoveRequest) -> None: ...

    def mount(self, req: MountRequest) -> MountResponse: ...

    def unmount(self, req: UnmountRequest) -> None: ...

    def path(self, req: PathRequest) -> PathResponse: ...

    def get(self, req: GetRequest) -> GetResponse: ...

    def list(self) -> ListResponse: ...

    def capabilities(self) -> CapabilitiesResponse: ...
