"""Host paths ownvol never gives to a container's user: the driver refuses to adopt them, the hook to repair them."""

from __future__ import annotations

# Never adopted or repaired, nor anything below them.
SYSTEM_TREES = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run", "/sbin",
    "/sys", "/usr", "/var/run", "/var/lib/docker", "/var/lib/containerd", "/var/lib/dpkg", "/var/lib/apt",
    "/var/log", "/var/cache", "/var/spool", "/snap",
)
# Never adopted or repaired themselves (a directory below them may be).
SYSTEM_DIRS = ("/", "/home", "/mnt", "/media", "/opt", "/root", "/srv", "/tmp", "/var", "/var/lib", "/var/tmp")


def system_area(path: str, extra_trees: tuple[str, ...] = ()) -> str | None:
    """Why a normalised absolute path is the host's own (a system directory, or inside a system tree); None if not."""
    if path in SYSTEM_DIRS:
        return "is a system directory"
    for tree in SYSTEM_TREES + extra_trees:
        if path == tree or path.startswith(tree + "/"):
            return f"is inside {tree}"
    return None
