"""Capture the golden log files from the real servers: `python -m tests.golden.capture [SERVER...]`.

Each scenario runs one server image of the matrix (make images) on a scratch directory with no network,
provokes one way of not being able to use its data, and keeps `docker logs` (stdout and stderr, as the
engine prints them) in tests/golden/<server>/<scenario>.log. Run as root (it chowns the scratch dirs).
`--paths` captures only the paths-* scenarios (a config, socket, log or ACL file other than the data dir).
The unit run checks every pattern against these files (tests/unit/test_patterns_golden.py); what each file
must yield is in tests/golden/expected.json, written by hand from the lines, not by this script.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import docker

HERE = Path(__file__).parent
SERVERS = {  # directory -> (image, server command)
    "redis-6.2": ("ownvol/redis:6.2", "redis-server"),
    "redis-7.0": ("ownvol/redis:7", "redis-server"),
    "redis-8.0": ("ownvol/redis:8.0", "redis-server"),
    "valkey-8.0": ("ownvol/valkey:8.0", "valkey-server"),
    "valkey-8.1": ("ownvol/valkey:8.1", "valkey-server"),
}
FILL = "dd if=/dev/zero of=/data/fill bs=4k 2>/dev/null; rm -f /data/fill.small; "


def _scenarios(server: str) -> dict[str, dict]:
    """scenario -> how to run it: data dir owner/mode, args, a shell prefix, commands to send while it runs."""
    aof = ["--appendonly", "yes"]
    return {
        "aof-dir-root-owned": {"owner": (0, 0), "mode": 0o755, "args": aof},
        "dir-not-enterable": {"owner": (0, 0), "mode": 0o750, "args": aof, "workdir": "/tmp"},
        "rdb-unreadable": {"owner": (999, 999), "mode": 0o755, "args": [], "files": {"dump.rdb": (0, 0, 0o600)}},
        "bgsave-root-owned": {"owner": (999, 999), "mode": 0o755, "args": [], "then_chown": (0, 0),
                              "commands": [["SET", "k", "v"], ["BGSAVE"]]},
        "aof-rewrite-root-owned": {"owner": (999, 999), "mode": 0o755, "args": aof, "then_chown": (0, 0),
                                   "commands": [["SET", "k", "v"], ["BGREWRITEAOF"]]},
        "startup-disk-full": {"tmpfs": True, "args": aof, "shell": FILL},
        "runtime-disk-full-always": {"tmpfs": True, "args": [*aof, "--appendfsync", "always"],
                                     "commands": [["SET", "k", "v"], ["DEBUG", "SLEEP", "0"]], "fill_after": True},
        "runtime-disk-full-rewrite": {"tmpfs": True, "args": aof, "fill_after": True,
                                      "commands": [["SET", "k", "v"], ["BGREWRITEAOF"]]},
        **({"logfmt-aof-dir": {"owner": (0, 0), "mode": 0o755,
                               "args": [*aof, "--log-format", "logfmt", "--log-timestamp-format", "iso8601"]},
            "milliseconds-aof-dir": {"owner": (0, 0), "mode": 0o755,
                                     "args": [*aof, "--log-timestamp-format", "milliseconds"]},
            "iso8601-aof-dir": {"owner": (0, 0), "mode": 0o755,
                                "args": [*aof, "--log-timestamp-format", "iso8601"]}}
           if server == "valkey-8.1" else {}),
    }


def _cli(container, server: str, port: int, *command: str) -> str:
    cli = SERVERS[server][1].replace("-server", "-cli")
    try:
        result = container.exec_run([cli, "-p", str(port), *command], user="999:999")
    except docker.errors.APIError as exc:  # the server exited (appendfsync always): its log says why
        return str(exc)
    return result.output.decode(errors="replace")


def capture(client: docker.DockerClient, server: str, scenario: str, spec: dict, port: int) -> str:
    image, command = SERVERS[server]
    scratch = Path(tempfile.mkdtemp(prefix="ownvol-golden-", dir="/var/tmp"))
    data = scratch / "data"
    data.mkdir()
    kwargs: dict = {}
    if spec.get("tmpfs"):
        kwargs["tmpfs"] = {"/data": "size=256k,uid=999,gid=999,mode=0755"}
    else:
        for name, (uid, gid, mode) in spec.get("files", {}).items():
            (data / name).write_bytes(b"REDIS0009")
            os.chown(data / name, uid, gid)
            os.chmod(data / name, mode)
        os.chown(data, *spec["owner"])
        os.chmod(data, spec["mode"])
        kwargs["volumes"] = {str(data): {"bind": "/data", "mode": "rw"}}
    argv = [command, "--port", str(port), "--bind", "127.0.0.1", "--dir", "/data", "--save", "", *spec["args"]]
    if spec.get("shell"):
        argv = ["sh", "-c", spec["shell"] + 'exec "$@"', "sh", *argv]
    container = client.containers.run(image, argv, detach=True, user="999:999", network_mode="none",
                                      working_dir=spec.get("workdir", "/data"), labels={"ownvol.watch": "false"},
                                      **kwargs)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            container.reload()
            if container.status != "running" or "Ready to accept connections" in container.logs().decode():
                break
            time.sleep(0.1)
        if container.status == "running":
            if spec.get("then_chown"):
                os.chown(data, *spec["then_chown"])
            if spec.get("fill_after"):
                container.exec_run(["sh", "-c", "dd if=/dev/zero of=/data/fill bs=4k 2>/dev/null; rm -f /data/x"],
                                   user="999:999")
            for cmd in spec.get("commands", []):
                _cli(container, server, port, *cmd)
                time.sleep(0.5)
            time.sleep(1.5)
        return container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _path_scenarios(port: int) -> dict[str, dict]:
    """paths-* scenarios (issue 24, kind A): a path other than the data dir the server cannot use. mounts:
    destination -> (owner, mode, {file: (uid, gid, mode, content)}); args after the server; chown_after:
    destination -> owner given (the tree) once the server runs, before commands."""
    sentinel = f"port {port}\nbind 127.0.0.1\nsentinel monitor m 127.0.0.1 {port + 1} 1\n"
    cluster = ["--cluster-enabled", "yes", "--cluster-config-file", "/node-conf/nodes.conf"]
    return {
        "paths-sentinel-config": {"mounts": {"/etc/ov": ((0, 0), 0o755, {"sentinel.conf": (0, 0, 0o644, sentinel)})},
                                  "args": ["/etc/ov/sentinel.conf", "--sentinel"]},
        "paths-sentinel-save": {"mounts": {"/etc/ov": ((0, 0), 0o755, {"sentinel.conf": (999, 999, 0o644, sentinel)})},
                                "args": ["/etc/ov/sentinel.conf", "--sentinel"]},
        "paths-cluster-lock": {"mounts": {"/node-conf": ((0, 0), 0o755, {})}, "args": cluster},
        "paths-cluster-save": {"mounts": {"/node-conf": ((999, 999), 0o755, {})}, "args": cluster,
                               "chown_after": {"/node-conf": (0, 0)}, "commands": [["CLUSTER", "ADDSLOTS", "1"]]},
        "paths-logfile": {"mounts": {"/logs": ((0, 0), 0o755, {})}, "args": ["--logfile", "/logs/redis.log"]},
        "paths-unixsocket": {"mounts": {"/sock": ((0, 0), 0o755, {})}, "args": ["--unixsocket", "/sock/redis.sock"]},
        "paths-aclfile": {"mounts": {"/acl": ((999, 999), 0o755, {"users.acl": (0, 0, 0o600, "user default on "
                                                                                          "nopass ~* +@all\n")})},
                          "args": ["--aclfile", "/acl/users.acl"]},
        "paths-include": {"mounts": {"/etc/ov": ((999, 999), 0o755, {"redis.conf": (999, 999, 0o644,
                                                                                     "include /inc/extra.conf\n")}),
                                     "/inc": ((0, 0), 0o755, {"extra.conf": (0, 0, 0o600, "maxclients 100\n")})},
                          "args": ["/etc/ov/redis.conf"]},
    }


def capture_path(client: docker.DockerClient, server: str, spec: dict, port: int) -> str:
    """One paths-* scenario's `docker logs`: the server as 999:999, no network, its data dir /tmp (the image's)."""
    image, command = SERVERS[server]
    scratch = Path(tempfile.mkdtemp(prefix="ownvol-golden-", dir="/var/tmp"))
    volumes = {}
    for n, (dest, (owner, mode, files)) in enumerate(spec["mounts"].items()):
        host = scratch / str(n)
        host.mkdir()
        for name, (uid, gid, fmode, content) in files.items():
            (host / name).write_text(content)
            os.chown(host / name, uid, gid)
            os.chmod(host / name, fmode)
        os.chown(host, *owner)
        os.chmod(host, mode)
        volumes[str(host)] = {"bind": dest, "mode": "rw"}
    argv = [command, *spec["args"]]
    if not spec["args"][0].endswith(".conf"):
        argv += ["--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    container = client.containers.run(image, argv, detach=True, user="999:999", network_mode="none",
                                      working_dir="/tmp", labels={"ownvol.watch": "false"}, volumes=volumes)
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            container.reload()
            if container.status != "running" or "Ready to accept connections" in container.logs().decode():
                break
            time.sleep(0.1)
        time.sleep(0.5)
        container.reload()
        if container.status == "running":
            for dest, owner in spec.get("chown_after", {}).items():
                host = next(h for h, m in volumes.items() if m["bind"] == dest)
                for root, dirs, files in os.walk(host):
                    for entry in [root, *(os.path.join(root, f) for f in files + dirs)]:
                        os.lchown(entry, *owner)
            for cmd in spec.get("commands", []):
                _cli(container, server, port, *cmd)
                time.sleep(0.5)
        return container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
        shutil.rmtree(scratch, ignore_errors=True)


def main(servers: list[str]) -> None:
    client = docker.from_env(timeout=60)
    for n, server in enumerate(servers or list(SERVERS)):
        out = HERE / server
        out.mkdir(exist_ok=True)
        for scenario, spec in _scenarios(server).items():
            text = capture(client, server, scenario, spec, 16900 + n)
            (out / f"{scenario}.log").write_text(text)
            print(f"{server}/{scenario}: {len(text.splitlines())} lines")
        for scenario, spec in _path_scenarios(16900 + n).items():
            text = capture_path(client, server, spec, 16900 + n)
            (out / f"{scenario}.log").write_text(text)
            print(f"{server}/{scenario}: {len(text.splitlines())} lines")


def main_paths(servers: list[str]) -> None:
    """The paths-* scenarios alone (`python -m tests.golden.capture --paths [SERVER...]`)."""
    client = docker.from_env(timeout=60)
    for n, server in enumerate(servers or list(SERVERS)):
        for scenario, spec in _path_scenarios(16900 + 2 * n).items():
            text = capture_path(client, server, spec, 16900 + 2 * n)
            (HERE / server / f"{scenario}.log").write_text(text)
            print(f"{server}/{scenario}: {len(text.splitlines())} lines")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--paths"]:
        main_paths(sys.argv[2:])
    else:
        main(sys.argv[1:])
