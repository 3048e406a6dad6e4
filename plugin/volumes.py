"""The volumes service: create, mount, unmount, remove, get, list. It knows nothing of HTTP.

Volumes implements protocol.VolumeDriver: it receives requests that parsed (names and option strings
already checked) and returns the protocol's responses or raises a PluginError.

Every change on disk follows one pattern: the intent is committed to the store first
('creating', 'removing'), then the disk is changed, then the row is finished. `recover`
(run once at start, before the workers) completes or undoes whatever a crash interrupted.
"""

from __future__ import annotations

import builtins
import logging
import os
import shutil
import stat
import uuid
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime

from ownvol import ownership, userns
from ownvol.beneath import beneath, symlink_in
from ownvol.status import LastRepair, VolumeStatus

from . import binds, liveness
from .errors import FilesystemRefused, InvalidRequest, NoSuchVolume, PluginError, VolumeInUse
from .options import VolumeSpec, volume_spec
from .protocol import (
    CapabilitiesResponse,
    CreateRequest,
    GetRequest,
    GetResponse,
    ListResponse,
    MountRequest,
    MountResponse,
    PathRequest,
    PathResponse,
    RemoveRequest,
    UnmountRequest,
    Volume,
)
from .settings import Settings
from .store import DataIdentity, Store, VolumeRecord

log = logging.getLogger("ownvol.plugin")


class _NotOurs(PluginError):
    """The data directory was there before this create: a refusal must leave it as it was."""


