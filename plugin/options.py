"""Volume names and `-o` options: parsed and checked before anything touches the disk.

Every refusal is a ValueError whose message names the option and what is allowed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ownvol.profiles import PROFILES, get_profile
from ownvol.system_paths import SYSTEM_DIRS, system_area

NAME_MAX = 128
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_DIGITS = re.compile(r"[0-9]{1,10}")
_OCTAL = re.compile(r"(0o)?[0-7]{1,5}")
ID_MAX = 2**32 - 2  # 2^32-1 is (uid_t)-1, "leave unchanged" to chown(2)
MODE_MAX = 0o7777
PATH_MAX = 4095  # bytes, as PATH_MAX (4096) counts the NUL
COMPONENT_MAX = 255  # bytes, NAME_MAX
PATH_DEPTH_MAX = 64  # components below /
SHOWN_MAX = 48  # characters of a refused value quoted back in an Err
POLICIES = ("on-root-mismatch", "always", "never")
OWNERSHIPS = ("walk", "idmap", "auto")  # how a volume shows its owner: a chown walk, an idmapped mount, or either
OPTIONS = ("gid", "mode", "ownership", "path", "policy", "profile", "uid", "view-of")

@dataclass(frozen=True)
class Defaults:
    """Plugin-wide defaults (OWNVOL_DEFAULT_*), already resolved through the default profile."""

    uid: int = 999
    gid: int = 999
    mode: int = 0o755
    policy: str = "on-root-mismatch"
    profile: str | None = None
    ownership: str = "walk"


@dataclass(frozen=True)
class VolumeSpec:
    """What a volume is: who owns it, its root's mode, how mounts check it, where it lives if adopted, how it
    shows its owner (ownership: walk, idmap or auto) and, for a view, the volume whose data it shows."""

    uid: int
    gid: int
    mode: int
    policy: str
    profile: str | None = None
    path: str | None = None
    ownership: str = "walk"
    view_of: str | None = None


def _show(text: str) -> str:
    """A refused value as an Err quotes it: repr, cut short; an Err is a sentence, not an echo."""
    if len(text) <= SHOWN_MAX:
        return repr(text)
    return f"{text[:SHOWN_MAX]!r}... ({len(text)} characters)"


def validate_name(name: object) -> str:
    """name, if Docker would accept it as a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]*, at most NAME_MAX characters); else
    ValueError saying which rule it breaks."""
    if not isinstance(name, str):
        raise ValueError(f"Name must be a string, got {type(name).__name__}")
    if not name:
        raise ValueError("Name is empty; a volume name matches [a-zA-Z0-9][a-zA-Z0-9_.-]*")
    if len(name) > NAME_MAX:
        raise ValueError(f"Name is {len(name)} characters long; at most {NAME_MAX} are allowed")
    if not _NAME.fullmatch(name):
        raise ValueError(f"Name {name!r} is not a valid volume name: it must match [a-zA-Z0-9][a-zA-Z0-9_.-]*")
    return name


def parse_id(option: str, text: str) -> int:
    """A uid or gid from option text: decimal digits, 0 to ID_MAX; else ValueError naming the option."""
    if not _DIGITS.fullmatch(text) or int(text) > ID_MAX:
        raise ValueError(f"option {option}: {_show(text)} is not an integer from 0 to {ID_MAX}")
    return int(text)


def parse_mode(text: str) -> int:
    """Permission bits from octal text (`755`, `0755`, `0o2775`), 0 to 0o7777; else ValueError."""
    if not _OCTAL.fullmatch(text) or int(text.removeprefix("0o"), 8) > MODE_MAX:
        raise ValueError(f"option mode: {_show(text)} is not an octal mode from 0 to 7777 (for example 0755)")
    return int(text.removeprefix("0o"), 8)


def parse_policy(text: str) -> str:
    """One of POLICIES; else ValueError listing them."""
    if text not in POLICIES:
        raise ValueError(f"option policy: {_show(text)} is not a policy; use one of {', '.join(POLICIES)}")
    return text


def parse_ownership(text: str) -> str:
    """One of OWNERSHIPS; else ValueError listing them."""
    if text not in OWNERSHIPS:
        raise ValueError(f"option ownership: {_show(text)} is not an ownership; use one of {', '.join(OWNERSHIPS)}")
    return text


def parse_view_of(text: str) -> str:
    """The name of the volume a view shows: a volume name of this driver, never a path; else ValueError."""
    if "/" in text or ".." in text:
        raise ValueError(f"option view-of: {_show(text)} is not a volume name: a view shows another volume of "
                         "this driver, named without '/' or '..' (never a path)")
    try:
        return validate_name(text)
    except ValueError as exc:
        raise ValueError(f"option view-of: {exc}") from None


def parse_profile(text: str):
    """The Profile named text (ownvol/profiles.py); else ValueError listing the known ones."""
    try:
        return get_profile(text)
    except KeyError:
        raise ValueError(f"option profile: {_show(text)} is not a known profile; known profiles: "
                         f"{', '.join(sorted(PROFILES))}") from None


def parse_defaults(uid: str | None = None, gid: str | None = None, mode: str | None = None,
                   policy: str | None = None, profile: str | None = None, ownership: str | None = None) -> Defaults:
    """Plugin-wide defaults from their text; a default profile fills what uid, gid and mode leave unset."""
    base = Defaults()
    prof = parse_profile(profile) if profile else None
    return Defaults(
        uid=parse_id("uid", uid) if uid is not None else (prof.uid if prof else base.uid),
        gid=parse_id("gid", gid) if gid is not None else (prof.gid if prof else base.gid),
        mode=parse_mode(mode) if mode is not None else (prof.mode if prof else base.mode),
        policy=parse_policy(policy) if policy is not None else base.policy,
        profile=prof.name if prof else None,
        ownership=parse_ownership(ownership) if ownership is not None else base.ownership,
    )


def check_adoptable(path: str, allowed_roots: tuple[str, ...], own_trees: tuple[str, ...] = ()) -> str:
    """The rules path= must meet on paper (the disk checks come at Create); returns the path."""
    def refuse(why: str) -> ValueError:
        return ValueError(f"option path: {_show(path)} {why}")

    if "\0" in path:
        raise refuse("contains a NUL byte")
    if not path.isprintable():
        raise refuse("contains a control character (or another that is not printable)")
    parts = [p for p in path.split("/") if p]
    if len(path.encode()) > PATH_MAX or any(len(p.encode()) > COMPONENT_MAX for p in parts):
        raise refuse(f"is too long (at most {PATH_MAX} bytes, {COMPONENT_MAX} per component)")
    if len(parts) > PATH_DEPTH_MAX:
        raise refuse(f"is {len(parts)} directories deep; at most {PATH_DEPTH_MAX}")
    if not os.path.isabs(path):
        raise refuse("is not an absolute path")
    if os.path.normpath(path) != path or path.startswith("//"):
        raise refuse(f"is not in normal form (write it as {os.path.normpath(path)!r})")
    if why := system_area(path, own_trees):
        raise refuse(f"{why}; adopt a directory below it" if path in SYSTEM_DIRS
                     else f"{why}, which ownvol never adopts")
    if not allowed_roots:
        raise refuse("cannot be adopted: adoption is off (OWNVOL_ALLOWED_ROOTS is empty)")
    if not any(path.startswith(root.rstrip("/") + "/") for root in allowed_roots):
        raise refuse(f"is not below an allowed root ({', '.join(allowed_roots)}; plugin setting OWNVOL_ALLOWED_ROOTS)")
    return path


def option_strings(opts: object) -> dict[str, str]:
    """Create's Opts as sent (a JSON object or null): known option names with string values, not yet read.

    Raises ValueError naming the first unknown option or the first value that is not a string.
    """
    if opts is None:
        return {}
    if not isinstance(opts, dict):
        raise ValueError(f"Opts must be an object of option=value strings, got {type(opts).__name__}")
    unknown = sorted(k for k in opts if k not in OPTIONS)
    if unknown:
        raise ValueError(f"unknown option {_show(unknown[0])}; valid options: {', '.join(OPTIONS)}")
    for key, value in opts.items():
        if not isinstance(value, str):
            raise ValueError(f"option {key}: expected a string value, got {type(value).__name__}")
    return opts


def parse_options(opts: object, defaults: Defaults, allowed_roots: tuple[str, ...] = (),
                  own_trees: tuple[str, ...] = ()) -> VolumeSpec:
    """A VolumeSpec from Create's Opts as sent: option_strings, then volume_spec."""
    return volume_spec(option_strings(opts), defaults, allowed_roots, own_trees)


