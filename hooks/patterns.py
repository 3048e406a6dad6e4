"""The catalogue of Redis's and Valkey's own persistence messages, as data, and the reader of their logs.

Each pattern says what failed (subject), when (start-up or run time), whether the server exits on it,
which context it carries (directory, file, errno text), and which versions print it: the wording was
checked in the sources of each (redis/redis branches 6.2, 7.0, 7.2, 7.4, 8.0; valkey-io/valkey 8.0) and
captured from the real servers of the test matrix (tests/golden: Redis 6.2.5, 7.0.15, 8.0.2, Valkey
8.0.1, 8.1.1). Redis 8.2 is tagged with 8.0's wording: neither its source nor a package of it is here.
The error type, which picks the recovery strategy, comes from the errno text when the line has one,
else from the pattern itself.

A log line's prefix is stripped in every format these servers write (src/server.c serverLogRaw):
`pid:role DD Mon YYYY HH:MM:SS.mmm L message` (all), Valkey 8.1's `log-timestamp-format iso8601`
(`YYYY-MM-DDTHH:MM:SS.mmm+HH:MM`) and `milliseconds` (epoch ms), and its `log-format logfmt`
(`pid=1 role=primary timestamp="..." level=warning message="..."`). The configuration loader's
`*** FATAL CONFIG FILE ERROR ***` block (src/config.c loadServerConfigFromString) is written to stderr
without a prefix: the header, then (when the error is on a line) `Reading the configuration file, at line N`
and `>>> 'directive'`, then the reason; 6.2 always writes the four lines, 7.0+ only the header and the reason
for an error found after the last line (`Can't open the log file: Permission denied`, captured): LogReader
puts either together, and a prefixed log line or another header ends a block, never joins it.

Paths (issue 24, kind A): a pattern about a path other than the data dir carries the path its message names
in the context key `path` (as the server printed it: absolute, or relative to its working directory, which is
its data dir), or, when the message names none, `path_of`: the server setting that holds it (`configfile`,
`unixsocket`, `logfile`, `cluster-config-file`; hooks/services/redis.py puts them in Settings.paths).
`needs` says what the server does there: `create` (a file in the directory holding the path: Sentinel's and
the cluster's temp file beside their config, the log file, the socket) or `read` (the file itself).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

_CLASSIC_TIME = r"\d{1,2} \w{3} \d{4} \d{2}:\d{2}:\d{2}\.\d{3}"
_ISO_TIME = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}(?:Z|[+-]\d{2}:?\d{2})?"
_MS_TIME = r"\d{12,14}"
# "1:M 26 Nov 2026 05:50:16.698 # message" (pid, role, time, level mark), any of the three time formats
_LOG_PREFIX = re.compile(rf"^\d+:[XCSM] (?:{_CLASSIC_TIME}|{_ISO_TIME}|{_MS_TIME}) [.\-*#] ")
_LOGFMT = re.compile(r'^pid=\d+ role=\S+ timestamp="[^"]*" level=\S+ message="(?P<message>.*)"$')

REDIS_VERSIONS = ("redis-6.2", "redis-7.0", "redis-7.2", "redis-7.4", "redis-8.0", "redis-8.2")
VALKEY_VERSIONS = ("valkey-8.0", "valkey-8.1")
ALL = REDIS_VERSIONS + VALKEY_VERSIONS
SINCE_7_0 = REDIS_VERSIONS[1:] + VALKEY_VERSIONS
SINCE_7_2 = REDIS_VERSIONS[2:] + VALKEY_VERSIONS
ONLY_6_2 = ("redis-6.2",)
UNTIL_7_0 = ("redis-6.2", "redis-7.0")
# Captured from the matrix's servers (tests/golden/*/paths-*.log); 7.2 and 7.4 are neither packaged here nor
# in the from-source files for these messages: untagged, not claimed.
CAPTURED = ("redis-6.2", "redis-7.0", "redis-8.0", "redis-8.2") + VALKEY_VERSIONS
SINCE_8_0 = ("redis-8.0", "redis-8.2") + VALKEY_VERSIONS

ERROR_TYPES = ("permission-denied", "read-only-filesystem", "no-space", "fork-failed", "io-error",
               "persistence-failed", "data-dir-in-use")

_ERRNO_TYPES = {
    "permission denied": "permission-denied",
    "operation not permitted": "permission-denied",
    "read-only file system": "read-only-filesystem",
    "no space left on device": "no-space",
    "disk quota exceeded": "no-space",
}


@dataclass(frozen=True)
class Pattern:
    """One Redis log message the hook recognises: its regex (named groups become the context), what it is about
    (subject), when Redis writes it (phase), whether Redis exits after it (fatal), and the error type when no errno
    says one. Each is checked against a line the real server wrote (tests/engine/test_hook_patterns.py)."""

    id: str
    regex: re.Pattern
    subject: str
    phase: str  # "startup" | "runtime"
    fatal: bool
    default_type: str = "persistence-failed"
    note: str = ""
    versions: tuple[str, ...] = ALL
    path_of: str = ""  # the server setting that holds the path the message is about, when it names none
    needs: str = ""  # create | read: what the server does at that path ("" for the data dir's own patterns)


@dataclass(frozen=True)
class Detection:
    """A log line that matched a Pattern: the line's message and the regex's named groups (errno, dir, file, ...)."""

    pattern: Pattern
    message: str
    context: dict = field(default_factory=dict)
    line: str = ""  # the log line (lines, for a block) as read

    @property
    def error_type(self) -> str:
        """The error type from the errno text Redis printed (`Permission denied` -> permission-denied; an unknown errno
        -> io-error), else the pattern's."""
        errno = self.context.get("errno")
        if errno and self.pattern.default_type != "fork-failed":
            return _ERRNO_TYPES.get(errno.strip().lower(), "io-error")
        return self.pattern.default_type

    def as_dict(self) -> dict:
        return {"pattern": self.pattern.id, "subject": self.pattern.subject, "phase": self.pattern.phase,
                "fatal": self.pattern.fatal, "error_type": self.error_type, "context": self.context,
                "message": self.message, "versions": list(self.pattern.versions),
                **({"path_of": self.pattern.path_of} if self.pattern.path_of else {}),
                **({"needs": self.pattern.needs} if self.pattern.needs else {})}


