"""systemd's part, played without systemd as PID 1: units read, the driver socket-activated, wheels built.

`SocketActivation` does what ownvol-plugin.socket does: it holds the listening socket across the
driver's lives and, whenever no driver runs, arms `systemd-socket-activate` on it, which waits for a
connection and then execs the unit's ExecStart= (under setpriv with the unit's CapabilityBoundingSet= and
NoNewPrivileges=), with the environment file's variables only, as systemd would.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

from tests.support.common import ROOT
from tests.support.engine import wait_for
from tests.support.process import stop_child

UNITS_DIR = ROOT / "packaging" / "systemd"
HOST_OWNVOL = "/opt/ownvol/current/bin/ownvol"  # ExecStart='s program in the shipped units
# The release before this work: the commit before 93cbaa1 (the first of the session that added `ownvol install`).
PREVIOUS_RELEASE = "bfb7e9d"


def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values in order]}} (comments and blank lines skipped)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


# systemd.time(7)'s time span units, in seconds
_SPAN_UNITS = {**dict.fromkeys(("usec", "us", "\u00b5s"), 1e-6), **dict.fromkeys(("msec", "ms"), 1e-3),
               **dict.fromkeys(("seconds", "second", "sec", "s", ""), 1.0),
               **dict.fromkeys(("minutes", "minute", "min", "m"), 60.0),
               **dict.fromkeys(("hours", "hour", "hr", "h"), 3600.0)}


def timespan(text: str) -> float:
    """A systemd time span (systemd.time(7): "250ms", "2", "1min 30s"; a bare number is seconds) in seconds;
    ValueError for anything else."""
    parts = re.findall(r"\s*(\d+(?:\.\d+)?)\s*([a-z\u00b5]*)", text)
    if not parts or "".join(n + u for n, u in parts) != re.sub(r"\s+", "", text):
        raise ValueError(f"not a systemd time span: {text!r}")
    try:
        return sum(float(number) * _SPAN_UNITS[suffix] for number, suffix in parts)
    except KeyError as exc:
        raise ValueError(f"not a systemd time span: {text!r}") from exc


def restart_delay(service: str) -> float:
    """The shipped unit's RestartSec= (packaging/systemd/SERVICE), in seconds: how long systemd waits before it
    restarts that service after it failed (systemd's own default, 100 ms, when the unit sets none)."""
    values = unit(UNITS_DIR / service).get("Service", {}).get("RestartSec", [])
    return timespan(values[-1]) if values else 0.1


def env_file(path: Path) -> dict[str, str]:
    """The VAR=value lines of an EnvironmentFile."""
    out = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith(("#", ";")):
            out[key] = value
    return out


def confinement(service: dict[str, dict[str, list[str]]]) -> list[str]:
    """setpriv's arguments for the unit's CapabilityBoundingSet= and NoNewPrivileges=."""
    caps = service["Service"]["CapabilityBoundingSet"][-1].split()
    argv = ["setpriv", "--inh-caps=-all", "--bounding-set=-all," + ",".join(f"+{c.lower().removeprefix('cap_')}"
                                                                          for c in caps)]
    if service["Service"].get("NoNewPrivileges", ["no"])[-1] == "yes":
        argv.insert(1, "--no-new-privs")
    return argv


def driver_command(service_path: Path, program: str | None = None) -> list[str]:
    """The unit's ExecStart= as argv, confined as the unit says; program replaces the shipped /opt/ownvol path."""
    service = unit(service_path)
    argv = shlex.split(service["Service"]["ExecStart"][-1])
    if program:
        assert argv[0] == HOST_OWNVOL, argv
        argv[0] = program
    return [*confinement(service), *argv]


class SocketActivation:
    """A listening unix socket at path, held here like systemd holds ownvol-plugin.socket's."""

    def __init__(self, path: str, command: list[str], env: dict[str, str], log: Path, prefix: list[str] | None = None):
        self.path, self.command, self.env, self.log, self.prefix = path, command, env, log, prefix or []
        if os.path.exists(path):
            os.unlink(path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        os.chmod(path, 0o600)  # SocketMode=0600
        self.listener.listen(128)
        self.proc: subprocess.Popen | None = None

    def arm(self) -> subprocess.Popen:
        """Start systemd-socket-activate on the held socket (fd 3); it execs the driver at the first connection."""
        fd = self.listener.fileno()

        def as_fd_3() -> None:
            os.dup2(fd, 3)
            os.set_inheritable(3, True)

        activate = ["systemd-socket-activate", *(f"--setenv={k}={v}" for k, v in self.env.items()), *self.command]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, "sh", "-c", 'LISTEN_FDS=1 LISTEN_PID=$$ exec "$@"', "sh", *activate],
                preexec_fn=as_fd_3, close_fds=False, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        wait_for(lambda: self.waiting() or self.proc.poll() is not None, 30, what="systemd-socket-activate to wait")
        return self.proc

    def program(self) -> str:
        """What the armed process runs now: 'systemd-socket-activate' until a connection came, then the driver."""
        try:
            return os.readlink(f"/proc/{self.proc.pid}/exe")
        except OSError:
            return ""

    def waiting(self) -> bool:
        return self.program() == shutil.which("systemd-socket-activate")

    def driver_pid(self) -> int:
        """The driver's pid (systemd-socket-activate execs it in place); AssertionError if it has not started."""
        assert self.proc and self.proc.poll() is None and not self.waiting(), self.read_log()
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the driver's process group (SIGTERM: systemctl stop; SIGKILL: a crash) and wait for it."""
        stop_child(self.proc, sig, timeout=45, group=True)
        self.proc = None

    def read_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def close(self) -> None:
        self.stop(signal.SIGKILL)
        self.listener.close()
        if os.path.exists(self.path):
            os.unlink(self.path)


def build_wheel(out: Path, commit: str | None = None) -> Path:
    """`python -m build --wheel` of this checkout, or of commit (exported with git archive), into out."""
    out.mkdir(parents=True, exist_ok=True)
    source = ROOT
    scratch = None
    if commit:
        scratch = Path(tempfile.mkdtemp(prefix="ownvol-release-", dir="/var/tmp"))
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(scratch)], input=archive.stdout, check=True)
        source = scratch
    try:
        subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "build", "--wheel", "--outdir", str(out), str(source)],
                       check=True, capture_output=True)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    (wheel,) = out.glob("ownvol-*.whl")
    return wheel
