"""Telling people: JSON-line events on stdout, an optional webhook, Prometheus metrics (served by hooks/web.py)."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import TextIO

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .model import STATES

WEBHOOK_EVENTS = ("incident", "recovered", "gave-up")
VOLUME_OWNERSHIP = "ownvol_hook_volume_ownership"


class VolumeOwnership(Collector):
    """ownvol_hook_volume_ownership{volume, ownership, asked} 1 for each of the driver's volumes, read at each
    scrape: how the container sees the owner (ownership: idmap or walk, the Status's `ownership`) beside what the
    volume asked for (asked: walk, idmap or auto, the Status's `ownership_asked`). asked="auto" with
    ownership="walk" is auto fallen back to the walk; why is in the volume's Status (`ownership_note`), not in a
    label, to keep the labels' values bounded. read() is board.DriverVolumes.read: (volumes as dicts with name,
    ownership and ownership_asked, None) or ([], why) when the engine could not be asked (then no series)."""

    def __init__(self, read: Callable[[], tuple[list[dict], str | None]]) -> None:
        self.read = read

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(VOLUME_OWNERSHIP, "1 for each of the driver's volumes: how its container sees its "
                                 "owner (ownership: idmap or walk) and what it asked for (asked: walk, idmap or "
                                 "auto); auto shown as walk fell back, the volume's Status says why",
                                 labels=["volume", "ownership", "asked"])

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        volumes, _ = self.read()
        for v in volumes:
            family.add_metric([v["name"], v.get("ownership") or "walk", v.get("ownership_asked") or "walk"], 1)
        yield family


class Metrics:
    """The hook's Prometheus metrics, in a registry of its own (served on /metrics)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.incidents = Counter("ownvol_hook_incidents", "Incidents opened, by error type", ["type"],
                                 registry=self.registry)
        self.recoveries = Counter("ownvol_hook_recovery_actions", "Recovery actions, by action and result",
                                  ["action", "result"], registry=self.registry)
        self.outcomes = Counter("ownvol_hook_incident_outcomes", "Incidents closed, by type and outcome",
                                ["type", "outcome"], registry=self.registry)
        self.recovery_seconds = Histogram("ownvol_hook_recovery_seconds", "From detection to verified recovery",
                                          ["type"], registry=self.registry,
                                          buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300))
        self.detection_seconds = Histogram("ownvol_hook_detection_seconds",
                                           "From Redis writing a failure line to the hook seeing it",
                                           registry=self.registry,
                                           buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10))
        self.health = Gauge("ownvol_hook_container_health", "1 for the current health state of a container",
                            ["container", "state"], registry=self.registry)
        self.free_bytes = Gauge("ownvol_hook_data_mount_free_bytes", "Free space on a container's data mount",
                                ["container"], registry=self.registry)
        self.size_bytes = Gauge("ownvol_hook_data_mount_size_bytes", "Size of a container's data mount's filesystem",
                                ["container"], registry=self.registry)
        self.growth = Gauge("ownvol_hook_data_mount_growth_bytes_per_second",
                            "Growth of used space on a data mount over the last hour (least squares)",
                            ["container"], registry=self.registry)
        self.until_full = Gauge("ownvol_hook_data_mount_seconds_until_full",
                                "Seconds until a data mount is full at the last hour's growth (+Inf: not growing)",
                                ["container"], registry=self.registry)
        self._space = (self.free_bytes, self.size_bytes, self.growth, self.until_full)

    def watch_volumes(self, read: Callable[[], tuple[list[dict], str | None]]) -> None:
        """Export the driver's volumes' ownership (VolumeOwnership) from read(), asked at each scrape."""
        self.registry.register(VolumeOwnership(read))

    def set_health(self, container: str, state: str) -> None:
        """Set the container's health gauge: 1 for its state (model.STATES), 0 for the others."""
        for s in STATES:
            self.health.labels(container=container, state=s).set(1 if s == state else 0)

    def set_space(self, container: str, free_bytes: int, size_bytes: int, growth: float | None,
                  until_full: float) -> None:
        """A data mount's gauges: bytes, growth in bytes per second (None: not known yet), seconds until full."""
        self.free_bytes.labels(container=container).set(free_bytes)
        self.size_bytes.labels(container=container).set(size_bytes)
        if growth is not None:
            self.growth.labels(container=container).set(growth)
        self.until_full.labels(container=container).set(until_full)

    def forget(self, container: str) -> None:
        """Drop a removed container's health series."""
        for s in STATES:
            try:
                self.health.remove(container, s)
            except KeyError:
                pass
        for gauge in self._space:
            try:
                gauge.remove(container)
            except KeyError:
                pass


class Telemetry:
    """Events as JSON lines on out (stdout), incident, recovered and gave-up also POSTed to the webhook, and the
    metrics."""

    def __init__(self, out: TextIO = sys.stdout, webhook: str | None = None) -> None:
        self.out = out
        self.webhook = webhook
        self.metrics = Metrics()
        self._lock = threading.Lock()

    def emit(self, event: str, **fields) -> dict:
        """Write one event line ({ts, event, **fields}; ts in epoch seconds) and return the record; the webhook is
        posted from a thread of its own."""
        record = {"ts": round(time.time(), 3), "event": event, **fields}
        line = json.dumps(record, default=str, sort_keys=False)
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()
        if self.webhook and event in WEBHOOK_EVENTS:
            threading.Thread(target=self._post, args=(record,), daemon=True).start()
        return record

    def _post(self, record: dict) -> None:
        if not self.webhook:
            return
        request = urllib.request.Request(self.webhook, data=json.dumps(record, default=str).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                reply.read()
        except OSError as exc:
            with self._lock:
                self.out.write(json.dumps({"ts": round(time.time(), 3), "event": "webhook-failed",
                                           "for": record["event"], "error": str(exc)}) + "\n")
                self.out.flush()
