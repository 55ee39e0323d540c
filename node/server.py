"""Run a node: the peer and admin HTTP servers on one asyncio loop (``parley node``)."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
from pathlib import Path
from typing import Any

from aiohttp import web

from node.api import admin_app, peer_app
from node.core import Node
from node.orchestrator import Orchestrator
from node.paths import lock_data_dir

logger = logging.getLogger(__name__)


class NodeServer:
    """A node with its two HTTP surfaces; ``start()`` binds them, ``stop()`` ends everything."""

    def __init__(self, data_dir: Path, name: str, host: str = "127.0.0.1", peer_port: int = 0,
                 admin_port: int = 0, auto_approve: bool = False,
                 accept_reduced_isolation: bool = False, mdns: bool = True,
                 mdns_interfaces: list[str] | None = None) -> None:
        self.mdns = mdns
        self.mdns_interfaces = mdns_interfaces
        self._zeroconf: Any = None
        self._publisher: Any = None
        self._browser: Any = None
        self.data_dir = data_dir
        self.name = name
        self.host = host
        self.peer_port = peer_port
        self.admin_port = admin_port
        self.auto_approve = auto_approve
        self.accept_reduced_isolation = accept_reduced_isolation
        self.token = secrets.token_urlsafe(24)
        self.node: Node | None = None
        self.orchestrator: Orchestrator | None = None
        self._runners: list[web.AppRunner] = []
        self.admin_url = ""
        self.stopping = asyncio.Event()  # set by the admin API's shutdown
        self._lock_fd: int | None = None

    async def _site(self, app: web.Application, host: str, port: int,
                    ssl_context: Any = None) -> int:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        self._runners.append(runner)
        server = site._server  # the bound socket tells the real port when 0 was asked
        return int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def start(self) -> None:
        self._lock_fd = lock_data_dir(self.data_dir)
        stale = self.data_dir / "node.json"
        if stale.exists():
            logger.warning("a node.json was left behind by a node that did not stop cleanly; "
                           "replacing it")
            stale.unlink()
        self.node = Node(self.data_dir, self.name, host=self.host, auto_approve=self.auto_approve,
                         accept_reduced_isolation=self.accept_reduced_isolation)
        self.orchestrator = Orchestrator(self.node)
        port = await self._site(peer_app(self.node), self.host, self.peer_port,
                                ssl_context=self.node.trust.server_ctx)
        self.node.peer_url = f"https://{self.host}:{port}"
        self.node.trust.peer_port = port
        if self.mdns:
            await self._start_discovery(port)
        admin_port = await self._site(admin_app(self.node, self.orchestrator, self.token,
                                                self.stopping), "127.0.0.1", self.admin_port)
        self.admin_url = f"http://127.0.0.1:{admin_port}"
        self.node.write_runtime_file(self.admin_url, self.token)
        self.node.spawn(self._probe_manual_peers())
        self.node.spawn(self._expire_pairings())
        logger.info("node %s (%s): peer API %s, admin API %s", self.name, self.node.node_id,
                    self.node.peer_url, self.admin_url)

    async def _start_discovery(self, port: int) -> None:
        """Publish this node and follow the others over mDNS (names and addresses only:
        trust comes from pairing, never from a TXT record)."""
        from discovery.browser import Browser
        from discovery.interfaces import follow_interface_changes, make_zeroconf
        from discovery.publisher import Publisher

        assert self.node is not None
        node = self.node
        self._zeroconf = make_zeroconf(self.mdns_interfaces)
        self._publisher = Publisher(self._zeroconf, node_id=node.node_id, name=node.name,
                                    port=port, catalog_version=node.store.catalog_version(),
                                    addresses=self.mdns_interfaces)
        await self._publisher.start()

        async def on_event(event: Any) -> None:
            rec = event.record
            if event.kind == "removed":
                await asyncio.to_thread(node.trust.peers.offline, rec.node_id)
            else:
                await asyncio.to_thread(node.trust.peers.seen, rec.node_id, rec.name, rec.host,
                                        rec.port, "mdns", rec.catalog_version)

        self._browser = Browser(self._zeroconf, own_node_id=node.node_id, on_event=on_event)
        await self._browser.start()
        node.spawn(self._follow_catalog())
        if self.mdns_interfaces is None:  # all interfaces: follow them as they come and go
            node.spawn(follow_interface_changes(self._zeroconf, self._publisher, self._browser))

    async def _probe_manual_peers(self) -> None:
        """Peers added by address are asked who they are at start and then every 30 s."""
        assert self.orchestrator is not None
        while True:
            await self.orchestrator.probe_manual()
            await asyncio.sleep(30.0)

    async def _expire_pairings(self) -> None:
        """Pairing requests past their time become ``pairing.expired`` events as they expire."""
        assert self.node is not None
        while True:
            await asyncio.sleep(2.0)
            await asyncio.to_thread(self.node.trust.expire)

    async def _follow_catalog(self) -> None:
        """Announce a new catalog version when assets change (peers re-read the catalog)."""
        assert self.node is not None
        announced = self.node.store.catalog_version()
        while True:
            await asyncio.sleep(1.0)
            version = self.node.store.catalog_version()
            if version != announced and self._publisher is not None:
                await self._publisher.update(catalog_version=version)
                announced = version

    async def stop(self) -> None:
        if self._browser is not None:
            await self._browser.close()
        if self._publisher is not None:
            await self._publisher.close()
        if self._zeroconf is not None:
            await self._zeroconf.async_close()
        for runner in self._runners:
            await runner.cleanup()
        if self.node:
            await self.node.close()
        if self._lock_fd is not None:
            (self.data_dir / "node.json").unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None


async def serve_forever(server: NodeServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server.stopping = stop
    await server.start()
    print(f"parley node '{server.name}' ready: peer API {server.node.peer_url}, "  # type: ignore[union-attr]
          f"admin API {server.admin_url}, data {server.data_dir}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()
