"""Announce this node on the link: one ``_parley._tcp`` service, its TXT record kept current."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from zeroconf import (  # type: ignore[attr-defined]  # DNS classes: see browser.py
    DNSAddress,
    DNSOutgoing,
    NonUniqueNameException,
    ServiceInfo,
)
from zeroconf.asyncio import AsyncZeroconf

from discovery.errors import DiscoveryError, NameConflict
from discovery.interfaces import advertised_addresses
from discovery.record import SERVICE_TYPE, build_txt, check_node_id, clean_name

__all__ = ["DEFAULT_HOST_TTL", "DEFAULT_OTHER_TTL", "Publisher", "instance_label"]

logger = logging.getLogger(__name__)

# RFC 6762 section 10 and python-zeroconf's defaults. host_ttl (SRV and A records) bounds how
# long a node that died without a goodbye stays listed: Browser re-queries a peer's SRV at 80%
# of it and drops the peer when it lapses. other_ttl (PTR, TXT) is moot for liveness: receivers
# raise any PTR TTL below 1125 s to 1125 s anyway.
DEFAULT_HOST_TTL = 120
DEFAULT_OTHER_TTL = 4500

# RFC 1035/6762 numbers (zeroconf keeps its own copies private).
_FLAGS_AUTHORITATIVE_RESPONSE = 0x8400  # QR (response) | AA
_CLASS_IN_UNIQUE = 0x8001  # IN with the cache-flush bit
_TYPE_A = 1
_TYPE_AAAA = 28


class Publisher:
    """Registers this node's service on an AsyncZeroconf the caller owns (and closes).

    The instance name, ``"<name>-<first 8 of id>._parley._tcp.local."``, is fixed at
    construction: a rename only changes the TXT ``name``, so browsers see an update, not a
    goodbye followed by a stranger.
    """

    def __init__(
        self,
        aiozc: AsyncZeroconf,
        *,
        node_id: str,
        name: str,
        port: int,
        catalog_version: int = 0,
        addresses: Sequence[str] | None = None,
        host_ttl: int = DEFAULT_HOST_TTL,
        other_ttl: int = DEFAULT_OTHER_TTL,
    ) -> None:
        self._aiozc = aiozc
        self.node_id = check_node_id(node_id)
        self.name = clean_name(name)
        self.port = port
        self.catalog_version = catalog_version
        self.follows_interfaces = addresses is None  # see refresh_addresses()
        self.addresses = list(advertised_addresses(None) if addresses is None else addresses)
        if not self.addresses:
            raise DiscoveryError("no IPv4 address to announce; pass addresses=[...]")
        self.host_ttl = host_ttl
        self.other_ttl = other_ttl
        self.instance_name = f"{instance_label(self.name, self.node_id)}.{SERVICE_TYPE}"
        digest = hashlib.sha256(self.node_id.encode()).hexdigest()[:16]
        self.server = f"parley-{digest}.local."
        self._info: ServiceInfo | None = None

    async def start(self) -> None:
        """Probe for the name, then announce. Raises NameConflict if the name is taken."""
        info = self._make_info()
        try:
            await (await self._aiozc.async_register_service(info, strict=True))
        except NonUniqueNameException as exc:
            raise NameConflict(
                f"{self.instance_name!r} is already announced on the network: is this node "
                "running twice? Stop the other process or give this one another data dir; if it "
                "stopped a moment ago, start again in a few seconds"
            ) from exc
        self._info = info
        logger.info(
            "published %s (node %s, port %d, cv %d) on %s",
            self.instance_name,
            self.node_id[:12],
            self.port,
            self.catalog_version,
            ", ".join(self.addresses),
        )

    async def update(
        self,
        *,
        catalog_version: int | None = None,
        name: str | None = None,
        addresses: Sequence[str] | None = None,
    ) -> None:
        """Re-announce with new TXT or address records; browsers see ``updated`` at once."""
        if catalog_version is not None:
            self.catalog_version = catalog_version
        if name is not None:
            self.name = clean_name(name)
        gone: list[str] = []
        if addresses is not None:
            if not addresses:
                raise DiscoveryError("no IPv4 address to announce; pass addresses=[...]")
            gone = [a for a in self.addresses if a not in addresses]
            self.addresses = list(addresses)
        if self._info is None:
            return  # not started: start() announces the new values
        if gone:
            self._say_goodbye_to(gone)
        info = self._make_info()
        await (await self._aiozc.async_update_service(info))
        self._info = info
        logger.debug(
            "re-announced %s: cv %d on %s",
            self.instance_name,
            self.catalog_version,
            ", ".join(self.addresses),
        )

    async def refresh_addresses(self) -> bool:
        """Re-announce if this host's addresses changed (only when none were given at creation).

        Returns True when it re-announced.
        """
        if not self.follows_interfaces:
            return False
        current = advertised_addresses(None)
        if current == self.addresses:
            return False
        await self.update(addresses=current)
        return True

    async def close(self) -> None:
        """Send goodbye packets (TTL 0), so browsers drop us now rather than on expiry."""
        info, self._info = self._info, None
        if info is None or self._aiozc.zeroconf.done:
            return
        await (await self._aiozc.async_unregister_service(info))
        logger.info("withdrew %s", self.instance_name)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _say_goodbye_to(self, addresses: list[str]) -> None:
        """Withdraw address records (TTL 0) before announcing their replacements.

        The cache-flush bit alone does not evict a record a browser received less than a second
        earlier (RFC 6762 10.2), so without this a quick change would leave the old address
        listed for a whole host TTL.
        """
        out = DNSOutgoing(_FLAGS_AUTHORITATIVE_RESPONSE, multicast=True)
        for text in addresses:
            address = ipaddress.ip_address(text)
            type_ = _TYPE_A if address.version == 4 else _TYPE_AAAA
            record = DNSAddress(self.server, type_, _CLASS_IN_UNIQUE, 0, address.packed)
            out.add_answer_at_time(record, 0)
        self._aiozc.zeroconf.async_send(out)

    def _make_info(self) -> ServiceInfo:
        return ServiceInfo(
            SERVICE_TYPE,
            self.instance_name,
            port=self.port,
            properties=build_txt(self.node_id, self.name, self.port, self.catalog_version),
            server=self.server,
            parsed_addresses=self.addresses,
            host_ttl=self.host_ttl,
            other_ttl=self.other_ttl,
        )


def instance_label(name: str, node_id: str) -> str:
    """A DNS-SD instance label: the display name and an id prefix, at most 63 bytes, no dots."""
    suffix = "-" + node_id[:8].replace(".", "-")
    base = clean_name(name).replace(".", "-")
    while len((base + suffix).encode("utf-8")) > 63:
        base = base[:-1]
    return base + suffix
