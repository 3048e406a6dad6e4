"""Redis and Valkey as services: recognised by `redis-server`/`valkey-server` or their images, configured
as the server reads its config (hooks/redisconf.py), asked with CONFIG GET when it answers, probed with
PING and INFO (hooks/health.py). Valkey is Redis's fork: same config rules, messages and INFO fields.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Callable
from dataclasses import replace

import redis

from .. import patterns, redisconf
from ..health import connect, probe
from ..model import ServerProcess, Settings, writes_of
from . import ContainerView, Service, command_of, register

URL_LABEL = "ownvol.redis.url"
PASSWORD_LABEL = "ownvol.redis.password"
PASSWORD_ENV = "REDIS_PASSWORD"
LIVE_KEYS = ("dir", "port", "bind", "unixsocket", "appenddirname", "dbfilename", "appendonly", "save", "logfile",
             "cluster-enabled", "cluster-config-file")
# What the server writes beside its dir (Settings.writes): its log file ("" is stdout), its unix socket, and a
# cluster node's config file (src/config.c; a relative path is taken from `dir`, which the server chdirs to)
WRITES_KEYS = ("logfile", "unixsocket", "cluster-config-file")
# bind entries that put the server on IPv4 loopback: any address, or loopback itself ("-" marks an optional one)
_LOOPBACK_REACHES = ("", "*", "0.0.0.0", "127.0.0.1", "localhost")


class RedisService(Service):
    family = "redis"
    commands = ("redis-server", "redis-sentinel")
    images = ("redis", "redis-server", "redis-stack-server")
    profile = "redis"
    catalogue = patterns.CATALOGUE

    def server_argv(self, attrs: dict) -> list[str]:
        """The server's own arguments: after the server executable in the command (also inside `sh -c`),
        else, for an image of this family whose entrypoint adds it (`x.conf` or `--flag` first), all of
        Args, as docker-library's docker-entrypoint.sh passes them on."""
        command = command_of(attrs)
        for i, arg in enumerate(command):
            if posixpath.basename(arg) in self.commands:
                return _as_server(arg, command[i + 1:])
            if " " in arg.strip():
                try:
                    words = shlex.split(arg)
                except ValueError:
                    continue
                for j, word in enumerate(words):
                    if posixpath.basename(word) in self.commands:
                        return _as_server(word, _until_shell_operator(words[j + 1:]))
        args = list(attrs.get("Args") or [])
        if args and (args[0].startswith("-") or args[0].endswith(".conf")):
            return args
        return []

    def configured(self, view: ContainerView) -> Settings:
        config = view.attrs.get("Config") or {}
        return self._settings(view, self.server_argv(view.attrs), config.get("WorkingDir") or "/",
                              "WORKDIR" if config.get("WorkingDir") else "default")

    def from_process(self, view: ContainerView, process: ServerProcess) -> Settings | None:
        """The process's own argv and cwd (the config file path resolved against that cwd, read from the
        container's files) while its argv is intact; once Redis has overwritten it with its title
        (proc-title-template, src/server.c redisSetProcTitle, after the config is loaded) the address of the
        socket it listens on, CONFIG GET telling the rest (live)."""
        if process.argv and not process.retitled and posixpath.basename(process.argv[0]) in self.commands:
            settings = self._settings(view, _as_server(process.argv[0], list(process.argv[1:])), process.cwd,
                                      f"cwd of process {process.pid}")
            return replace(settings, origins={**settings.origins, "argv": f"/proc/{process.pid}/cmdline"})
        if not process.listening:
            return None
        host, port = process.listening[0]
        settings = self.configured(view)
        labels = (view.attrs.get("Config") or {}).get("Labels") or {}
        if labels.get(URL_LABEL):
            return None
        address = _address(view.attrs, str(port), ("*" if host in ("0.0.0.0", "::") else host,))
        return replace(settings, address=address,
                       origins={**settings.origins, "address": f"process {process.pid} listens on "
                                                               f"{_bracket(host)}:{port}"})

    def _settings(self, view: ContainerView, argv: list[str], cwd: str, cwd_origin: str) -> Settings:
        attrs = view.attrs
        config = attrs.get("Config") or {}
        conf = redisconf.load(argv, view.read_file, cwd, view.list_dir)
        origins = {name: conf.origin(name) for name in ("dir", "port", "bind", "unixsocket", "appenddirname",
                                                         "dbfilename", "requirepass")}
        data_dir = conf.dir
        if "dir" not in conf.values:
            origins["dir"] = cwd_origin
        labels = config.get("Labels") or {}
        address = labels.get(URL_LABEL) or _address(attrs, conf.get("port"), conf.values.get("bind") or ())
        if labels.get(URL_LABEL):
            origins["address"] = "label"
        password, origins["password"] = _password(labels, config.get("Env") or [], conf)
        problems = list(conf.problems)
        if conf.get("port") == "0" and not labels.get(URL_LABEL):
            problems.append("port 0: the server listens on a unix socket only (label ownvol.redis.url)")
        save = conf.values.get("save")
        sentinel = "--sentinel" in argv
        paths = _paths(argv, cwd, conf)
        return Settings(data_dir, address, password,
                        {k: conf.get(k) or "" for k in ("appenddirname", "dbfilename", "appendfilename")},
                        origins, tuple(problems),
                        persists=False if sentinel else _persists(conf.get("appendonly") or "no",
                                                                  None if save is None else " ".join(save)),
                        paths=paths, role="sentinel" if sentinel else "", writes=_writes(data_dir, paths))

    def live(self, settings: Settings, container_id: str | None = None) -> Settings | None:
        """CONFIG GET of the running server (src/config.c configGetCommand); None when it does not answer
        or refuses CONFIG (renamed, ACL)."""
        if not settings.address:
            return None
        try:
            client = connect(settings.address, settings.password, 2.0)
            try:
                got: dict[str, str] = {}
                for key in LIVE_KEYS:
                    got.update({str(k): str(v) for k, v in client.config_get(key).items()})
            finally:
                client.close()
        except (redis.exceptions.RedisError, OSError, ValueError):
            return None
        if not got.get("dir"):
            return None
        origins = {**settings.origins, **{k: "CONFIG GET" for k in got}}
        files = {**settings.files, **{k: got[k] for k in ("appenddirname", "dbfilename") if got.get(k)}}
        persists = _persists(got["appendonly"], got["save"]) if "appendonly" in got and "save" in got else None
        writes = _writes(got["dir"], _named(got.get)) if "logfile" in got else settings.writes
        return Settings(got["dir"], settings.address, settings.password, files, origins, settings.problems,
                        persists=persists, paths=settings.paths, role=settings.role, writes=writes)

    def probe(self, target, container_status: str, local_paths: bool):
        return probe(target, container_status, local_paths)