def now() -> str:
    """This instant in UTC as RFC 3339 with seconds and a Z (the CreatedAt Docker shows)."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _describe(spec: VolumeSpec) -> str:
    text = f"uid={spec.uid} gid={spec.gid} mode={spec.mode:04o} policy={spec.policy}"
    if spec.profile:
        text += f" profile={spec.profile}"
    return text + (f" path={spec.path}" if spec.path else "")


def identity_of(path: str, table: list[binds.MountEntry] | None = None) -> DataIdentity:
    """What identifies the data directory at path now: its filesystem as this process sees it, and its inode."""
    fs, _ = binds.filesystem_of(path, table)
    return DataIdentity(fs.mount_point, fs.fstype, fs.source, os.lstat(path).st_ino)


def _moved(recorded: DataIdentity, now_: DataIdentity) -> str:
    """What changed between the identity recorded and the one found, in words."""
    if (recorded.fstype, recorded.source) != (now_.fstype, now_.source):
        return (f"it was on {recorded.fstype} {recorded.source} mounted at {recorded.mount}, it is now on "
                f"{now_.fstype} {now_.source} mounted at {now_.mount} (the filesystem is not mounted?)")
    return f"it was inode {recorded.inode}, it is now inode {now_.inode} (replaced by another directory?)"


def _reach(record: VolumeRecord) -> AbstractContextManager[str]:
    """The data directory's path for ownership's walk: an adopted one reached from / by descriptor (its
    components are not the plugin's), a managed one as it is (below the plugin's own root)."""
    return beneath("/", record.path) if record.adopted else nullcontext(record.path)


def _describe_repair(found: str, report: ownership.RepairReport) -> str:
    result = f"{found}; walked {report.visited} entries, changed {report.changed}"
    if report.skipped_hardlinks:
        result += f", left {report.skipped_hardlinks} hard-linked"
    if report.errors:
        result += f", {len(report.errors)} errors (first: {report.errors[0]})"
    return result


class _WalkDue(Exception):
    """A Mount asked to answer without a walk needs one (mount_now)."""


class Volumes:
    """The driver's volumes on this host: data under settings.root (or adopted with path=), state in store. Implements
    protocol.VolumeDriver; every refusal is a PluginError whose message is the Err."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.trash = os.path.join(settings.root, "trash")
        self._seen_on: dict[str, tuple[int, int]] = {}  # volume -> (st_dev, st_ino) last found to be its data

    def _mountpoint(self, record: VolumeRecord) -> str:
        if self.settings.mount_root:
            return os.path.join(self.settings.mount_root, record.name)
        return record.path

    def _ready(self, name: str) -> VolumeRecord:
        record = self.store.get(name)
        if record is None or record.state != "ready":
            raise NoSuchVolume(name)
        return record

    def _own_trees(self) -> tuple[str, ...]:
        return tuple(p for p in (self.settings.root, self.settings.mount_root) if p)

    def create(self, req: CreateRequest) -> None:
        name = req.name
        self._userns_pending()
        try:
            spec = volume_spec(req.options, self.settings.defaults, self.settings.allowed_roots, self._own_trees())
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        path = spec.path or os.path.join(self.settings.volumes_dir, name)
        if spec.path and (why := symlink_in(spec.path)):
            raise InvalidRequest(f"option path: {spec.path!r} refused: {why}")
        with self.store.name_lock(name):
            self._settle(name)
            with self.store.transaction():
                existing = self.store.get(name)
                if existing is not None:
                    return self._exists(existing, spec)
                self._check_path_free(path)
                self.store.insert(VolumeRecord(name, "creating", spec, path, bool(spec.path), now()))
            try:
                check = self._make_dir(path, spec)
                identity = identity_of(path)
            except _NotOurs:
                self._undo_create(name, discard=False)
                raise
            except BaseException:
                self._undo_create(name)
                raise
            self._seen_on.pop(name, None)
            with self.store.transaction():
                self.store.set_identity(name, identity)
                self.store.set_state(name, "ready")
                if check:
                    self.store.set_check(name, now(), check)

    def _settle(self, name: str) -> None:
        """With the name's lock held: a 'creating' or 'removing' row is a dead holder's; finish or undo it."""
        record = self.store.get(name)
        if record is not None and record.state != "ready":
            self._finish_interrupted(record)
            log.info("volume=%s finished the interrupted %s of a worker that died", name, record.state)

    def _finish_interrupted(self, record: VolumeRecord) -> str:
        if record.state == "creating":
            self._undo_create(record.name)
            return f"undid the interrupted create of {record.name}"
        self._finish_remove(record)
        return f"finished the interrupted remove of {record.name}"

    def _exists(self, existing: VolumeRecord, spec: VolumeSpec) -> None:
        if existing.spec != spec:
            raise InvalidRequest(f"volume {existing.name} already exists with {_describe(existing.spec)}; "
                                 f"asked for {_describe(spec)}; remove it first to change its options")

    def _check_path_free(self, path: str) -> None:
        for other in self.store.all():
            if path == other.path or path.startswith(other.path + "/") or other.path.startswith(path + "/"):
                raise InvalidRequest(f"option path: {path!r} overlaps volume {other.name} at {other.path}")

    def _make_dir(self, path: str, spec: VolumeSpec) -> str | None:
        """Managed: a new directory with the owner and mode. Adopted: made if absent, else repaired whole
        (policy never: looked at, not touched). Returns the check to record, if any.
        A refusal of the filesystem is a FilesystemRefused naming the path and operation."""
        uid, gid = self._host_owner(spec)
        owner = f"{self._owner_text(spec)} mode {spec.mode:04o}"
        step = f"creating {path}"
        try:
            if spec.path is None:
                os.makedirs(self.settings.volumes_dir, mode=0o700, exist_ok=True)
                try:
                    os.mkdir(path, 0o700)
                except FileExistsError:
                    raise _NotOurs(f"data directory {path} already exists but belongs to no volume; "
                                   "move it away, then create the volume again") from None
            elif not os.path.lexists(path):
                os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
                os.mkdir(path, 0o700)
            elif spec.policy == "never":
                with beneath("/", path) as reach:
                    return self._no_walk(spec, ownership.inspect_root(reach, uid, gid, spec.mode))
            else:
                step = f"giving (policy {spec.policy}) to {owner}:"
                with beneath("/", path) as reach:
                    report = ownership.repair(reach, uid, gid, spec.mode, walk=True)
                return _describe_repair("adopted", report)
            step = f"giving to {owner}:"
            ownership.repair(path, uid, gid, spec.mode, walk=False)
        except ownership.OwnershipError as exc:
            raise InvalidRequest(f"option path: {exc}") from None
        except OSError as exc:
            raise FilesystemRefused(f"option path: {step}" if spec.path else step, path, exc) from None
        return None

    def _undo_create(self, name: str, discard: bool = True) -> None:
        """Leave nothing behind of an unfinished create (an adopted directory's data is never deleted)."""
        record = self.store.get(name)
        if record is None:
            return
        if discard and not record.adopted:
            self._discard_dir(record.path)
        with self.store.transaction():
            self.store.delete(name)

    def _discard_dir(self, path: str) -> None:
        """Move a managed data directory to the trash (one rename), then delete it there."""
        os.makedirs(self.trash, mode=0o700, exist_ok=True)
        target = os.path.join(self.trash, uuid.uuid4().hex)
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return
        shutil.rmtree(target)

    def remove(self, req: RemoveRequest) -> None:
        """Refused while a live mount holds the volume; a managed data directory is deleted, an adopted one kept.
        References no live mount stands for are dropped first (see drop_stale)."""
        name = req.name
        with self.store.name_lock(name):
            record = self.store.get(name)
            if record is not None and record.state == "removing":
                self._settle(name)
                return
            self._settle(name)
            if self.store.refs(name):
                self.drop_stale(name, "Remove")
            with self.store.transaction():
                record = self.store.get(name)
                if record is None:
                    raise NoSuchVolume(name)
                refs = self.store.mount_ids(name)
                if refs:
                    raise VolumeInUse(f"volume {name} is in use: mounted {sum(refs.values())} time(s) "
                                      f"(mount IDs {', '.join(sorted(refs))}); {self._who_holds(record)}")
                self.store.set_state(name, "removing")
            self._finish_remove(record)

    # -- references that are true

    def _not_at(self, record: VolumeRecord) -> tuple[str, ...]:
        return (self._mountpoint(record),) if self.settings.mount_root else ()

    def liveness_known(self) -> bool:
        """Whether the driver sees the processes of the engine that activated it (see liveness)."""
        text = self.store.meta("engine")
        if not text:
            return False
        pid, started, command = text.split(":", 2)
        return command == "dockerd" and liveness.alive(liveness.Engine(int(pid), int(started), command))

    def holders(self, record: VolumeRecord) -> list[liveness.Holder] | None:
        """The mount namespaces holding this volume now; None when the driver cannot tell."""
        if not self.liveness_known() or self._data_problem(record):
            return None
        return liveness.holders(record.path, self._not_at(record))

    def _who_holds(self, record: VolumeRecord) -> str:
        found = self.holders(record)
        if found is None:
            return "stop the containers using it first (the driver cannot see the engine's processes to check)"
        shown = ", ".join(f"pid {h.pid} ({h.command}) at {h.mount_point}" for h in found[:3])
        return f"held by {shown}; stop the containers using it first"

    def drop_stale(self, name: str, why: str) -> int:
        """Forget the references of a volume that no live mount stands for (none when liveness is unknown or
        some mount namespace holds it); how many mount IDs were dropped. Logs each drop."""
        record = self.store.get(name)
        if record is None:
            return 0
        found = self.holders(record)
        if found is None or found:
            return 0
        with self.store.transaction(durable=False):
            refs = self.store.mount_ids(name)
            dropped = self.store.drop_refs(name)
        if dropped:
            log.warning("event=references-dropped volume=%s ids=%s why=%s: no mount namespace holds %s "
                        "(an engine that died never sent their Unmount)", name, ",".join(sorted(refs)), why,
                        record.path)
            if self.settings.mount_root:
                binds.unbind(self._mountpoint(record))
        return dropped

    def activate(self, engine: liveness.Engine | None) -> None:
        """Plugin.Activate: an engine not seen before starts a new epoch, and the references the dead one left
        that no live mount stands for are dropped. A caller that is not dockerd (a health check) changes nothing."""
        if engine is None or (engine.pid and not engine.is_dockerd):
            return
        key = f"{engine.pid}:{engine.started}:{engine.command}"
        with self.store.transaction():
            if engine.pid and self.store.meta("engine") == key:
                return
            self.store.set_meta("engine", key)
            self.store.set_meta("epoch", str(self.store.epoch() + 1))
        log.info("event=engine-activated pid=%s epoch=%d", engine.pid or "unseen", self.store.epoch())
        if engine.pid:
            self._learn_userns(engine)
        for name in sorted({r.volume for r in self.store.references()}):
            self.drop_stale(name, "engine restarted")

    def _learn_userns(self, engine: liveness.Engine) -> None:
        """Ask the engine that activated the driver whether it remaps user namespaces (OWNVOL_USERNS=auto)."""
        if self.settings.userns != "auto":
            return
        try:
            found = userns.from_engine(liveness.engine_info(engine.pid))
            text = str(found) if found else ""
        except userns.UnknownMapping as exc:
            text = f"!{exc}"
        except (OSError, ValueError) as exc:
            # dockerd activates plugins while it restores, before its API listens: ask again at the next request
            with self.store.transaction():
                self.store.set_meta("userns_pending", str(engine.pid))
            log.info("event=userns-pending pid=%s why=%s", engine.pid, exc)
            return
        with self.store.transaction():
            self.store.set_meta("userns", text)
            self.store.set_meta("userns_pending", "")
        log.info("event=userns-learned mapping=%s", text or "none")

    def _userns_due(self) -> int | None:
        """The pid of the engine to ask for its user namespaces before a Create or Mount, if one is due."""
        if self.settings.userns != "auto":
            return None
        pid = self.store.meta("userns_pending")
        return int(pid) if pid and liveness.process_start(int(pid)) is not None else None

    def _userns_pending(self) -> None:
        """Before Create and Mount (outside any transaction): if the engine could not be asked at its activation,
        ask it now; until it answers, the mapping learned before stays."""
        pid = self._userns_due()
        if pid is not None:
            self._learn_userns(liveness.Engine(pid, 0, "dockerd"))

    def idmap(self) -> userns.IdMap | None:
        """The engine's user-namespace mapping (None: ids are host ids); PluginError when it remaps and the host
        ids cannot be told (nothing is done then)."""
        if self.settings.userns == "off":
            return None
        text = self.settings.userns if self.settings.userns != "auto" else (self.store.meta("userns") or "")
        if text.startswith("!"):
            raise PluginError(f"the engine remaps user namespaces, but ownvol cannot tell to which host ids: "
                              f"{text[1:]}; set the plugin's OWNVOL_USERNS (docs/driver.md, User namespaces)")
        return userns.IdMap.parse(text) if text else None

    def _host_owner(self, spec: VolumeSpec) -> tuple[int, int]:
        """The host uid:gid that are spec's uid:gid inside the engine's containers."""
        mapping = self.idmap()
        if mapping is None:
            return spec.uid, spec.gid
        try:
            return mapping.host_ids(spec.uid, spec.gid)
        except userns.UnknownMapping as exc:
            raise PluginError(f"uid:gid {spec.uid}:{spec.gid}: {exc} ({mapping.describe()})") from None

    def _status_host_owner(self, spec: VolumeSpec) -> str:
        try:
            uid, gid = self._host_owner(spec)
        except PluginError as exc:
            return f"unknown: {exc}"
        return f"{uid}:{gid}"

    def _owner_text(self, spec: VolumeSpec) -> str:
        uid, gid = self._host_owner(spec)
        return f"{spec.uid}:{spec.gid}" + (f" (host {uid}:{gid})" if (uid, gid) != (spec.uid, spec.gid) else "")

    def release(self, name: str) -> int:
        """`ownvol volumes --release`: forget every reference of a volume no container really uses.
        VolumeInUse while some mount namespace holds it; how many mount IDs were dropped."""
        with self.store.name_lock(name):
            record = self._ready(name)
            found = self.holders(record)
            if found:
                raise VolumeInUse(f"volume {name} is in use: {self._who_holds(record)}")
            with self.store.transaction(durable=False):
                refs = self.store.mount_ids(name)
                dropped = self.store.drop_refs(name)
            log.warning("event=references-released volume=%s ids=%s liveness=%s", name, ",".join(sorted(refs)),
                        "checked" if found is not None else "unknown")
            if self.settings.mount_root:
                binds.unbind(self._mountpoint(record))
            return dropped

    def rebind(self, name: str) -> DataIdentity:
        """`ownvol volumes --rebind`: take the directory now at the volume's path as its data (it was moved,
        restored, or its disk replaced on purpose). The next Mount checks and repairs it as usual."""
        with self.store.name_lock(name):
            record = self._ready(name)
            if why := self._data_problem(record, identity=False):
                raise PluginError(f"volume {name} cannot be re-bound: {why}")
            identity = identity_of(record.path)
            self._seen_on.pop(name, None)
            with self.store.transaction():
                self.store.set_identity(name, identity)
            log.warning("event=rebound volume=%s was=%s now=%s", name,
                        record.identity.describe() if record.identity else "-", identity.describe())
            return identity

    def references(self) -> list[dict]:
        """Every ready volume with its references, their age and whether a live mount stands for them."""
        known = self.liveness_known()
        out = []
        for record in self.store.all(state="ready"):
            refs = self.store.references(record.name)
            found = self.holders(record) if refs and known else None
            out.append({"name": record.name, "path": record.path, "references": [
                {"id": r.id, "count": r.count, "since": r.since, "last": r.last_at, "epoch": r.epoch} for r in refs],
                "live": None if found is None else [f"pid {h.pid} ({h.command}) at {h.mount_point}" for h in found],
                "state": self._data_problem(record) or "ok"})
        return out

    def _finish_remove(self, record: VolumeRecord) -> None:
        if self.settings.mount_root:
            binds.unbind(self._mountpoint(record))
        if not record.adopted:
            self._discard_dir(record.path)
        with self.store.transaction():
            self.store.delete(record.name)

    def mount(self, req: MountRequest) -> MountResponse:
        """Count the reference, then check (and per policy repair) the data directory before the daemon uses it;
        a volume other live mounts hold gets its root checked only."""
        name, mount_id = req.name, req.id
        self._userns_pending()
        try:
            return MountResponse(self._mount(name, mount_id))
        except NoSuchVolume:
            if self.store.get(name) is None:
                raise
            with self.store.name_lock(name):
                self._settle(name)
            return MountResponse(self._mount(name, mount_id))

    def mount_now(self, req: MountRequest) -> MountResponse | None:
        """The common Mount, answered without a walk; None, with nothing changed, when it needs more (a walk or its
        liveness look across /proc, a volume still being created, the engine's user namespaces to learn): then
        `mount` does it all, where a walk keeps no other request waiting (the server's worker thread)."""
        if self._userns_due():
            return None
        try:
            return MountResponse(self._mount(req.name, req.id, walk=False))
        except (NoSuchVolume, _WalkDue):
            return None

    def _mount(self, name: str, mount_id: str, walk: bool = True) -> str:
        with self.store.transaction(durable=False):
            record = self._ready(name)
            problem = self._data_problem(record)
            if not problem:
                held, checked = self._count_mount(record, mount_id, walk)
        if problem:
            self.store.record_check(name, now(), f"refused: {problem}")
            raise PluginError(f"volume {name} cannot be mounted: {problem}")
        if not checked and held and self._held_live(record):
            return self._mountpoint(record)
        if not checked:
            try:
                self._preflight(record)
            except BaseException:
                self.unmount(UnmountRequest(name, mount_id))
                raise
        return self._mountpoint(record)

    def _count_mount(self, record: VolumeRecord, mount_id: str, walk: bool) -> tuple[int, bool]:
        """Inside Mount's transaction: count the reference, check the root, bind. (References other mounts
        held before this one, whether the check is done without a walk.) _WalkDue, before the bind, when a walk is
        due and not allowed."""
        if record.identity is None:  # a volume made before identities were recorded learns its own now
            self.store.set_identity(record.name, identity_of(record.path))
        held = self.store.refs(record.name, self.store.epoch())
        self.store.add_ref(record.name, mount_id, now())
        checked = self._check_only(record)
        if not (checked or walk):
            raise _WalkDue(record.name)  # the transaction rolls the reference back
        if self.settings.mount_root:
            self._ensure_bound(record)
        return held, checked

    def _held_live(self, record: VolumeRecord) -> bool:
        """A walk is due but other mounts hold the volume: if one is live (or that cannot be told), a server may
        be running on it. Check the root only and change nothing; the walk waits for the first holder's Mount."""
        found = self.holders(record)
        if found is not None and not found:
            return False  # references nothing stands for (dropped at Remove or activation, not here: a container
            # whose Mount was answered may not have made its own mount yet)
        spec = record.spec
        try:
            with _reach(record) as path:
                state = ownership.inspect_root(path, *self._host_owner(spec), spec.mode)
        except ownership.OwnershipError:
            return False
        who = "a live mount" if found else "other mounts (liveness unknown)"
        result = f"ok (held by {who}: root checked only)" if state.ok else \
            f"mismatch, not repaired (held by {who}): {'; '.join(state.problems)}"
        self.store.record_check(record.name, now(), result)
        return True

    def _data_problem(self, record: VolumeRecord, identity: bool = True,
                      table: list[binds.MountEntry] | None = None) -> str | None:
        try:
            st = os.lstat(record.path)
        except FileNotFoundError:
            return f"its data directory {record.path} is missing (deleted by hand?)"
        if not stat.S_ISDIR(st.st_mode):
            return f"its data directory {record.path} is not a directory"
        if record.adopted and (why := symlink_in(record.path)):
            return why
        if identity and record.identity is not None and self._seen_on.get(record.name) != (st.st_dev, st.st_ino):
            found = identity_of(record.path, table)
            if not found.same_data(record.identity):
                return (f"its data directory {record.path} is not the one it was created with: "
                        f"{_moved(record.identity, found)}; nothing was changed. Mount the data back, or, if the "
                        f"data really moved here, `ownvol volumes --rebind {record.name}`")
            # the mount table is read again only when the directory's device or inode changes (hot path: Mount)
            self._seen_on[record.name] = (st.st_dev, st.st_ino)
        return None

    def _ensure_bound(self, record: VolumeRecord) -> None:
        target = self._mountpoint(record)
        if not binds.is_mounted(target):
            binds.bind(record.path, target)

    @staticmethod
    def _no_walk(spec: VolumeSpec, state: ownership.RootState) -> str | None:
        """The check's result when the policy wants no walk for this root; None when it wants one."""
        if spec.policy == "never" or (spec.policy == "on-root-mismatch" and state.ok):
            return "ok" if state.ok else f"mismatch, not repaired (policy never): {'; '.join(state.problems)}"
        return None

    def _check_only(self, record: VolumeRecord) -> bool:
        """The common Mount, inside its own transaction: one lstat, and when no walk is due the check
        is recorded with the reference (one commit instead of two; bench: mount_pairs_per_s)."""
        spec = record.spec
        try:
            with _reach(record) as path:
                state = ownership.inspect_root(path, *self._host_owner(spec), spec.mode)
        except ownership.OwnershipError:
            return False  # _preflight records and reports it
        result = self._no_walk(spec, state)
        if result is not None:
            self.store.set_check(record.name, now(), result)
        return result is not None

    def _preflight(self, record: VolumeRecord) -> None:
        """Check the root; per policy walk and repair. Never returns with the root still wrong (unless policy never)."""
        spec = record.spec
        try:
            uid, gid = self._host_owner(spec)
            with _reach(record) as path:
                state = ownership.inspect_root(path, uid, gid, spec.mode)
                result = self._no_walk(spec, state)
                if result is None:
                    report = ownership.repair(path, uid, gid, spec.mode, walk=True)
                    after = ownership.inspect_root(path, uid, gid, spec.mode)
            if result is not None:
                self.store.record_check(record.name, now(), result)
                return
        except ownership.OwnershipError as exc:
            self.store.record_check(record.name, now(), f"failed: {exc}")
            raise PluginError(f"volume {record.name}: {exc}") from None
        except OSError as exc:
            refused = FilesystemRefused(f"giving to {self._owner_text(spec)} mode {spec.mode:04o}:", record.path, exc)
            self.store.record_check(record.name, now(), f"failed: {refused}")
            raise PluginError(f"volume {record.name}: {refused}") from None
        result = _describe_repair("ok" if state.ok else "; ".join(state.problems), report)
        self.store.record_check(record.name, now(), result)
        self.store.record_repair(record.name, now(), report.changed, round(report.seconds, 6))
        log.info("volume=%s repaired: %s", record.name, result)
        if not after.ok:
            raise PluginError(f"volume {record.name}: could not repair its root: {'; '.join(after.problems)}")

    def unmount(self, req: UnmountRequest) -> None:
        """Count one Unmount; an unknown ID (or volume) is not an error, the daemon may repeat itself."""
        name, mount_id = req.name, req.id
        with self.store.transaction(durable=False):
            record = self.store.get(name)
            if record is None:
                return
            known, left = self.store.drop_ref(name, mount_id)
            if known and left == 0 and self.settings.mount_root:
                binds.unbind(self._mountpoint(record))

    def path(self, req: PathRequest) -> PathResponse:
        return PathResponse(self._mountpoint(self._ready(req.name)))

    def get(self, req: GetRequest) -> GetResponse:
        return GetResponse(self._view(self._ready(req.name)))

    def list(self) -> ListResponse:
        root = self.settings.mount_root
        return ListResponse([Volume(name, os.path.join(root, name) if root else path)
                             for name, path in self.store.names_and_paths("ready")])

    def capabilities(self) -> CapabilitiesResponse:
        return CapabilitiesResponse("local")

    def _view(self, record: VolumeRecord) -> Volume:
        spec = record.spec
        repair = None
        if record.last_repair_at:
            repair = LastRepair(at=record.last_repair_at, changed=record.last_repair_changed or 0,
                                seconds=record.last_repair_seconds or 0.0)
        status = VolumeStatus(
            uid=spec.uid,
            gid=spec.gid,
            mode=f"{spec.mode:04o}",
            policy=spec.policy,
            profile=spec.profile or "",
            path=record.path,
            adopted=record.adopted,
            created=record.created_at,
            last_check=record.last_check or "",
            last_check_result=record.last_check_result or "",
            last_repair=repair,
            mounts=self.store.refs(record.name),
            state=self._data_problem(record) or "ok",
            data=record.identity.describe() if record.identity else "",
            host_owner=self._status_host_owner(spec),
        )
        return Volume(record.name, self._mountpoint(record), record.created_at, status)

    def recover(self) -> builtins.list[str]:
        """Finish or undo what a crash interrupted; put MOUNT_ROOT binds back in line with the references."""
        done = []
        for record in self.store.all(state="creating") + self.store.all(state="removing"):
            done.append(self._finish_interrupted(record))
        if os.path.isdir(self.trash):
            for leftover in os.listdir(self.trash):
                shutil.rmtree(os.path.join(self.trash, leftover), ignore_errors=True)
        if self.settings.mount_root:
            for record in self.store.all(state="ready"):
                mounted = binds.is_mounted(self._mountpoint(record))
                if self.store.refs(record.name) and not mounted and not self._data_problem(record):
                    binds.bind(record.path, self._mountpoint(record))
                    done.append(f"bound {record.name} again at {self._mountpoint(record)}")
                elif not self.store.refs(record.name) and mounted:
                    binds.unbind(self._mountpoint(record))
                    done.append(f"unbound {record.name}: no references left")
        return done
