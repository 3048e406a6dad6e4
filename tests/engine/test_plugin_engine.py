"""The driver through the real engine: docker volume commands, Redis as uid 999, drift, sharing, links."""

from __future__ import annotations

import json
import os

import pytest

from tests.support.driver import NO_HOOK, create, redis_answers, run_redis, status

pytestmark = pytest.mark.engine


def test_volume_create_inspect_ls_rm_with_the_cli(ownvol_plugin, ptracked, unique_name):
    name = ptracked.volume(unique_name("vol"))
    ownvol_plugin.engine.docker("volume", "create", "--driver", ownvol_plugin.name,
                                "-o", "profile=postgres-alpine", name)
    info = json.loads(ownvol_plugin.engine.docker("volume", "inspect", name).stdout)[0]
    assert info["Driver"] == ownvol_plugin.name and info["Mountpoint"] == str(ownvol_plugin.data_dir(name))
    st = info["Status"]
    assert (st["uid"], st["gid"], st["mode"], st["policy"], st["profile"]) == \
        (70, 70, "0700", "on-root-mismatch", "postgres-alpine")
    assert {"path", "created", "last_check", "last_check_result", "last_repair"} <= set(st)
    data = os.stat(ownvol_plugin.data_dir(name))
    assert (data.st_uid, data.st_gid, data.st_mode & 0o7777) == (70, 70, 0o700)
    listed = ownvol_plugin.engine.docker("volume", "ls", "--filter", f"driver={ownvol_plugin.name}",
                                         "--format", "{{.Name}}").stdout.split()
    assert name in listed
    ownvol_plugin.engine.docker("volume", "rm", name)
    assert not ownvol_plugin.data_dir(name).exists()
    assert name not in ownvol_plugin.engine.docker("volume", "ls", "--format", "{{.Name}}").stdout.split()


def test_uid999_redis_with_aof_at_a_path_the_image_lacks_runs(ownvol_plugin, engine_client, ptracked, redis_image,
                                                              unique_name, port):
    """The canary's scenario (tests/test_canary.py) on an ownvol volume: it now starts and persists."""
    name = unique_name("vol")
    create(engine_client, ownvol_plugin, ptracked, name, profile="redis")
    run_redis(ptracked, redis_image, name, port)
    r = redis_answers(port)
    assert r.set("k", "v") and r.info("persistence")["aof_enabled"] == 1
    aof = ownvol_plugin.data_dir(name) / "appendonlydir"
    assert aof.is_dir() and (aof.stat().st_uid, aof.stat().st_gid) == (999, 999)
    st = status(engine_client, name)
    assert st["mounts"] == 1 and st["last_check_result"] == "ok"


def test_drift_is_repaired_at_the_next_mount(ownvol_plugin, engine_client, ptracked, redis_image, unique_name, port):
    name = unique_name("vol")
    create(engine_client, ownvol_plugin, ptracked, name)
    first = run_redis(ptracked, redis_image, name, port)
    redis_answers(port).set("k", "before")
    first.stop(timeout=10)
    data = ownvol_plugin.data_dir(name)
    for path in [data, *data.rglob("*")]:
        os.chown(path, 0, 0, follow_symlinks=False)  # the drift: everything root:root between runs
    assert status(engine_client, name)["mounts"] == 0
    port2 = port + 1 if port < 65000 else port - 1
    run_redis(ptracked, redis_image, name, port2)
    r = redis_answers(port2)
    assert r.get("k") == b"before" and r.set("k", "after")
    st = status(engine_client, name)
    assert st["last_check_result"].startswith("owner 0:0, want 999:999") and st["last_repair"]["changed"] >= 3


def test_two_containers_share_a_volume_and_references_count(ownvol_plugin, engine_client, ptracked, redis_image,
                                                            unique_name):
    name = unique_name("vol")
    create(engine_client, ownvol_plugin, ptracked, name)
    sleepers = [ptracked.run(redis_image, ["sleep", "600"], network_mode="none", labels=NO_HOOK,
                            volumes={name: {"bind": "/bound", "mode": "rw"}}) for _ in range(2)]
    assert status(engine_client, name)["mounts"] == 2
    sleepers[0].stop(timeout=1)
    assert status(engine_client, name)["mounts"] == 1
    err = ownvol_plugin.err("Remove", Name=name)
    assert f"volume {name} is in use: mounted 1 time(s)" in err
    result = ownvol_plugin.engine.docker("volume", "rm", name, check=False)
    assert result.returncode != 0 and "in use" in result.stderr
    assert ownvol_plugin.data_dir(name).is_dir()
    sleepers[1].stop(timeout=1)
    assert status(engine_client, name)["mounts"] == 0


