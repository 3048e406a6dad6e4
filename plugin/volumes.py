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

from ownvol import ownership
from ownvol.beneath import beneath, symlink_in
from ownvol.driver import binds
from ownvol.driver.errors import InvalidRequest, NoSuchVolume, PluginError, VolumeInUse
from ownvol.driver.options import VolumeSpec, volume_spec
from ownvol.driver.protocol import (
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
from ownvol.driver.settings import Settings
from ownvol.driver.store import Store, VolumeRecord
from ownvol.status import LastRepair, VolumeStatus

log = logging.getLogger("ownvol.plugin")


class _NotOurs(PluginError):
    """The data directory was there before this create: a refusal must leave it as it was."""


_ONGOING = {"creating": "created", "removing": "removed"}


def now() -> str:
    """This instant in UTC as RFC 3339 with seconds and a Z (the CreatedAt Docker shows)."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _describe(spec: VolumeSpec) -> str:
    text = f"uid={spec.uid} gid={spec.gid} mode={spec.mode:04o} policy={spec.policy}"
    if spec.profile:
        text += f" profile={spec.profile}"
    return text + (f" path={spec.path}" if spec.path else "")


def _reach(record: VolumeRecord) -> AbstractContextManager[str]:
    """The data directory's path for ownership's walk: an adopted one reached from / by descriptor (its
    components are not the plugin's), a managed one as it is (below the plugin's own root)."""
    return beneath("/", record.path) if record.adopted else nullcontext(record.path)


class Volumes:
    """The driver's volumes on this host: data under settings.root (or adopted with path=), state in store. Implements
    protocol.VolumeDriver; every refusal is a PluginError whose message is the Err."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.trash = os.path.join(settings.root, "trash")

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
        try:
            spec = volume_spec(req.options, self.settings.defaults, self.settings.allowed_roots, self._own_trees())
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        path = spec.path or os.path.join(self.settings.volumes_dir, name)
        if spec.path and (why := symlink_in(spec.path)):
            raise InvalidRequest(f"option path: {spec.path!r} refused: {why}")
        with self.store.transaction():
            existing = self.store.get(name)
            if existing is not None:
                return self._exists(existing, spec)
            self._check_path_free(path)
            self.store.insert(VolumeRecord(name, "creating", spec, path, bool(spec.path), now()))
        try:
            self._make_dir(path, spec)
        except _NotOurs:
            self._undo_create(name, discard=False)
            raise
        except BaseException:
            self._undo_create(name)
            raise
        with self.store.transaction():
            self.store.set_state(name, "ready")

    def _exists(self, existing: VolumeRecord, spec: VolumeSpec) -> None:
        if existing.state != "ready":
            raise PluginError(f"volume {existing.name} is being {_ONGOING[existing.state]} (or that was "
                              "interrupted: restarting the plugin finishes it); try again")
        if existing.spec != spec:
            raise InvalidRequest(f"volume {existing.name} already exists with {_describe(existing.spec)}; "
                                 f"asked for {_describe(spec)}; remove it first to change its options")

    def _check_path_free(self, path: str) -> None:
        for other in self.store.all():
            if path == other.path or path.startswith(other.path + "/") or other.path.startswith(path + "/"):
                raise InvalidRequest(f"option path: {path!r} overlaps volume {other.name} at {other.path}")

    def _make_dir(self, path: str, spec: VolumeSpec) -> None:
        """Managed: a new directory with the owner and mode. Adopted: made if absent, else repaired whole."""
        if spec.path is None:
            os.makedirs(self.settings.volumes_dir, mode=0o700, exist_ok=True)
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                raise _NotOurs(f"data directory {path} already exists but belongs to no volume; "
                                  "move it away, then create the volume again") from None
            ownership.repair(path, spec.uid, spec.gid, spec.mode, walk=False)
        elif not os.path.lexists(path):
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            os.mkdir(path, 0o700)
            ownership.repair(path, spec.uid, spec.gid, spec.mode, walk=False)
        else:
            try:
                with beneath("/", path) as reach:
                    ownership.repair(reach, spec.uid, spec.gid, spec.mode, walk=spec.policy != "never")
            except ownership.OwnershipError as exc:
                raise InvalidRequest(f"option path: {exc}") from None

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
        """Refused while the volume has mount references; a managed data directory is deleted, an adopted one kept."""
        name = req.name
        with self.store.transaction():
            record = self.store.get(name)
            if record is None or record.state == "creating":
                raise NoSuchVolume(name)
            refs = self.store.mount_ids(name)
            if refs:
                raise VolumeInUse(f"volume {name} is in use: mounted {sum(refs.values())} time(s) "
                                  f"(mount IDs {', '.join(sorted(refs))}); stop the containers using it first")
            self.store.set_state(name, "removing")
        self._finish_remove(record)

    def _finish_remove(self, record: VolumeRecord) -> None:
        if self.settings.mount_root:
            binds.unbind(self._mountpoint(record))
        if not record.adopted:
            self._discard_dir(record.path)
        with self.store.transaction():
            self.store.delete(record.name)

    def mount(self, req: MountRequest) -> MountResponse:
        """Count the reference, then check (and per policy repair) the data directory before the daemon uses it."""
        name, mount_id = req.name, req.id
        with self.store.transaction(durable=False):
            record = self._ready(name)
            problem = self._data_problem(record)
            if problem:
                raise PluginError(f"volume {name} cannot be mounted: {problem}")
            self.store.add_ref(name, mount_id, now())
            if self.settings.mount_root:
                self._ensure_bound(record)
            checked = self._check_only(record)
        if not checked:
            try:
                self._preflight(record)
            except BaseException:
                self.unmount(UnmountRequest(name, mount_id))
                raise
        return MountResponse(self._mountpoint(record))

    def _data_problem(self, record: VolumeRecord) -> str | None:
        try:
            st = os.lstat(record.path)
        except FileNotFoundError:
            return f"its data directory {record.path} is missing (deleted by hand?)"
        if not stat.S_ISDIR(st.st_mode):
            return f"its data directory {record.path} is not a directory"
        if record.adopted and (why := symlink_in(record.path)):
            return why
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
                state = ownership.inspect_root(path, spec.uid, spec.gid, spec.mode)
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
            with _reach(record) as path:
                state = ownership.inspect_root(path, spec.uid, spec.gid, spec.mode)
                result = self._no_walk(spec, state)
                if result is None:
                    report = ownership.repair(path, spec.uid, spec.gid, spec.mode, walk=True)
                    after = ownership.inspect_root(path, spec.uid, spec.gid, spec.mode)
            if result is not None:
                self.store.record_check(record.name, now(), result)
                return
        except ownership.OwnershipError as exc:
            self.store.record_check(record.name, now(), f"failed: {exc}")
            raise PluginError(f"volume {record.name}: {exc}") from None
        found = "ok" if state.ok else "; ".join(state.problems)
        result = f"{found}; walked {report.visited} entries, changed {report.changed}"
        if report.skipped_hardlinks:
            result += f", left {report.skipped_hardlinks} hard-linked"
        if report.errors:
            result += f", {len(report.errors)} errors (first: {report.errors[0]})"
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
        return ListResponse([Volume(r.name, self._mountpoint(r)) for r in self.store.all(state="ready")])

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
        )
        return Volume(record.name, self._mountpoint(record), record.created_at, status)

    def recover(self) -> builtins.list[str]:
        """Finish or undo what a crash interrupted; put MOUNT_ROOT binds back in line with the references."""
        done = []
        for record in self.store.all(state="creating"):
            self._undo_create(record.name)
            done.append(f"undid the interrupted create of {record.name}")
        for record in self.store.all(state="removing"):
            self._finish_remove(record)
            done.append(f"finished the interrupted remove of {record.name}")
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
