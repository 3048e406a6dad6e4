"""Mounts: a volume's mount references, the check (and per policy the walk) a Mount does before the daemon uses
the data, the MOUNT_ROOT binds, and which references a live mount really stands for.

A Mount looks at the data directory's root once (ownership.inspect_root) and from that one look plans what it
does: record the check and answer (no walk due), check only (other live mounts hold the volume), or walk and
repair in the request's own worker (serve.py: the other workers answer meanwhile).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ownvol import idmap, ownership

from . import binds, liveness
from .datadir import DataDirs, identity_of, reach
from .engine import EngineIdentity
from .errors import FilesystemRefused, PluginError, VolumeInUse
from .options import VolumeSpec
from .settings import Settings
from .store import Store, VolumeRecord

log = logging.getLogger("ownvol.plugin")
# A Mount that walks marks its walk in the store's meta rows ("walking VOLUME MOUNT_ID" -> the worker's pid) in the
# transaction that counts its reference, and unmarks it when the walk ends. A mark found at the next start is a Mount
# the driver's death interrupted: its caller got no answer (dockerd's plugin client retries a call whose connection
# broke with the body already sent, so with none: moby pkg/plugins/client.go callWithRetry, and the Mount fails;
# moby volume/mounts MountPoint.Setup then keeps no mount ID, so no Unmount ever comes for it), so its reference is
# dropped, and the walk it left half done (the root repaired first, ownership.repair) is due at the next Mount
# whatever the root looks like.
WALKING = "walking "
WALK_INTERRUPTED = "walk interrupted"
Ready = Callable[[str], VolumeRecord]  # a ready volume's record by name; NoSuchVolume else


def now() -> str:
    """This instant in UTC as RFC 3339 with seconds and a Z (the CreatedAt Docker shows)."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def mountpoint(settings: Settings, record: VolumeRecord) -> str:
    """Where the daemon finds the volume: its bind below MOUNT_ROOT, else its idmapped mount below
    ROOT/idmap (a 0700 directory: other host users never reach it), else its data directory."""
    if settings.mount_root:
        return os.path.join(settings.mount_root, record.name)
    if record.mapped:
        return os.path.join(idmap_dir(settings), record.name)
    return record.path


def idmap_dir(settings: Settings) -> str:
    return os.path.join(settings.root, "idmap")


def own_mount(settings: Settings, record: VolumeRecord) -> bool:
    """Whether the driver mounts something of its own for the volume while it is referenced (a MOUNT_ROOT bind
    or an idmapped mount), to be unmounted at the last Unmount."""
    return bool(settings.mount_root) or record.mapped


def no_walk(spec: VolumeSpec, state: ownership.RootState) -> str | None:
    """The check's result when the policy wants no walk for this root; None when it wants one."""
    if spec.policy == "never" or (spec.policy == "on-root-mismatch" and state.ok):
        return "ok" if state.ok else f"mismatch, not repaired (policy never): {'; '.join(state.problems)}"
    return None


def _walking(name: str, mount_id: str) -> str:
    return f"{WALKING}{name} {mount_id}"


def describe_repair(found: str, report: ownership.RepairReport) -> str:
    result = f"{found}; walked {report.visited} entries, changed {report.changed}"
    if report.skipped_hardlinks:
        result += f", left {report.skipped_hardlinks} hard-linked"
    if report.errors:
        result += f", {len(report.errors)} errors (first: {report.errors[0]})"
    return result


@dataclass
class MountPlan:
    """What one look at a volume's root (the Mount's only inspect_root) says the Mount must do: uid:gid on the
    host, the root found (or why it cannot be looked at), and the check's result when no walk is due."""

    uid: int
    gid: int
    state: ownership.RootState | None = None
    error: ownership.OwnershipError | None = None
    result: str | None = None

    @property
    def walk_due(self) -> bool:
        return self.result is None


