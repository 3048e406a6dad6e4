"""What the status page shows, gathered from the running hook: watched containers, incidents from the
journal, success rates, latent faults, the forecast and the driver's volumes as the engine reports them.

Everything here is read, never changed; view() is one dict of plain values that the page's template renders.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import docker
import requests

from ownvol.status import driver_name, is_driver, owner

from .forecast import SpaceWatch
from .journal import Journal
from .model import Incident

INCIDENTS_SHOWN = 12
VOLUMES_TTL = 5.0  # seconds a `docker volume ls/inspect` answer is reused: every viewer polls the page
VOLUMES_WAIT = 1.0  # seconds a page or a scrape waits for that answer (DriverVolumes)


class DriverVolumes:
    """The volumes of the driver called `name` (default: ownvol.status.driver_name()) as the engine reports
    them: `docker volume ls`, then `docker volume inspect` of each whose Driver is it (its Status is the
    driver's Get reply, ownvol.status.VolumeStatus).

    A reader never waits on the engine more than `wait` seconds: dockerd asks every volume driver it has
    activated for its List, and one that no longer answers (a driver stopped without its socket) it retries for
    about 30 s (moby pkg/plugins/client.go callWithRetry), so a `docker volume ls` then takes that long. The list
    is asked for in a thread of its own; a reader that it keeps waiting gets the last list and says why."""

    def __init__(self, client: Callable[[], docker.DockerClient], name: str | None = None,
                 ttl: float = VOLUMES_TTL, wait: float = VOLUMES_WAIT) -> None:
        self.client = client
        self.name = name or driver_name()
        self.ttl = ttl
        self.wait = wait
        self._lock = threading.Lock()
        self._cached: tuple[float, list[dict], str | None] = (0.0, [], None)
        self._asking: threading.Thread | None = None

    def read(self) -> tuple[list[dict], str | None]:
        """(volumes, None), or (volumes, why) when the engine could not be asked (volumes: []) or has not
        answered within `wait` seconds (volumes: the last list it gave)."""
        with self._lock:
            at, volumes, error = self._cached
            if time.monotonic() - at < self.ttl:
                return volumes, error
            if self._asking is None:
                self._asking = threading.Thread(target=self._ask, name="driver-volumes", daemon=True)
                self._asking.start()
            asking = self._asking
        asking.join(self.wait)
        with self._lock:
            at, volumes, error = self._cached
            if asking.is_alive():
                return volumes, (f"engine: no volume list within {self.wait:g} s (dockerd retries a volume driver "
                                 f"it knows that does not answer); shown: the last one")
            return volumes, error

    def _ask(self) -> None:
        volumes: list[dict] = []
        error: str | None = "engine: the volume list failed"
        try:
            volumes, error = self._read(), None
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
            error = f"engine: {exc}"[:200]
        finally:
            with self._lock:
                self._cached = (time.monotonic(), volumes, error)
                self._asking = None

    def _read(self) -> list[dict]:
        api = self.client().api
        out = []
        for volume in api.volumes().get("Volumes") or []:
            if not is_driver(volume.get("Driver") or "", self.name):
                continue
            try:
                status = api.inspect_volume(volume["Name"]).get("Status") or {}
            except docker.errors.NotFound:
                continue
            repair = status.get("last_repair") or {}
            uid_gid = owner(status)
            out.append({"name": volume["Name"], "driver": volume["Driver"],
                        "owner": f"{uid_gid[0]}:{uid_gid[1]}" if uid_gid else "",
                        "policy": status.get("policy", ""), "references": int(status.get("mounts") or 0),
                        "state": status.get("state", ""), "last_check": status.get("last_check", ""),
                        "last_check_result": status.get("last_check_result", ""),
                        "last_repair": repair.get("at", ""), "last_repair_changed": repair.get("changed"),
                        "ownership": status.get("ownership", "walk"),
                        "ownership_asked": status.get("ownership_asked", "walk"),
                        "ownership_note": status.get("ownership_note", "")})
        return sorted(out, key=lambda v: v["name"])


def _seconds(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else round(end - start, 3)


def incident_view(journal: Journal, incident: Incident) -> dict:
    """An incident as a timeline: detected, each action (result, verified, seconds), and how it ended."""
    steps = [{"step": a.step, "action": a.action, "result": a.result or "running", "verified": a.verified,
              "state": (a.detail.get("verify") or {}).get("state", ""), "at": a.started_at,
              "seconds": _seconds(a.started_at, a.finished_at)} for a in journal.actions(incident.id)]
    detail = incident.detail or {}
    return {"id": incident.id, "container": incident.container_name, "type": incident.error_type,
            "origin": incident.origin, "status": incident.status, "outcome": incident.outcome or "",
            "line": str(detail.get("message") or ""), "detected_at": incident.detected_at,
            "closed_at": incident.closed_at, "seconds": _seconds(incident.detected_at, incident.closed_at),
            "steps": steps}


def type_records(incidents: list[Incident], rates: dict[tuple[str, str], tuple[int, int]]) -> list[dict]:
    """Per error type: incidents, resolved, gave up, mean seconds to heal, and the action that healed it most."""
    out = []
    for error_type in sorted({i.error_type for i in incidents} | {t for t, _ in rates}):
        mine = [i for i in incidents if i.error_type == error_type]
        healed = [i.closed_at - i.detected_at for i in mine if i.status == "resolved" and i.closed_at]
        best = max(((ok, a) for (t, a), (ok, _) in rates.items() if t == error_type and ok), default=None)
        out.append({"type": error_type, "incidents": len(mine), "resolved": len(healed),
                    "gave_up": sum(i.status == "gave-up" for i in mine),
                    "mean_seconds": round(sum(healed) / len(healed), 3) if healed else None,
                    "healed_by": best[1] if best else ""})
    return out


class Board:
    """The page's model. watched() gives the watcher's entries (objects with id, name, health, reasons and
    `last`, the last Health probe); busy(container_id) tells whether a recovery runs."""

    def __init__(self, journal: Journal, watched: Callable[[], list], busy: Callable[[str], bool],
                 space: SpaceWatch, volumes: DriverVolumes | None) -> None:
        self.journal = journal
        self.watched = watched
        self.busy = busy
        self.space = space
        self.volumes = volumes

    def view(self) -> dict:
        """The page as plain values: containers, incidents (timelines), rates, types, latent, volumes, now."""
        incidents = self.journal.history(500)
        last_of: dict[str, Incident] = {}
        for incident in incidents:
            last_of.setdefault(incident.container_id, incident)
        containers, latent = [], []
        for w in sorted(self.watched(), key=lambda w: w.name):
            containers.append(self._container(w, last_of.get(w.id)))
            latent += self._latent(w)
        rates = self.journal.rates()
        volumes, volumes_error = self.volumes.read() if self.volumes else ([], "no engine")
        latent += [{"subject": v["name"], "kind": "volume", "what": f"volume {v['name']}: {v['state']}"}
                   for v in volumes if v["state"] not in ("", "ok")]
        return {"now": time.time(), "containers": containers,
                "incidents": [incident_view(self.journal, i) for i in incidents[:INCIDENTS_SHOWN]],
                "rates": [{"type": t, "action": a, "succeeded": ok, "failed": bad,
                           "rate": round(ok / (ok + bad), 3) if ok + bad else None}
                          for (t, a), (ok, bad) in sorted(rates.items())],
                "types": type_records(incidents, rates), "latent": latent,
                "volumes": volumes, "volumes_error": volumes_error,
                "threshold_hours": self.space.threshold_hours}

    def _container(self, w, last: Incident | None) -> dict:
        health = getattr(w, "last", None)
        target = (health.target if health else None) or {}
        owner = (health.owner if health else None) or {}
        mount = target.get("mount") or {}
        outlook = self.space.forecast.outlook(w.name)
        return {"id": w.id[:12], "name": w.name, "service": target.get("service") or "redis",
                "health": w.health, "reasons": list(w.reasons), "recovering": self.busy(w.id),
                "owner_wanted": target.get("owner") or "", "owner_source": target.get("owner_source") or "",
                "owner_actual": f"{owner['uid']}:{owner['gid']}" if "uid" in owner else "",
                "owner_ok": owner.get("ok"),
                "mount": (f"{mount.get('type')} {mount.get('name') or mount.get('source')} -> "
                          f"{mount.get('destination')}") if mount else "",
                "space": outlook.as_dict() if outlook else None,
                "last_incident": {"id": last.id, "type": last.error_type, "status": last.status,
                                  "at": last.detected_at} if last else None}

    def _latent(self, w) -> list[dict]:
        found = []
        if w.health == "latent":
            found += [{"subject": w.name, "kind": "health", "what": reason} for reason in w.reasons]
        outlook = self.space.forecast.outlook(w.name)
        if outlook and self.space.filling(outlook):
            found.append({"subject": w.name, "kind": "filling",
                          "what": f"{outlook.path} full in {outlook.hours_until_full:.1f} h "
                                  f"({outlook.free_bytes} bytes free)"})
        return found
