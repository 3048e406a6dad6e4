"""Check and repair who owns a data directory, without ever leaving it.

The driver's Mount preflight and the hook's repair are the same operation and both call
this module. The walk is fd-relative from a root opened with O_NOFOLLOW: symlinks are
re-owned themselves (never their targets), a directory is only entered through an fd
opened with O_NOFOLLOW|O_DIRECTORY (so a directory swapped for a link mid-walk is
refused, not followed), every other entry is re-owned through an O_PATH|O_NOFOLLOW fd
(the inode checked is the inode changed, whatever happens to its name meanwhile), the walk
stays on the root's filesystem, files that vanish are counted, and entries with more than
one hard link are left alone and reported, because their other name may lie outside the volume.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import select
import stat
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_ENTRY_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_AT_SYMLINK_NOFOLLOW = 0x100
_AT_EMPTY_PATH = 0x1000
_CHOWN_FD = _AT_EMPTY_PATH | _AT_SYMLINK_NOFOLLOW  # fchownat(fd, "", ...): the inode an O_PATH fd holds
_libc = ctypes.CDLL(None, use_errno=True)
# int fchownat(int dirfd, const char *path, uid_t owner, gid_t group, int flags): called without argtypes, with
# uid_t/gid_t passed as c_uint32 objects made once per directory (argtypes conversion was 0.45 us of a file's 8 us)
_fchownat = _libc.fchownat


_compiled: ModuleType | None  # the per-entry loop compiled (ownvol/_entries.c; setup.py builds it where gcc is)
try:
    from ownvol import _entries as _compiled
except ImportError:  # a machine without a C compiler: the Python loop, the same walk
    _compiled = None

_COUNTS = ("changed", "visited", "vanished", "skipped_hardlinks", "skipped_other_fs")


class OwnershipError(Exception):
    """The root itself cannot be checked or repaired (missing, a symlink, not a directory)."""


@dataclass
class RootState:
    """What inspect_root found at a volume's root: its owner and mode (mode: permission bits), ok when they are the
    wanted ones, else one problem per mismatch (`owner 0:0, want 999:999`)."""

    path: str
    uid: int
    gid: int
    mode: int
    ok: bool
    problems: list[str] = field(default_factory=list)


@dataclass
class RepairReport:
    """What a repair did: entries visited and changed (re-owned or re-moded), vanished mid-walk, left alone
    (hard-linked, on another filesystem), error texts, the walk's wall time in seconds, and each mode it changed
    (`PATH OLD->NEW`, PATH relative to the root, "." for the root itself, modes in octal; MODES_KEPT at most)."""

    path: str
    changed: int = 0
    visited: int = 0
    vanished: int = 0
    skipped_hardlinks: int = 0
    skipped_other_fs: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    modes: list[str] = field(default_factory=list)
    modes_changed: int = 0
    root: RootState | None = None  # the root as the repair left it (fstat of its descriptor after the change)

    def mode_changed(self, where: str, old: int, new: int) -> None:
        self.modes_changed += 1
        if len(self.modes) < MODES_KEPT:
            self.modes.append(f"{where} {old:04o}->{new:04o}")

    def counts(self) -> dict:
        """The counts, up to 100 errors and the modes changed, as a forked walker hands them to its parent
        (merge_counts)."""
        return {k: getattr(self, k) for k in _COUNTS} | {"errors": self.errors[:100], "modes": self.modes,
                                                         "modes_changed": self.modes_changed}

    def merge_counts(self, counts: dict) -> None:
        for k in _COUNTS:
            setattr(self, k, getattr(self, k) + counts[k])
        self.errors.extend(counts["errors"])
        self.modes.extend(counts["modes"][:max(0, MODES_KEPT - len(self.modes))])
        self.modes_changed += counts["modes_changed"]

    def as_dict(self) -> dict:
        """The report as JSON: counts, the first 10 errors, seconds (the repair helper prints this line), and when a
        mode was changed, "modes" (each change, MODES_KEPT at most) and "modes_changed" (how many in all)."""
        changed_modes = {"modes": self.modes, "modes_changed": self.modes_changed} if self.modes_changed else {}
        return {k: getattr(self, k) for k in _COUNTS} | {
            "errors": self.errors[:10],
            "seconds": round(self.seconds, 6),
        } | changed_modes


MODES_KEPT = 100  # mode changes a report lists one by one (modes_changed counts them all)
# What a server needs of the entries it owns in its data dir: to list, create in, rename in and search its
# directories, and to read and write its files (every file PostgreSQL, MariaDB, Redis and Valkey keep there is
# one they open read-write or replace; none is meant read-only to its own server).
DIR_NEEDS = stat.S_IRWXU
FILE_NEEDS = stat.S_IRUSR | stat.S_IWUSR


Progress = Callable[[int, int], None]  # (entries walked so far, entries changed so far)
PROGRESS_EVERY = 0.25  # seconds between two progress calls
# The repair helper container (`ownvol repair-mount`) prints its progress on stderr when PROGRESS_ENV is set,
# one line each: PROGRESS_LINE then {"walked": N, "changed": N}. An older image ignores the variable.
PROGRESS_ENV = "OWNVOL_REPAIR_PROGRESS"
PROGRESS_LINE = "progress "


class _Meter:
    """Every walker's counts of one repair in a shared anonymous mapping (the walkers are forked, so a plain
    counter would not be seen), summed for `progress` in the parent at most every `every` seconds.

    The mapping is read while the walkers write it, so each count is one aligned 8-byte store through a memoryview
    cast: struct.pack_into zeroes the whole slot before it packs (Modules/_struct.c, s_pack_internal), and a sum
    read in between counted back."""

    def __init__(self, progress: Progress, workers: int, every: float) -> None:
        self.progress = progress
        self.every = every
        self.shared = memoryview(mmap.mmap(-1, 16 * max(1, workers))).cast("q")  # (walked, changed) a walker
        self.slot = 0  # this walker's; 0 is the parent, the only one that calls progress
        self._next = 0.0

    def tick(self, report: RepairReport, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + self.every
        self._store(self.slot, report.visited, report.changed)
        if self.slot == 0:
            counts = self.shared.tolist()
            self.progress(sum(counts[0::2]), sum(counts[1::2]))

    def merged(self, slot: int) -> None:
        """A walker's counts are now in the parent's report: its slot no longer counts."""
        self._store(slot, 0, 0)

    def _store(self, slot: int, walked: int, changed: int) -> None:
        self.shared[2 * slot] = walked
        self.shared[2 * slot + 1] = changed


def _open_root(path: str) -> int:
    try:
        return os.open(path, _DIR_FLAGS)
    except FileNotFoundError:
        raise OwnershipError(f"{path} does not exist") from None
    except OSError as exc:
        if os.path.islink(path):
            raise OwnershipError(f"{path} is a symlink; ownvol never follows one") from None
        raise OwnershipError(f"cannot open {path}: {exc.strerror}") from None


def inspect_root(path: str, uid: int, gid: int, mode: int | None = None) -> RootState:
    """Look at the root only: one lstat, whatever the size of the tree below."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise OwnershipError(f"{path} does not exist") from None
    if stat.S_ISLNK(st.st_mode):
        raise OwnershipError(f"{path} is a symlink; ownvol never follows one")
    if not stat.S_ISDIR(st.st_mode):
        raise OwnershipError(f"{path} is not a directory")
    return _root_state(path, st, uid, gid, mode)


