"""A path a server could not use that is not its data dir (issue 24, kind A): which mount holds it, and the plan.

A log line names a path (hooks/patterns.py: the context's `path`, or the server setting `path_of` holds it) as the
server sees it, inside the container. The container's own mount table (`docker inspect` Mounts: Type, Source,
Destination, RW) says where it lives: the mount whose destination is the longest prefix of it (the kernel shows
the innermost mount there). What must be usable there depends on what the server does (`needs`):
- create: it makes a file in the directory that holds the path (Sentinel's and the cluster's temp file beside
  their config: src/config.c rewriteConfigOverwriteFile, clusterSaveConfig; the log file; the unix socket), so
  that directory is what is repaired;
- write-in: the path is itself a directory the server creates files in (a setting's directory, named when a
  line names no file or a crash names no line: the context's `directory`), so the path itself is repaired;
- read: it only reads the path (an ACL file, an included config): the directory holding it on a directory mount,
  the file itself on a single-file bind (the one case where a host file is given to the container's user: it is
  the fix, and the event says the file alone was changed).
A path on no bind or volume (the image's own directories), on a read-only mount, on a single-file bind where
the server must create beside it, or on a host system directory (ownvol/system_paths.py) is never touched: the
plan is a diagnosis instead, saying what cannot be written, by whom, and the one change that fixes it.

Pure: no Docker, no filesystem (the caller resolves a plugin volume's source and the nearest existing
directory, hooks/executor.py).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass

from ownvol.system_paths import system_area

from .model import DataMount

NEEDS = ("create", "write-in", "read")
SENTINEL_TEMP = "Sentinel writes a temp file beside its config and renames it over the file"
WHY_CREATE = {
    "configfile": SENTINEL_TEMP,
    "cluster-config-file": "the cluster writes its nodes.conf (and, since 8.0, a temp file beside it)",
    "unixsocket": "the server creates its socket file there",
    "logfile": "the server creates its log file there",
}


def resolve(path: str, cwd: str) -> str:
    """path as an absolute, normalised container path: a relative one against cwd (the server's working
    directory: /proc/PID/cwd, or its data dir, where Redis chdir()s at start: src/config.c `dir`)."""
    return posixpath.normpath(posixpath.join(cwd or "/", path))


def inside(path: str, directory: str) -> bool:
    """Whether absolute path is directory or below it (both normalised container paths)."""
    directory = directory.rstrip("/") or "/"
    return path == directory or directory == "/" or path.startswith(directory + "/")


def holding_mount(mounts: tuple | list, path: str) -> dict | None:
    """The Mounts entry whose destination is the longest prefix of the absolute path (path itself for a
    single-file bind); None when none holds it."""
    best = None
    for m in mounts:
        dest = (m.get("Destination") or "").rstrip("/") or "/"
        if inside(path, dest) and (best is None or len(dest) > len((best.get("Destination") or "").rstrip("/"))):
            best = m
    return best


@dataclass(frozen=True)
class PathPlan:
    """What is done about a path a server could not use.

    path: the absolute container path named; needs: create | read; target: the container path that must be
    usable (the directory holding path for create, path for read); mount: what a repair acts on (its subpath
    down to target; `file` for a single-file bind) or None; diagnosis: why nothing is done and the one change
    that fixes it (when mount is None); where: the mount's destination holding target, "" when none does."""

    path: str
    needs: str
    target: str
    mount: DataMount | None
    diagnosis: str = ""
    where: str = ""

    @property
    def repairs(self) -> bool:
        return self.mount is not None

    def as_dict(self) -> dict:
        return {"path": self.path, "needs": self.needs, "target": self.target, "where": self.where,
                "mount": self.mount.as_dict() if self.mount else None,
                "plan": "repair" if self.mount else "diagnose", "diagnosis": self.diagnosis}


SourceIsDir = Callable[[dict], "bool | None"]


def volume_is_dir(entry: dict) -> bool | None:
    return True if entry.get("Type") == "volume" else None


