"""The catalogue of Redis's own persistence messages (Redis 7.x), as data.

Each pattern says what failed (subject), when (start-up or run time), whether Redis exits
on it, and which context it carries (directory, file, errno text). The error type, which
picks the recovery strategy, comes from the errno text when the line has one, else from
the pattern itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# "1:M 26 Nov 2026 05:50:16.698 # message" (pid, role, date, level mark)
_LOG_PREFIX = re.compile(r"^\d+:[XCSM] \d{1,2} \w{3} \d{4} \d{2}:\d{2}:\d{2}\.\d{3} [.\-*#] ")

ERROR_TYPES = ("permission-denied", "read-only-filesystem", "no-space", "fork-failed", "io-error",
               "persistence-failed")

_ERRNO_TYPES = {
    "permission denied": "permission-denied",
    "operation not permitted": "permission-denied",
    "read-only file system": "read-only-filesystem",
    "no space left on device": "no-space",
    "disk quota exceeded": "no-space",
}


@dataclass(frozen=True)
class Pattern:
    id: str
    regex: re.Pattern
    subject: str
    phase: str  # "startup" | "runtime"
    fatal: bool
    default_type: str = "persistence-failed"
    note: str = ""


@dataclass(frozen=True)
class Detection:
    pattern: Pattern
    message: str
    context: dict = field(default_factory=dict)

    @property
    def error_type(self) -> str:
        errno = self.context.get("errno")
        if errno and self.pattern.default_type != "fork-failed":
            return _ERRNO_TYPES.get(errno.strip().lower(), "io-error")
        return self.pattern.default_type

    def as_dict(self) -> dict:
        return {"pattern": self.pattern.id, "subject": self.pattern.subject, "phase": self.pattern.phase,
                "fatal": self.pattern.fatal, "error_type": self.error_type, "context": self.context,
                "message": self.message}


def _p(id: str, regex: str, subject: str, phase: str, fatal: bool, **kw) -> Pattern:
    return Pattern(id, re.compile(regex), subject, phase, fatal, **kw)


CATALOGUE: tuple[Pattern, ...] = (
    _p("aof-dir-open", r"^Can't open or create append-only dir (?P<dir>.+?): (?P<errno>[^:]+)$",
       "aof-dir", "startup", True),
    _p("aof-file-open", r"^Can't open the append-only file (?P<file>.+?): (?P<errno>[^:]+)$",
       "aof-file", "startup", True),
    _p("aof-file-read", r"^Fatal error: can't open the append log file (?P<file>.+?) for reading: (?P<errno>.+)$",
       "aof-file", "startup", True, note="the 7.0 wording of a base/incr file that cannot be read"),
    _p("aof-manifest-read",
       r"^Fatal error: can't open the AOF manifest file (?P<file>.+?) for reading: (?P<errno>.+)$",
       "aof-manifest", "startup", True),
    _p("aof-manifest-write", r"^Can't open the AOF manifest file (?P<file>.+?): (?P<errno>[^:]+)$",
       "aof-manifest", "startup", True),
    _p("aof-rewrite-temp",
       r"^Opening the temp file for AOF rewrite in rewriteAppendOnlyFile\(\): (?P<errno>.+)$",
       "aof-rewrite", "runtime", False, note="logged by the rewrite child; the server keeps running"),
    _p("rdb-file-read", r"^Fatal error: can't open the RDB file (?P<file>.+?) for reading: (?P<errno>.+)$",
       "rdb-file", "startup", True, note="newer wording; 7.0 says 'Fatal error loading the DB'"),
    _p("rdb-load", r"^Fatal error loading the DB: (?P<errno>.+?)\. Exiting\.$",
       "rdb-file", "startup", True, note="the 7.0 wording of an RDB file that cannot be read"),
    _p("aof-write", r"^Error writing to the AOF file: (?P<errno>.+)$", "aof-write", "runtime", False),
    _p("aof-short-write", r"^Short write while writing to the AOF file: \((?P<detail>[^)]*)\)",
       "aof-write", "runtime", False, default_type="no-space",
       note="Redis treats a short write as ENOSPC"),
    _p("rdb-temp-open",
       r"^Failed opening the temp RDB file (?P<file>.+?) \(in server root dir (?P<dir>.+)\) for saving: (?P<errno>.+)$",
       "rdb-save", "runtime", False),
    _p("rdb-write",
       r"^Write error (?:while saving DB to the disk|saving DB on disk)(?:\((?P<func>[^)]*)\))?: (?P<errno>.+)$",
       "rdb-save", "runtime", False),
    _p("bgsave-error", r"^Background saving error$", "rdb-save", "runtime", False),
    _p("aof-rewrite-error", r"^Background AOF rewrite terminated with error$", "aof-rewrite", "runtime", False),
    _p("bgsave-fork", r"^Can't save in background: fork: (?P<errno>.+)$", "fork", "runtime", False,
       default_type="fork-failed"),
    _p("aof-rewrite-fork", r"^Can't rewrite append only file in background: fork: (?P<errno>.+)$", "fork",
       "runtime", False, default_type="fork-failed"),
    _p("aof-rewrite-limited",
       r"^Background AOF rewrite has repeatedly failed and triggered the limit, "
       r"will retry in (?P<minutes>\d+) minutes?",
       "aof-rewrite", "runtime", False),
    _p("misconf", r"^-?MISCONF (?P<detail>.+?)(?:: (?P<errno>[A-Z][a-z ]+[a-z]))?$", "misconf", "runtime", False,
       note="a reply, not a log line: writes (and PING) are refused"),
)

BY_ID = {p.id: p for p in CATALOGUE}


def message_of(line: str) -> str:
    """The message of a Redis log line, without its pid/role/time/level prefix."""
    return _LOG_PREFIX.sub("", line.rstrip("\r\n"), count=1)


def match(line: str) -> Detection | None:
    """The first catalogue pattern the line (a log line or a MISCONF reply) matches, with its context."""
    message = message_of(line)
    for pattern in CATALOGUE:
        m = pattern.regex.search(message)
        if m:
            context = {k: v for k, v in m.groupdict().items() if v is not None}
            return Detection(pattern, message, context)
    return None
