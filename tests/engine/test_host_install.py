"""ownvol on a host (docs/install.md: Install on a host): socket activation as the units say, `ownvol install` and
`--uninstall` below a scratch root, and an upgrade from the previous release under running containers.

No systemd runs as PID 1 here: tests/support/systemd.py plays its part with systemd's own
`systemd-socket-activate` and `systemd-analyze verify`, on the units' own command lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from ownvol.driver.serve import UnixHTTPConnection
from ownvol.install import Layout
from tests.support.common import ROOT, new_name
from tests.support.driver import create, redis_answers, run_redis, status
from tests.support.fixtures_plugin import OWNVOL
from tests.support.systemd import (
    PREVIOUS_RELEASE,
    UNITS_DIR,
    SocketActivation,
    build_wheel,
    confinement,
    driver_command,
    env_file,
    unit,
)

UNITS = ("ownvol-plugin.socket", "ownvol-plugin.service", "ownvol-hook.service")
# linux/capability.h
CAPABILITY_BITS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_FSETID": 4, "CAP_SETGID": 6,
                   "CAP_SETUID": 7, "CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21}


def call(sock: str, method: str, **body) -> dict:
    """A protocol call as dockerd makes it; the decoded reply (HTTP status in '_status')."""
    conn = UnixHTTPConnection(sock, timeout=120)
    try:
        conn.request("POST", f"/{method}", body=json.dumps(body).encode(),
                     headers={"Accept": "application/vnd.docker.plugins.v1.2+json"})
        response = conn.getresponse()
        return {**json.loads(response.read() or b"{}"), "_status": response.status}
    finally:
        conn.close()


def ok(sock: str, method: str, **body) -> dict:
    reply = call(sock, method, **body)
    assert reply["_status"] == 200 and reply.get("Err") == "", (method, reply)
    return reply


def proc_status(pid: int) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)


def tree(root: Path) -> dict[str, tuple]:
    """Every entry below root: (mode, uid, gid, sha256 of a file's bytes or a link's target)."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if path.is_symlink():
            content = os.readlink(path)
        elif path.is_file():
            content = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            content = None
        out[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, content)
    return out


def ownvol(*args: str) -> str:
    done = subprocess.run([OWNVOL, *args], capture_output=True, text=True)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


