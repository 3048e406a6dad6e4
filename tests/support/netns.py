"""A private test network: a hub network namespace holding a bridge, and veth pairs from it into other
namespaces. Every interface and address lives only in these namespaces (the host's are never touched);
the namespaces are held by `sleep` processes, so killing them takes the interfaces with them.
"""

from __future__ import annotations

import ipaddress
import signal
import subprocess

from tests.support.process import stop_child

SUBNET = ipaddress.ip_network("198.18.16.0/24")  # RFC 2544's benchmarking range: no real host uses it


def in_netns(pid: int, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run cmd in the network namespace of process pid."""
    return subprocess.run(["nsenter", "-t", str(pid), "-n", "--", *cmd], capture_output=True, text=True,
                          check=check, timeout=60)


def host_links() -> set[str]:
    """The host's network interfaces, by name (to prove none was added)."""
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


class Hub:
    """A network namespace with bridge `br0` at SUBNET's first address; link() plugs a namespace in."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.address = str(SUBNET.network_address + 1)
        self.ports = 0

    def start(self) -> Hub:
        self.proc = subprocess.Popen(
            ["unshare", "--net", "sh", "-c",
             "ip link set lo up && ip link add br0 type bridge && ip link set br0 up"
             f" && ip addr add {self.address}/{SUBNET.prefixlen} dev br0 && echo ready && exec sleep infinity"],
            stdout=subprocess.PIPE, start_new_session=True)
        if self.proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("could not make the hub network namespace")
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def link(self, pid: int, host: int) -> str:
        """A veth pair from br0 to `eth0` in pid's network namespace, which gets SUBNET's address number host;
        returns that address."""
        self.ports += 1
        port, address = f"p{self.ports}", str(SUBNET.network_address + host)
        in_netns(self.pid, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", str(pid))
        in_netns(self.pid, "ip", "link", "set", port, "master", "br0", "up")
        in_netns(pid, "ip", "addr", "add", f"{address}/{SUBNET.prefixlen}", "dev", "eth0")
        in_netns(pid, "ip", "link", "set", "eth0", "up")
        return address

    def stop(self) -> None:
        stop_child(self.proc, signal.SIGKILL)
