"""Docker's times, read and told: one parser for the engine's RFC 3339 stamps, one "ago".

The engine writes times as RFC 3339 with up to nine fractional digits, in UTC with a ``Z`` (moby
``api/types/events``'s ``timeNano`` beside ``time``, ``daemon/logger/jsonfilelog``'s ``time``, the
container's ``State.StartedAt``/``FinishedAt``); a container never started has Go's zero time,
``0001-01-01T00:00:00Z``. Python's ``datetime`` keeps microseconds only, so the fraction is read apart.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

_STAMP = re.compile(r"^(?P<whole>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(?P<frac>\d{1,9}))?"
                    r"(?P<zone>Z|[+-]\d\d:\d\d)?$")

ZERO_TIME_PREFIX = "0001-"


def timestamp_ns(stamp: str) -> int:
    """An engine stamp ("2026-11-30T04:28:38.474123456Z", "+01:00" offsets, no zone read as UTC) -> nanoseconds
    since the epoch.

    Raises:
        ValueError: the stamp is not RFC 3339 as the engine writes it.
    """
    match = _STAMP.match(stamp.strip())
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {stamp!r}")
    moment = datetime.fromisoformat(match["whole"]).replace(tzinfo=UTC)
    zone = match["zone"]
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        moment -= sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    seconds = int((moment - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds())
    return seconds * 1_000_000_000 + int(((match["frac"] or "") + "000000000")[:9])


def state_time_ns(stamp: str | None) -> int:
    """A container's State time in nanoseconds; 0 for none, Go's zero time or an unreadable stamp."""
    if not stamp or stamp.startswith(ZERO_TIME_PREFIX):
        return 0
    try:
        return max(0, timestamp_ns(stamp))
    except ValueError:
        return 0


def state_time(stamp: str | None) -> float | None:
    """A container's State time in epoch seconds; None for none, Go's zero time or an unreadable stamp."""
    ns = state_time_ns(stamp)
    return ns / 1e9 if ns else None


def ago(moment: float | None, now: float | None = None) -> str:
    """How long ago an epoch time was, in one unit: "42s", "5m" (from 2 minutes), "3h" (from 2 hours),
    "2d" (from 2 days); "" for None or 0. A moment in the future reads "0s"."""
    if not moment:
        return ""
    seconds = max(0, int((time.time() if now is None else now) - moment))
    for unit, size in (("d", 172800), ("h", 7200), ("m", 120)):
        if seconds >= size:
            return f"{seconds // (size // 2)}{unit}"
    return f"{seconds}s"
