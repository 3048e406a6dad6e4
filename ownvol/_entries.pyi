"""ownvol._entries (ownvol/_entries.c): the walk's per-entry loop compiled."""

def fix(
    dir_fd: int, uid: int, gid: int, dev: int, needs: int, names: list[str] | None = None,
) -> tuple[list[str], tuple[int, int, int, int, int], list[tuple[str, int]], list[tuple[str, int, int]], int]: ...
