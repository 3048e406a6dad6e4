"""The managed (v2) plugin on the real engine: config.json beside the ownvol image's filesystem.

Every plugin here has a name of its own (never `ownvol`) and its data in a host directory of its
own; the dockerd restart happens on a private engine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import docker
import pytest
import redis

from tests.support.common import PACKAGE_DIRS, ROOT, SOURCE_SUFFIXES, image_lock, new_name
from tests.support.engine import redis_cmd, wait_for

pytestmark = pytest.mark.engine
NO_HOOK = {"ownvol.watch": "false"}
SCRIPT = ROOT / "scripts" / "plugin.sh"
MOUNT_ROOT = "/mnt/ownvol"  # config.json's propagatedMount
# Capability bit numbers (linux/capability.h), as far as an entry of docs/install.md could name one.
CAP_NAMES = ("CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE "
             "NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO "
             "SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN").split()


def docker_cli(*args: str, host: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["docker", *(["-H", host] if host else []), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr}")
    return result


def _image_has_this_tree(rootfs: Path) -> bool:
    """Whether the rootfs's installed ownvol packages are byte for byte this checkout's (SOURCE_SUFFIXES)."""
    site = next(rootfs.glob("opt/ownvol/lib/python3*/site-packages"), None)
    if site is None:
        return False
    for package, folder in PACKAGE_DIRS.items():
        for source in (f for f in (ROOT / folder).iterdir() if f.suffix in SOURCE_SUFFIXES):
            installed = site.joinpath(*package.split(".")) / source.name
            if not installed.is_file() or installed.read_bytes() != source.read_bytes():
                return False
    return True


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin directory `scripts/plugin.sh rootfs` builds, from an image rebuilt first if it is stale."""
    base = tmp_path_factory.mktemp("managed")
    with image_lock(os.environ.get("OWNVOL_IMAGE", "ownvol/ownvol:latest")):
        for attempt in range(2):
            subprocess.run([str(SCRIPT), "rootfs", str(base)], check=True, cwd=ROOT, capture_output=True)
            if _image_has_this_tree(base / "rootfs"):
                break
            if attempt == 0:
                subprocess.run([str(ROOT / "scripts" / "images.sh"), "ownvol"], check=True, cwd=ROOT,
                               capture_output=True)
        else:
            pytest.fail("the ownvol image does not carry this checkout's driver even after scripts/images.sh ownvol")
    yield base
    shutil.rmtree(base, ignore_errors=True)


class ManagedPlugin:
    """A managed plugin of a test's own on one engine (host None: the shared one), its data in a host dir."""

    def __init__(self, name: str, data: Path, host: str | None = None) -> None:
        self.name, self.data, self.host = name, data, host
        self.dir: Path | None = None
        self.adopt: Path | None = None

    @classmethod
    def prepared(cls, plugin_dir: Path, base: Path, host: str | None = None,
                 capabilities: list[str] | None = None) -> ManagedPlugin:
        """A plugin directory of its own under base (hard links to plugin_dir), with data and adopt dirs."""
        plugin = cls(new_name("ovm"), base / "data", host)
        plugin.dir, plugin.adopt = base / "plugin", base / "adopt"
        plugin.data.mkdir(parents=True)
        plugin.adopt.mkdir()
        subprocess.run(["cp", "-al", str(plugin_dir), str(plugin.dir)], check=True)
        # dockerd refuses a plugin whose rootfs layer is byte for byte that of a live one: make this one differ.
        (plugin.dir / "rootfs" / "etc" / "ownvol-plugin").write_text(plugin.name)
        if capabilities is not None:
            config = json.loads((plugin.dir / "config.json").read_text())
            config["linux"]["capabilities"] = capabilities
            (plugin.dir / "config.json").unlink()  # a hard link to the shared copy: replace, never rewrite
            (plugin.dir / "config.json").write_text(json.dumps(config))
        return plugin

    @property
    def driver(self) -> str:
        """The name volumes carry as their Driver: a managed plugin's full name."""
        return f"{self.name}:latest"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return docker_cli(*args, host=self.host, check=check)

    def create(self) -> ManagedPlugin:
        self.cli("plugin", "create", self.name, str(self.dir))
        self.set(**{"data.source": str(self.data), "adopt.source": str(self.adopt)})
        return self

    def set(self, **settings: str) -> None:
        self.cli("plugin", "set", self.name, *(f"{k}={v}" for k, v in settings.items()))

    def enable(self) -> ManagedPlugin:
        self.cli("plugin", "enable", self.name)
        return self

    def disable(self, force: bool = False) -> None:
        self.cli("plugin", "disable", *(["-f"] if force else []), self.name)

    def remove(self) -> None:
        self.cli("plugin", "rm", "-f", self.name)

    def inspect(self) -> dict:
        return json.loads(self.cli("plugin", "inspect", self.name).stdout)[0]

    def source(self, mount: str) -> str:
        return next(m["Source"] for m in self.inspect()["Settings"]["Mounts"] if m["Name"] == mount)

    def data_dir(self, volume: str) -> Path:
        return self.data / "volumes" / volume

    def clear(self, client: docker.DockerClient) -> None:
        """Containers on its volumes, then its volumes."""
        try:
            for v in client.volumes.list(filters={"driver": self.driver}):
                for c in client.containers.list(all=True, filters={"volume": v.name}):
                    c.remove(force=True)
                v.remove(force=True)
        except docker.errors.APIError as exc:
            print(f"cleanup of {self.name}: {exc}")

    def destroy(self, client: docker.DockerClient) -> None:
        """Containers on its volumes, its volumes, then the plugin."""
        self.clear(client)
        self.cli("plugin", "rm", "-f", self.name, check=False)


