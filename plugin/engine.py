"""The engine the driver serves: which dockerd activated it (its epoch of mount references), whether the driver
can see its processes, and how it maps user namespaces (the host uid:gid a volume's owner is)."""

from __future__ import annotations

import logging
import time

from ownvol import userns

from . import liveness
from .errors import PluginError
from .options import VolumeSpec
from .store import Store

log = logging.getLogger("ownvol.plugin")

# A dockerd activates its plugins, and mounts the volumes of the containers it restarts, while it restores, before
# its API serves: its socket listens but answers nothing until every restart is done (moby cmd/dockerd/daemon.go:
# the API's Wait comes after NewDaemon, whose restore waits for restartContainers). A request that waits for GET /info
# then holds that restore back by its whole wait. So once a mapping was learned (from an earlier run of the engine),
# the ask is short and, once it went unanswered, not repeated by the requests of the next ASK_AGAIN seconds: they keep
# the mapping learned before, as after any failed ask. With none learned yet, each request still asks, waiting up to
# FIRST_ASK_TIMEOUT: a volume is never made to a mapping that was never asked for.
ASK_TIMEOUT = 2.0  # seconds; a serving dockerd answers /info in milliseconds
ASK_AGAIN = 10.0  # seconds
FIRST_ASK_TIMEOUT = 10.0  # seconds


