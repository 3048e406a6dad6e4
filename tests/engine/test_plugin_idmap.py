"""ownership=idmap on the real engine (issue 25): real servers on volumes shown through an idmapped mount, whose
files on disk keep their owners; views; a driver and a dockerd SIGKILLed under a live map; overlayfs refused or
fallen back; what the map must never give a host user. Runs on every engine of make test-matrix (plugin_engine)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import docker
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.engine.test_plugin_databases import loaded
from tests.support.common import new_name
from tests.support.driver import NO_HOOK, create, redis_answers, run_redis, status
from tests.support.engine import redis_cmd, wait_for
from tests.support.fixtures_hook import fast_strategies
from tests.support.fixtures_plugin import PluginEngine, PluginProcess

pytestmark = pytest.mark.engine


def stats(top: Path) -> dict[str, tuple[int, int, int, int]]:
    """(uid, gid, mode, mtime_ns) on disk of every entry below top (relative path; "." for top)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [".", *dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            out[os.path.normpath(os.path.relpath(path, top))] = (st.st_uid, st.st_gid, st.st_mode, st.st_mtime_ns)
    return out


def root_owned_tree(top: Path) -> Path:
    """A tree as a root container or a restore leaves it: everything 0:0, plus one file of another owner."""
    (top / "old" / "deep").mkdir(parents=True)
    (top / "old" / "deep" / "notes.txt").write_text("kept")
    (top / "README").write_text("root's")
    (top / "theirs").write_text("private")
    os.chown(top / "theirs", 1234, 1234)
    os.chmod(top / "theirs", 0o640)
    return top


def in_container(ptracked, image: str, volume: str, script: str, user: str = "999:999") -> str:
    c = ptracked.run(image, ["sh", "-c", script], user=user, network_mode="none", labels=NO_HOOK,
                     volumes={volume: {"bind": "/bound", "mode": "rw"}})
    result = c.wait(timeout=120)
    out = c.logs().decode()
    assert result["StatusCode"] == 0, out
    return out


def test_redis_with_aof_on_an_adopted_root_owned_tree_changes_nothing_on_disk(ownvol_plugin, engine_client,
                                                                              ptracked, redis_image, unique_name,
                                                                              port):
    name = unique_name("idm")
    tree = ownvol_plugin.adopt / name
    redis_on_an_adopted_root_owned_tree(ownvol_plugin, engine_client, ptracked, redis_image, name, port, tree, tree)


def redis_on_an_adopted_root_owned_tree(plugin, client, ptracked, image: str, name: str, port: int, path: Path,
                                        seen: Path) -> None:
    """Volume name, ownership=idmap, adopted at path (as the driver sees it; seen: the same directory as this
    process reaches it) where root_owned_tree is made: Redis (AOF on) as 999 writes, restarts and keeps its data,
    and the stat of every file on disk but what it wrote (and the root's mtime) is unchanged.
    Also the body of tests/engine/test_plugin_idmap_filesystems.py's test on xfs, btrfs and tmpfs."""
    tree = root_owned_tree(seen)
    before = stats(tree)
    create(client, plugin, ptracked, name, ownership="idmap", path=str(path), uid="999", gid="999")
    assert stats(tree) == before
    st = status(client, name)
    assert (st["ownership"], st["ownership_asked"]) == ("idmap", "idmap") and st["last_repair"] is None
    shown = in_container(ptracked, image, name, "stat -c '%u:%g %a %n' /bound /bound/README /bound/theirs")
    assert shown.split("\n")[:3] == ["999:999 755 /bound", "999:999 644 /bound/README", "1234:1234 640 /bound/theirs"]
    first = run_redis(ptracked, image, name, port)
    r = redis_answers(port)
    assert r.set("k", "kept") and r.info("persistence")["aof_enabled"] == 1
    first.restart(timeout=10)
    assert redis_answers(port).get("k") == b"kept"
    first.stop(timeout=10)
    third = run_redis(ptracked, image, name, port)
    assert redis_answers(port).get("k") == b"kept"
    third.stop(timeout=10)
    after = stats(tree)
    for entry, (uid, gid, mode, mtime) in before.items():
        assert after[entry][:3] == (uid, gid, mode), entry
        if entry != ".":  # the root's mtime moves when the server adds appendonlydir
            assert after[entry][3] == mtime, entry
    written = sorted(set(after) - set(before))
    assert "appendonlydir" in written
    assert {after[p][:2] for p in written} == {(0, 0)}, "what 999 wrote through the map is 0:0 on disk"
    assert status(client, name)["mounts"] == 0


def test_a_bitnami_style_tree_owned_1001_is_served_to_999_without_a_chown(ownvol_plugin, engine_client, ptracked,
                                                                          redis_image, unique_name, port):
    name = unique_name("bit")
    tree = ownvol_plugin.adopt / name
    tree.mkdir()
    os.chown(tree, 1001, 1001)
    writer = ptracked.run(redis_image, redis_cmd(port, data_dir="/bitnami"), user="1001:1001", network_mode="host",
                          labels=NO_HOOK, volumes={str(tree): {"bind": "/bitnami", "mode": "rw"}})
    redis_answers(port).set("k", "from-1001")
    writer.stop(timeout=10)
    before = stats(tree)
    assert {v[:2] for v in before.values()} == {(1001, 1001)}
    create(engine_client, ownvol_plugin, ptracked, name, ownership="idmap", path=str(tree), uid="999", gid="999")
    official = run_redis(ptracked, redis_image, name, port)
    r = redis_answers(port)
    assert r.get("k") == b"from-1001" and r.set("k2", "from-999")
    official.stop(timeout=10)
    after = stats(tree)
    assert {p: v[:3] for p, v in after.items() if p in before} == {p: v[:3] for p, v in before.items()}
    assert {v[:2] for v in after.values()} == {(1001, 1001)}, "999's writes land as 1001 on disk"


def test_two_views_two_uids_one_dataset_written_at_once(ownvol_plugin, engine_client, ptracked, redis_image,
                                                        unique_name):
    base, view = unique_name("base"), unique_name("view")
    create(engine_client, ownvol_plugin, ptracked, base, ownership="idmap")
    create(engine_client, ownvol_plugin, ptracked, view, **{"view-of": base, "uid": "1001", "gid": "1001"})
    writers = []
    for volume, user in ((base, "999:999"), (view, "1001:1001")):
        tag = user.split(":")[0]
        writers.append(ptracked.run(redis_image, ["sh", "-c", f"for i in $(seq 200); do echo $i > /bound/{tag}-$i"
                                                              " || exit 1; done"],
                                    user=user, network_mode="none", labels=NO_HOOK,
                                    volumes={volume: {"bind": "/bound", "mode": "rw"}}))
    assert [w.wait(timeout=120)["StatusCode"] for w in writers] == [0, 0], [w.logs() for w in writers]
    data = ownvol_plugin.data_dir(base)
    assert {os.stat(p).st_uid for p in data.iterdir()} == {0} and len(list(data.iterdir())) == 400
    assert set(in_container(ptracked, redis_image, base, "stat -c %u:%g /bound/*").split()) == {"999:999"}
    assert set(in_container(ptracked, redis_image, view, "stat -c %u:%g /bound/*", "1001:1001").split()) == \
        {"1001:1001"}
    assert f"has 1 view(s) showing its data: {view}; remove them first" in ownvol_plugin.err("Remove", Name=base)


def test_postgres_takes_an_idmapped_root_owned_data_dir_as_its_own(ownvol_plugin, engine_client, ptracked,
                                                                   plugin_engine, docker_client, unique_name, port):
    image = loaded(plugin_engine, docker_client, "ownvol/postgres:17")
    name = unique_name("pgi")
    tree = ownvol_plugin.adopt / name
    tree.mkdir(mode=0o700)
    create(engine_client, ownvol_plugin, ptracked, name, ownership="idmap", path=str(tree), profile="postgres")
    run = {"user": "999:999", "network_mode": "host", "entrypoint": [], "labels": NO_HOOK,
           "volumes": {name: {"bind": "/pg/data", "mode": "rw,nocopy"}}}
    setup = ptracked.run(image, ["sh", "-c", f"initdb -D /pg/data && exec postgres -D /pg/data -p {port} "
                                             "-c listen_addresses=127.0.0.1"], **run)

    def accepts() -> bool:
        return setup.exec_run(["psql", "-XAtq", "-p", str(port), "-h", "/var/run/postgresql", "-d", "postgres", "-c",
                               "create table if not exists t(i int); insert into t values (1)"]).exit_code == 0

    wait_for(accepts, 90, what="PostgreSQL on an idmapped root-owned data dir to take a write")
    setup.stop(timeout=30)
    again = ptracked.run(image, ["postgres", "-D", "/pg/data", "-p", str(port), "-c", "listen_addresses=127.0.0.1"],
                         **run)
    wait_for(lambda: again.exec_run(["psql", "-XAtq", "-p", str(port), "-d", "postgres", "-c",
                                     "select count(*) from t"]).output.strip() == b"1", 90,
             what="PostgreSQL started again on the same idmapped volume")
    again.stop(timeout=30)
    st = os.stat(tree)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o700)
    assert {v[:2] for v in stats(tree).values()} == {(0, 0)}
    assert status(engine_client, name)["last_repair"] is None