@pytest.fixture(scope="module")
def wheels() -> dict[str, Path]:
    """This checkout's wheel and the previous release's (built from git), in a scratch directory."""
    out = Path(tempfile.mkdtemp(prefix="ownvol-wheels-", dir="/var/tmp"))
    try:
        yield {"this": build_wheel(out / "this"), "previous": build_wheel(out / "previous", PREVIOUS_RELEASE)}
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture
def scratch() -> Path:
    """A short directory of the test's own (unix socket paths must stay under 108 bytes)."""
    base = Path(tempfile.mkdtemp(prefix="ovsd-", dir="/var/tmp"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_socket_activation_starts_the_driver_at_the_first_request_and_again_after_a_crash(scratch):
    sock = str(scratch / "ovsa.sock")
    env = {"OWNVOL_DRIVER_NAME": "ovsa", "OWNVOL_SOCKET": sock, "OWNVOL_ROOT": str(scratch / "state"),
           "OWNVOL_ALLOWED_ROOTS": "", "OWNVOL_WORKERS": "2"}
    service = UNITS_DIR / "ownvol-plugin.service"
    activation = SocketActivation(sock, driver_command(service, OWNVOL), env, scratch / "driver.log")
    try:
        activation.arm()
        assert activation.waiting() and not (scratch / "state").exists(), "nothing started before a request"
        assert ok(sock, "Plugin.Activate")["Implements"] == ["VolumeDriver"]
        first = activation.driver_pid()
        assert "(socket activation)" in activation.read_log()
        wanted = sum(1 << CAPABILITY_BITS[c] for c in unit(service)["Service"]["CapabilityBoundingSet"][-1].split())
        confined = proc_status(first)
        assert int(confined["CapBnd"], 16) == wanted and int(confined["CapEff"], 16) == wanted
        assert confined["NoNewPrivs"].strip() == "1"

        ok(sock, "VolumeDriver.Create", Name="v1", Opts={"profile": "redis", "mode": "2775"})
        mountpoint = ok(sock, "VolumeDriver.Mount", Name="v1", ID="m1")["Mountpoint"]
        st = os.stat(mountpoint)
        # the setgid bit survives the chmod of a 999-owned root only with CAP_FSETID (the unit grants it)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (999, 999, 0o2775)
        Path(mountpoint, "data").write_text("kept")

        activation.stop(signal.SIGKILL)
        assert os.path.exists(sock), "the socket stays with its holder, as with systemd"
        activation.arm()
        assert activation.waiting()
        listed = ok(sock, "VolumeDriver.List")["Volumes"]
        assert activation.driver_pid() != first
        assert [v["Name"] for v in listed] == ["v1"]
        assert ok(sock, "VolumeDriver.Get", Name="v1")["Volume"]["Status"]["mounts"] == 1
        assert "in use" in call(sock, "VolumeDriver.Remove", Name="v1")["Err"]
        assert Path(mountpoint, "data").read_text() == "kept"
        ok(sock, "VolumeDriver.Unmount", Name="v1", ID="m1")
        assert ok(sock, "VolumeDriver.Get", Name="v1")["Volume"]["Status"]["mounts"] == 0
    finally:
        activation.close()


@pytest.mark.engine
def test_the_hook_under_its_unit_s_capabilities_still_repairs_on_the_host(docker_client):
    """repair-via auto picks local repairs when dockerd shares the hook's mount namespace; reading dockerd's
    /proc/PID/ns/mnt takes CAP_SYS_PTRACE from a process with fewer capabilities than dockerd's."""
    probe = "from ownvol.hook.targets import engine_paths_reachable as r; print(r())"
    confined = subprocess.run([*confinement(unit(UNITS_DIR / "ownvol-hook.service")), str(ROOT / ".venv/bin/python"),
                               "-c", probe], capture_output=True, text=True, check=True)
    assert confined.stdout.strip() == "True", confined.stderr


def test_install_and_uninstall_below_a_root_leave_the_state_alone(wheels, scratch):
    root = scratch / "root"
    ownvol("install", "--wheel", str(wheels["this"]), "--prefix", str(root))
    opt = root / "opt/ownvol"
    release = opt / os.readlink(opt / "current")
    installed = {p for p in tree(root) if not p.startswith("opt/ownvol/releases/")}
    assert installed == {
        "etc", "etc/ownvol", "etc/ownvol/ownvol.env", "etc/systemd", "etc/systemd/system",
        *(f"etc/systemd/system/{u}" for u in UNITS),
        "opt", "opt/ownvol", "opt/ownvol/current", "opt/ownvol/install.json", "opt/ownvol/releases"}
    assert (release / ".complete").exists() and os.access(release / "bin/ownvol", os.X_OK)
    env_path = root / "etc/ownvol/ownvol.env"
    assert env_path.stat().st_mode & 0o777 == 0o600
    example = Layout(root).render((UNITS_DIR / "ownvol.env").read_text())
    assert env_path.read_text() == example
    service = unit(root / "etc/systemd/system/ownvol-plugin.service")["Service"]
    assert service["ExecStart"] == [f"{opt}/current/bin/ownvol driver"]
    assert service["EnvironmentFile"] == [f"-{root}/etc/ownvol/ownvol.env"]
    verify = subprocess.run(["systemd-analyze", "verify", *UNITS], cwd=root / "etc/systemd/system",
                            capture_output=True, text=True)
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")

    # a volume of the installed driver, its state below root as /var/lib/ownvol on a host
    sock = str(scratch / "ovi.sock")
    env_path.write_text(env_path.read_text() + f"OWNVOL_SOCKET={sock}\nOWNVOL_ROOT={root}/var/lib/ownvol\n")
    edited = env_path.read_bytes()
    activation = SocketActivation(sock, driver_command(root / "etc/systemd/system/ownvol-plugin.service"),
                                  env_file(env_path), scratch / "driver.log")
    try:
        activation.arm()
        ok(sock, "VolumeDriver.Create", Name="v1", Opts={"profile": "redis"})
        Path(ok(sock, "VolumeDriver.Mount", Name="v1", ID="m1")["Mountpoint"], "data").write_text("kept")
    finally:
        activation.close()
    state = tree(root / "var/lib/ownvol")
    assert "volumes/v1/data" in state

    again = ownvol("install", "--wheel", str(wheels["this"]), "--prefix", str(root))
    assert "wrote" not in again and env_path.read_bytes() == edited, again
    assert (root / "etc/ownvol/ownvol.env.example").read_text() == example

    removed = ownvol("install", "--uninstall", "--prefix", str(root))
    assert f"removed {opt}" in removed
    assert sorted(p for p in tree(root) if not p.startswith("var/lib/ownvol/")) == ["var", "var/lib", "var/lib/ownvol"]
    assert tree(root / "var/lib/ownvol") == state


@pytest.mark.engine
def test_upgrade_from_the_previous_release_under_running_containers(wheels, scratch, engine_client, plugin_engine,
                                                                   ptracked, redis_image, unique_name, port):
    root = scratch / "root"
    ownvol("install", "--wheel", str(wheels["previous"]), "--prefix", str(root))
    driver = SimpleNamespace(name=new_name("ovup"))
    sock = os.path.join(plugin_engine.plugins_dir, f"{driver.name}.sock")
    env_path = root / "etc/ownvol/ownvol.env"
    env_path.write_text(env_path.read_text() + "".join(f"{k}={v}\n" for k, v in {
        "OWNVOL_DRIVER_NAME": driver.name, "OWNVOL_SOCKET": sock, "OWNVOL_ROOT": f"{root}/var/lib/ownvol",
        "OWNVOL_ALLOWED_ROOTS": "", "OWNVOL_HOOK_STATE": f"{root}/var/lib/ownvol/hook"}.items()))
    settings = env_path.read_bytes()
    unit_path = root / "etc/systemd/system/ownvol-plugin.service"
    # this tree's installer wrote this tree's unit; the previous release names the command `ownvol plugin`
    unit_path.write_text(unit_path.read_text().replace("/bin/ownvol driver", "/bin/ownvol plugin"))
    activation = SocketActivation(sock, driver_command(unit_path), env_file(env_path), scratch / "driver.log")
    try:
        activation.arm()
        mounted, idle = unique_name("vol"), unique_name("vol")
        create(engine_client, driver, ptracked, mounted, profile="redis")
        create(engine_client, driver, ptracked, idle, profile="redis")
        container = run_redis(ptracked, redis_image, mounted, port)
        redis_answers(port).set("k", "kept")
        old_driver = activation.driver_pid()
        journal = f"{root}/var/lib/ownvol/hook/journal.sqlite"
        os.makedirs(os.path.dirname(journal))
        subprocess.run([str(root / "opt/ownvol/current/bin/python"), "-c",
                        "import sys; from hooks.journal import Journal; j = Journal(sys.argv[1]); "
                        "i = j.open_incident('c0ffee', 'redis-before', 'permission-denied', 'test', {}, 0.0); "
                        "j.close_incident(i.id, 'resolved', 'healed before the upgrade')", journal], check=True)
        previous = os.readlink(root / "opt/ownvol/current")

        out = ownvol("install", "--wheel", str(wheels["this"]), "--prefix", str(root))
        assert f"(was {os.path.basename(previous)})" in out
        assert os.readlink(root / "opt/ownvol/current") != previous and (root / "opt/ownvol" / previous).is_dir()
        assert env_path.read_bytes() == settings
        activation.stop(signal.SIGTERM)  # systemctl restart ownvol-plugin.service: the socket stays
        activation.command = driver_command(unit_path)
        assert activation.command[-1] == "driver", "the upgrade wrote this release's unit"
        activation.arm()

        container.reload()
        assert container.status == "running"
        assert redis_answers(port).get("k") == b"kept"
        assert status(engine_client, mounted)["mounts"] == 1, "the reference survived the upgrade"
        assert activation.driver_pid() != old_driver and "(socket activation)" in activation.read_log()
        assert {v.name for v in engine_client.volumes.list(filters={"driver": driver.name})} == {mounted, idle}
        assert "in use" in call(sock, "VolumeDriver.Remove", Name=mounted)["Err"]
        upgraded = subprocess.run([str(root / "opt/ownvol/current/bin/ownvol"), "history", "--json", "--db", journal],
                                  capture_output=True, text=True, check=True)
        history = json.loads(upgraded.stdout)
        assert [(i["container_name"], i["outcome"]) for i in history["incidents"]] == [
            ("redis-before", "healed before the upgrade")]

        container.stop(timeout=10)
        assert status(engine_client, mounted)["mounts"] == 0
        run_redis(ptracked, redis_image, mounted, port)
        assert redis_answers(port).get("k") == b"kept"
    finally:
        ptracked.cleanup()
        activation.close()
        subprocess.run([OWNVOL, "install", "--uninstall", "--prefix", str(root)], capture_output=True)