class EngineIdentity:
    """What the driver knows of its engine, kept in the store's meta rows: engine (pid:started:command of the
    dockerd that activated it), epoch, userns (the mapping learned, `!why` when it cannot be told) and
    userns_pending (the pid to ask again)."""

    def __init__(self, userns_setting: str, store: Store, rootless_only: bool = False) -> None:
        self.userns_setting = userns_setting  # auto | off | an IdMap's text (settings.userns)
        self.store = store
        # the socket is a user's (OWNVOL_SOCKET_OWNER): ids are given only through a map an engine showed
        self.rootless_only = rootless_only

    def activate(self, engine: liveness.Engine | None) -> bool:
        """Plugin.Activate by engine: whether a new epoch began (an engine not seen before, or one whose pid
        the driver cannot see); then the references the dead one left may be stale. A caller that is not
        dockerd (a health check) changes nothing."""
        if engine is None or (engine.pid and not engine.is_dockerd):
            return False
        key = f"{engine.pid}:{engine.started}:{engine.command}"
        with self.store.transaction():
            if engine.pid and self.store.meta("engine") == key:
                return False
            self.store.set_meta("engine", key)
            self.store.set_meta("epoch", str(self.store.epoch() + 1))
        log.info("event=engine-activated pid=%s epoch=%d", engine.pid or "unseen", self.store.epoch())
        if engine.pid:
            self._learn_userns(engine)
        return True

    def liveness_known(self) -> bool:
        """Whether the driver sees the processes of the engine that activated it (see liveness)."""
        text = self.store.meta("engine")
        if not text:
            return False
        pid, started, command = text.split(":", 2)
        return command == "dockerd" and liveness.alive(liveness.Engine(int(pid), int(started), command))

    def _learn_userns(self, engine: liveness.Engine) -> None:
        """Learn how the engine that activated the driver maps ids (OWNVOL_USERNS=auto): the map the kernel applies
        to dockerd itself (its /proc/PID/uid_map and gid_map: a rootless engine's containers share its user
        namespace), else, when that is the identity, its `docker info` (--userns-remap gives each container a
        namespace of its own, dockerd none)."""
        if self.userns_setting != "auto":
            return
        known = self.store.meta("userns") is not None
        try:
            kernel: userns.IdMap | None = userns.IdMap.from_process(engine.pid)
        except userns.UnknownMapping:
            kernel = None
        try:
            if kernel is not None and not kernel.identity:
                found: userns.IdMap | None = kernel
            else:
                info = liveness.engine_info(engine.pid, timeout=ASK_TIMEOUT if known else FIRST_ASK_TIMEOUT)
                if kernel is None and userns.rootless(info):
                    raise userns.UnknownMapping(f"the engine (pid {engine.pid}) is rootless, and its "
                                                "/proc/PID/uid_map cannot be read from the driver")
                found = userns.from_engine(info)
            text = str(found) if found else ""
        except userns.UnknownMapping as exc:
            text = f"!{exc}"
        except (OSError, ValueError) as exc:
            # unanswered (a dockerd still restoring: ASK_TIMEOUT): asked again by a request ASK_AGAIN seconds on
            with self.store.transaction():
                self.store.set_meta("userns_pending", str(engine.pid))
                self.store.set_meta("userns_ask_after", str(time.time() + ASK_AGAIN) if known else "")
            log.info("event=userns-pending pid=%s why=%s", engine.pid, exc)
            return
        with self.store.transaction():
            self.store.set_meta("userns", text)
            self.store.set_meta("userns_pending", "")
        log.info("event=userns-learned mapping=%s source=%s", text or "none",
                 "kernel" if kernel is not None and not kernel.identity else "docker-info")

    def _userns_due(self) -> int | None:
        """The pid of the engine to ask for its user namespaces before a Create or Mount, if one is due (with a
        mapping learned before, not within ASK_AGAIN seconds of an ask it did not answer)."""
        if self.userns_setting != "auto":
            return None
        pid = self.store.meta("userns_pending")
        if not pid or time.time() < float(self.store.meta("userns_ask_after") or 0):
            return None
        return int(pid) if liveness.process_start(int(pid)) is not None else None

    def userns_pending(self) -> None:
        """Before Create and Mount (outside any transaction): if the engine could not be asked at its activation,
        ask it now; until it answers, the mapping learned before stays."""
        pid = self._userns_due()
        if pid is not None:
            self._learn_userns(liveness.Engine(pid, 0, "dockerd"))

    def idmap(self) -> userns.IdMap | None:
        """The engine's user-namespace mapping (None: ids are host ids); PluginError when it remaps and the host
        ids cannot be told (nothing is done then)."""
        if self.userns_setting == "off":
            return None
        text = self.userns_setting if self.userns_setting != "auto" else (self.store.meta("userns") or "")
        if self.rootless_only and not text:
            raise PluginError("the socket is given to a user (OWNVOL_SOCKET_OWNER), for a rootless engine: ids are "
                              "given only through the map of an engine whose ids are mapped, and none has "
                              "activated the driver (docs/driver.md, Rootless Docker)")
        if text.startswith("!"):
            raise PluginError(f"the engine remaps user namespaces, but ownvol cannot tell to which host ids: "
                              f"{text[1:]}; set the plugin's OWNVOL_USERNS (docs/driver.md, User namespaces)")
        return userns.IdMap.parse(text) if text else None

    def host_owner(self, spec: VolumeSpec) -> tuple[int, int]:
        """The host uid:gid that are spec's uid:gid inside the engine's containers; PluginError (idmap)."""
        mapping = self.idmap()
        if mapping is None:
            return spec.uid, spec.gid
        try:
            return mapping.host_ids(spec.uid, spec.gid)
        except userns.UnknownMapping as exc:
            raise PluginError(f"uid:gid {spec.uid}:{spec.gid}: {exc} ({mapping.describe()})") from None

    def host_owner_text(self, spec: VolumeSpec) -> str:
        """host_owner as Get's status shows it: `uid:gid`, or `unknown: why`."""
        try:
            uid, gid = self.host_owner(spec)
        except PluginError as exc:
            return f"unknown: {exc}"
        return f"{uid}:{gid}"

    def owner_text(self, spec: VolumeSpec) -> str:
        """spec's owner for a message: `uid:gid`, with the host's ids when the engine maps them."""
        uid, gid = self.host_owner(spec)
        return f"{spec.uid}:{spec.gid}" + (f" (host {uid}:{gid})" if (uid, gid) != (spec.uid, spec.gid) else "")