@pytest.fixture(scope="module")
def module_managed(plugin_dir: Path, docker_client: docker.DockerClient,
                   tmp_path_factory: pytest.TempPathFactory) -> tuple[ManagedPlugin, list[str]]:
    """One enabled managed plugin on the shared engine for this module's tests (`docker plugin create` copies
    the whole rootfs: seconds each time), with its settings as created; removed after the module."""
    plugin = ManagedPlugin.prepared(plugin_dir, tmp_path_factory.mktemp("managed-plugin"))
    try:
        plugin.create().enable()
        yield plugin, plugin.inspect()["Settings"]["Env"]
    finally:
        plugin.destroy(docker_client)


@pytest.fixture
def managed(module_managed: tuple[ManagedPlugin, list[str]], docker_client: docker.DockerClient) -> ManagedPlugin:
    """The module's managed plugin, enabled with its settings as created; after the test its containers and
    volumes are removed, and settings a test changed (or a removal) are put back."""
    plugin, settings = module_managed
    yield plugin
    plugin.clear(docker_client)
    info = json.loads(plugin.cli("plugin", "inspect", plugin.name, check=False).stdout or "[]")
    if not info:
        plugin.create()
    elif changed := sorted(set(settings) - set(info[0]["Settings"]["Env"])):
        if info[0]["Enabled"]:
            plugin.disable()
        plugin.cli("plugin", "set", plugin.name, *changed)
    if not plugin.inspect()["Enabled"]:
        plugin.enable()


def create_volume(client: docker.DockerClient, plugin: ManagedPlugin, **opts: str) -> str:
    name = new_name("vol")
    client.volumes.create(name, driver=plugin.name, driver_opts=opts, labels={"ownvol.test": "managed"})
    return name


def redis_on(client: docker.DockerClient, image: str, volume: str, port: int, **kw):
    """A uid-999 Redis with AOF, persisting into the volume at /bound, a path the image does not have."""
    return client.containers.run(image, redis_cmd(port, data_dir="/bound"), user="999:999", network_mode="host",
                                 volumes={volume: {"bind": "/bound", "mode": "rw"}}, labels=NO_HOOK,
                                 name=new_name("redis"), detach=True, **kw)


def redis_at(port: int) -> redis.Redis:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    wait_for(client.ping, 60, interval=0.2, what=f"redis on {port} to answer PING")
    return client


def write_then_stop(client: docker.DockerClient, image: str, volume: str, port: int, **pairs: str) -> None:
    container = redis_on(client, image, volume, port)
    try:
        r = redis_at(port)
        for key, value in pairs.items():
            r.set(key, value)
        container.stop(timeout=30)  # a clean shutdown: the AOF is on disk
    finally:
        container.remove(force=True)


def read_back(client: docker.DockerClient, image: str, volume: str, port: int, *keys: str) -> list[bytes | None]:
    container = redis_on(client, image, volume, port)
    try:
        r = redis_at(port)
        return [r.get(key) for key in keys]
    finally:
        container.remove(force=True)