def _root_state(path: str, st: os.stat_result, uid: int, gid: int, mode: int | None) -> RootState:
    problems = []
    if st.st_uid != uid or st.st_gid != gid:
        problems.append(f"owner {st.st_uid}:{st.st_gid}, want {uid}:{gid}")
    actual_mode = stat.S_IMODE(st.st_mode)
    if mode is not None and actual_mode != mode:
        problems.append(f"mode {actual_mode:04o}, want {mode:04o}")
    return RootState(path, st.st_uid, st.st_gid, actual_mode, not problems, problems)


def mode_for(current: int, accepted: tuple[int, ...] = ()) -> int | None:
    """The mode a repair gives a data dir whose permission bits (stat.S_IMODE) are `current`, the dir being owned,
    once repaired, by the server's uid: None when it can stay as it is.

    With `accepted` (the modes the server demands, PostgreSQL's 0700 and 0750: src/backend/utils/init/miscinit.c
    checkDataDir): None when current is one of them, else the first. Without: the owner's read, write and search
    bits added (u+rwx, what a server needs to list, create, rename in and enter its dir) and nothing else: the
    group's and others' bits, setgid and sticky stay as they are, so the result is never looser for anyone
    but the owner."""
    if accepted:
        return None if current in accepted else accepted[0]
    wanted = current | DIR_NEEDS
    return None if wanted == current else wanted