def volume_spec(opts: Mapping[str, str], defaults: Defaults, allowed_roots: tuple[str, ...] = (),
                own_trees: tuple[str, ...] = ()) -> VolumeSpec:
    """A VolumeSpec from checked option strings: explicit uid/gid/mode, else the profile's, else the defaults.

    allowed_roots: where `path` may adopt a directory; own_trees: the plugin's own directories, never adopted.
    Raises ValueError naming the option and what is allowed.
    """
    prof = parse_profile(opts["profile"]) if "profile" in opts else None
    base = prof or defaults
    base_uid, base_gid, base_mode = base.uid, base.gid, base.mode
    view_of = parse_view_of(opts["view-of"]) if "view-of" in opts else None
    ownership = parse_ownership(opts["ownership"]) if "ownership" in opts else defaults.ownership
    if view_of is not None:
        if "ownership" in opts and ownership != "idmap":
            raise ValueError(f"option view-of: a view is an idmapped mount of {view_of}'s data; ownership="
                             f"{ownership} cannot make one (leave ownership out, or use ownership=idmap)")
        if "path" in opts:
            raise ValueError("option view-of: a view has no data of its own; it cannot also adopt a path=")
        ownership = "idmap"
    return VolumeSpec(
        uid=parse_id("uid", opts["uid"]) if "uid" in opts else base_uid,
        gid=parse_id("gid", opts["gid"]) if "gid" in opts else base_gid,
        mode=parse_mode(opts["mode"]) if "mode" in opts else base_mode,
        policy=parse_policy(opts["policy"]) if "policy" in opts else defaults.policy,
        profile=prof.name if prof else defaults.profile,
        path=check_adoptable(opts["path"], allowed_roots, own_trees) if "path" in opts else None,
        ownership=ownership,
        view_of=view_of,
    )