def readme_capabilities() -> tuple[set[str], set[str]]:
    """(requested in config.json, granted by Docker's default set) as docs/install.md's "The managed plugin" names
    them."""
    text = (ROOT / "docs" / "install.md").read_text()
    section = text.split("\n## The managed plugin\n", 1)[1].split("\n## ", 1)[0]
    caps = section.split("\n### Capabilities\n", 1)[1].split("\n### ", 1)[0]
    requested, defaults = caps.split("Docker's default set", 1)

    def named(part: str) -> set[str]:
        return set(re.findall(r"^- `(CAP_[A-Z_]+)`", part, re.M))

    return named(requested), named(defaults)


def effective_capabilities(plugin_id: str) -> set[str]:
    """The capabilities in effect for the plugin's process, found by its cgroup (named after the plugin's ID)."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"/{plugin_id}" in (proc / "cgroup").read_text():
                status = (proc / "status").read_text()
                break
        except OSError:
            continue
    else:
        raise AssertionError(f"no process of plugin {plugin_id} found")
    bits = int(re.search(r"^CapEff:\s*([0-9a-f]+)", status, re.M).group(1), 16)
    return {f"CAP_{name}" for i, name in enumerate(CAP_NAMES) if bits >> i & 1}


def test_capabilities_are_the_ones_the_readme_names(managed):
    requested, from_defaults = readme_capabilities()
    info = managed.inspect()
    assert requested and set(info["Config"]["Linux"]["Capabilities"]) == requested
    assert {"CAP_CHOWN", "CAP_FOWNER", "CAP_DAC_OVERRIDE"} <= from_defaults
    assert requested | from_defaults <= effective_capabilities(info["Id"])
    config = info["Config"]
    assert config["Interface"]["Types"] == ["docker.volumedriver/1.0"]
    assert config["Interface"]["Socket"] == "ownvol.sock"
    assert config["Network"]["Type"] == "none" and config["PropagatedMount"] == MOUNT_ROOT


def test_the_plugin_walks_with_the_compiled_loop(plugin_dir):
    """The managed plugin's ownvol carries ownvol._entries (built into the wheel by setup.py): its preflight
    walks with the compiled loop, not the Python one it would fall back to."""
    site = next((plugin_dir / "rootfs").glob("opt/ownvol/lib/python3*/site-packages"))
    assert list(site.glob("ownvol/_entries.cpython-*.so")), "the plugin's ownvol has no compiled walk loop"


def test_without_cap_sys_admin_a_mount_fails(plugin_dir, docker_client, tmp_path, redis_image):
    """The one requested capability is needed: without it the bind at the propagated mount is refused."""
    plugin = ManagedPlugin.prepared(plugin_dir, tmp_path, capabilities=[])
    try:
        plugin.create().enable()
        volume = create_volume(docker_client, plugin)
        with pytest.raises(docker.errors.APIError, match="bind mount of .* failed: Operation not permitted"):
            docker_client.containers.run(redis_image, ["true"], network_mode="none", labels=NO_HOOK, remove=True,
                                         volumes={volume: {"bind": "/bound", "mode": "rw"}})
    finally:
        plugin.destroy(docker_client)


def test_volumes_with_options_and_a_uid999_redis_with_aof(managed, docker_client, redis_image, port):
    redis_vol = create_volume(docker_client, managed, profile="redis")
    custom = create_volume(docker_client, managed, uid="1000", gid="1001", mode="0700", policy="always")
    create_volume(docker_client, managed, path="/srv/redis-data")  # adopts: no error
    for bad, words in (({"bogus": "1"}, "unknown option 'bogus'"), ({"path": "/etc/x"}, "option path: '/etc/x'")):
        with pytest.raises(docker.errors.APIError, match=re.escape(words)):
            create_volume(docker_client, managed, **bad)

    def owner(path: Path) -> tuple[int, int, int]:
        st = path.stat()
        return st.st_uid, st.st_gid, st.st_mode & 0o7777

    assert owner(managed.data_dir(redis_vol)) == (999, 999, 0o755)
    assert owner(managed.data_dir(custom)) == (1000, 1001, 0o700)
    assert owner(managed.adopt / "redis-data") == (999, 999, 0o755)
    info = docker_client.api.inspect_volume(custom)
    assert info["Driver"] == managed.driver and info["Mountpoint"] == f"{MOUNT_ROOT}/{custom}"
    assert (info["Status"]["uid"], info["Status"]["gid"], info["Status"]["mode"], info["Status"]["policy"]) == \
        (1000, 1001, "0700", "always")

    container = redis_on(docker_client, redis_image, redis_vol, port)
    try:
        r = redis_at(port)
        assert r.set("k", "v") and r.info("persistence")["aof_enabled"] == 1
        assert docker_client.api.inspect_volume(redis_vol)["Status"]["mounts"] == 1
    finally:
        container.remove(force=True)
    aof = managed.data_dir(redis_vol) / "appendonlydir"
    assert aof.is_dir() and (aof.stat().st_uid, aof.stat().st_gid) == (999, 999)


def test_plugin_set_of_a_default_takes_effect(managed, docker_client):
    refused = managed.cli("plugin", "set", managed.name, "OWNVOL_DEFAULT_UID=1234", check=False)
    assert refused.returncode != 0 and "disable plugin before setting" in refused.stderr
    managed.disable()
    managed.set(OWNVOL_DEFAULT_PROFILE="postgres-alpine", OWNVOL_DEFAULT_UID="1234", OWNVOL_DEFAULT_POLICY="always")
    managed.enable()
    plain = create_volume(docker_client, managed)
    explicit = create_volume(docker_client, managed, uid="5")
    st = managed.data_dir(plain).stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 70, 0o700)  # uid set, gid and mode the profile's
    assert docker_client.api.inspect_volume(plain)["Status"]["policy"] == "always"
    assert managed.data_dir(explicit).stat().st_uid == 5


def test_disable_enable_and_rm_recreate_keep_volumes_and_data(managed, docker_client, redis_image, port):
    volume = create_volume(docker_client, managed, profile="redis")
    write_then_stop(docker_client, redis_image, volume, port, k="written before disable")

    in_use = managed.cli("plugin", "disable", managed.name, check=False)
    assert in_use.returncode != 0 and "in use" in in_use.stderr  # volumes hold the plugin: -f is needed
    managed.disable(force=True)
    managed.enable()
    assert read_back(docker_client, redis_image, volume, port, "k") == [b"written before disable"]

    managed.remove()
    assert volume not in {v.name for v in docker_client.volumes.list()}
    managed.create().enable()  # the same name, a new plugin ID, its data.source set again
    assert managed.source("data") == str(managed.data)
    assert volume in {v.name for v in docker_client.volumes.list(filters={"driver": managed.driver})}
    assert docker_client.api.inspect_volume(volume)["Status"]["state"] == "ok"
    assert read_back(docker_client, redis_image, volume, port, "k") == [b"written before disable"]
    assert (managed.data_dir(volume) / "appendonlydir").is_dir()


def test_install_script_replaces_a_plugin_keeping_settings_and_volumes(plugin_dir, docker_client, redis_image,
                                                                      tmp_path):
    """`make plugin`'s path (scripts/plugin.sh install, then retire as `make up` does), under a name of its own."""
    plugin = ManagedPlugin(new_name("ovm"), tmp_path / "data")
    name, data = plugin.name, plugin.data
    env = {**os.environ, "PLUGIN_DIR": str(tmp_path / "plugin"), "OWNVOL_DATA": str(data)}

    def script(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)

    try:
        first = script("install", name)
        assert first.returncode == 0, first.stderr
        assert plugin.inspect()["Enabled"] and data.is_dir()
        plugin.disable()
        plugin.set(OWNVOL_DEFAULT_UID="4321")
        plugin.enable()
        volume = create_volume(docker_client, plugin)
        (plugin.data_dir(volume) / "kept").write_text("bytes")

        env.pop("OWNVOL_DATA")
        again = script("install", name)
        assert again.returncode == 0, again.stderr
        assert f"keeping data.source={data}" in again.stdout and "OWNVOL_DEFAULT_UID=4321" in again.stdout
        info = plugin.inspect()
        assert info["Enabled"] and "OWNVOL_DEFAULT_UID=4321" in info["Settings"]["Env"]
        assert docker_client.api.inspect_volume(volume)["Status"]["uid"] == 4321
        assert (plugin.data_dir(volume) / "kept").read_text() == "bytes"

        sleeper = docker_client.containers.run(redis_image, ["sleep", "600"], network_mode="none",
                                               labels=NO_HOOK, detach=True, name=new_name("sleep"),
                                               volumes={volume: {"bind": "/bound", "mode": "rw"}})
        try:
            busy = script("install", name)
            assert busy.returncode != 0 and f"running containers use {name} volumes ({volume})" in busy.stderr
        finally:
            sleeper.remove(force=True)

        docker_client.volumes.get(volume).remove()  # a volume outlives its plugin in dockerd's records
        retired = script("retire", name)
        assert retired.returncode == 0 and f"its data lives in {data}" in retired.stdout
        assert docker_cli("plugin", "inspect", name, check=False).returncode != 0
    finally:
        plugin.destroy(docker_client)