def test_mariadb_takes_an_idmapped_root_owned_data_dir(ownvol_plugin, engine_client, ptracked, plugin_engine,
                                                       docker_client, unique_name, port):
    image = loaded(plugin_engine, docker_client, "ownvol/mariadb:11.8")
    name = unique_name("mdi")
    tree = ownvol_plugin.adopt / name
    tree.mkdir(mode=0o755)
    create(engine_client, ownvol_plugin, ptracked, name, ownership="idmap", path=str(tree), profile="mariadb")
    run = {"user": "999:999", "network_mode": "host", "environment": {"MARIADB_ROOT_PASSWORD": "ownvol-test"},
           "labels": NO_HOOK, "volumes": {name: {"bind": "/var/lib/mysql", "mode": "rw,nocopy"}}}
    sql = ["mariadb", "-uroot", "-pownvol-test", "-h127.0.0.1", f"-P{port}", "-e"]
    first = ptracked.run(image, ["mariadbd", f"--port={port}", "--bind-address=127.0.0.1"], **run)
    wait_for(lambda: first.exec_run([*sql, "create database if not exists p; create table if not exists p.t(i int) "
                                           "engine=innodb; insert into p.t values (1)"]).exit_code == 0, 120,
             what="MariaDB on an idmapped root-owned data dir to take a write")
    first.stop(timeout=30)
    again = ptracked.run(image, ["mariadbd", f"--port={port}", "--bind-address=127.0.0.1"], **run)
    wait_for(lambda: again.exec_run([*sql, "select count(*) from p.t"]).output.split()[-1:] == [b"1"], 120,
             what="MariaDB started again on the same idmapped volume")
    again.stop(timeout=30)
    assert (tree / "mysql").is_dir()
    assert {v[:2] for v in stats(tree).values()} == {(0, 0)}
    assert status(engine_client, name)["last_repair"] is None