def _p(id: str, regex: str, subject: str, phase: str, fatal: bool, **kw) -> Pattern:
    return Pattern(id, re.compile(regex), subject, phase, fatal, **kw)


CATALOGUE: tuple[Pattern, ...] = (
    _p("aof-dir-open", r"^Can't open or create append-only dir (?P<dir>.+?): (?P<errno>[^:]+)$",
       "aof-dir", "startup", True, versions=SINCE_7_0),
    _p("aof-file-open", r"^Can't open the append-only file(?: (?P<file>.+?))?: (?P<errno>[^:]+)$",
       "aof-file", "startup", True, note="6.2 names no file: 'Can't open the append-only file: %s'"),
    _p("aof-file-read", r"^Fatal error: can't open the append log file(?: (?P<file>.+?))? for reading: (?P<errno>.+)$",
       "aof-file", "startup", True, note="a base/incr file that cannot be read (6.2 names no file)"),
    _p("aof-manifest-read",
       r"^Fatal error: can't open the AOF manifest file (?P<file>.+?) for reading: (?P<errno>.+)$",
       "aof-manifest", "startup", True, versions=SINCE_7_0),
    _p("aof-manifest-write", r"^Can't open the AOF manifest file (?P<file>.+?): (?P<errno>[^:]+)$",
       "aof-manifest", "startup", True, versions=SINCE_7_0),
    _p("aof-manifest-temp-write",
       r"^Error trying to write the temporary AOF manifest file (?P<file>.+?): (?P<errno>.+)$",
       "aof-manifest", "runtime", False, versions=SINCE_7_0,
       note="after a rewrite (run time) or when AOF is first turned on; the server keeps running"),
    _p("aof-manifest-rename",
       r"^Error trying to rename the temporary AOF manifest file (?P<file>.+?) into (?P<target>.+?): (?P<errno>.+)$",
       "aof-manifest", "runtime", False, versions=SINCE_7_0),
    _p("aof-rename",
       r"^Error trying to rename the temporary AOF file (?P<file>.+?) into (?P<target>.+?): (?P<errno>.+)$",
       "aof-rewrite", "runtime", False, versions=ONLY_6_2),
    _p("aof-rewrite-temp",
       r"^Opening the temp file for AOF rewrite in rewriteAppendOnlyFile\(\): (?P<errno>.+)$",
       "aof-rewrite", "runtime", False, note="logged by the rewrite child; the server keeps running"),
    _p("aof-rewrite-write", r"^Write error writing append only file on disk: (?P<errno>.+)$",
       "aof-write", "startup", True,
       note="7.0+: creating the base AOF at start-up, then exits; 6.2: the rewrite child, at run time"),
    _p("aof-rewrite-move", r"^Error moving temp append only file on the final destination: (?P<errno>.+)$",
       "aof-rewrite", "runtime", False),
    _p("rdb-file-read", r"^Fatal error: can't open the RDB file (?P<file>.+?) for reading: (?P<errno>.+)$",
       "rdb-file", "startup", True, versions=SINCE_7_2, note="6.2 and 7.0 say 'Fatal error loading the DB: %s'"),
    _p("rdb-load", r"^Fatal error loading the DB: (?P<errno>.+?)\. Exiting\.$",
       "rdb-file", "startup", True, versions=UNTIL_7_0),
    _p("rdb-load-failed", r"^Fatal error loading the DB, check server logs\. Exiting\.$",
       "rdb-file", "startup", True, versions=SINCE_7_2, note="follows the line that says why (rdb-file-read)"),
    _p("chdir", r"^Can't chdir to '(?P<dir>.+)': (?P<errno>.+)$", "data-dir", "startup", True, versions=ONLY_6_2,
       note="7.0+ report it in a FATAL CONFIG FILE ERROR block (config-fatal)"),
    _p("config-fatal", r"^\*\*\* FATAL CONFIG FILE ERROR \((?P<server>[^)]*)\) \*\*\*$", "config", "startup", True,
       note="a four-line block: header, 'Reading the configuration file, at line N', \">>> 'directive'\", "
            "the reason; a reason that is an errno text (a dir that cannot be entered) is what counts"),
    _p("aof-write", r"^Error writing to the AOF file: (?P<errno>.+)$", "aof-write", "runtime", False),
    _p("aof-short-write", r"^Short write while writing to the AOF file: \((?P<detail>[^)]*)\)",
       "aof-write", "runtime", False, default_type="no-space",
       note="Redis treats a short write as ENOSPC"),
    _p("aof-always-exit", r"^Can't recover from AOF write error when the AOF fsync policy is 'always'\. Exiting",
       "aof-write", "runtime", True, note="under appendfsync always a failed AOF write stops the server"),
    _p("aof-fsync-exit",
       r"^Can't persist AOF for fsync error when the AOF fsync policy is 'always': (?P<errno>.+?)\. Exiting",
       "aof-fsync", "runtime", True),
    _p("aof-fsync", r"^Fail to fsync (?:the AOF file|the temp AOF file (?P<file>.+?)|AOF directory (?P<dir>.+?)): "
                    r"(?P<errno>.+?)\.?$", "aof-fsync", "runtime", False,
       note="'the AOF file' in all; the temp file and the directory since 7.0"),
    _p("rdb-temp-open",
       r"^Failed opening the (?:temp )?RDB file (?P<file>.+?) \(in server root dir (?P<dir>.+)\) for saving: "
       r"(?P<errno>.+)$",
       "rdb-save", "runtime", False, note="6.2 says 'the RDB file dump.rdb', 7.0+ 'the temp RDB file temp-N.rdb'"),
    _p("rdb-write",
       r"^Write error (?:while saving DB to the disk|saving DB on disk)(?:\((?P<func>[^)]*)\))?: (?P<errno>.+)$",
       "rdb-save", "runtime", False, note="'saving DB on disk' until 7.0, 'while saving DB to the disk' since 7.2"),
    _p("rdb-move",
       r"^Error moving temp DB file (?P<file>.+?) on the final destination (?P<target>.+?) \(in server root dir "
       r"(?P<dir>.+)\): (?P<errno>.+)$", "rdb-save", "runtime", False),
    _p("rdb-dir-fsync", r"^Failed to fsync directory while saving DB: (?P<errno>.+)$", "rdb-save", "runtime",
       False, versions=SINCE_7_2),
    _p("bgsave-error", r"^Background saving error$", "rdb-save", "runtime", False),
    _p("aof-rewrite-error", r"^Background AOF rewrite terminated with error$", "aof-rewrite", "runtime", False),
    _p("bgsave-fork", r"^Can't save in background: fork: (?P<errno>.+)$", "fork", "runtime", False,
       default_type="fork-failed"),
    _p("aof-rewrite-fork", r"^Can't rewrite append only file in background: fork: (?P<errno>.+)$", "fork",
       "runtime", False, default_type="fork-failed"),
    _p("aof-rewrite-limited",
       r"^Background AOF rewrite has repeatedly failed and triggered the limit, will retry in "
       r"(?P<minutes>\d+) minutes?", "aof-rewrite", "runtime", False, versions=SINCE_7_0),
    _p("sentinel-config-not-writable",
       r"^Sentinel config file (?P<path>.+?) is not writable: (?P<errno>.+?)\. Exiting\.\.\.$",
       "sentinel-config", "startup", True, needs="create", versions=CAPTURED,
       note="src/sentinel.c sentinelCheckConfigFile: access(W_OK) of the config file; Sentinel then rewrites it "
            "through a temp file beside it, so the directory holding it must be writable too"),
    _p("config-temp-file", r"^Could not create tmp config file \((?P<errno>[^)]+)\)$", "sentinel-config",
       "runtime", False, path_of="configfile", needs="create", versions=CAPTURED,
       note="src/config.c rewriteConfigOverwriteFile: the temp file beside the config file (Sentinel's every "
            "save, CONFIG REWRITE)"),
    _p("sentinel-config-save",
       r"^WARNING: Sentinel was not able to save the new configuration on disk!!!: (?P<errno>.+)$",
       "sentinel-config", "runtime", False, path_of="configfile", needs="create", versions=CAPTURED,
       note="src/sentinel.c sentinelFlushConfig; its state (myid, epochs, failovers) is lost at the next start"),
    _p("cluster-config-lock", r"^Can't open (?P<path>.+?) in order to acquire a lock: (?P<errno>.+)$",
       "cluster-config", "startup", True, needs="create", versions=CAPTURED,
       note="src/cluster(_legacy).c clusterLockConfig: open(O_WRONLY|O_CREAT) of cluster-config-file, "
            "relative to the data dir"),
    _p("cluster-config-temp", r"^Could not open temp cluster config file: (?P<errno>.+)$", "cluster-config",
       "runtime", False, path_of="cluster-config-file", needs="create", versions=SINCE_8_0,
       note="clusterSaveConfig's temp file beside nodes.conf; followed by cluster-config-save, which exits"),
    _p("cluster-config-save", r"^Fatal: can't update cluster config file\.$", "cluster-config", "runtime", True,
       default_type="permission-denied", path_of="cluster-config-file", needs="create", versions=CAPTURED,
       note="clusterSaveConfigOrDie: the node exits; 6.2 and 7.0 rewrite nodes.conf in place and say no errno"),
    _p("unixsocket", r"^(?:Failed o|O)pening Unix socket: (?:(?P<call>[a-z]+): )?(?P<errno>.+)$", "unixsocket",
       "startup", True, path_of="unixsocket", needs="create", versions=CAPTURED,
       note="6.2 says 'Opening Unix socket: bind: %s', 7.0+ 'Failed opening Unix socket: %s'"),
    _p("acl-file", r"^Aborting (?:Redis|Valkey) startup because of ACL errors: Error loading ACLs, opening file "
                   r"'(?P<path>.+)': (?P<errno>.+)$", "acl-file", "startup", True, needs="read", versions=CAPTURED),
    _p("config-file-open", r"^Fatal error, can't open config file '(?P<path>.+)': (?P<errno>.+)$", "config-file",
       "startup", True, needs="read", versions=CAPTURED, note="the config file or one it includes"),
    _p("misconf", r"^-?MISCONF (?P<detail>.+?)(?:: (?P<errno>[A-Z][a-z ]+[a-z]))?$", "misconf", "runtime", False,
       note="a reply, not a log line: writes (and PING) are refused; Valkey's says 'Valkey is configured...'"),
)

