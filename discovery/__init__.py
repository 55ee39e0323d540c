"""Find other Parley nodes: mDNS/DNS-SD publish and browse (python-zeroconf).

Each node publishes one ``_parley._tcp.local.`` service whose TXT record carries its node id
(key fingerprint), display name, peer API port, protocol version and catalog version
(``record``). ``Publisher`` announces and updates it; ``Browser`` reports peers as
``PeerEvent("added" | "updated" | "removed", PeerRecord)``, removing them on goodbye and when
they stop answering. Where multicast does not reach, the owner adds peers by HOST:PORT; the
node keeps and probes those itself (node/peers.py, node/orchestrator.py). A record proves
nothing about its sender: trust comes from pairing.

Typical use, on the node's event loop::

    aiozc = make_zeroconf()                       # tests: make_zeroconf(["127.0.0.1"])
    browser = Browser(aiozc, own_node_id=me, on_event=handle)
    publisher = Publisher(aiozc, node_id=me, name="alice", port=7001, catalog_version=3)
    await browser.start(); await publisher.start()
    follow = asyncio.create_task(follow_interface_changes(aiozc, publisher, browser))
    ...
    await publisher.update(catalog_version=4)
    ...
    follow.cancel(); await browser.close(); await publisher.close(); await aiozc.async_close()

This package imports neither node/ nor gui/ (import-linter enforces it).
"""

from __future__ import annotations

from discovery.browser import Browser, PeerEvent
from discovery.errors import DiscoveryError, NameConflict
from discovery.interfaces import (
    LOOPBACK_ONLY,
    advertised_addresses,
    follow_interface_changes,
    interface_addresses,
    listening_addresses,
    make_zeroconf,
)
from discovery.publisher import DEFAULT_HOST_TTL, DEFAULT_OTHER_TTL, Publisher
from discovery.record import (
    MAX_ID_CHARS,
    MAX_NAME_CHARS,
    PROTOCOL_VERSION,
    SERVICE_TYPE,
    PeerRecord,
    build_txt,
    parse_fields,
    parse_peer,
    parse_txt_rdata,
)

__all__ = [
    "DEFAULT_HOST_TTL",
    "DEFAULT_OTHER_TTL",
    "LOOPBACK_ONLY",
    "MAX_ID_CHARS",
    "MAX_NAME_CHARS",
    "PROTOCOL_VERSION",
    "SERVICE_TYPE",
    "Browser",
    "DiscoveryError",
    "NameConflict",
    "PeerEvent",
    "PeerRecord",
    "Publisher",
    "advertised_addresses",
    "build_txt",
    "follow_interface_changes",
    "interface_addresses",
    "listening_addresses",
    "make_zeroconf",
    "parse_fields",
    "parse_peer",
    "parse_txt_rdata",
]
