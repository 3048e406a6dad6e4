"""The volumes service: create, mount, unmount, remove, get, list. It knows nothing of HTTP.

Volumes implements protocol.VolumeDriver: it receives requests that parsed (names and option strings
already checked) and returns the protocol's responses or raises a PluginError. It holds the volumes' lifecycle
(create, remove, rebind, recover, what Get and List show) and hands the rest to its parts: Mounts (mounts.py:
the references, the check and walk of a Mount, the binds, liveness), EngineIdentity (engine.py: the engine
that activated the driver, its epoch and user namespaces) and DataDirs (datadir.py: is the data directory still
the one the volume was created with).

Every change on disk follows one pattern: the intent is committed to the store first
('creating', 'removing'), then the disk is changed, then the row is finished. `recover`
(run once at start, before the workers) completes or undoes whatever a crash interrupted.
"""

from __future__ import annotations

import builtins
import logging
import os
import shutil
import uuid

from ownvol import idmap, ownership
from ownvol.beneath import beneath, symlink_in
from ownvol.status import LastRepair, VolumeStatus

from . import binds, liveness
from .datadir import DataDirs, identity_of
from .engine import EngineIdentity
from .errors import FilesystemRefused, InvalidRequest, NoSuchVolume, PluginError, VolumeInUse
from .mounts import Mounts, describe_repair, idmap_dir, no_walk, now
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
from .settings import Settings, open_to_engine
from .store import DataIdentity, Store, VolumeRecord

log = logging.getLogger("ownvol.plugin")


class _NotOurs(PluginError):
    """The data directory was there before this create: a refusal must leave it as it was."""


def _describe(spec: VolumeSpec) -> str:
    text = f"uid={spec.uid} gid={spec.gid} mode={spec.mode:04o} policy={spec.policy}"
    if spec.profile:
        text += f" profile={spec.profile}"
    text += f" ownership={spec.ownership}"
    if spec.view_of:
        text += f" view-of={spec.view_of}"
    return text + (f" path={spec.path}" if spec.path else "")


def _existing(path: str) -> str:
    """path, or its nearest ancestor that exists (where a directory about to be made would be)."""
    while not os.path.lexists(path) and path != "/":
        path = os.path.dirname(path)
    return path