def test_the_symlink_attack_leaves_host_files_untouched(ownvol_plugin, engine_client, ptracked, redis_image,
                                                        unique_name, port, tmp_path):
    """A volume seeded (by a root container) with links to host files and directories, its root drifted to
    root:root: the next mount repairs the volume and not one host file."""
    host = tmp_path / "host"
    (host / "etc").mkdir(parents=True)
    (host / "etc" / "shadow").write_text("secret")
    (host / "passwd").write_text("root")
    name = unique_name("vol")
    create(engine_client, ownvol_plugin, ptracked, name)
    seed = (f"ln -s {host}/passwd /bound/file-link && ln -s {host}/etc /bound/dir-link && mkdir /bound/sub "
            f"&& ln -s {host}/etc/shadow /bound/sub/deep && chown -h 0:0 /bound/* /bound && chmod 700 /bound")
    c = ptracked.run(redis_image, ["sh", "-c", seed], user="0:0", network_mode="none", labels=NO_HOOK,
                    volumes={name: {"bind": "/bound", "mode": "rw"}})
    assert c.wait(timeout=60)["StatusCode"] == 0, c.logs()
    before = {p: (os.stat(p).st_uid, os.stat(p).st_gid, os.stat(p).st_mode)
              for p in (host, host / "passwd", host / "etc", host / "etc" / "shadow")}
    run_redis(ptracked, redis_image, name, port)
    redis_answers(port).set("k", "v")
    after = {p: (os.stat(p).st_uid, os.stat(p).st_gid, os.stat(p).st_mode) for p in before}
    assert after == before
    data = ownvol_plugin.data_dir(name)
    assert os.lstat(data / "file-link").st_uid == os.lstat(data / "sub" / "deep").st_uid == 999
    assert (data.stat().st_uid, data.stat().st_mode & 0o777) == (999, 0o755)


@pytest.mark.parametrize("opt,words", [
    ("uid=abc", "option uid: 'abc' is not an integer from 0 to 4294967294"),
    ("gid=-5", "option gid: '-5' is not an integer"),
    ("mode=888", "option mode: '888' is not an octal mode from 0 to 7777"),
    ("profile=oracle", "option profile: 'oracle' is not a known profile; known profiles: mariadb, mongo"),
    ("policy=sometimes", "option policy: 'sometimes' is not a policy; use one of on-root-mismatch, always, never"),
    ("colour=red", "unknown option 'colour'; valid options: gid, mode, ownership, path, policy, profile, uid, view-of"),
    ("path=/etc/redis", "option path: '/etc/redis' is inside /etc, which ownvol never adopts"),
    ("path=/", "option path: '/' is a system directory"),
    ("path=relative", "option path: 'relative' is not an absolute path"),
])
def test_every_bad_option_is_refused_by_name_and_leaves_nothing(ownvol_plugin, ptracked, unique_name, opt, words):
    name = ptracked.volume(unique_name("bad"))
    result = ownvol_plugin.engine.docker("volume", "create", "--driver", ownvol_plugin.name, "-o", opt, name,
                                         check=False)
    assert result.returncode != 0 and words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert ownvol_plugin.engine.docker("volume", "inspect", name, check=False).returncode != 0
    assert not ownvol_plugin.data_dir(name).exists()
    assert name not in [v["Name"] for v in ownvol_plugin.call("List")["Volumes"]]


@pytest.mark.parametrize("name", ["a" * 200, "..", "-x"])
def test_bad_names_are_refused(ownvol_plugin, name):
    assert "Name" in ownvol_plugin.err("Create", Name=name, Opts={})
    result = ownvol_plugin.engine.docker("volume", "create", "--driver", ownvol_plugin.name, name, check=False)
    assert result.returncode != 0


def test_adopting_a_host_directory_through_the_engine(ownvol_plugin, engine_client, ptracked, redis_image,
                                                      unique_name, port):
    host = ownvol_plugin.adopt / unique_name("redis-data")
    host.mkdir()
    os.chown(host, 0, 0)
    name = unique_name("vol")
    create(engine_client, ownvol_plugin, ptracked, name, path=str(host))
    assert engine_client.api.inspect_volume(name)["Mountpoint"] == str(host)
    container = run_redis(ptracked, redis_image, name, port)
    redis_answers(port).set("k", "v")
    container.remove(force=True)
    engine_client.volumes.get(name).remove()
    assert (host / "appendonlydir").is_dir()  # the adopted data stays


def test_mount_root_binds_in_legacy_mode(make_plugin, engine_client, ptracked, redis_image, unique_name, port):
    plugin = make_plugin(mount_root=True)
    name = unique_name("vol")
    create(engine_client, plugin, ptracked, name)
    target = str(plugin.mount_root / name)
    container = run_redis(ptracked, redis_image, name, port)
    redis_answers(port).set("k", "v")
    assert plugin.is_mounted(target)
    assert engine_client.api.inspect_volume(name)["Mountpoint"] == target
    assert (plugin.data_dir(name) / "appendonlydir").is_dir()
    container.stop(timeout=10)
    assert not plugin.is_mounted(target) and status(engine_client, name)["mounts"] == 0