def mode_to_set(path: str, accepted: tuple[int, ...]) -> int | None:
    """mode_for the directory at path (lstat, never followed)."""
    return mode_for(stat.S_IMODE(os.lstat(path).st_mode), accepted)


def repair(
    path: str, uid: int, gid: int, mode: int | None = None, *, walk: bool = True, workers: int = 2,
    progress: Progress | None = None, progress_every: float = PROGRESS_EVERY, usable: bool = False,
) -> RepairReport:
    """Give the root (and, with walk, everything below it on the same filesystem) to uid:gid.

    mode, when given, applies to the root directory only: the tree's own modes are the
    application's business, except with usable (the hook's repair of a server's data dir): then each
    directory below that its owner cannot list, write or search gets u+rwx (DIR_NEEDS) and each regular file it
    cannot read or write gets u+rw (FILE_NEEDS), nothing else; symlinks, devices and the like keep theirs. The
    report lists every mode changed (RepairReport.modes). The tree is cut into units which `workers` walkers
    (this process and forked children) take from one queue, so a large repair uses more than one core. progress,
    when given, is called with the entries walked and changed so far (all walkers together) at most every
    progress_every seconds while the walk goes on, and once more with the report's own counts at the end.
    """
    report = RepairReport(path)
    meter = _Meter(progress, workers, progress_every) if progress and walk else None
    started = time.monotonic()
    root_fd = _open_root(path)
    fix = _Fix(uid, gid, usable)
    try:
        st = os.fstat(root_fd)
        report.visited += 1
        wrong_owner = st.st_uid != uid or st.st_gid != gid
        wrong_mode = mode is not None and stat.S_IMODE(st.st_mode) != mode
        if wrong_owner:
            os.fchown(root_fd, uid, gid)
        if wrong_mode and mode is not None:
            os.fchmod(root_fd, mode)
            report.mode_changed(".", stat.S_IMODE(st.st_mode), mode)
        report.changed += int(wrong_owner or wrong_mode)
        report.root = _root_state(path, os.fstat(root_fd) if wrong_owner or wrong_mode else st, uid, gid, mode)
        if walk:
            _walk_shared(root_fd, st.st_dev, fix, report, max(1, workers), meter)
    finally:
        os.close(root_fd)
    report.seconds = time.monotonic() - started
    if progress:
        progress(report.visited, report.changed)
    return report


@dataclass(frozen=True)
class _Fix:
    """What the walk gives each entry: its owner, and with usable the owner's bits a server needs
    (DIR_NEEDS, FILE_NEEDS; 0: modes are left alone)."""

    uid: int
    gid: int
    usable: bool = False

    @property
    def dir_needs(self) -> int:
        return DIR_NEEDS if self.usable else 0

    @property
    def file_needs(self) -> int:
        return FILE_NEEDS if self.usable else 0


