"""The driver's database profiles against the real servers: a `profile=postgres` volume is taken by initdb and
PostgreSQL as it is (owner 999:999, mode 0700: no repair at Mount, before or after the server ran), likewise
`profile=mariadb` by mariadb-install-db and mariadbd. Mounted with nocopy, so Docker's copy-up of the image's
own directory cannot hand the server a right owner or mode the driver did not give."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.common import ROOT
from tests.support.driver import NO_HOOK, create, status
from tests.support.engine import wait_for

pytestmark = pytest.mark.engine


def loaded(plugin_engine, docker_client, tag: str) -> str:
    try:
        docker_client.images.get(tag)
    except Exception:  # noqa: BLE001 - built below
        subprocess.run([str(ROOT / "scripts" / "images.sh"), "servers"], check=True, cwd=ROOT)
    if subprocess.run(["docker", "-H", plugin_engine.host, "image", "inspect", tag], capture_output=True).returncode:
        plugin_engine.load_image(tag)
    return tag


def untouched_by_the_driver(client, name: str) -> None:
    st = status(client, name)
    assert st["last_check_result"] == "ok" and st["last_repair"] is None, st


def test_a_postgres_profile_volume_is_taken_by_initdb_and_the_server_as_it_is(ownvol_plugin, engine_client,
                                                                             ptracked, plugin_engine,
                                                                             docker_client, unique_name, port):
    image = loaded(plugin_engine, docker_client, "ownvol/postgres:17")
    name = unique_name("pg")
    create(engine_client, ownvol_plugin, ptracked, name, profile="postgres")
    data = ownvol_plugin.data_dir(name)
    assert (os.stat(data).st_uid, os.stat(data).st_mode & 0o7777) == (999, 0o700)
    # the server's own initdb and postgres, no entrypoint: nothing but the volume decides owner and mode
    setup = ptracked.run(image, ["sh", "-c", f"initdb -D /pg/data && exec postgres -D /pg/data -p {port} "
                                             "-c listen_addresses=127.0.0.1"],
                         user="999:999", network_mode="host", entrypoint=[], labels=NO_HOOK,
                         volumes={name: {"bind": "/pg/data", "mode": "rw,nocopy"}})

    def accepts() -> bool:
        return setup.exec_run(["psql", "-XAtq", "-p", str(port), "-h", "/var/run/postgresql", "-d", "postgres", "-c",
                               "create table if not exists t(i int); insert into t values (1)"]).exit_code == 0

    wait_for(accepts, 60, what="PostgreSQL on the profile=postgres volume to take a write")
    untouched_by_the_driver(engine_client, name)
    setup.stop(timeout=30)
    again = ptracked.run(image, ["postgres", "-D", "/pg/data", "-p", str(port), "-c", "listen_addresses=127.0.0.1"],
                         user="999:999", network_mode="host", entrypoint=[], labels=NO_HOOK,
                         volumes={name: {"bind": "/pg/data", "mode": "rw,nocopy"}})
    wait_for(lambda: again.exec_run(["psql", "-XAtq", "-p", str(port), "-d", "postgres", "-c",
                                     "select count(*) from t"]).output.strip() == b"1", 60,
             what="PostgreSQL started again on the same volume")
    untouched_by_the_driver(engine_client, name)
    assert os.stat(data).st_mode & 0o7777 == 0o700


@pytest.mark.parametrize("tag", [pytest.param("ownvol/mariadb:11.8", id="mariadb11.8"),
                                 pytest.param("ownvol/mariadb:10.11", id="mariadb10.11", marks=pytest.mark.matrix)])
def test_a_mariadb_profile_volume_is_taken_by_the_server_as_it_is(ownvol_plugin, engine_client, ptracked,
                                                                 plugin_engine, docker_client, unique_name, port,
                                                                 tag):
    image = loaded(plugin_engine, docker_client, tag)
    name = unique_name("db")
    create(engine_client, ownvol_plugin, ptracked, name, profile="mariadb")
    c = ptracked.run(image, ["mariadbd", f"--port={port}", "--bind-address=127.0.0.1"], user="999:999",
                     network_mode="host", environment={"MARIADB_ROOT_PASSWORD": "ownvol-test"}, labels=NO_HOOK,
                     volumes={name: {"bind": "/var/lib/mysql", "mode": "rw,nocopy"}})

    def accepts() -> bool:
        return c.exec_run(["mariadb", "-uroot", "-pownvol-test", "-e",
                           "create database if not exists p; create table if not exists p.t(i int) engine=innodb; "
                           "insert into p.t values (1)"]).exit_code == 0

    wait_for(accepts, 90, what="MariaDB on the profile=mariadb volume to take a write")
    untouched_by_the_driver(engine_client, name)
    assert (ownvol_plugin.data_dir(name) / "mysql").is_dir()