def test_dockerd_restart_keeps_volumes_data_and_references(plugin_dir, private_engine, redis_image, tmp_path, port):
    client = private_engine.start()
    private_engine.load_image(redis_image)
    plugin = ManagedPlugin.prepared(plugin_dir, tmp_path, host=private_engine.host).create().enable()
    kept = create_volume(client, plugin, profile="redis")
    write_then_stop(client, redis_image, kept, port, k="stopped before the restart")
    live = create_volume(client, plugin, profile="redis")
    port2 = port + 1 if port < 65000 else port - 1
    redis_on(client, redis_image, live, port2, restart_policy={"Name": "always"})
    redis_at(port2).set("k", "running across the restart")

    client = private_engine.restart()
    r = redis_at(port2)  # restarted by dockerd on its volume, once the plugin is back
    assert r.get("k") == b"running across the restart"
    assert {kept, live} <= {v.name for v in client.volumes.list()}
    assert client.api.inspect_volume(live)["Status"]["mounts"] == 1
    assert client.api.inspect_volume(kept)["Status"]["mounts"] == 0
    assert read_back(client, redis_image, kept, port, "k") == [b"stopped before the restart"]

    plugin_id = plugin.inspect()["Id"]
    log = Path(private_engine.log_path).read_text(errors="replace")
    mounts = [line for line in log.splitlines()
              if f"plugin={plugin_id}" in line and "action=VolumeDriver.Mount" in line and f"volume={kept} " in line]
    assert mounts and all("level=info" in line and "outcome=ok" in line and "seconds=" in line for line in mounts)


