"""The data-mount forecast (hooks/forecast.py) on samples recorded from a real filesystem filling up.

tests/unit/data/space_samples.json: statvfs of a 64 MiB tmpfs sampled every 0.5 s while 512 KiB were written
before each sample (3 MiB once); each sample is (time, free bytes, bytes written so far).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest

from ownvol.hook.forecast import Forecast, SpaceWatch, growth, seconds_until_full
from ownvol.hook.telemetry import Telemetry

RECORDED = json.loads((Path(__file__).parent / "data" / "space_samples.json").read_text())
SIZE = RECORDED["size_bytes"]
SAMPLES = [(t, free) for t, free, _ in RECORDED["samples"]]
WRITTEN = [(t, written) for t, _, written in RECORDED["samples"]]


def _written_rate(rows: list[tuple[float, int]]) -> float:
    (t0, w0), (t1, w1) = rows[0], rows[-1]
    return (w1 - w0) / (t1 - t0)


def test_the_recording_is_of_the_writes():
    assert all(free + written == SIZE for (_, free), (_, written) in zip(SAMPLES, WRITTEN, strict=True))


def test_growth_matches_the_rate_of_the_writes():
    rate = growth(SAMPLES, min_span=5)
    assert rate == pytest.approx(_written_rate(WRITTEN), rel=0.1)
    assert rate > 1024 * 1024  # about 1.1 MiB/s: 512 KiB each 0.5 s, plus the burst


def test_hours_until_full_is_free_space_over_growth():
    rate = growth(SAMPLES, min_span=5)
    free = SAMPLES[-1][1]
    assert seconds_until_full(free, rate) == pytest.approx(free / rate)
    assert seconds_until_full(free, 0.0) is None
    assert seconds_until_full(free, -100.0) is None
    assert seconds_until_full(free, None) is None


def test_no_estimate_from_too_few_samples_or_too_short_a_span():
    assert growth(SAMPLES[:2], min_span=0) is None
    assert growth(SAMPLES[:5], min_span=60) is None  # 2 s of samples
    assert growth(SAMPLES[:5], min_span=1) is not None


def test_a_steady_or_shrinking_mount_is_never_full():
    steady = [(t, 1000) for t, _ in SAMPLES]
    assert growth(steady, min_span=5) == 0
    shrinking = [(t, SIZE - free) for t, free in SAMPLES]
    assert growth(shrinking, min_span=5) < 0
    assert seconds_until_full(SIZE, growth(shrinking, min_span=5)) is None


def test_the_window_keeps_only_the_last_samples():
    forecast = Forecast(window=4, min_span=2)
    for t, free in SAMPLES:
        outlook = forecast.observe("r", "/srv/r", free, SIZE, t)
    last = [(t, f) for t, f in SAMPLES if t >= SAMPLES[-1][0] - 4]
    assert outlook.growth_bytes_per_second == pytest.approx(growth(last, min_span=2))
    assert outlook.free_bytes == SAMPLES[-1][1]
    assert outlook.hours_until_full == pytest.approx(SAMPLES[-1][1] / outlook.growth_bytes_per_second / 3600)


def test_another_path_starts_the_history_again():
    forecast = Forecast(min_span=2)
    for t, free in SAMPLES[:10]:
        forecast.observe("r", "/srv/a", free, SIZE, t)
    outlook = forecast.observe("r", "/srv/b", SAMPLES[10][1], SIZE, SAMPLES[10][0])
    assert outlook.growth_bytes_per_second is None and outlook.path == "/srv/b"


def _events(out: io.StringIO, kind: str) -> list[dict]:
    return [e for e in map(json.loads, out.getvalue().splitlines()) if e["event"] == kind]


def test_a_filling_mount_is_told_once_as_latent_with_its_metrics():
    out = io.StringIO()
    telemetry = Telemetry(out=out)
    watch = SpaceWatch(telemetry, threshold_hours=24, forecast=Forecast(min_span=5))
    for t, free in SAMPLES:
        watch.observe("redis-1", {"path": "/srv/r", "free_bytes": free, "size_bytes": SIZE}, t)
    latent = _events(out, "latent")
    assert len(latent) == 1
    assert latent[0]["container"] == "redis-1" and latent[0]["kind"] == "filling"
    assert latent[0]["hours_until_full"] < 24
    registry = telemetry.metrics.registry
    labels = {"container": "redis-1"}
    assert registry.get_sample_value("ownvol_hook_data_mount_free_bytes", labels) == SAMPLES[-1][1]
    assert registry.get_sample_value("ownvol_hook_data_mount_size_bytes", labels) == SIZE
    until_full = registry.get_sample_value("ownvol_hook_data_mount_seconds_until_full", labels)
    assert until_full == pytest.approx(SAMPLES[-1][1] / registry.get_sample_value(
        "ownvol_hook_data_mount_growth_bytes_per_second", labels))


def test_a_mount_that_stops_filling_is_cleared_and_told_again_when_it_fills_again():
    out = io.StringIO()
    telemetry = Telemetry(out=out)
    watch = SpaceWatch(telemetry, threshold_hours=24, forecast=Forecast(window=10, min_span=5))
    disk = {"path": "/srv/r", "size_bytes": SIZE}
    for t, free in SAMPLES:
        watch.observe("r", {**disk, "free_bytes": free}, t)
    end, last_free = SAMPLES[-1]
    for k in range(1, 30):
        watch.observe("r", {**disk, "free_bytes": last_free}, end + k)
    assert not watch.filling(watch.forecast.outlook("r"))
    assert telemetry.metrics.registry.get_sample_value("ownvol_hook_data_mount_seconds_until_full",
                                                       {"container": "r"}) == math.inf
    for k in range(30, 45):
        watch.observe("r", {**disk, "free_bytes": last_free - (k - 29) * 1_000_000}, end + k)
    assert len(_events(out, "latent")) == 2


def test_a_mount_out_of_reach_records_nothing():
    watch = SpaceWatch(Telemetry(out=io.StringIO()))
    assert watch.observe("r", None, 1.0) is None
    assert watch.forecast.outlook("r") is None