@pytest.fixture
def killable(redis_image):
    """A plugin engine of the test's own (it gets SIGKILLed) with a legacy plugin in its namespace."""
    engine = PluginEngine(new_name("ieng"))
    plugin = None
    try:
        engine.start()
        engine.load_image(redis_image)
        plugin = PluginProcess(engine).start()
        yield engine, plugin
    finally:
        if plugin:
            plugin.destroy()
        engine.destroy()


def test_driver_then_dockerd_sigkilled_under_a_live_map(killable, redis_image, port):
    engine, plugin = killable
    client = engine.client()
    client.volumes.create("v", driver=plugin.name, driver_opts={"ownership": "idmap"})
    data = plugin.data_dir("v")
    server = client.containers.run(redis_image, redis_cmd(port, data_dir="/bound"), user="999:999", detach=True,
                                   network_mode="host", labels=NO_HOOK, restart_policy={"Name": "always"},
                                   volumes={"v": {"bind": "/bound", "mode": "rw"}})
    redis_answers(port).set("k", "kept")
    target = plugin.root / "idmap" / "v"
    assert plugin.is_mounted(target)
    os.killpg(plugin.proc.pid, signal.SIGKILL)
    plugin.proc.wait()
    plugin.proc = None
    engine.kill()
    plugin.start()
    assert "event=idmap-checked volume=v ok: on-disk 0:0 shown as 999:999" in plugin.log()
    client = engine.start()
    wait_for(lambda: client.containers.get(server.id).status == "running", 60, what="the --restart always server")
    assert redis_answers(port).get("k") == b"kept"
    assert status(client, "v")["mounts"] == 1 and plugin.is_mounted(target)
    assert {os.lstat(p).st_uid for p in [data, *data.rglob("*")]} == {0}
    client.containers.get(server.id).stop(timeout=10)
    assert status(client, "v")["mounts"] == 0
    assert not plugin.is_mounted(target)
    client.containers.get(server.id).remove()
    client.volumes.get("v").remove()


