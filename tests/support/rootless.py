"""A rootless Docker engine of our own: docker.io's contrib/dockerd-rootless.sh run by a user the test adds.

dockerd-rootless.sh re-executes itself under rootlesskit, which makes a user namespace mapping 0 to the user and
1.. to the user's subordinate ids (newuidmap/newgidmap read /etc/subuid and /etc/subgid, subuid(5)), and a mount
namespace with /etc and /run copied up; then it runs dockerd there. No network namespace of its own
(DOCKERD_ROOTLESS_ROOTLESSKIT_NET=host, no port driver): containers run with `--network none` (a rootless engine
cannot join the host's network namespace: it does not own it).

Everything is undone by destroy(): the engine's containers, every process in its user namespace and every
process of the user, the user, /etc/subuid and /etc/subgid byte for byte as they were, the directories.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

import docker

from tests.support.engine import answering_client, remove_containers
from tests.support.process import stop_child

SCRIPT = "/usr/share/docker.io/contrib/dockerd-rootless.sh"
SUBIDS = ("/etc/subuid", "/etc/subgid")
TOOLS = {"rootlesskit": "rootlesskit", "newuidmap": "uidmap", "newgidmap": "uidmap", "setpriv": "util-linux"}
COUNT = 65536  # subordinate ids given to the user: as many as an image's ids need (0-65535 inside)


def missing() -> str | None:
    """What this host lacks to run a rootless engine, in words; None when nothing is missing."""
    if not os.path.exists(SCRIPT):
        return f"{SCRIPT} is missing (Debian's docker.io ships it)"
    lacking = sorted({pkg for cmd, pkg in TOOLS.items() if shutil.which(cmd) is None})
    if lacking:
        return f"Debian's {', '.join(lacking)} not installed (make rootless-tools)"
    try:
        if int(Path("/proc/sys/user/max_user_namespaces").read_text()) == 0:
            return "user namespaces are disabled (/proc/sys/user/max_user_namespaces is 0)"
    except (OSError, ValueError):
        pass
    return None


def _free_base(paths: tuple[str, ...], start: int = 2_000_000) -> int:
    """A first subordinate id from start up, in steps of COUNT, that no line of the files uses."""
    used = []
    for path in paths:
        if os.path.exists(path):
            for line in Path(path).read_text().splitlines():
                fields = line.split(":")
                if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                    used.append((int(fields[1]), int(fields[1]) + int(fields[2])))
    base = start + (os.getpid() % 64) * COUNT
    while any(a < base + COUNT and base < b for a, b in used):
        base += COUNT
    return base


class RootlessEngine:
    """One rootless dockerd run as a new user NAME with subordinate ids BASE..BASE+65535; its files under
    /tmp/NAME (traversable by the user: a bind source must be reachable by the user's ids)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.base_dir = Path("/tmp") / name
        self.home, self.run, self.data_root, self.exec_root = (self.base_dir / d for d in ("home", "run", "data",
                                                                                             "exec"))
        self.sock = self.run / "docker.sock"
        self.host = f"unix://{self.sock}"
        self.log_path = self.base_dir / "dockerd.log"
        self.saved = {path: Path(path).read_bytes() if os.path.exists(path) else None for path in SUBIDS}
        self.subid_base = _free_base(SUBIDS)
        self.uid: int | None = None
        self.gid: int | None = None
        self.proc: subprocess.Popen | None = None
        self.userns: int | None = None  # the inode of the engine's user namespace, once it runs
        self.restored = False

    def start(self, timeout: float = 60) -> docker.DockerClient:
        """Add the user and its subordinate ids, start the engine; its client. The id files are restored as soon
        as the engine's namespace is made (newuidmap reads them only then)."""
        self.base_dir.mkdir(mode=0o755)
        self.base_dir.chmod(0o755)
        # -K SUB_*_COUNT=0: no range of useradd's own choosing (login.defs): only the one added here
        subprocess.run(["useradd", "--no-create-home", "--home-dir", str(self.home), "--shell", "/usr/sbin/nologin",
                        "--user-group", "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", self.name], check=True)
        self.uid, self.gid = pwd.getpwnam(self.name).pw_uid, pwd.getpwnam(self.name).pw_gid
        for path in SUBIDS:
            with open(path, "a") as f:
                f.write(f"{self.name}:{self.subid_base}:{COUNT}\n")
        for d in (self.home, self.run, self.data_root, self.exec_root):
            d.mkdir(mode=0o700)
            os.chown(d, self.uid, self.gid)
        env = {"HOME": str(self.home), "XDG_RUNTIME_DIR": str(self.run), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
               "DOCKERD_ROOTLESS_ROOTLESSKIT_NET": "host", "DOCKERD_ROOTLESS_ROOTLESSKIT_PORT_DRIVER": "none"}
        self.proc = subprocess.Popen(
            ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "env", "-i",
             *(f"{k}={v}" for k, v in env.items()), SCRIPT, "--data-root", str(self.data_root),
             "--exec-root", str(self.exec_root), "-H", self.host, "--pidfile", str(self.run / "docker.pid"),
             "--bridge=none", "--iptables=false", "--ip6tables=false"],
            stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT, start_new_session=True, cwd=str(self.base_dir))

        def answering() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the rootless engine exited {self.proc.returncode}: {self.log_tail()}")
            return self.sock.exists()

        client = answering_client(self.host, answering, timeout, f"rootless dockerd {self.name}")
        self.userns = os.stat(f"/proc/{self.dockerd_pid()}/ns/user").st_ino
        self.restore_subids()
        return client

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def dockerd_pid(self) -> int:
        return int((self.run / "docker.pid").read_text().strip())

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host, timeout=120)

    def load_image(self, tag: str) -> None:
        """Copy an image from the main engine into this one (`docker save | docker load`; no registry here)."""
        save = subprocess.Popen(["docker", "-H", "unix:///var/run/docker.sock", "save", tag], stdout=subprocess.PIPE)
        subprocess.run(["docker", "-H", self.host, "load", "-q"], stdin=save.stdout, check=True,
                       stdout=subprocess.DEVNULL)
        if save.wait() != 0:
            raise RuntimeError(f"docker save {tag} failed")

    def subordinate(self, inside: int) -> int:
        """The host id of id `inside` (1..65536) in the engine's namespace: rootlesskit maps 0 to the user and
        1.. to the subordinate range from its start."""
        return self.uid if inside == 0 else self.subid_base + inside - 1  # type: ignore[return-value]

    def restore_subids(self) -> None:
        """/etc/subuid and /etc/subgid as they were before start(), byte for byte (once)."""
        if self.restored:
            return
        for path, content in self.saved.items():
            if content is None:
                Path(path).unlink(missing_ok=True)
            else:
                Path(path).write_bytes(content)
        self.restored = True

    def leftovers(self) -> list[str]:
        """Processes in the engine's user namespace or of the user, mounts under its directories, the user."""
        found = []
        for pid in self._processes():
            try:
                found.append(f"process {pid} {Path(f'/proc/{pid}/comm').read_text().strip()}")
            except OSError:
                continue
        with open("/proc/self/mounts") as f:
            found += [f"mount {line.split()[1]}" for line in f if line.split()[1].startswith(str(self.base_dir))]
        try:
            pwd.getpwnam(self.name)
            found.append(f"user {self.name}")
        except KeyError:
            pass
        return found

    def _processes(self) -> list[int]:
        """Pids whose user namespace is the engine's or whose real uid is the user's."""
        pids = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                ns = os.stat(f"/proc/{entry.name}/ns/user").st_ino
                uid = os.stat(f"/proc/{entry.name}").st_uid
            except OSError:
                continue
            if (self.userns is not None and ns == self.userns) or uid == self.uid:
                pids.append(int(entry.name))
        return pids

    def destroy(self) -> None:
        """Remove its containers, stop it (rootlesskit's process group), end every process left in its namespace
        or of its user by pid, remove the user, restore the id files, remove the directories."""
        try:
            remove_containers(self.proc, self.client, self.name)
            stop_child(self.proc, timeout=30, group=True)
            deadline = time.monotonic() + 10
            while (pids := self._processes()) and time.monotonic() < deadline:
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.2)
            if self.uid is not None:
                subprocess.run(["userdel", self.name], check=False, stderr=subprocess.DEVNULL)
        finally:
            self.restore_subids()
            with open("/proc/self/mounts") as f:
                points = [line.split()[1] for line in f if line.split()[1].startswith(str(self.base_dir))]
            for point in sorted(points, key=len, reverse=True):
                subprocess.run(["umount", "-l", point], stderr=subprocess.DEVNULL)
            shutil.rmtree(self.base_dir, ignore_errors=True)
