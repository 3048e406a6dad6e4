"""The status page in a real browser: Debian's chromium, headless, driven by Playwright for Python (never a
browser Playwright would download). A canary crashes on its root-owned bind mount; the page, opened before,
shows it red with the incident and the line that opened it, then green and resolved, without a reload. With
JavaScript off the server-rendered page still lists the containers."""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from prometheus_client.parser import text_string_to_metric_families

from ownvol.hook.board import Board, DriverVolumes
from ownvol.hook.forecast import SpaceWatch
from ownvol.hook.journal import Journal
from ownvol.hook.telemetry import Telemetry
from tests.support.driver import NO_HOOK, create, status
from tests.support.fixtures_hook import fast_strategies, run_redis

pytestmark = pytest.mark.engine

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOT_ENV = "OWNVOL_STATUS_SCREENSHOT"  # also save the healed page's screenshot here (docs/status-page.png)
WAIT_MS = 90_000


@pytest.fixture
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `make tools` installs Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def _row(page: Page, name: str, tone: str):
    return page.locator(f'tr.container.{tone}[data-container="{name}"]')


def test_the_page_shows_a_canary_red_then_healed_green_without_a_reload(hook, tracked, redis_image, host_dir, port,
                                                                         browser: Browser, tmp_path: Path):
    # A first action that cannot help and pauses before the next: the crashed canary stays red for seconds,
    # so the page (polled every second) shows it before the repair and the restart heal it.
    strategies = fast_strategies(tmp_path / "s.yaml", types={
        "permission-denied": {"actions": ["persist-again", "repair-ownership", "restart"], "delay": 3,
                              "max_delay": 3, "backoff": 1, "attempts": 1}})
    h = hook(strategies=strategies)
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    page.goto(f"http://127.0.0.1:{h.port}/")
    expect(page.locator("#live")).to_have_text("live")
    page.evaluate("window.sameDocument = 'yes'")

    # no restart policy: the hook starts it after the repair because it is opted in (ownvol.start=true)
    canary = run_redis(tracked, redis_image, port, host_dir, {**h.labels, "ownvol.start": "true"})
    expect(_row(page, canary.name, "bad")).to_be_visible(timeout=WAIT_MS)
    opened = page.locator(f'article.incident[data-status="open"]:has-text("{canary.name}")')
    expect(opened).to_be_visible(timeout=WAIT_MS)
    expect(opened.locator("pre.line")).to_contain_text("Permission denied")
    expect(opened).to_contain_text("permission-denied")

    expect(_row(page, canary.name, "good")).to_be_visible(timeout=WAIT_MS)
    resolved = page.locator(f'article.incident[data-status="resolved"]:has-text("{canary.name}")')
    expect(resolved).to_be_visible(timeout=WAIT_MS)
    steps = resolved.locator("li.step")
    expect(steps).to_have_count(3)
    expect(steps.nth(2)).to_contain_text("restart: ok")
    expect(steps.nth(2)).to_contain_text("verified healthy")
    expect(resolved.locator("li.end")).to_contain_text("resolved")
    row = _row(page, canary.name, "good")
    expect(row).to_contain_text("999:999")  # owner wanted (its --user) and, after the repair, actual
    expect(row).to_contain_text(str(host_dir))
    expect(page.locator("#rates")).to_contain_text("repair-ownership")
    expect(row).to_contain_text("free")  # the data mount's space, probed on the host
    sizes = {sample.labels["container"]: sample.value for family in text_string_to_metric_families(h.metrics())
             for sample in family.samples if sample.name == "ownvol_hook_data_mount_size_bytes"}
    assert sizes[canary.name] == shutil.disk_usage(host_dir).total

    assert page.evaluate("window.sameDocument") == "yes", "the page was reloaded"
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    shot = tmp_path / "status-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(shot, os.environ[SCREENSHOT_ENV])
    print(f"\nscreenshot: {shot}")

    static = browser.new_context(java_script_enabled=False)
    try:
        plain = static.new_page()
        plain.goto(f"http://127.0.0.1:{h.port}/")
        expect(plain.locator(f'tr.container[data-container="{canary.name}"]')).to_have_count(1)
        expect(plain.locator(f'tr.container[data-container="{canary.name}"]')).to_contain_text("healthy")
        expect(plain.locator("#live")).to_contain_text("reload")
        expect(plain.locator(f'article.incident:has-text("{canary.name}")')).to_have_count(1)
    finally:
        static.close()


def test_the_driver_volumes_are_read_through_the_engine(ownvol_plugin, engine_client, ptracked, redis_image,
                                                         unique_name):
    """`docker volume ls` and `inspect` as the page shows them: owner, policy, references, last check and repair."""
    name, other = unique_name("vol"), unique_name("vol")
    create(engine_client, ownvol_plugin, ptracked, name, uid="999", gid="999")
    ptracked.volume(other)
    engine_client.volumes.create(other, labels=ptracked.labels)  # the engine's own driver: not shown
    ptracked.run(redis_image, ["sleep", "600"], network_mode="none", labels=NO_HOOK,
                 volumes={name: {"bind": "/bound", "mode": "rw"}})
    broken = unique_name("vol")
    create(engine_client, ownvol_plugin, ptracked, broken, uid="999", gid="999")
    shutil.rmtree(ownvol_plugin.data_dir(broken))  # deleted by hand: a latent fault of the volume
    volumes, error = DriverVolumes(lambda: engine_client, ownvol_plugin.name).read()
    assert error is None
    assert sorted(v["name"] for v in volumes if v["name"] in (name, other, broken)) == sorted([name, broken])
    shown = next(v for v in volumes if v["name"] == name)
    st = status(engine_client, name)
    assert shown["owner"] == "999:999" and shown["policy"] == st["policy"] and shown["references"] == 1
    assert shown["last_check"] == st["last_check"] != "" and shown["state"] == "ok"
    board = Board(Journal(":memory:"), list, lambda cid: False, SpaceWatch(Telemetry(out=io.StringIO())),
                  DriverVolumes(lambda: engine_client, ownvol_plugin.name))
    faults = [f for f in board.view()["latent"] if f["subject"] in (name, broken)]
    assert [(f["subject"], f["kind"]) for f in faults] == [(broken, "volume")] and "missing" in faults[0]["what"]


def test_a_driver_the_engine_knows_that_no_longer_answers_keeps_no_reader_waiting(make_plugin, engine_client):
    """A driver stopped after dockerd activated it (its socket gone, as `make down` leaves it): dockerd retries it
    at each `docker volume ls` for about 30 s. The page and the scrape read the volumes through DriverVolumes:
    they get the last list within its wait, and say why, while the list is still being asked for."""
    plugin = make_plugin()
    plugin.call("Create", Name="gone-soon", Opts={})
    engine_client.api.volumes()  # the engine lists (and has activated) the driver
    volumes = DriverVolumes(lambda: engine_client, plugin.name, ttl=0, wait=1.0)
    shown, error = volumes.read()
    assert error is None and [v["name"] for v in shown] == ["gone-soon"]
    plugin.stop()
    Path(plugin.socket).unlink(missing_ok=True)  # a stopped driver leaves no socket (gunicorn unlinks its own)
    started = time.monotonic()
    shown, error = volumes.read()
    waited = time.monotonic() - started
    assert waited < 3, f"the reader waited {waited:.1f} s for the engine"
    assert error and "no volume list within 1 s" in error, error
    assert [v["name"] for v in shown] == ["gone-soon"], "the last list is shown"