BY_ID = {p.id: p for p in CATALOGUE}


def message_of(line: str) -> str:
    """The message of a log line, without its prefix (any format in the module docstring)."""
    line = line.rstrip("\r\n")
    logfmt = _LOGFMT.match(line)
    if logfmt:
        return logfmt.group("message").replace('\\"', '"')
    return _LOG_PREFIX.sub("", line, count=1)


def _search(message: str, catalogue: Iterable[Pattern]) -> tuple[Pattern, dict] | None:
    for pattern in catalogue:
        m = pattern.regex.search(message)
        if m:
            return pattern, {k: v for k, v in m.groupdict().items() if v is not None}
    return None


def match(line: str, catalogue: Iterable[Pattern] = CATALOGUE) -> Detection | None:
    """The first catalogue pattern the line (a log line or a MISCONF reply) matches, with its context.
    A FATAL CONFIG FILE ERROR header alone is not a detection: LogReader reads the block it begins."""
    message = message_of(line)
    found = _search(message, catalogue)
    if found is None or found[0].id == "config-fatal":
        return None
    return Detection(found[0], message, found[1], line.rstrip("\r\n"))


_BLOCK_LINE = re.compile(r"^Reading the configuration file, at line (?P<number>\d+)$")
_BLOCK_DIRECTIVE = re.compile(r"^>>> '(?P<directive>.*)'$")
BLOCK_LINES = 4
# a block's reason that names a file the server could not open, with the setting that holds its path
_BLOCK_REASONS = ((re.compile(r"^Can't open the log file: (?P<errno>.+)$"), "logfile"),)


