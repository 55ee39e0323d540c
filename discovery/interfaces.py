"""Which network interfaces mDNS runs on, and which addresses a node announces.

A node announces the addresses it listens on and nothing else (``listening_addresses``): one
bound to a specific address runs mDNS on that address only and announces it; one bound to every
interface uses every IPv4 interface (``make_zeroconf()`` with no argument). Tests MUST pass
``interfaces=["127.0.0.1"]``: the default would multicast on the machine's real interfaces
(see PLATFORM.md); inside a network namespace that a test created, the default is safe.

When the interface list changes (Wi-Fi joins, a VPN comes up, DHCP renews to a new address),
python-zeroconf does not notice by itself: it opens its sockets at start, joining the multicast
group on the addresses that existed then. A new interface stays deaf and mute, and the
published A records keep the old addresses. zeroconf 0.154 can reconcile on request
(``Zeroconf.async_update_interfaces``: sockets for new interfaces, none for gone ones,
registrations re-announced), so ``follow_interface_changes`` polls the host's
addresses (every 30 s by default; cheap) and, on a change, has zeroconf reconcile, the Publisher
re-announce its addresses and the Browser ask the link again. Run it as a task the owner keeps,
only with the default all-interfaces choice; a fixed interface list has nothing to follow.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

import ifaddr  # python-zeroconf's own dependency; zeroconf points to it for adapter lists
from zeroconf import InterfaceChoice, IPVersion
from zeroconf.asyncio import AsyncZeroconf

__all__ = ["LOOPBACK_ONLY", "advertised_addresses", "follow_interface_changes",
           "interface_addresses", "listening_addresses", "make_zeroconf"]

if TYPE_CHECKING:  # runtime imports would be circular: both modules use this one
    from discovery.browser import Browser
    from discovery.publisher import Publisher

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


def listening_addresses(host: str) -> list[str] | None:
    """The IPv4 addresses a server bound to ``host`` answers on, which are the ones to announce.

    None means every interface (``""``, ``0.0.0.0``, ``::``): announce the interfaces'
    addresses (``advertised_addresses``). A specific address is announced alone: a node bound
    to 127.0.0.1 must not tell the LAN to look for it at the LAN address, where nothing
    listens. A host name gives the IPv4 addresses it resolves to (none if it does not resolve,
    or only to IPv6: mDNS here announces IPv4 only).
    """
    text = host.strip().strip("[]")
    if text in ("", "0.0.0.0", "::", "*"):
        return None
    if _is_ipv4(text):
        return [text]
    try:
        if ipaddress.ip_address(text).version == 6:
            return []
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(text, None, socket.AF_INET, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in found))


async def follow_interface_changes(
    aiozc: AsyncZeroconf,
    publisher: Publisher | None = None,
    browser: Browser | None = None,
    *,
    interval: float = 30.0,
) -> None:
    """Keep mDNS on this host's current interfaces; runs until cancelled."""
    last = interface_addresses()
    while True:
        await asyncio.sleep(interval)
        current = interface_addresses()
        if current == last:
            continue
        logger.info("interfaces changed: %s -> %s", ", ".join(last), ", ".join(current))
        last = current
        try:
            # New addresses first, so that the re-announcement on a new interface carries them.
            if publisher is not None:
                await publisher.refresh_addresses()
            reconcile = getattr(aiozc.zeroconf, "async_update_interfaces", None)
            if reconcile is None:  # zeroconf older than the one this was written against
                logger.warning("this zeroconf cannot follow interface changes; restart the node")
            else:
                await reconcile()
            if browser is not None:
                browser.query_now()
        except Exception:  # the next change gets another try; discovery must go on
            logger.exception("could not follow the interface change")


def _is_ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False
