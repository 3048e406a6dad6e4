"""The units and the environment file agree with the code and the docs (tests/engine/test_host_install.py runs
them)."""

from __future__ import annotations

import re

import click
import pytest

from ownvol.driver.activation import ActivationError, listening_socket
from ownvol.driver.settings import default_workers, from_env
from ownvol.hook.commands import watch
from tests.support.common import ROOT
from tests.support.systemd import HOST_OWNVOL, UNITS_DIR, restart_delay, timespan, unit

EXAMPLE = UNITS_DIR / "ownvol.env"


def example_settings() -> dict[str, str]:
    """The environment file's commented-out settings, uncommented: every default as shipped."""
    out = {}
    for line in EXAMPLE.read_text().splitlines():
        if re.fullmatch(r"#[A-Z_]+=.*", line):
            key, _, value = line[1:].partition("=")
            out[key] = value
    return out


def read_by_code() -> set[str]:
    """Every variable the driver's settings (plugin/settings.py, the driver name in ownvol/status.py) and the hook's
    `watch` read."""
    driver = {name for source in ("plugin/settings.py", "ownvol/status.py")
              for name in re.findall(r'"(OWNVOL_[A-Z_]+)"', (ROOT / source).read_text())}
    hook = {p.envvar for p in watch.params if isinstance(p, click.Option) and p.envvar}
    return driver | hook


def test_the_environment_file_lists_every_setting_the_code_reads_and_the_docs_document():
    listed = set(example_settings())
    assert listed == read_by_code()
    documented = (ROOT / "docs" / "driver.md").read_text() + (ROOT / "docs" / "hook.md").read_text()  # Settings
    assert [v for v in sorted(listed) if f"`{v}`" not in documented] == []


def test_the_environment_file_as_shipped_is_accepted(monkeypatch):
    settings = example_settings()
    driver = from_env(settings)
    assert (driver.socket, driver.root, driver.workers) == ("/run/docker/plugins/ownvol.sock", "/var/lib/ownvol",
                                                                 default_workers())
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    with watch.make_context("watch", []) as ctx:
        assert ctx.params["interval"] == 5.0 and ctx.params["repair_via"] == "auto"


def test_the_units_run_the_installed_command_with_the_environment_file_in_docker_s_order():
    socket = unit(UNITS_DIR / "ownvol-plugin.socket")
    plugin = unit(UNITS_DIR / "ownvol-plugin.service")
    hook = unit(UNITS_DIR / "ownvol-hook.service")
    assert socket["Socket"]["ListenStream"] == [from_env({}).socket]
    assert socket["Socket"]["SocketMode"] == ["0600"]
    assert plugin["Service"]["ExecStart"] == [f"{HOST_OWNVOL} driver"]
    assert hook["Service"]["ExecStart"] == [f"{HOST_OWNVOL} watch"]
    for service in (plugin, hook):
        assert service["Service"]["EnvironmentFile"] == ["-/etc/ownvol/ownvol.env"]
        assert service["Service"]["Restart"] == ["on-failure"]
    assert "docker.service" in plugin["Unit"]["Before"][0].split()
    assert "ownvol-plugin.socket" in plugin["Unit"]["Requires"][0].split()
    assert "docker.service" in hook["Unit"]["After"][0].split()
    assert "docker.service" in hook["Unit"]["Requires"][0].split()


def test_the_units_restart_a_crash_within_a_quarter_second_and_stop_a_crash_loop():
    for name in ("ownvol-plugin.service", "ownvol-hook.service"):
        assert restart_delay(name) == 0.25
        service = unit(UNITS_DIR / name)
        assert service["Unit"]["StartLimitIntervalSec"] == ["60s"] and service["Unit"]["StartLimitBurst"] == ["10"]


def test_systemd_time_spans_read_as_systemd_reads_them():
    assert [timespan(t) for t in ("250ms", "2", "0.5s", "1min 30s", "1h", "100 ms", "5sec")] == \
        [0.25, 2.0, 0.5, 90.0, 3600.0, 0.1, 5.0]
    for bad in ("", "soon", "2 fortnights", "-1s"):
        with pytest.raises(ValueError):
            timespan(bad)


def test_socket_activation_is_only_taken_when_meant_for_this_process():
    assert listening_socket({}, pid=10) is None
    assert listening_socket({"LISTEN_PID": "11", "LISTEN_FDS": "1"}, pid=10) is None
    with pytest.raises(ActivationError, match="exactly one socket"):
        listening_socket({"LISTEN_PID": "10", "LISTEN_FDS": "2"}, pid=10)