def test_overlayfs_is_refused_for_idmap_and_falls_back_for_auto(ownvol_plugin, engine_client, ptracked,
                                                                unique_name, hook, plugin_engine):
    """...and the fallback is in the hook's metrics (ownvol_hook_volume_ownership), the reason in Status only."""
    base = ownvol_plugin.adopt / unique_name("ovl")
    dirs = [base / n for n in ("lower", "upper", "work", "merged")]
    for d in dirs:
        d.mkdir(parents=True)
    in_ns = ownvol_plugin.engine._namespace()  # the driver sees the mounts of its engine's namespace
    subprocess.run([*in_ns, "mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={dirs[0]},upperdir={dirs[1]},workdir={dirs[2]}", str(dirs[3])], check=True)
    try:
        subprocess.run([*in_ns, "mkdir", str(dirs[3] / "a"), str(dirs[3] / "b")], check=True)
        name = unique_name("ovi")
        ptracked.volume(name)
        with pytest.raises(docker.errors.APIError) as refused:
            engine_client.volumes.create(name, driver=ownvol_plugin.name,
                                         driver_opts={"ownership": "idmap", "path": str(dirs[3] / "a")})
        words = str(refused.value)
        assert "ownership=idmap refused" in words and "overlay" in words and "EINVAL" in words, words
        auto = unique_name("ova")
        create(engine_client, ownvol_plugin, ptracked, auto, ownership="auto", path=str(dirs[3] / "b"))
        st = status(engine_client, auto)
        assert (st["ownership"], st["ownership_asked"]) == ("walk", "auto")
        assert "auto fell back to the walk" in st["ownership_note"] and "overlay" in st["ownership_note"]
        h = hook(env={"DOCKER_HOST": plugin_engine.host, "OWNVOL_DRIVER_NAME": ownvol_plugin.name})
        family = next(f for f in text_string_to_metric_families(h.metrics())
                      if f.name == "ownvol_hook_volume_ownership")
        mine = [(s.labels["ownership"], s.labels["asked"], s.value) for s in family.samples
                if s.labels["volume"] == auto]
        assert mine == [("walk", "auto", 1.0)] and not any(name == s.labels["volume"] for s in family.samples)
        engine_client.volumes.get(auto).remove()
    finally:
        subprocess.run([*in_ns, "umount", "-l", str(dirs[3])], check=False)