class Mounts:
    """The volumes' mount references and what a Mount checks and repairs. mount and unmount take names that
    parsed; every refusal is a PluginError whose message is the Err."""

    def __init__(self, settings: Settings, store: Store, engine: EngineIdentity, data: DataDirs) -> None:
        self.settings = settings
        self.store = store
        self.engine = engine
        self.data = data

    def mountpoint(self, record: VolumeRecord) -> str:
        return mountpoint(self.settings, record)

    # -- Mount and Unmount

    def mount(self, record_of: Ready, name: str, mount_id: str) -> str:
        """Count the reference, then check (and per policy repair) the data directory before the daemon uses it;
        a volume other live mounts hold gets its root checked only. The mountpoint; NoSuchVolume (record_of)
        or a PluginError."""
        with self.store.transaction(durable=False):
            record = record_of(name)
            problem = self.data.problem(record)
            if not problem and record.mapped:
                problem = self.data_problem(record)
                if not problem:
                    return self._mount_mapped(record, mount_id)
            if not problem:
                plan = self._plan(record)
                held = self._count(record, mount_id, plan)
                if plan.walk_due:
                    self.store.set_meta(_walking(name, mount_id), str(os.getpid()))
        if problem:
            self.store.record_check(name, now(), f"refused: {problem}")
            raise PluginError(f"volume {name} cannot be mounted: {problem}")
        if plan.walk_due:
            try:
                if not (held and self._held_live(record, plan)):
                    self._walk(record, plan)
            except BaseException:
                self.unmount(name, mount_id)
                raise
            finally:
                with self.store.transaction(durable=False):
                    self.store.delete_meta(_walking(name, mount_id))
        return self.mountpoint(record)

    def interrupted_walks(self) -> list[str]:
        """At start, before any worker: each Mount whose walk the driver's death interrupted (see WALKING) loses
        its reference, and its volume's next Mount walks. What was done, in words."""
        done = []
        for key, pid in self.store.metas(WALKING):
            name, _, mount_id = key.removeprefix(WALKING).partition(" ")
            with self.store.transaction(durable=False):
                known, left = self.store.drop_ref(name, mount_id)
                self.store.delete_meta(key)
                if self.store.get(name) is not None:
                    self.store.set_check(name, now(), f"{WALK_INTERRUPTED}: the driver died during the Mount of "
                                                      f"{mount_id} (worker {pid}); the next Mount walks again")
            log.warning("event=walk-interrupted volume=%s id=%s worker=%s reference_dropped=%s references_left=%d",
                        name, mount_id, pid, known, left)
            done.append(f"{name}: the Mount of {mount_id} was interrupted by the driver's death mid-walk; "
                        f"its reference {'dropped' if known else 'was not counted'}, the next Mount walks again")
        return done

    def data_of(self, record: VolumeRecord) -> VolumeRecord:
        """The record whose data directory the volume shows: its own, or for a view the viewed volume's."""
        if record.spec.view_of:
            target = self.store.get(record.spec.view_of)
            if target is not None:
                return target
        return record

    def data_problem(self, record: VolumeRecord) -> str | None:
        """Why the data a mapped volume (or view) shows cannot be used now; None when it can."""
        if record.spec.view_of:
            target = self.store.get(record.spec.view_of)
            if target is None or target.state != "ready":
                return f"the volume it is a view of, {record.spec.view_of}, is gone"
            return self.data.problem(target)
        return None

    def mapping(self, record: VolumeRecord) -> idmap.Mapping:
        """The map of a mapped volume: its data root's owner on disk shown as the volume's uid:gid on the host."""
        st = os.lstat(self.data_of(record).path)
        uid, gid = self.engine.host_owner(record.spec)
        return idmap.Mapping(st.st_uid, st.st_gid, uid, gid)

    def _mount_mapped(self, record: VolumeRecord, mount_id: str) -> str:
        """Inside Mount's transaction: count the reference and, at the first, attach the idmapped mount (nothing
        on disk is changed). A refusal rolls the reference back with the transaction."""
        target = self.mountpoint(record)
        self.store.add_ref(record.name, mount_id, now())
        if binds.is_mounted(target):
            return target
        source = self.data_of(record).path
        try:
            mapping = self.attach_mapped(record)
        except OSError as exc:
            why = f"idmapped mount of {source} at {target} failed: {exc}"
            raise PluginError(f"volume {record.name} cannot be mounted: {why}") from None
        self.store.set_check(record.name, now(), f"idmap: {mapping.describe()}")
        log.info("event=idmap-mounted volume=%s source=%s target=%s map=%s", record.name, source, target,
                 mapping.describe().replace(" ", "_"))
        return target

    def attach_mapped(self, record: VolumeRecord) -> idmap.Mapping:
        """Attach the idmapped mount of a mapped volume at its mountpoint (below ROOT/idmap, made 0700 first, or
        MOUNT_ROOT); the map it was given. OSError (IdmapError) when refused."""
        mapping = self.mapping(record)
        if not self.settings.mount_root:
            os.makedirs(idmap_dir(self.settings), mode=0o700, exist_ok=True)
            os.chmod(idmap_dir(self.settings), 0o700)
        idmap.idmapped_bind(self.data_of(record).path, self.mountpoint(record), mapping)
        return mapping

    def unmount_own(self, record: VolumeRecord) -> None:
        """Unmount what the driver mounted for the volume (its MOUNT_ROOT bind or idmapped mount)."""
        if own_mount(self.settings, record):
            binds.unbind(self.mountpoint(record))

    def _plan(self, record: VolumeRecord) -> MountPlan:
        """The Mount's one look at the root. PluginError when the engine's user namespaces cannot be told."""
        spec = record.spec
        plan = MountPlan(*self.engine.host_owner(spec))
        try:
            with reach(record) as path:
                plan.state = ownership.inspect_root(path, plan.uid, plan.gid, spec.mode)
        except ownership.OwnershipError as exc:
            plan.error = exc  # _walk records and reports it
            return plan
        plan.result = no_walk(spec, plan.state)
        if spec.policy != "never" and (record.last_check_result or "").startswith(WALK_INTERRUPTED):
            plan.result = None  # the root was repaired before the walk stopped: what is below it may not be
        return plan

    def _count(self, record: VolumeRecord, mount_id: str, plan: MountPlan) -> int:
        """Inside Mount's transaction: count the reference, record the check when no walk is due (one commit
        instead of two; bench: mount_pairs_per_s), bind. The references other mounts held before this one."""
        if record.identity is None:  # a volume made before identities were recorded learns its own now
            self.store.set_identity(record.name, identity_of(record.path))
        held = self.store.refs(record.name, self.store.epoch())
        self.store.add_ref(record.name, mount_id, now())
        if plan.result is not None:
            self.store.set_check(record.name, now(), plan.result)
        if self.settings.mount_root:
            target = self.mountpoint(record)
            if not binds.is_mounted(target):
                binds.bind(record.path, target)
        return held

    def _held_live(self, record: VolumeRecord, plan: MountPlan) -> bool:
        """A walk is due but other mounts hold the volume: if one is live (or that cannot be told), a server may
        be running on it. Record the root's check only and change nothing; the walk waits for the first holder's
        Mount."""
        found = self.holders(record)
        if found is not None and not found:
            return False  # references nothing stands for (dropped at Remove or activation, not here: a container
            # whose Mount was answered may not have made its own mount yet)
        if plan.state is None:
            return False
        who = "a live mount" if found else "other mounts (liveness unknown)"
        result = f"ok (held by {who}: root checked only)" if plan.state.ok else \
            f"mismatch, not repaired (held by {who}): {'; '.join(plan.state.problems)}"
        self.store.record_check(record.name, now(), result)
        return True

    def _walk(self, record: VolumeRecord, plan: MountPlan) -> None:
        """Walk and repair the data per policy, in this thread. Never returns with the root still wrong."""
        spec = record.spec
        try:
            if plan.error is not None:
                raise plan.error
            with reach(record) as path:
                report = ownership.repair(path, plan.uid, plan.gid, spec.mode, walk=True)
        except ownership.OwnershipError as exc:
            self.store.record_check(record.name, now(), f"failed: {exc}")
            raise PluginError(f"volume {record.name}: {exc}") from None
        except OSError as exc:
            refused = FilesystemRefused(f"giving to {self.engine.owner_text(spec)} mode {spec.mode:04o}:",
                                        record.path, exc)
            self.store.record_check(record.name, now(), f"failed: {refused}")
            raise PluginError(f"volume {record.name}: {refused}") from None
        found = "ok" if plan.state is None or plan.state.ok else "; ".join(plan.state.problems)
        result = describe_repair(found, report)
        self.store.record_check(record.name, now(), result)
        self.store.record_repair(record.name, now(), report.changed, round(report.seconds, 6))
        log.info("volume=%s repaired: %s", record.name, result)
        if report.root is not None and not report.root.ok:
            raise PluginError(f"volume {record.name}: could not repair its root: {'; '.join(report.root.problems)}")

    def unmount(self, name: str, mount_id: str) -> None:
        """Count one Unmount; an unknown ID (or volume) is not an error, the daemon may repeat itself."""
        with self.store.transaction(durable=False):
            record = self.store.get(name)
            if record is None:
                return
            known, left = self.store.drop_ref(name, mount_id)
            if known and left == 0:
                self.unmount_own(record)

    # -- references that are true

    def _not_at(self, record: VolumeRecord) -> tuple[str, ...]:
        """The driver's own mounts of the data a volume shows: its own, and those of the volumes that show the
        same data (the viewed volume and its views)."""
        data = self.data_of(record)
        shown = [data] + [v for name in self.store.views_of(data.name) if (v := self.store.get(name))]
        return tuple(self.mountpoint(r) for r in shown if own_mount(self.settings, r))

    def holders(self, record: VolumeRecord) -> list[liveness.Holder] | None:
        """The mount namespaces holding this volume now (for a view or a viewed volume: holding the data they
        share, which liveness cannot tell apart); None when the driver cannot tell."""
        data = self.data_of(record)
        if not self.engine.liveness_known() or self.data.problem(data):
            return None
        return liveness.holders(data.path, self._not_at(record))

    def who_holds(self, record: VolumeRecord) -> str:
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
            self.unmount_own(record)
        return dropped

    def release(self, record: VolumeRecord) -> int:
        """`ownvol volumes --release` (with the name's lock held): forget every reference of a volume no
        container really uses. VolumeInUse while some mount namespace holds it; how many mount IDs were dropped."""
        found = self.holders(record)
        if found:
            raise VolumeInUse(f"volume {record.name} is in use: {self.who_holds(record)}")
        with self.store.transaction(durable=False):
            refs = self.store.mount_ids(record.name)
            dropped = self.store.drop_refs(record.name)
        log.warning("event=references-released volume=%s ids=%s liveness=%s", record.name, ",".join(sorted(refs)),
                    "checked" if found is not None else "unknown")
        self.unmount_own(record)
        return dropped

    def references(self) -> list[dict]:
        """Every ready volume with its references, their age and whether a live mount stands for them."""
        known = self.engine.liveness_known()
        out = []
        for record in self.store.all(state="ready"):
            refs = self.store.references(record.name)
            found = self.holders(record) if refs and known else None
            out.append({"name": record.name, "path": record.path, "references": [
                {"id": r.id, "count": r.count, "since": r.since, "last": r.last_at, "epoch": r.epoch} for r in refs],
                "live": None if found is None else [f"pid {h.pid} ({h.command}) at {h.mount_point}" for h in found],
                "state": self.data.problem(record) or "ok", "ownership": "idmap" if record.mapped else "walk",
                "ownership_note": record.ownership_note or "", "view_of": record.spec.view_of or ""})
        return out