def _chmod_held(fd: int, mode: int) -> None:
    """chmod the inode an O_PATH fd holds (a regular file, checked by the caller's fstat of that fd): fchmod refuses
    O_PATH fds and fchmodat has no AT_EMPTY_PATH before fchmodat2 (Linux 6.6), so through its /proc/self/fd
    link, as glibc's fchmodat(AT_SYMLINK_NOFOLLOW) does (sysdeps/unix/sysv/linux/fchmodat.c)."""
    os.chmod(f"/proc/self/fd/{fd}", mode)


def _fix_entries(dir_fd: int, where: str, dev: int, fix: _Fix, report: RepairReport) -> list[str]:
    """Re-own the non-directory entries of one directory (`where`, relative to the root); return its subdirectory
    names."""
    if _compiled is not None:
        return _fix_compiled(dir_fd, where, None, dev, fix, report)
    return _fix_listed(dir_fd, where, _listing(dir_fd, report), dev, fix, report)


def _listing(dir_fd: int, report: RepairReport) -> list[os.DirEntry]:
    """The entries of the directory dir_fd ([] with the error reported when it cannot be listed)."""
    try:
        return list(os.scandir(dir_fd))
    except OSError as exc:
        report.errors.append(f"listing a directory: {exc.strerror}")
        return []


def _split(entries: list) -> tuple[list[str], list]:
    """A listing's entries (os.DirEntry or alike) in one pass: the names of those listed as directories, and the
    other entries."""
    dirs: list[str] = []
    others: list = []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            dirs.append(entry.name)
        else:
            others.append(entry)
    return dirs, others


def _fix_listed(dir_fd: int, where: str, entries: list, dev: int, fix: _Fix, report: RepairReport) -> list[str]:
    """Re-own the listed non-directory entries (os.DirEntry or alike: name, is_dir(follow_symlinks=False)) of the
    directory dir_fd (`where`, relative to the root); return the subdirectory names, with those listed as something
    else that are directories by the time they are opened. With fix.usable, a regular file its owner cannot read
    or write also gets u+rw.

    Each non-directory entry is re-owned (and re-moded) through an O_PATH fd, so the inode checked is the inode
    changed (a name swapped between the listing and the chown cannot redirect it). The loop is the walk's per-file
    cost (BENCHMARKS.md, repair_vs_chown_ratio): ownvol._entries when it is built, else this loop, with the os
    functions bound once and the counts kept in locals."""
    if _compiled is not None:
        listed_dirs, others = _split(entries)
        report.visited += len(listed_dirs)
        return listed_dirs + _fix_compiled(dir_fd, where, [entry.name for entry in others], dev, fix, report)
    subdirs: list[str] = []
    open_fd, fstat, close, fchownat = os.open, os.fstat, os.close, _fchownat
    is_dir_mode, is_reg = stat.S_ISDIR, stat.S_ISREG
    uid, gid, needs = fix.uid, fix.gid, fix.file_needs
    c_uid, c_gid = ctypes.c_uint32(uid), ctypes.c_uint32(gid)
    visited = changed = vanished = hardlinks = other_fs = 0
    for entry in entries:
        name = entry.name
        try:
            if entry.is_dir(follow_symlinks=False):
                visited += 1
                subdirs.append(name)
                continue
            fd = open_fd(name, _ENTRY_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            vanished += 1
            continue
        visited += 1
        try:
            st = fstat(fd)
            lacks = needs and st.st_mode & needs != needs and is_reg(st.st_mode)
            if is_dir_mode(st.st_mode):
                subdirs.append(name)
            elif st.st_dev != dev:
                other_fs += 1
            elif st.st_uid == uid and st.st_gid == gid and not lacks:
                pass
            elif st.st_nlink > 1:
                hardlinks += 1
            else:
                if (st.st_uid != uid or st.st_gid != gid) and fchownat(fd, b"", c_uid, c_gid, _CHOWN_FD) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err))
                if lacks:
                    old = stat.S_IMODE(fstat(fd).st_mode)  # a chown just made may have cleared setuid/setgid
                    _chmod_held(fd, old | needs)
                    report.mode_changed(f"{where}{name}", old, old | needs)
                changed += 1
        except OSError as exc:
            report.errors.append(f"{name}: {exc.strerror}")
        finally:
            close(fd)
    report.visited += visited
    report.changed += changed
    report.vanished += vanished
    report.skipped_hardlinks += hardlinks
    report.skipped_other_fs += other_fs
    return subdirs


