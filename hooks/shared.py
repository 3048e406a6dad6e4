"""A data mount shared with a container that owns it differently (issue 24, kind C; case 23).

Another container on the same volume or bind source changes its owner (an entrypoint's `chown redis:redis /data`
at every start, as in cedar2025/Xboard#930): each change is repaired and verified, and the same foreign owner comes
back. That is a conflict no repair ends. The hook keeps repairing (a verified repair never brings the breaker nearer:
hooks/breaker.py) and says so: which owner keeps coming back, which other containers mount the same source (the
engine lists them: hooks/executor.py DockerExecutor.sharers), and what ends it.

This module only reads the journal's facts and words them; it imports neither Docker nor a server's client.
"""

from __future__ import annotations

# A foreign owner repaired this many times within the window is a conflict.
RECURS = 2


def recurring(repairs: list[tuple[int, float, str, str, str]], incident_id: int) -> dict | None:
    """The conflict the incident's repair belongs to, or None.

    repairs: the container's repair-ownership steps that found a foreign owner, oldest first, as
    Journal.foreign_owners gives them: (incident id, started_at epoch seconds, owner found, owner repaired to,
    path). A conflict when the last of them is the incident's and its foreign owner was found at least RECURS
    times: {"foreign_owner", "owner", "path", "repeats", "first", "last"} (times in epoch seconds)."""
    if not repairs or repairs[-1][0] != incident_id:
        return None
    _, last, found, owner, path = repairs[-1]
    same = [r for r in repairs if r[2] == found]
    if len(same) < RECURS:
        return None
    return {"foreign_owner": found, "owner": owner, "path": path, "repeats": len(same), "first": same[0][1],
            "last": last}


def reported(repeats: int) -> bool:
    """Whether the conflict is reported at this repeat: at the 2nd, 4th, 8th, ... (the report backs off; the
    repairs never wait: a drift left alone is a save that fails and a server that refuses writes)."""
    return repeats >= RECURS and repeats & (repeats - 1) == 0


def advice(conflict: dict, others: list[dict] | None) -> str:
    """What the conflict is and what ends it, in words. others: the other containers on the same source
    ({"name", "status"}), None when the engine could not be asked."""
    window = max(conflict["last"] - conflict["first"], 0.0)
    head = (f"the owner of {conflict['path']} was changed to {conflict['foreign_owner']} {conflict['repeats']} times "
            f"in {window:.0f}s, and each time the hook gave it back to {conflict['owner']}")
    if others:
        names = ", ".join(f"{o['name']} ({o['status']})" for o in others)
        verb = "mounts the same source and may change" if len(others) == 1 else "mount the same source and may change"
        who = f"; {names} {verb} its owner (an entrypoint's chown)"
    elif others is None:
        who = "; the engine could not be asked which other containers mount the same source"
    else:
        who = "; no other container mounts it now: something on the host changes its owner"
    return (f"{head}{who}. The hook keeps repairing it; to end it, give each container its own volume, or give the "
            f"other container a view of the data with its own owner (an idmapped mount) or stop its chown")
