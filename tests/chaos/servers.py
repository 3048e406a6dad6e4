"""The chaos run's servers: which ones (SETS), where their data lives and how their container is made.

Every server runs with host networking on 127.0.0.1:port and restart policy `always` (after a SIGKILL of dockerd,
Docker 20.10 brings back only those: moby daemon/daemon.go restore, `shouldRestart`), persists every acknowledged
write before it answers (Redis/Valkey `appendfsync always`; PostgreSQL's synchronous_commit and MariaDB's
innodb_flush_log_at_trx_commit=1 by default) and is labelled for the run's own hook.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import docker

IMAGES = {"redis": "ownvol/redis:7", "valkey": "ownvol/valkey:8.1", "postgres": "ownvol/postgres:17",
          "mariadb": "ownvol/mariadb:11.8"}
PASSWORD = "ownvol-chaos"
TARGETS = {"redis": "/data", "valkey": "/data", "postgres": "/var/lib/postgresql/data", "mariadb": "/var/lib/mysql"}

# (key, family, storage): volume = an ownvol volume of the run's driver, bind = a host dir, tmpfs = a host dir on the
# run's small tmpfs (the fill fault), control = a root-run Redis on a root-owned host dir that no fault touches.
SETS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "full": (("redis-vol-1", "redis", "volume"), ("redis-vol-2", "redis", "volume"), ("redis-vol-3", "redis", "volume"),
             ("redis-bind-1", "redis", "bind"), ("redis-bind-2", "redis", "bind"), ("redis-fill", "redis", "tmpfs"),
             ("control", "redis", "control"), ("valkey-vol", "valkey", "volume"),
             ("postgres-vol", "postgres", "volume"), ("mariadb-vol", "mariadb", "volume")),
    "small": (("redis-vol-1", "redis", "volume"), ("redis-bind-1", "redis", "bind"), ("redis-fill", "redis", "tmpfs"),
              ("control", "redis", "control"), ("valkey-vol", "valkey", "volume"),
              ("postgres-vol", "postgres", "volume")),
}


@dataclass
class Server:
    """One server: key (the run's name for it), family, storage (SETS), container name, port, source (the volume
    name or the host dir bound), host_dir (where its data is on the host), owner (uid, gid) its data dir must keep."""

    key: str
    family: str
    storage: str
    name: str
    port: int
    source: str
    host_dir: str
    owner: tuple[int, int] = (999, 999)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def image(self) -> str:
        return IMAGES[self.family]

    @property
    def faultable(self) -> bool:
        return self.storage != "control"

    @property
    def sql(self) -> bool:
        return self.family in ("postgres", "mariadb")

    def command(self) -> list[str]:
        if self.family in ("redis", "valkey"):
            cmd = [f"{self.family}-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", "/data",
                   "--appendonly", "yes", "--appendfsync", "always"]
            # the control writes nothing but its AOF (no RDB snapshot renamed into /data): its dir's mtime holds
            return cmd + (["--save", ""] if self.storage == "control" else [])
        if self.family == "postgres":
            return ["postgres", "-p", str(self.port), "-c", "listen_addresses=127.0.0.1"]
        return ["mariadbd", f"--port={self.port}", "--bind-address=127.0.0.1"]

    def run(self, client: docker.DockerClient):
        """Create and start its container (the volume or dir must exist); the container."""
        env = {"postgres": {"POSTGRES_PASSWORD": PASSWORD}, "mariadb": {"MARIADB_ROOT_PASSWORD": PASSWORD}}
        mounts = [docker.types.Mount(TARGETS[self.family], self.source, type="volume" if self.storage == "volume"
                                     else "bind", no_copy=self.storage == "volume")]
        return client.containers.run(self.image, self.command(), name=self.name, detach=True, network_mode="host",
                                     user="0:0" if self.storage == "control" else "999:999",
                                     environment=env.get(self.family, {}), mounts=mounts, labels=self.labels,
                                     restart_policy={"Name": "always"})

    def state_ok(self) -> bool:
        """Its data dir and the entries right below it belong to owner, and the owner may enter and write the dir."""
        try:
            st = os.stat(self.host_dir)
            if (st.st_uid, st.st_gid) != self.owner or st.st_mode & 0o700 != 0o700:
                return False
            with os.scandir(self.host_dir) as entries:
                return all((e.stat(follow_symlinks=False).st_uid, e.stat(follow_symlinks=False).st_gid) == self.owner
                           for e in entries)
        except OSError:
            return False

    def stamp(self) -> tuple[int, int, int, int]:
        """(uid, gid, mode, mtime_ns) of its data dir."""
        st = os.stat(self.host_dir)
        return st.st_uid, st.st_gid, st.st_mode & 0o7777, st.st_mtime_ns