def plan(mounts: tuple | list, path: str, needs: str, cwd: str, uid: int | None, gid: int | None,
         setting: str = "", source_is_dir: SourceIsDir = volume_is_dir) -> PathPlan:
    """The plan for path (as the server printed it; relative to cwd) which the server, running as uid:gid,
    could not use as needs says; setting: the server setting that holds the path, for the diagnosis's words.
    A mount whose destination is path itself is the target when its source is a directory (source_is_dir of
    its Mounts entry: True, False, None unknown; a volume is always one): a directory the server creates
    files in (PostgreSQL's pg_wal on its own volume); else it is a single-file bind."""
    if needs not in NEEDS:
        raise ValueError(f"needs must be one of {NEEDS}, not {needs!r}")
    full = resolve(path, cwd)
    at_path = holding_mount(mounts, full)
    mounted_here = at_path is not None and ((at_path.get("Destination") or "").rstrip("/") or "/") == full
    single_file = mounted_here and not source_is_dir(at_path or {})
    target = posixpath.dirname(full) if needs == "create" and not (mounted_here and not single_file) else full
    who = f"the server's user {uid}:{gid}" if uid is not None else "the server's user"
    owner = f"{uid}:{gid}" if uid is not None else "the server's uid:gid"
    if single_file and at_path is not None:
        if needs == "read":
            return _checked(PathPlan(full, needs, full, _mount(at_path, "", file=True), where=full), who)
        why = WHY_CREATE.get(setting, "the server creates a file beside it")
        return PathPlan(full, needs, target, None, where=full,
                        diagnosis=f"mount the directory, not the file: {full} is a single-file bind and {who} "
                                  f"must create files beside it in {target}, which a file mount cannot give "
                                  f"(a rename over a mount point fails); {why}. Mount a host directory at "
                                  f"{target} owned by {owner}, with the file inside it")
    at_target = holding_mount(mounts, target)
    if at_target is None or at_target.get("Type") not in ("bind", "volume"):
        kind = f"a {at_target.get('Type')} mount" if at_target else "the image's own directory, on no bind mount " \
                                                                   "or volume"
        doing = "read" if needs == "read" else "create files in"
        return PathPlan(full, needs, target, None, where=(at_target or {}).get("Destination", ""),
                        diagnosis=f"{who} cannot {doing} {target}: it is {kind}, which the hook never "
                                  f"changes (a change there would not outlive the container). Mount a host "
                                  f"directory or volume at {target} owned by {owner}")
    if not at_target.get("RW", True):
        return PathPlan(full, needs, target, None, where=at_target.get("Destination", ""),
                        diagnosis=f"{target} is on the read-only mount {at_target.get('Destination')}: no owner "
                                  f"makes it writable. Mount it read-write (drop `:ro`) or point the setting "
                                  f"elsewhere")
    dest = (at_target.get("Destination") or "").rstrip("/") or "/"
    sub = "" if target == dest else posixpath.relpath(target, dest)
    return _checked(PathPlan(full, needs, target, _mount(at_target, sub), where=dest), who)


def _mount(entry: dict, subpath: str, file: bool = False) -> DataMount:
    return DataMount(entry.get("Type", ""), entry.get("Source", ""), (entry.get("Destination") or "").rstrip("/")
                     or "/", subpath, entry.get("Name", ""), entry.get("Driver", ""), file=file)


def _checked(found: PathPlan, who: str) -> PathPlan:
    """found, or its diagnosis when the bind's host path is the host's own (a system directory)."""
    assert found.mount is not None
    if found.mount.type == "bind" and (why := system_area(posixpath.normpath(found.mount.host_path))):
        return PathPlan(found.path, found.needs, found.target, None, where=found.where,
                        diagnosis=f"{found.target} is the host's {found.mount.host_path}, which {why}: ownvol "
                                  f"never gives the host's own directories to {who}. Bind a directory of its own "
                                  f"there")
    return found


def path_of_detection(detail: dict, paths: dict[str, str]) -> tuple[str, str, str] | None:
    """(path, needs, setting) an incident's detection is about, from its detail (Detection.as_dict): the
    context's `path`, else the server setting `path_of` names, found in paths (Settings.paths); None when the
    detection names no path beside the data dir, or its setting is not known."""
    context = detail.get("context") or {}
    needs = detail.get("needs") or ("create" if context.get("path") else "")
    setting = detail.get("path_of") or ""
    if context.get("path"):
        named = context["path"]
        setting = setting or next((k for k, v in paths.items() if v == named), "")
        return named, "write-in" if context.get("directory") else needs or "create", setting
    if setting and paths.get(setting):
        return paths[setting], needs or "create", setting
    return None