def _fix_compiled(dir_fd: int, where: str, names: list[str] | None, dev: int, fix: _Fix,
                  report: RepairReport) -> list[str]:
    """_fix_listed through ownvol._entries: names, the entries listed as non-directories (None: it lists dir_fd
    itself). Counts, errors and modes are the Python loop's, word for word."""
    assert _compiled is not None
    subdirs, counts, errors, modes, listing_errno = _compiled.fix(dir_fd, fix.uid, fix.gid, dev, fix.file_needs, names)
    if listing_errno:
        report.errors.append(f"listing a directory: {os.strerror(listing_errno)}")
        return []
    visited, changed, vanished, hardlinks, other_fs = counts
    report.visited += visited
    report.changed += changed
    report.vanished += vanished
    report.skipped_hardlinks += hardlinks
    report.skipped_other_fs += other_fs
    report.errors.extend(f"{name}: {os.strerror(err)}" for name, err in errors)
    for name, old, new in modes:
        report.mode_changed(f"{where}{name}", old, new)
    return subdirs


# How a repair's walk is shared among its forked walkers (_walk_shared)
_UNITS_PER_WALKER = 8  # the walk is cut into at least this many units a walker, so one slowed takes fewer
_CHUNK = 1000  # most entries of one directory in one unit: a large flat directory is shared too
_BATCHES_MAX = 1024  # the queue's 4-byte records fit one page, what any pipe holds (pipe(7), pipe-user-pages-soft)
_OPENED_MAX = 64  # most directories the planning enters (their fds held until every walker is done)


@dataclass(frozen=True)
class _Unit:
    """One piece of a shared walk, below the directory dir_fd (`where`, relative to the root): the subtree `name`,
    or with entries (os.DirEntry, listed as non-directories), those entries of dir_fd itself."""

    dir_fd: int
    where: str
    name: str = ""
    entries: tuple = ()