def test_a_setuid_file_made_through_the_map_gives_a_host_user_nothing(ownvol_plugin, engine_client, ptracked,
                                                                      redis_image, unique_name):
    name = unique_name("sec")
    tree = root_owned_tree(ownvol_plugin.adopt / name)
    create(engine_client, ownvol_plugin, ptracked, name, ownership="idmap", path=str(tree), uid="999", gid="999")
    seen = in_container(ptracked, redis_image, name,
                        "cp /usr/bin/id /bound/id && chmod 4755 /bound/id && stat -c '%u %a' /bound/id && "
                        "grep ' /bound ' /proc/self/mountinfo && stat -c '%u:%g %a' /bound/theirs && "
                        "(cat /bound/theirs 2>/dev/null && echo READ || echo DENIED)")
    lines = seen.split("\n")
    assert lines[0] == "999 4755", seen  # the container sees its own file, setuid to itself
    assert "nosuid" in lines[1].split()[5].split(","), seen
    assert lines[2:4] == ["1234:1234 640", "DENIED"], seen
    on_disk = os.lstat(tree / "id")
    assert (on_disk.st_uid, on_disk.st_mode & 0o7777) == (0, 0o4755)  # the map's swap: 999 is 0 on disk
    # ...but no host user reaches it: the driver's plugin base (like OWNVOL_ROOT) is 0700, and the driver refused
    # idmap for data other users could reach (tests/unit/test_plugin_idmap.py)
    # through sh: setpriv's own execve still has saved uid 0 and would prove nothing (it runs a 0700 path)
    host = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c",
                           f"{tree / 'id'} -u"], capture_output=True, text=True)
    assert host.returncode != 0 and "Permission denied" in host.stderr, host
    holder = ptracked.run(redis_image, ["sleep", "600"], user="999:999", network_mode="none", labels=NO_HOOK,
                          volumes={name: {"bind": "/bound", "mode": "rw"}})
    target = ownvol_plugin.root / "idmap" / name
    mounted = [ln.split() for ln in Path(f"/proc/{ownvol_plugin.proc.pid}/mountinfo").read_text().splitlines()]
    options = [f[5].split(",") for f in mounted if f[4] == str(target)]
    assert options and {"nosuid", "nodev", "idmapped"} <= set(options[-1]), options
    assert os.stat(ownvol_plugin.root / "idmap").st_mode & 0o777 == 0o700
    reach = subprocess.run([*ownvol_plugin.engine._namespace(), "setpriv", "--reuid=65534", "--regid=65534",
                            "--clear-groups", "stat", str(target / "id")], capture_output=True, text=True)
    assert reach.returncode != 0 and "Permission denied" in reach.stderr, reach
    holder.stop(timeout=1)
    assert not ownvol_plugin.is_mounted(target)


def test_the_hook_never_chowns_an_idmapped_volume_and_names_the_wrong_map(hook, ownvol_plugin, plugin_engine,
                                                                          engine_client, ptracked, redis_image,
                                                                          unique_name, port, tmp_path):
    """Case 03 on an idmapped volume: `--user 1000:1000` where the map shows the data as 999:999. Redis cannot
    write; the hook never repairs by a chown, names the map to fix, and gives up: the disk keeps every owner and
    mode."""
    name = unique_name("hmap")
    tree = root_owned_tree(ownvol_plugin.adopt / name)
    create(engine_client, ownvol_plugin, ptracked, name, ownership="idmap", path=str(tree), profile="redis")
    before = stats(tree)
    h = hook(strategies=fast_strategies(tmp_path / "s.yaml"), env={"DOCKER_HOST": plugin_engine.host})
    c = ptracked.run(redis_image, redis_cmd(port, data_dir="/bound"), user="1000:1000", network_mode="host",
                     labels=h.labels, volumes={name: {"bind": "/bound", "mode": "rw"}},
                     restart_policy={"Name": "unless-stopped"})

    def of_c(kind: str):
        return lambda e: e.get("event") == kind and e.get("container") in (c.name, c.id[:12])

    gave_up = h.wait_event(of_c("gave-up"), 240, "the hook to give up")
    assert "repair-ownership:skipped" in gave_up["actions"], gave_up
    repairs = [e for e in h.of("action", c.name) if e["action"] == "repair-ownership"]
    assert repairs and not [e for e in repairs if e["result"] != "skipped"], repairs
    why = repairs[0]["detail"]["why"]
    assert why.startswith(f"ownvol volume {name} is an idmapped mount showing its data as 999:999: ownvol never "
                          "chowns the data of an idmapped volume; the container runs as 1000:1000"), why
    assert "-o uid=1000 -o gid=1000" in why, why
    after = stats(tree)
    assert {p: v[:3] for p, v in after.items() if p in before} == {p: v[:3] for p, v in before.items()}
