"""Several "hosts" on one machine: network namespaces joined by a bridge, for LAN tests.

::

    n1 (veth 10.77.0.1/24) --+
    n2 (veth 10.77.0.2/24) --+-- br0 in the "switch" namespace (no address)
    n3 (veth 10.77.0.3/24) --+

Addresses live on the veths inside the host namespaces only; the machine's own interfaces are
never touched, so multicast from inside stays inside. Needs root (CAP_NET_ADMIN); callers skip
when ``NamespacesUnavailable`` is raised. Names carry the pid so parallel runs do not clash, and
everything is deleted on exit, also after a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


class NamespacesUnavailable(Exception):
    """This machine or user cannot create network namespaces (the message says why)."""


@dataclass(frozen=True)
class Namespace:
    name: str
    address: str  # IPv4 address on its veth
    ifname: str

    def exec_prefix(self) -> list[str]:
        """Prefix a command with this to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], check=False, capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@contextmanager
def switched_namespaces(count: int, subnet: str = "10.77.0") -> Iterator[list[Namespace]]:
    """Create ``count`` namespaces on one bridge; yield them; delete them all on exit."""
    if os.geteuid() != 0:
        raise NamespacesUnavailable("creating network namespaces needs root")
    if shutil.which("ip") is None:
        raise NamespacesUnavailable("the 'ip' command (iproute2) is not installed")
    prefix = f"parley-{os.getpid()}"
    switch = f"{prefix}-sw"
    created: list[str] = []
    try:
        try:
            _ip("netns", "add", switch)
        except RuntimeError as exc:
            raise NamespacesUnavailable(f"'ip netns add' failed: {exc}") from exc
        created.append(switch)
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        hosts: list[Namespace] = []
        for i in range(1, count + 1):
            host = Namespace(f"{prefix}-n{i}", f"{subnet}.{i}", "eth0")
            _ip("netns", "add", host.name)
            created.append(host.name)
            # Both ends are born inside namespaces: nothing appears in the root namespace.
            _ip(
                "-n",
                switch,
                "link",
                "add",
                f"sw{i}",
                "type",
                "veth",
                "peer",
                "name",
                host.ifname,
                "netns",
                host.name,
            )
            _ip("-n", switch, "link", "set", f"sw{i}", "master", "br0")
            _ip("-n", switch, "link", "set", f"sw{i}", "up")
            _ip("-n", host.name, "addr", "add", f"{host.address}/24", "dev", host.ifname)
            _ip("-n", host.name, "link", "set", host.ifname, "up")
            _ip("-n", host.name, "link", "set", "lo", "up")
            hosts.append(host)
        yield hosts
    finally:
        for name in reversed(created):
            subprocess.run(
                ["ip", "netns", "del", name], check=False, capture_output=True, timeout=10
            )