class Volumes:
    """The driver's volumes on this host: data under settings.root (or adopted with path=), state in store. Implements
    protocol.VolumeDriver; every refusal is a PluginError whose message is the Err."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.trash = os.path.join(settings.root, "trash")
        self.engine = EngineIdentity(settings.userns, store, rootless_only=settings.socket_owner is not None)
        self.data = DataDirs()
        self.mounts = Mounts(settings, store, self.engine, self.data)

    def _mountpoint(self, record: VolumeRecord) -> str:
        return self.mounts.mountpoint(record)

    def _ready(self, name: str) -> VolumeRecord:
        record = self.store.get(name)
        if record is None or record.state != "ready":
            raise NoSuchVolume(name)
        return record

    def _own_trees(self) -> tuple[str, ...]:
        return tuple(p for p in (self.settings.root, self.settings.mount_root) if p)

    def create(self, req: CreateRequest) -> None:
        name = req.name
        self.engine.userns_pending()
        try:
            spec = volume_spec(req.options, self.settings.defaults, self.settings.allowed_roots, self._own_trees())
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        path = spec.path or os.path.join(self.settings.views_dir if spec.view_of else self.settings.volumes_dir,
                                         name)
        if spec.path and (why := symlink_in(spec.path)):
            raise InvalidRequest(f"option path: {spec.path!r} refused: {why}")
        with self.store.name_lock(name):
            self._settle(name)
            with self.store.transaction():
                existing = self.store.get(name)
                if existing is not None:
                    return self._exists(existing, spec)
                if spec.view_of:
                    self._check_view(name, spec.view_of)
                self._check_path_free(path)
                self.store.insert(VolumeRecord(name, "creating", spec, path, bool(spec.path), now()))
            try:
                mapped, note = self._choose(name, path, spec)
                check = self._make_dir(path, spec, mapped)
                identity = identity_of(path)
            except _NotOurs:
                self._undo_create(name, discard=False)
                raise
            except BaseException:
                self._undo_create(name)
                raise
            self.data.forget(name)
            with self.store.transaction():
                self.store.set_identity(name, identity)
                self.store.set_mapped(name, mapped, note)
                self.store.set_state(name, "ready")
                if check:
                    self.store.set_check(name, now(), check)
            if note:
                log.info("event=ownership-chosen volume=%s mapped=%s why=%s", name, mapped, note)

    def _check_view(self, name: str, view_of: str) -> None:
        """Inside Create's transaction: a view shows a ready volume of this driver that is not itself a view."""
        target = self.store.get(view_of)
        if view_of == name:
            raise InvalidRequest(f"option view-of: volume {name} cannot be a view of itself")
        if target is None or target.state != "ready":
            raise InvalidRequest(f"option view-of: {view_of!r} is not a volume of this driver "
                                 f"({self.settings.driver_name}); a view shows one of the driver's own volumes "
                                 "(docker volume ls shows their driver)")
        if target.spec.view_of:
            raise InvalidRequest(f"option view-of: {view_of} is itself a view of {target.spec.view_of}; "
                                 f"make the view of {target.spec.view_of}")

    def _choose(self, name: str, path: str, spec: VolumeSpec) -> tuple[bool, str | None]:
        """Whether the volume is shown through an idmapped mount, and why: ownership walk never; idmap when the
        probe (a detached clone, idmap.idmap_supported) succeeds on its data and other host users cannot reach
        the data, else refused (a _NotOurs: nothing is left behind); auto the same, else the walk."""
        if spec.ownership == "walk":
            return False, None
        if spec.view_of:
            target = self.store.get(spec.view_of)
            data = target.path if target else path
        else:
            if not spec.path:
                os.makedirs(self.settings.volumes_dir, mode=0o700, exist_ok=True)
            data = _existing(path)
        ok, why = idmap.idmap_supported(data)
        if ok and (reach := idmap.reachable_by_others(data)):
            ok, why = False, reach
        if ok:
            return True, f"idmapped mount on {why} (probed at create)"
        if spec.ownership == "idmap":
            raise _NotOurs(f"volume {name}: ownership=idmap refused: {why}; use ownership=walk (a chown walk) "
                           "or ownership=auto (idmap where it can, else the walk)")
        return False, f"auto fell back to the walk: {why}"
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

    def _make_dir(self, path: str, spec: VolumeSpec, mapped: bool = False) -> str | None:
        """Managed: a new directory with the owner and mode. Adopted: made if absent, else repaired whole
        (policy never: looked at, not touched). Mapped (idmap): a new directory keeps root as its owner on disk
        (the map shows it as uid:gid), an existing one is not touched; a view gets an empty directory of its own.
        Returns the check to record, if any. A refusal of the filesystem is a FilesystemRefused naming the path
        and operation."""
        if mapped:
            return self._make_mapped_dir(path, spec)
        uid, gid = self.engine.host_owner(spec)
        owner = f"{self.engine.owner_text(spec)} mode {spec.mode:04o}"
        step = f"creating {path}"
        try:
            if spec.path is None:
                os.makedirs(self.settings.volumes_dir, mode=0o700, exist_ok=True)
                open_to_engine(self.settings.volumes_dir, self.settings)
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
                    return no_walk(spec, ownership.inspect_root(reach, uid, gid, spec.mode))
            else:
                step = f"giving (policy {spec.policy}) to {owner}:"
                with beneath("/", path) as reach:
                    report = ownership.repair(reach, uid, gid, spec.mode, walk=True)
                return describe_repair("adopted", report)
            step = f"giving to {owner}:"
            ownership.repair(path, uid, gid, spec.mode, walk=False)
        except ownership.OwnershipError as exc:
            raise InvalidRequest(f"option path: {exc}") from None
        except OSError as exc:
            raise FilesystemRefused(f"option path: {step}" if spec.path else step, path, exc) from None
        return None

    def _make_mapped_dir(self, path: str, spec: VolumeSpec) -> str:
        try:
            if spec.view_of:
                os.makedirs(self.settings.views_dir, mode=0o700, exist_ok=True)
            elif spec.path and os.path.lexists(path):
                return "idmap: adopted as it is, nothing on disk changed"
            elif spec.path:
                os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                raise _NotOurs(f"data directory {path} already exists but belongs to no volume; "
                               "move it away, then create the volume again") from None
            if not spec.view_of:
                os.chmod(path, spec.mode)
        except OSError as exc:
            raise FilesystemRefused(f"creating {path}:", path, exc) from None
        return f"idmap: view of {spec.view_of}" if spec.view_of else "idmap: new directory owned by root on disk"

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
                self.mounts.drop_stale(name, "Remove")
            with self.store.transaction():
                record = self.store.get(name)
                if record is None:
                    raise NoSuchVolume(name)
                if views := self.store.views_of(name):
                    raise VolumeInUse(f"volume {name} has {len(views)} view(s) showing its data: "
                                      f"{', '.join(views)}; remove them first")
                refs = self.store.mount_ids(name)
                if refs:
                    raise VolumeInUse(f"volume {name} is in use: mounted {sum(refs.values())} time(s) "
                                      f"(mount IDs {', '.join(sorted(refs))}); {self.mounts.who_holds(record)}")
                self.store.set_state(name, "removing")
            self._finish_remove(record)

    # -- the engine, and the references a live mount stands for (mounts.py, engine.py)

    def activate(self, engine: liveness.Engine | None) -> None:
        """Plugin.Activate: an engine not seen before starts a new epoch, and the references the dead one left
        that no live mount stands for are dropped. A caller that is not dockerd (a health check) changes nothing."""
        if self.engine.activate(engine):
            for name in sorted({r.volume for r in self.store.references()}):
                self.mounts.drop_stale(name, "engine restarted")

    def release(self, name: str) -> int:
        """`ownvol volumes --release`: forget every reference of a volume no container really uses.
        VolumeInUse while some mount namespace holds it; how many mount IDs were dropped."""
        with self.store.name_lock(name):
            return self.mounts.release(self._ready(name))

    def references(self) -> builtins.list[dict]:
        """Every ready volume with its references, their age and whether a live mount stands for them."""
        return self.mounts.references()


    def rebind(self, name: str) -> DataIdentity:
        """`ownvol volumes --rebind`: take the directory now at the volume's path as its data (it was moved,
        restored, or its disk replaced on purpose). The next Mount checks and repairs it as usual."""
        with self.store.name_lock(name):
            record = self._ready(name)
            if why := self.data.problem(record, identity=False):
                raise PluginError(f"volume {name} cannot be re-bound: {why}")
            identity = identity_of(record.path)
            self.data.forget(name)
            with self.store.transaction():
                self.store.set_identity(name, identity)
            log.warning("event=rebound volume=%s was=%s now=%s", name,
                        record.identity.describe() if record.identity else "-", identity.describe())
            return identity

    def _finish_remove(self, record: VolumeRecord) -> None:
        self.mounts.unmount_own(record)
        if not record.adopted:
            self._discard_dir(record.path)
        with self.store.transaction():
            self.store.delete(record.name)

    def mount(self, req: MountRequest) -> MountResponse:
        """Count the reference, then check (and per policy repair) the data directory before the daemon uses it
        (Mounts.mount); a volume still being created by a worker that died is settled first."""
        name, mount_id = req.name, req.id
        self.engine.userns_pending()
        try:
            return MountResponse(self.mounts.mount(self._ready, name, mount_id))
        except NoSuchVolume:
            if self.store.get(name) is None:
                raise
            with self.store.name_lock(name):
                self._settle(name)
            return MountResponse(self.mounts.mount(self._ready, name, mount_id))

    def unmount(self, req: UnmountRequest) -> None:
        """Count one Unmount; an unknown ID (or volume) is not an error, the daemon may repeat itself."""
        self.mounts.unmount(req.name, req.id)

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
            state=self.data.problem(record) or "ok",
            data=record.identity.describe() if record.identity else "",
            host_owner=self.engine.host_owner_text(spec),
            ownership="idmap" if record.mapped else "walk",
            ownership_asked=spec.ownership,
            ownership_note=record.ownership_note or "",
            view_of=spec.view_of or "",
        )
        return Volume(record.name, self._mountpoint(record), record.created_at, status)

    def recover(self) -> builtins.list[str]:
        """Finish or undo what a crash interrupted; put MOUNT_ROOT binds back in line with the references."""
        done = []
        for record in self.store.all(state="creating") + self.store.all(state="removing"):
            done.append(self._finish_interrupted(record))
        done += self.mounts.interrupted_walks()
        if os.path.isdir(self.trash):
            for leftover in os.listdir(self.trash):
                shutil.rmtree(os.path.join(self.trash, leftover), ignore_errors=True)
        done += self._recover_mapped()
        if self.settings.mount_root:
            for record in self.store.all(state="ready"):
                if record.mapped:
                    continue
                mounted = binds.is_mounted(self._mountpoint(record))
                if self.store.refs(record.name) and not mounted and not self.data.problem(record):
                    binds.bind(record.path, self._mountpoint(record))
                    done.append(f"bound {record.name} again at {self._mountpoint(record)}")
                elif not self.store.refs(record.name) and mounted:
                    binds.unbind(self._mountpoint(record))
                    done.append(f"unbound {record.name}: no references left")
        return done

    def _recover_mapped(self) -> builtins.list[str]:
        """At start: put idmapped mounts back in line with the references, and check the map of every live one
        (check_map). What was found is logged and recorded as the volume's check (Status)."""
        done = []
        ours = {self._mountpoint(r) for r in self.store.all(state="ready") if r.mapped}
        top = idmap_dir(self.settings)
        for point in sorted(binds.mountpoints()):
            if os.path.dirname(point) == top and point not in ours:
                binds.unbind(point)
                done.append(f"unmounted {point}: an idmapped mount of no volume")
        for record in self.store.all(state="ready"):
            if not record.mapped:
                continue
            target = self._mountpoint(record)
            mounted = binds.is_mounted(target)
            refs = self.store.refs(record.name)
            if refs and not mounted and not self.mounts.data_problem(record) and not self.data.problem(record):
                try:
                    mapping = self.mounts.attach_mapped(record)
                    done.append(f"mounted {record.name} again at {target} ({mapping.describe()})")
                except OSError as exc:
                    done.append(f"could not mount {record.name} again at {target}: {exc}")
            elif not refs and mounted:
                binds.unbind(target)
                done.append(f"unmounted the idmapped mount of {record.name}: no references left")
            elif mounted:
                found = self.check_map(record)
                done.append(f"idmap check of {record.name}: {found}")
        return done

    @staticmethod
    def _maps_of(target: str) -> tuple[tuple[builtins.list[str], builtins.list[str]] | None, str]:
        """The mount's uid and gid maps by statmount (Linux 6.15+), and how they were found, in words."""
        try:
            maps = idmap.mount_maps(target)
        except OSError as exc:
            return None, f"unread (statmount: {exc})"
        if maps is None:
            return None, "unread (statmount without STATMOUNT_MNT_UIDMAP: kernel before 6.15)"
        return maps, "uid " + ",".join(maps[0]) + " gid " + ",".join(maps[1]) + " (statmount)"

    def check_map(self, record: VolumeRecord) -> str:
        """What the live idmapped mount of a volume shows, in words ("ok: ..." or "wrong: ..."): mountinfo's
        options, the root's owner through it, and its maps by statmount where the kernel gives them (6.15+)
        against the swap map of the root's owner on disk; recorded as the volume's check and logged."""
        target = self._mountpoint(record)
        want = self.engine.host_owner(record.spec)
        found = idmap.mount_options(target)
        options = found[-1] if found else ""
        try:
            shown = idmap.root_shown(target)
            disk = os.lstat(self.mounts.data_of(record).path)
        except OSError as exc:
            result = f"wrong: cannot stat {target}: {exc}"
        else:
            missing = [o for o in ("idmapped", "nosuid", "nodev") if o not in options.split(",")]
            maps, how = self._maps_of(target)
            expected = ([" ".join(map(str, line)) for line in idmap.swap_map(disk.st_uid, want[0])],
                        [" ".join(map(str, line)) for line in idmap.swap_map(disk.st_gid, want[1])])
            if shown != want or missing or (maps is not None and maps != expected):
                result = (f"wrong: the root shows as {shown[0]}:{shown[1]} (want {want[0]}:{want[1]}; on disk "
                          f"{disk.st_uid}:{disk.st_gid}), mount options {options or '-'}, maps {how}: remount it "
                          "(last Unmount, then Mount)")
            else:
                result = f"ok: on-disk {disk.st_uid}:{disk.st_gid} shown as {want[0]}:{want[1]}, {options}, maps {how}"
        self.store.record_check(record.name, now(), f"idmap check at start: {result}")
        log.log(logging.INFO if result.startswith("ok") else logging.WARNING, "event=idmap-checked volume=%s %s",
                record.name, result)
        return result