def test_ownership_idmap_in_the_managed_plugin_serves_999_while_the_disk_stays_root_owned(
        plugin_dir, private_engine, redis_image, tmp_path, port):
    """config.json's CAP_SETUID and CAP_SETGID let the plugin write the map's user namespace; the idmapped mount it
    attaches at the propagated mount reaches dockerd's namespace with its map: Redis as 999:999 writes, restarts
    and reads back, and every file it made is 0:0 on disk (the map swaps 0 and 999)."""
    client = private_engine.start()
    private_engine.load_image(redis_image)
    plugin = ManagedPlugin.prepared(plugin_dir, tmp_path, host=private_engine.host).create().enable()
    volume = create_volume(client, plugin, ownership="idmap", uid="999", gid="999")
    st = client.api.inspect_volume(volume)["Status"]
    assert (st["ownership"], st["ownership_asked"]) == ("idmap", "idmap"), st
    assert "idmapped mount on" in st["ownership_note"], st
    data = plugin.data_dir(volume)
    assert (data.stat().st_uid, data.stat().st_gid) == (0, 0)
    container = redis_on(client, redis_image, volume, port)
    try:
        r = redis_at(port)
        assert r.set("k", "through the map") and r.info("persistence")["aof_enabled"] == 1
        assert client.api.inspect_volume(volume)["Status"]["mounts"] == 1
        seen = client.containers.run(redis_image, ["stat", "-c", "%u:%g", "/bound", "/bound/appendonlydir"],
                                     network_mode="none", labels=NO_HOOK, remove=True,
                                     volumes={volume: {"bind": "/bound", "mode": "ro"}}).decode().split()
        assert seen == ["999:999", "999:999"]
        live = [line.split()[5] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if line.split()[4].endswith(f"/propagated-mount/{volume}")]
        assert live and all({"idmapped", "nosuid", "nodev"} <= set(o.split(",")) for o in live), live
        container.stop(timeout=30)
    finally:
        container.remove(force=True)
    assert read_back(client, redis_image, volume, port, "k") == [b"through the map"]
    on_disk = {str(p.relative_to(data)): (p.lstat().st_uid, p.lstat().st_gid) for p in [data, *data.rglob("*")]}
    assert "appendonlydir" in on_disk and set(on_disk.values()) == {(0, 0)}, on_disk
    assert client.api.inspect_volume(volume)["Status"]["mounts"] == 0
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if line.split()[4].endswith(f"/propagated-mount/{volume}")]
