"""Well-known images and the user their service runs as, for `-o profile=NAME`.

Each entry was checked against the user the image's own Dockerfile creates (docker-library
and MariaDB's official images). The hook uses the same table to tell who should own a
container's data directory.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """The owner and root mode a server image's data dir wants (mode: permission bits), the official images it
    is known for (`redis`, or `redis:*alpine*` for the Alpine tags), and the source of the fact: the image's
    Dockerfile lines that make its user."""

    name: str
    uid: int
    gid: int
    mode: int
    images: tuple[str, ...]
    source: str

    def describe(self) -> str:
        return f"{self.name} ({self.uid}:{self.gid}, mode {self.mode:04o})"


# PostgreSQL refuses a data directory that group or others can read: its profiles ask for 0700.
PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("redis", 999, 999, 0o755, ("redis",),
                "redis Debian image: groupadd -r -g 999 redis; useradd -r -g redis -u 999 redis"),
        Profile("redis-alpine", 999, 1000, 0o755, ("redis:*alpine*",),
                "redis Alpine image: addgroup -S -g 1000 redis; adduser -S -G redis -u 999 redis"),
        Profile("valkey", 999, 999, 0o755, ("valkey/valkey",),
                "valkey/valkey Debian image: groupadd -r -g 999 valkey; useradd -r -g valkey -u 999 valkey"),
        Profile("valkey-alpine", 999, 1000, 0o755, ("valkey/valkey:*alpine*",),
                "valkey/valkey Alpine image: addgroup -S -g 1000 valkey; adduser -S -G valkey -u 999 valkey"),
        Profile("postgres", 999, 999, 0o700, ("postgres",),
                "postgres Debian image: groupadd -r postgres --gid=999; useradd -r -g postgres --uid=999"),
        Profile("postgres-alpine", 70, 70, 0o700, ("postgres:*alpine*",),
                "postgres Alpine image: addgroup -g 70 -S postgres; adduser -u 70 -S -D -G postgres"),
        Profile("mongo", 999, 999, 0o755, ("mongo",),
                "mongo image: groupadd --gid 999 --system mongodb; useradd --uid 999 --system --gid mongodb"),
        Profile("mysql", 999, 999, 0o755, ("mysql",),
                "mysql image: groupadd --system --gid 999 mysql; useradd --system --uid 999 --gid 999"),
        Profile("mariadb", 999, 999, 0o755, ("mariadb",),
                "mariadb image: groupadd --gid 999 -r mysql; useradd -r -g mysql mysql --uid 999"),
        Profile("rabbitmq", 999, 999, 0o755, ("rabbitmq",),
                "rabbitmq image: groupadd --gid 999 --system rabbitmq; useradd --uid 999 --system"),
    )
}


def get_profile(name: str) -> Profile:
    """The profile called name; KeyError naming the known ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown profile {name!r}; known profiles: {', '.join(sorted(PROFILES))}") from None


_HUB_PREFIXES = ("docker.io/", "index.docker.io/", "registry-1.docker.io/")


def _hub_repository(image: str) -> tuple[str, str] | None:
    """('redis', '7-alpine') for 'redis:7-alpine' or 'docker.io/library/redis:7-alpine@sha256:...';
    ('valkey/valkey', '8.1') for 'valkey/valkey:8.1'; None for another registry's image."""
    ref = image.split("@", 1)[0]
    path, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "")
    for prefix in _HUB_PREFIXES:
        if path.startswith(prefix):
            path = path[len(prefix):]
            break
    first = path.split("/", 1)[0]
    if "/" in path and ("." in first or ":" in first or first == "localhost"):
        return None
    return path.removeprefix("library/"), tag


def profile_for_image(image: str) -> Profile | None:
    """The profile of an official image reference (Docker Hub's library images, and the repositories the
    table names, like valkey/valkey), by repository name and alpine tag; None if unknown (bitnami/redis
    runs as another user, and so does an image of the same name on another registry)."""
    hub = _hub_repository(image)
    if hub is None:
        return None
    repo, tag = hub
    alpine = "alpine" in tag
    for profile in PROFILES.values():
        for pattern in profile.images:
            p_repo, _, p_tag = pattern.partition(":")
            if p_repo == repo and alpine == bool(p_tag):
                return profile
    return None