def _walk_shared(root_fd: int, dev: int, fix: _Fix, report: RepairReport, workers: int,
                 meter: _Meter | None = None) -> None:
    """Walk below root_fd with `workers` walkers: the parent and workers - 1 forked children (the walk's cost is the
    kernel's, a few syscalls an entry, which one core cannot do faster). The tree is cut into units (_plan), and
    each walker takes the next batch of units from one queue until it is empty, so a walker slowed by the
    machine's other work takes fewer instead of being waited for. A child reports the batches it walked with its
    counts when it is done; a batch no successful walker reported is walked again here (a repair is idempotent). A
    tree the planning saw whole with fewer than _CHUNK entries left is walked here alone (a data dir of a few
    files: no fork)."""
    if workers == 1:
        _walk(root_fd, _fix_entries(root_fd, "", dev, fix, report), dev, fix, report, meter)
        return
    units, opened = _plan(root_fd, dev, fix, report, workers * _UNITS_PER_WALKER)
    try:
        if all(unit.entries for unit in units) and sum(len(unit.entries) for unit in units) < _CHUNK:
            _walk_batch(units, dev, fix, report, meter)  # the whole tree is planned and small: not worth a fork
            return
        size = -(-len(units) // _BATCHES_MAX)
        batches = [units[k:k + size] for k in range(0, len(units), size)]
        queue = _queue(len(batches))
        try:
            children = _fork_walkers(queue, batches, dev, fix, report, min(workers, len(batches)) - 1, meter)
            done: set[int] = set()
            try:
                _take(queue, batches, dev, fix, report, meter, done.add)
            finally:
                for child in children:
                    done |= _collect(child, report, meter)
        finally:
            os.close(queue)
        for k in sorted(set(range(len(batches))) - done):
            _walk_batch(batches[k], dev, fix, report, meter)
    finally:
        for fd in opened:
            os.close(fd)


def _plan(root_fd: int, dev: int, fix: _Fix, report: RepairReport, want: int) -> tuple[list[_Unit], list[int]]:
    """Cut the walk below root_fd into units: the root's subtrees and its other entries in chunks of _CHUNK; while
    there are fewer than `want`, the first subtree is entered and cut the same way (at most _OPENED_MAX of them).
    Returns the units, subtrees before chunks, and the fds of the directories entered, which the caller closes
    once the walk is done."""
    subtrees: deque[_Unit] = deque()
    chunks: list[_Unit] = []
    opened: list[int] = []

    def cut(dir_fd: int, where: str) -> None:
        dirs, others = _split(_listing(dir_fd, report))
        report.visited += len(dirs)
        subtrees.extend(_Unit(dir_fd, where, name) for name in dirs)
        chunks.extend(_Unit(dir_fd, where, entries=tuple(others[k:k + _CHUNK])) for k in range(0, len(others), _CHUNK))

    cut(root_fd, "")
    try:
        while subtrees and len(subtrees) + len(chunks) < want and len(opened) < _OPENED_MAX:
            unit = subtrees.popleft()
            fd = _enter(unit.dir_fd, unit.where, unit.name, dev, fix, report)
            if fd is not None:
                opened.append(fd)
                cut(fd, f"{unit.where}{unit.name}/")
    except BaseException:
        for fd in opened:
            os.close(fd)
        raise
    return list(subtrees) + chunks, opened  # the subtrees' sizes unknown, the chunks' at most _CHUNK: largest first


def _queue(batches: int) -> int:
    """A pipe holding the batch numbers 0..batches-1 as 4-byte records, its write end closed: the read end, from
    which each walker takes the next number (a read of 4 bytes takes one whole record: every record was written
    before the first read) until end of file."""
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, b"".join(struct.pack("<I", k) for k in range(batches)))
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return read_fd


def _take(queue: int, batches: list[list[_Unit]], dev: int, fix: _Fix, report: RepairReport,
          meter: _Meter | None, done: Callable[[int], None]) -> None:
    """Walk the batches taken from the queue until it is empty, calling done(k) after batch k."""
    while record := os.read(queue, 4):
        (k,) = struct.unpack("<I", record)
        _walk_batch(batches[k], dev, fix, report, meter)
        done(k)


def _walk_batch(batch: list[_Unit], dev: int, fix: _Fix, report: RepairReport, meter: _Meter | None) -> None:
    for unit in batch:
        if unit.entries:
            found = _fix_listed(unit.dir_fd, unit.where, list(unit.entries), dev, fix, report)
            _walk(unit.dir_fd, found, dev, fix, report, meter, unit.where)
        else:
            _walk(unit.dir_fd, [unit.name], dev, fix, report, meter, unit.where)


@dataclass
class _Child:
    pid: int
    results: int  # the read end of its pipe: when it succeeded, its counts and the batches it walked, as JSON
    slot: int


def _fork_walkers(queue: int, batches: list[list[_Unit]], dev: int, fix: _Fix, report: RepairReport, count: int,
                  meter: _Meter | None) -> list[_Child]:
    """Fork up to count walkers taking from the queue; fewer when the kernel refuses a fork (the parent's own
    taking then covers their part)."""
    children: list[_Child] = []
    for slot in range(1, count + 1):
        try:
            read_fd, write_fd = os.pipe()
        except OSError:
            break
        try:
            pid = os.fork()
        except OSError:
            os.close(read_fd)
            os.close(write_fd)
            break
        if pid == 0:
            os.close(read_fd)
            status = 1
            try:
                own = RepairReport(report.path)
                if meter:
                    meter.slot = slot
                walked: list[int] = []
                _take(queue, batches, dev, fix, own, meter, walked.append)
                os.write(write_fd, json.dumps(own.counts() | {"batches": walked}).encode())
                status = 0
            finally:
                os._exit(status)
        os.close(write_fd)
        children.append(_Child(pid, read_fd, slot))
    return children


