"""What SECURITY.md claims about ownvol's reach, where no other test already proves it: the listeners'
defaults, the managed plugin's manifest, the helper container's privileges, secrets kept out of what
the hook tells, and a container's own files read safely."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import threading
import time
from pathlib import Path

import docker
import pytest

from ownvol.hook import assembly
from ownvol.hook import commands as hook_commands
from ownvol.hook.targets import PASSWD_MAX, _read_file
from ownvol.hook.telemetry import Metrics
from ownvol.hook.web import create_app, serve
from tests.support.common import ROOT, free_port
from tests.support.engine import redis_cmd, wait_for
from tests.support.fixtures_hook import fast_strategies, heal_report, run_redis


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} writes them) listening on port."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    found.append(local.rsplit(":", 1)[0])
    return found


def test_the_hooks_listener_is_loopback_by_default_and_the_webhook_off():
    defaults = {p.name: p.default for p in hook_commands.watch.params}
    assert defaults["metrics_addr"] == assembly.DEFAULT_METRICS == assembly.Options().metrics_addr == "127.0.0.1:9808"
    assert defaults["webhook"] is None and assembly.Options().webhook is None
    host = assembly.DEFAULT_METRICS.rpartition(":")[0]
    port = free_port()
    server = serve(f"{host}:{port}", create_app(Metrics(), dict, dict))
    try:
        assert _listening(port) == ["0100007F"]  # 127.0.0.1, and no wildcard socket beside it
    finally:
        server.shutdown()
        server.server_close()


def test_the_managed_plugin_asks_for_no_network_and_three_capabilities():
    config = json.loads((ROOT / "config.json").read_text())
    assert config["network"] == {"type": "none"}
    # mount(2) and the mount API; the uid_map and gid_map of an idmapped mount's user namespace (docs/install.md)
    assert sorted(config["linux"]["capabilities"]) == ["CAP_SETGID", "CAP_SETUID", "CAP_SYS_ADMIN"]
    assert not config["linux"].get("allowAllDevices") and not config["linux"].get("devices")
    assert {m["destination"] for m in config["mounts"]} == {"/var/lib/ownvol", "/srv"}
    assert config.get("ipchost") in (None, False) and config.get("pidhost") in (None, False)


class _FakeContainer:
    """get_archive as docker-py gives it: (a stream of tar chunks, the path's stat)."""

    def __init__(self, files: dict[str, bytes | str]) -> None:
        self.files = files

    def get_archive(self, path: str):
        entry = self.files.get(path)
        if entry is None:
            raise docker.errors.NotFound(f"{path} not found")
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as tar:
            info = tarfile.TarInfo(path.rsplit("/", 1)[-1])
            if isinstance(entry, str):
                info.type, info.linkname = tarfile.SYMTYPE, entry
                tar.addfile(info)
            else:
                info.size = len(entry)
                tar.addfile(info, io.BytesIO(entry))
        data = out.getvalue()
        size = 0 if isinstance(entry, str) else len(entry)
        return (data[i:i + 65536] for i in range(0, len(data), 65536)), {"size": size}


def test_a_containers_passwd_is_read_through_its_own_links_and_never_whole_when_huge():
    passwd = b"redis:x:999:999::/data:/bin/false\n"
    assert _read_file(_FakeContainer({"/etc/passwd": passwd}), "/etc/passwd") == passwd.decode()
    linked = _FakeContainer({"/etc/passwd": "passwd.real", "/etc/passwd.real": passwd})
    assert _read_file(linked, "/etc/passwd") == passwd.decode()
    loop = _FakeContainer({"/etc/passwd": "/etc/passwd"})
    assert _read_file(loop, "/etc/passwd") == ""
    dangling = _FakeContainer({"/etc/passwd": "/nowhere"})
    assert _read_file(dangling, "/etc/passwd") == ""
    huge = _FakeContainer({"/etc/passwd": passwd * (PASSWD_MAX // len(passwd) + 2)})
    assert _read_file(huge, "/etc/passwd") == ""


def by(name: str, kind: str):
    return lambda e: e["event"] == kind and e.get("container") == name


@pytest.mark.engine
def test_a_canary_whose_passwd_is_a_symlink_is_healed(hook, tracked, docker_client, redis_image, host_dir, port,
                                                      tmp_path):
    """The canary runs as the user `redis` by name, and its /etc/passwd is a symlink (as some images have it):
    the hook finds the uid through the link, inside the container's own filesystem."""
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    name = tracked.container(f"ovt-passwd-{port}")
    c = docker_client.containers.create(redis_image, redis_cmd(port, data_dir="/bound"), name=name, user="redis",
                                        network_mode="host", labels={**h.labels, **tracked.labels},
                                        volumes={str(host_dir): {"bind": "/bound", "mode": "rw"}},
                                        restart_policy={"Name": "on-failure"})
    real = c.get_archive("/etc/passwd")
    tar = io.BytesIO(b"".join(real[0]))
    with tarfile.open(fileobj=tar) as src:
        content = src.extractfile(src.next()).read()
    planted = io.BytesIO()
    with tarfile.open(fileobj=planted, mode="w") as out:
        info = tarfile.TarInfo("passwd.real")
        info.size = len(content)
        out.addfile(info, io.BytesIO(content))
        link = tarfile.TarInfo("passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "passwd.real"
        out.addfile(link)
    assert c.put_archive("/etc", planted.getvalue())
    started = time.time()
    c.start()
    recovered = h.wait_event(by(name, "recovered"), 120, "the canary with a linked passwd to be healed")
    heal_report("canary whose /etc/passwd is a symlink", recovered["ts"] - started)
    repair = next(e for e in h.of("action", name) if e["action"] == "repair-ownership" and e["result"] == "ok")
    assert repair["detail"]["owner"] == "999:999" and repair["detail"]["owner_source"] in ("user", "image", "process")


@pytest.mark.engine
def test_the_redis_password_never_leaves_the_hook(hook, tracked, redis_image, tmp_path, port):
    """A password-protected Redis (label ownvol.redis.password): the hook probes it healthy, and the password
    appears in none of its events, its status page, its /status, its metrics, or `ownvol doctor`."""
    secret = f"s3cret-{port}-never-shown"
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 999, 999)
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
    c = run_redis(tracked, redis_image, port, data, {**h.labels, "ownvol.redis.password": secret},
                  extra=("--requirepass", secret))
    h.wait_event(lambda e: by(c.name, "health")(e) and e["state"] == "healthy", 60, "the protected Redis healthy")
    doctor = h.cli("doctor", c.name, "--json")
    assert doctor.returncode == 0, doctor.stderr
    page = h.page()
    told = json.dumps(h.events) + json.dumps(h.status()) + h.metrics() + doctor.stdout + doctor.stderr + page
    assert c.name in page and c.name in told and secret not in told


@pytest.mark.engine
def test_the_helper_container_is_root_without_network_with_one_mount(hook, tracked, docker_client, redis_image,
                                                                     host_dir, port, ownvol_image, tmp_path):
    """The helper the hook starts to repair a mount it cannot reach: seen on the engine as it is created, it
    runs as root, without network, privileges or extra capabilities, with the one mount it repairs; and it
    is gone afterwards."""
    for d in range(20):  # enough to walk that the helper is still there to be looked at
        (host_dir / f"d{d}").mkdir()
        for f in range(500):
            (host_dir / f"d{d}" / f"f{f}").touch()
    seen, stop = [], threading.Event()

    def watch() -> None:
        events = docker_client.api.events(decode=True, filters={"type": "container", "event": "create",
                                                                "label": "ownvol.role=repair-helper"})
        for event in events:
            try:
                seen.append(docker_client.api.inspect_container(event["id"]))
            except docker.errors.NotFound:
                seen.append({"gone": event["id"]})
            if stop.is_set():
                events.close()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"), extra=("--repair-via", "helper", "--helper-image",
                                                                      ownvol_image))
    c = run_redis(tracked, redis_image, port, host_dir, h.labels, restart=True)
    h.wait_event(by(c.name, "recovered"), 120, "the canary healed through the helper")
    wait_for(lambda: seen, 30, what="the helper's create event")
    stop.set()
    helpers = [s for s in seen if s.get("Config", {}).get("Labels", {}).get("ownvol.repair.for") == c.name]
    assert helpers, seen
    for info in helpers:
        host = info["HostConfig"]
        assert info["Config"]["User"] == "0:0" and host["NetworkMode"] == "none"
        assert not host["Privileged"] and not host.get("CapAdd") and not host.get("Devices")
        assert host.get("PidMode", "") in ("", "private") and host.get("IpcMode") in ("", "private", "shareable")
        assert [(m["Source"], m["Destination"], m["RW"]) for m in info["Mounts"]] == \
            [(str(host_dir), "/ownvol-target", True)]
    assert not docker_client.containers.list(all=True, filters={"label": f"ownvol.repair.for={c.name}"})


@pytest.mark.engine
def test_the_hook_never_repairs_a_bind_mount_of_the_hosts_own_directories(hook, tracked, redis_image, port, tmp_path):
    """A Redis given a directory inside /usr as its data (a mistake the hook must not make worse): its
    repair is skipped, naming why, and the directory keeps its owner."""
    system = Path(f"/usr/local/ovt-hostile-{port}")
    system.mkdir()
    try:
        os.chown(system, 0, 0)
        h = hook(strategies=fast_strategies(tmp_path / "s.yaml"))
        c = run_redis(tracked, redis_image, port, system, h.labels)
        action = h.wait_event(lambda e: by(c.name, "action")(e) and e["action"] == "repair-ownership", 60,
                              "the hook to consider the repair")
        assert action["result"] == "skipped" and "is inside /usr" in action["detail"]["why"], action
        assert (system.stat().st_uid, system.stat().st_gid) == (0, 0)
    finally:
        shutil.rmtree(system)