class ValkeyService(RedisService):
    family = "valkey"
    commands = ("valkey-server", "valkey-sentinel")
    images = ("valkey/valkey", "valkey", "valkey-server")
    profile = "valkey"


SENTINEL_COMMANDS = ("redis-sentinel", "valkey-sentinel")


def _as_server(executable: str, args: list[str]) -> list[str]:
    """The server's arguments, `--sentinel` added for the Sentinel executable (src/server.c checkForSentinelMode:
    argv[0] containing "redis-sentinel" runs Sentinel mode, as `--sentinel` does)."""
    if posixpath.basename(executable) in SENTINEL_COMMANDS and "--sentinel" not in args:
        return [*args, "--sentinel"]
    return args


def _paths(argv: list[str], cwd: str, conf: redisconf.RedisConfig) -> dict[str, str]:
    """The paths beside the data dir a log line may name (hooks/patterns.py path_of): the config file, absolute
    as the server makes it (src/server.c main: getAbsolutePath against its cwd at start), and the paths its
    settings name (_named)."""
    found = {}
    config_file, _ = redisconf.command_line(argv)
    if config_file and config_file != "-":
        found["configfile"] = posixpath.normpath(posixpath.join(cwd, config_file))
    return {**found, **_named(conf.get)}


def _named(get: Callable[[str], str | None]) -> dict[str, str]:
    """The paths settings name, by setting, as configured (get: the config's values or CONFIG GET's): the unix
    socket, log file, ACL file and, with cluster-enabled, the cluster config file (src/config.c default
    nodes.conf, relative to dir); unset and empty ones left out."""
    found = {name: get(name) or "" for name in ("unixsocket", "logfile", "aclfile") if get(name)}
    if (get("cluster-enabled") or "no").lower() == "yes":
        found["cluster-config-file"] = get("cluster-config-file") or "nodes.conf"
    return found


def _writes(data_dir: str, paths: dict[str, str]) -> dict[str, str]:
    """Settings.writes of the paths (_paths, _named) the server writes in: those of WRITES_KEYS."""
    return writes_of(data_dir, {k: paths[k] for k in WRITES_KEYS if k in paths})


def _persists(appendonly: str, save: str | None) -> bool:
    """Whether a Redis with these settings writes to its dir on its own: AOF on, or any save point (`save`
    None: not configured, so Redis's default points apply: src/config.c, "save" with an empty string clears
    them). Replicas and BGSAVE on request aside."""
    return appendonly.strip().lower() == "yes" or save is None or bool(save.strip())


def _until_shell_operator(words: list[str]) -> list[str]:
    for i, word in enumerate(words):
        if word in ("&&", "||", ";", "|", "&", ">", "2>", ">>", "<"):
            return words[:i]
    return words


def _address(attrs: dict, port: str | None, bind: tuple[str, ...]) -> str | None:
    """redis://HOST:PORT/0 the hook can reach: with host networking 127.0.0.1 when the server listens there (no
    bind, `*`, `0.0.0.0`, loopback itself), else the first address it must have bound (one without Redis's `-`
    prefix: a server that failed to bind it exited, src/server.c listenToPort), else the first optional one;
    otherwise the container's own address on its network. `bind 127.0.0.1 -::1`, redis.conf's default, is
    reached on 127.0.0.1: ::1 is optional, absent where IPv6 is off."""
    port = port or "6379"
    if port == "0":
        return None
    if (attrs.get("HostConfig") or {}).get("NetworkMode") == "host":
        if not bind or any(b.lstrip("-") in _LOOPBACK_REACHES for b in bind):
            host = "127.0.0.1"
        else:
            host = next((b for b in bind if not b.startswith("-")), bind[0]).lstrip("-")
            host = "::1" if host in ("::", "::*") else host
        return f"redis://{_bracket(host)}:{port}/0"
    for net in ((attrs.get("NetworkSettings") or {}).get("Networks") or {}).values():
        if net.get("IPAddress"):
            return f"redis://{net['IPAddress']}:{port}/0"
    return None


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _password(labels: dict, env: list[str], conf: redisconf.RedisConfig) -> tuple[str | None, str]:
    if labels.get(PASSWORD_LABEL):
        return labels[PASSWORD_LABEL], "label"
    for item in env:
        if item.startswith(PASSWORD_ENV + "="):
            return item.split("=", 1)[1], f"env {PASSWORD_ENV}"
    password = redisconf.default_user_password(conf)
    if password is None:
        return None, "none"
    return password, conf.origin("requirepass") if conf.get("requirepass") else conf.origin("user default")


REDIS = register(RedisService())
VALKEY = register(ValkeyService())
