"""Which network interfaces mDNS runs on, and which addresses a node announces.

Production uses every IPv4 interface (``make_zeroconf()`` with no argument). Tests MUST pass
``interfaces=["127.0.0.1"]``: the default would multicast on the machine's real interfaces
(see PLATFORM.md); inside a network namespace that a test created, the default is safe.

When the interface list changes (Wi-Fi joins, a VPN comes up, DHCP renews to a new address),
python-zeroconf does not follow: it opens its sockets once, joining the multicast group on the
addresses that existed at start. A new interface stays deaf and mute, a vanished one only logs
send errors, and the published A records keep the old addresses. The cheap cure, which this
package leaves to its owner (the node), is to poll ``interface_addresses()`` (every 30 s is
plenty) and, when it changes, close the Browser, Publisher and AsyncZeroconf and create them
again. Peers then see a goodbye followed by a fresh announcement; a browser on the other side
keys peers by node id, so the peer comes back with its new address.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence

import ifaddr  # python-zeroconf's own dependency; zeroconf points to it for adapter lists
from zeroconf import InterfaceChoice, IPVersion
from zeroconf.asyncio import AsyncZeroconf

logger = logging.getLogger(__name__)

LOOPBACK_ONLY = ("127.0.0.1",)


def make_zeroconf(interfaces: Sequence[str] | None = None) -> AsyncZeroconf:
    """An AsyncZeroconf on the given IPv4 interface addresses, or on all of them when None.

    Tests must pass ``["127.0.0.1"]`` (several processes on one machine then see each other
    over the loopback). Call it from the event loop that will run the Browser and Publisher:
    created outside a running loop, zeroconf starts a loop thread of its own.
    """
    choice: list[str] | InterfaceChoice
    choice = InterfaceChoice.All if interfaces is None else list(interfaces)
    return AsyncZeroconf(interfaces=choice, ip_version=IPVersion.V4Only)


def interface_addresses() -> tuple[str, ...]:
    """Every IPv4 address on this host's interfaces, sorted: compare two calls to see a change."""
    addresses = {
        str(ip.ip)
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
        if ip.is_IPv4 and isinstance(ip.ip, str)
    }
    return tuple(sorted(addresses))


def advertised_addresses(interfaces: Sequence[str] | None = None) -> list[str]:
    """The addresses to put in our A records.

    With explicit interfaces, those. Otherwise every non-loopback, non-link-local IPv4 address;
    if there is none (an offline laptop), the loopback, so that nodes on this host still meet.
    """
    if interfaces is not None:
        return [a for a in interfaces if _is_ipv4(a)]
    usable = [
        a
        for a in interface_addresses()
        if not ipaddress.ip_address(a).is_loopback and not ipaddress.ip_address(a).is_link_local
    ]
    return usable or list(LOOPBACK_ONLY)


def _is_ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False
