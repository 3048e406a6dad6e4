"""Capture the golden log files from the real servers: `python -m tests.golden.capture [SERVER...]`.

Each scenario runs one server image of the matrix (make images) on a scratch directory with no network,
provokes one way of not being able to use its data, and keeps `docker logs` (stdout and stderr, as the
engine prints them) in tests/golden/<server>/<scenario>.log. Run as root (it chowns the scratch dirs).
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


def main(servers: list[str]) -> None:
    client = docker.from_env(timeout=60)
    for n, server in enumerate(servers or list(SERVERS)):
        out = HERE / server
        out.mkdir(exist_ok=True)
        for scenario, spec in _scenarios(server).items():
            text = capture(client, server, scenario, spec, 16900 + n)
            (out / f"{scenario}.log").write_text(text)
            print(f"{server}/{scenario}: {len(text.splitlines())} lines")


if __name__ == "__main__":
    main(sys.argv[1:])
