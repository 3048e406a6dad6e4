"""PostgreSQL and MariaDB as services: recognition and where each finds its data (hooks/services/postgres.py,
mariadb.py), from a container's inspect and files; and the core's rule for the mode a repair sets."""

from __future__ import annotations

import os

from ownvol.hook.services import by_family, service_for
from ownvol.ownership import mode_to_set


class View:
    def __init__(self, attrs: dict, files: dict[str, str] | None = None) -> None:
        self.attrs = attrs
        self.files = files or {}

    def read_file(self, path: str) -> str | None:
        return self.files.get(path)

    def list_dir(self, path: str) -> list[str] | None:
        names = [p[len(path) + 1:] for p in self.files if p.startswith(path + "/") and "/" not in p[len(path) + 1:]]
        return names or None


def attrs(path: str, args=(), image: str = "x/y", env=(), labels=None) -> dict:
    return {"Path": path, "Args": list(args), "Config": {"Image": image, "Env": list(env), "Labels": labels or {}},
            "HostConfig": {"NetworkMode": "host"}, "Mounts": []}


def test_recognised_by_command_or_image():
    assert service_for(attrs("docker-entrypoint.sh", ["postgres", "-p", "5433"])).family == "postgres"
    assert service_for(attrs("sh", image="postgres:16")).family == "postgres"
    assert service_for(attrs("docker-entrypoint.sh", ["mariadbd"])).family == "mariadb"
    assert service_for(attrs("sh", image="docker.io/library/mariadb:11")).family == "mariadb"
    assert service_for(attrs("mongod", image="mongo:7")) is None


def test_postgres_data_dir_in_the_server_s_order():
    pg = by_family("postgres")
    settings = pg.configured(View(attrs("postgres", ["-c", "data_directory=/srv/pg", "-D", "/etc/pg"],
                                        env=["PGDATA=/x"])))
    assert (settings.data_dir, settings.origins["dir"]) == ("/srv/pg", "command line data_directory")
    settings = pg.configured(View(attrs("postgres", ["-D", "/srv/d/", "-p", "5433"], env=["PGDATA=/x"])))
    assert (settings.data_dir, settings.files["port"]) == ("/srv/d", "5433")
    settings = pg.configured(View(attrs("docker-entrypoint.sh", ["postgres"], env=["PGDATA=/x", "PGPORT=6000"])))
    assert (settings.data_dir, settings.origins["dir"], settings.files["port"]) == ("/x", "env PGDATA", "6000")
    settings = pg.configured(View(attrs("docker-entrypoint.sh", ["postgres", "--port=7000"])))
    assert (settings.data_dir, settings.origins["dir"], settings.files["port"]) == (
        "/var/lib/postgresql/data", "default", "7000")
    assert pg.data_modes == (0o700, 0o750)


def test_postgres_password_comes_only_from_a_label_and_is_never_in_the_origins():
    pg = by_family("postgres")
    settings = pg.configured(View(attrs("postgres", env=["POSTGRES_PASSWORD=s3cret"])))
    assert settings.password is None and "s3cret" not in repr(settings.origins)
    labelled = pg.configured(View(attrs("postgres", labels={"ownvol.postgres.password": "p"})))
    assert labelled.password == "p" and labelled.origins["password"] == "label"


def test_mariadb_data_dir_from_the_command_line_then_its_option_files():
    db = by_family("mariadb")
    files = {"/etc/mysql/my.cnf": "[client]\ndatadir=/no\n!includedir /etc/mysql/conf.d/\n",
             "/etc/mysql/conf.d/a.cnf": "[mysqld]\ndatadir = /srv/a\n",
             "/etc/mysql/conf.d/b.cnf": "[mariadb-11.8]\ndatadir=/srv/b # the last wins\n",
             "/etc/mysql/conf.d/c.txt": "[mysqld]\ndatadir=/ignored\n"}
    settings = db.configured(View(attrs("mariadbd"), files))
    assert (settings.data_dir, settings.origins["dir"]) == ("/srv/b", "/etc/mysql/conf.d/b.cnf:2")
    assert db.configured(View(attrs("mariadbd", ["--datadir=/srv/c"]), files)).data_dir == "/srv/c"
    assert db.configured(View(attrs("mariadbd"))).data_dir == "/var/lib/mysql"


def test_a_repair_sets_a_mode_only_when_the_server_would_refuse_the_one_it_has(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for mode, wanted in ((0o777, 0o700), (0o750, None), (0o700, None), (0o755, 0o700)):
        os.chmod(d, mode)
        assert mode_to_set(str(d), (0o700, 0o750)) == wanted
    assert mode_to_set(str(d), ()) is None


def test_postgres_data_dir_and_port_from_its_config_file():
    """SelectConfigFiles' order: the command line's data_directory, then the config file's (config_file=, else
    postgresql.conf of the -D / PGDATA dir), then -D, PGDATA; the file's port over PGPORT."""
    pg = by_family("postgres")
    conf = "# data_directory = '/commented'\ndata_directory = '/srv/it''s'  # quoted\nport 6543\n" \
           "data_directory='/srv/last'\n"
    files = {"/etc/postgresql/postgresql.conf": conf}
    settings = pg.configured(View(attrs("postgres", ["-c", "config_file=/etc/postgresql/postgresql.conf"],
                                        env=["PGPORT=7000"]), files))
    assert (settings.data_dir, settings.origins["dir"]) == ("/srv/last", "/etc/postgresql/postgresql.conf:4")
    assert (settings.files["port"], settings.origins["port"]) == ("6543", "/etc/postgresql/postgresql.conf:3")
    in_pgdata = pg.configured(View(attrs("postgres", env=["PGDATA=/etc/pg"]),
                                   {"/etc/pg/postgresql.conf": "data_directory = '/srv/it''s'\n"}))
    assert (in_pgdata.data_dir, in_pgdata.origins["dir"]) == ("/srv/it's", "/etc/pg/postgresql.conf:1")
    overridden = pg.configured(View(attrs("postgres", ["-c", "data_directory=/cli", "-c",
                                                       "config_file=/etc/postgresql/postgresql.conf"]), files))
    assert (overridden.data_dir, overridden.origins["dir"]) == ("/cli", "command line data_directory")