class LogReader:
    """Reads a log a line at a time, as `docker logs` gives it, and says what each line (or the block it
    ends) means. One reader per log: it remembers an unfinished FATAL CONFIG FILE ERROR block."""

    def __init__(self, catalogue: Iterable[Pattern] = CATALOGUE) -> None:
        self.catalogue = tuple(catalogue)
        self._block: list[str] = []
        self._header: tuple[Pattern, dict] | None = None

    def feed(self, line: str) -> Detection | None:
        """The detection this line completes, else None. A block ends at its reason line; a line with a log
        prefix, or another header, ends an unfinished block (never read as its reason) and is read itself."""
        message = message_of(line)
        if self._header is not None:
            if _LOG_PREFIX.match(line) or _LOGFMT.match(line):
                self._header, self._block = None, []
            else:
                return self._in_block(message)
        found = _search(message, self.catalogue)
        if found is None:
            return None
        if found[0].id == "config-fatal":
            self._header, self._block = found, [message]
            return None
        return Detection(found[0], message, found[1], line.rstrip("\r\n"))

    def _in_block(self, message: str) -> Detection | None:
        if not message.strip():
            return None
        header = _search(message, self.catalogue)
        if header is not None and header[0].id == "config-fatal":
            self._header, self._block = header, [message]
            return None
        self._block.append(message)
        at_line = len(self._block) == 2 and _BLOCK_LINE.match(message.strip())
        if at_line or (len(self._block) == 3 and _BLOCK_LINE.match(self._block[1].strip())):
            return None
        return self._finish()

    def _finish(self) -> Detection | None:
        assert self._header is not None
        (pattern, context), block = self._header, self._block
        self._header, self._block = None, []
        reason = block[-1].strip()
        context = dict(context)
        if len(block) == BLOCK_LINES:
            if m := _BLOCK_LINE.match(block[1].strip()):
                context["config_line"] = m.group("number")
            if m := _BLOCK_DIRECTIVE.match(block[2].strip()):
                context["directive"] = m.group("directive")
        words = context.get("directive", "").split(None, 1)
        name = words[0].lower() if words else ""
        value = words[1].strip().strip('"\'') if len(words) > 1 else ""
        extra: dict = {}
        if reason.lower() in _ERRNO_TYPES:
            context["errno"] = reason
            if name == "dir" and value:
                context["dir"] = value
        else:
            for regex, setting in _BLOCK_REASONS:
                if m := regex.match(reason):
                    context["errno"] = m.group("errno")
                    if name == setting and value:
                        context["path"] = value
                    else:
                        extra["path_of"] = setting
                    extra["needs"] = "create"
                    break
            else:
                return None  # a configuration mistake (a bad directive), not the data's ownership or disk
        detection = Detection(pattern, " / ".join(b.strip() for b in block), context, "\n".join(block))
        return _with(detection, **extra) if extra else detection


def _with(detection: Detection, path_of: str = "", needs: str = "") -> Detection:
    """detection whose pattern says path_of and needs (a block's reason that names a path, not the pattern)."""
    pattern = replace(detection.pattern, path_of=path_of or detection.pattern.path_of, needs=needs)
    return replace(detection, pattern=pattern)


def read_log(lines: Iterable[str], catalogue: Iterable[Pattern] = CATALOGUE) -> list[tuple[int, Detection]]:
    """Every detection in a whole log, with the (1-based) number of the line that completes it."""
    reader = LogReader(catalogue)
    found = []
    for number, line in enumerate(lines, 1):
        detection = reader.feed(line)
        if detection:
            found.append((number, detection))
    return found