def _collect(child: _Child, report: RepairReport, meter: _Meter | None) -> set[int]:
    """Wait for a forked walker (ticking progress meanwhile); merge its counts. Returns the batches it walked, or
    none when it failed (they are walked again)."""
    data = b""
    try:
        while True:
            if meter and not select.select([child.results], [], [], meter.every)[0]:
                meter.tick(report, force=True)
                continue
            chunk = os.read(child.results, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(child.results)
        _, status = os.waitpid(child.pid, 0)
    if meter:
        meter.merged(child.slot)
    if status != 0 or not data:
        return set()
    counts = json.loads(data)
    report.merge_counts(counts)
    if meter:
        meter.tick(report, force=True)
    return set(counts["batches"])


def _enter(parent_fd: int, where: str, name: str, dev: int, fix: _Fix, report: RepairReport) -> int | None:
    """Open the subdirectory `name` of parent_fd (`where`, relative to the root) with O_NOFOLLOW|O_DIRECTORY and
    give it its owner (and with fix.usable, u+rwx). Returns its fd, or None when it vanished, is no longer a
    directory (a link or a file by now: never followed) or lies on another filesystem, each counted in report."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        report.vanished += 1
        return None
    except OSError as exc:
        # ELOOP/ENOTDIR: swapped for a link or a file since it was listed; never follow.
        report.errors.append(f"{name}: not entered ({exc.strerror})")
        return None
    st = os.fstat(fd)
    if st.st_dev != dev:
        report.skipped_other_fs += 1
        os.close(fd)
        return None
    needs = fix.dir_needs
    wrong_owner = st.st_uid != fix.uid or st.st_gid != fix.gid
    lacks = needs and st.st_mode & needs != needs
    if wrong_owner or lacks:
        try:
            if wrong_owner:
                os.fchown(fd, fix.uid, fix.gid)
            if lacks:
                old = stat.S_IMODE(st.st_mode)
                os.fchmod(fd, old | needs)
                report.mode_changed(f"{where}{name}", old, old | needs)
            report.changed += 1
        except OSError as exc:
            report.errors.append(f"{name}: {exc.strerror}")
    return fd


def _walk(root_fd: int, names: list[str], dev: int, fix: _Fix, report: RepairReport,
          meter: _Meter | None = None, where: str = "") -> None:
    """Depth-first below root_fd's subdirectories `names` (root_fd being `where`, relative to the repair's root, and
    left open); open fds stay bounded by the depth."""
    stack: list[tuple[int, str, list[str]]] = [(root_fd, where, names)]
    try:
        while stack:
            parent_fd, at, pending = stack[-1]
            if not pending:
                stack.pop()
                if parent_fd != root_fd:
                    os.close(parent_fd)
                continue
            name = pending.pop()
            fd = _enter(parent_fd, at, name, dev, fix, report)
            if fd is None:
                continue
            inner = f"{at}{name}/"
            stack.append((fd, inner, _fix_entries(fd, inner, dev, fix, report)))
            if meter:
                meter.tick(report)
    finally:
        for fd, _, _ in stack:
            if fd != root_fd:
                os.close(fd)


def tree_owned_by(path: str, uid: int, gid: int) -> list[str]:
    """Paths below path (same filesystem, links not followed) not owned by uid:gid; for diagnosis."""
    wrong = []
    root_dev = os.lstat(path).st_dev
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue
            if st.st_dev == root_dev and (st.st_uid != uid or st.st_gid != gid):
                wrong.append(full)
        dirnames[:] = [d for d in dirnames if _same_dev(os.path.join(dirpath, d), root_dev)]
    return wrong


def _same_dev(path: str, dev: int) -> bool:
    try:
        return os.lstat(path).st_dev == dev
    except FileNotFoundError:
        return False
