"""Run a node: the peer and admin HTTP servers on one asyncio loop (``parley node``)."""

from __future__ import annotations

import asyncio
import collections
import ctypes
import gc
import logging
import os
import secrets
import signal
import ssl
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from node.api import admin_app, peer_app
from node.core import Node
from node.orchestrator import Orchestrator
from node.paths import lock_data_dir

__all__ = ["HANDSHAKE_TIMEOUT", "MAX_HANDSHAKES", "MAX_HANDSHAKES_PER_SOURCE", "NodeServer",
           "RECLAIM_AFTER", "serve_forever"]

logger = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0  # s a peer has to finish its TLS handshake (LAN peers take ms)
MAX_HANDSHAKES = 128  # connections at once that have not finished theirs (~330 KB each)
MAX_HANDSHAKES_PER_SOURCE = 16  # of those, from one address
RECLAIM_AFTER = 64  # unfinished handshakes after which their memory is handed back


class _Held(asyncio.Protocol):
    """A TLS connection's protocol between the end of its handshake and aiohttp's handler
    taking over: what arrives meanwhile is kept and replayed to the handler."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.eof = False
        self.lost: tuple[Exception | None] | None = None

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)

    def eof_received(self) -> None:
        self.eof = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = (exc,)

    def hand_over(self, handler: asyncio.Protocol, transport: asyncio.Transport) -> None:
        transport.set_protocol(handler)
        handler.connection_made(transport)
        for chunk in self.chunks:
            handler.data_received(chunk)
        if self.eof:
            handler.eof_received()
        if self.lost is not None:
            handler.connection_lost(self.lost[0])


class _Gate(asyncio.Protocol):
    """An accepted TCP connection, before TLS: admitted (or not) by its site."""

    def __init__(self, site: _TlsSite) -> None:
        self.site = site

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # the TLS layer reads from here on
        self.site.admit(transport)

    def data_received(self, data: bytes) -> None:  # pragma: no cover - reading is paused
        pass


class _TlsSite(web.TCPSite):
    """aiohttp's TCP site with TLS done here, so that connections that never finish their
    handshake are bounded: each gets ``HANDSHAKE_TIMEOUT`` s, at most ``MAX_HANDSHAKES`` are
    in one at once (``MAX_HANDSHAKES_PER_SOURCE`` per address), and past that the oldest
    waiting one is dropped for the newcomer, so a flood cannot keep a real peer out for long.

    asyncio keeps a 256 KB read buffer per TLS connection, and an ended handshake leaves it in
    reference cycles that only a full garbage collection frees; 3,000 stalled connections
    held 1 GB after they had closed. After a burst of unfinished handshakes the site collects
    and hands the freed memory back to the system (``_reclaim``).
    """

    def __init__(self, runner: web.BaseRunner, host: str, port: int,
                 ssl_context: ssl.SSLContext) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self.tls = ssl_context
        # connections in their handshake, oldest first: their address and handshake task
        self.pending: collections.OrderedDict[asyncio.Transport, tuple[str, asyncio.Task[None]]] \
            = collections.OrderedDict()
        self.per_source: collections.Counter[str] = collections.Counter()
        self.unfinished = 0  # handshakes that ended without a connection, since the last reclaim
        self._tasks: set[asyncio.Task[None]] = set()
        self._reclaiming = False

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Gate(self), self._host, self._port,
                                                backlog=self._backlog)
        self._bound_port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for transport in list(self.pending):
            self._drop(transport)
        for task in list(self._tasks):
            task.cancel()
        await super().stop()

    def admit(self, transport: asyncio.Transport) -> None:
        peer = transport.get_extra_info("peername")
        source = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if self.per_source[source] >= MAX_HANDSHAKES_PER_SOURCE:
            self._drop(next(t for t, (s, _) in self.pending.items() if s == source))
        elif len(self.pending) >= MAX_HANDSHAKES:
            self._drop(next(iter(self.pending)))
        task = asyncio.get_running_loop().create_task(self._handshake(transport))
        self.pending[transport] = (source, task)
        self.per_source[source] += 1
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _drop(self, transport: asyncio.Transport) -> None:
        """End an unfinished handshake. Cancelling its task matters when the task has not
        started yet: TLS set up on a connection already aborted would wait out its timer."""
        entry = self._forget(transport)
        if entry is not None:
            entry[1].cancel()
            self._ended_unfinished()
        transport.abort()

    def _forget(self, transport: asyncio.Transport) -> tuple[str, asyncio.Task[None]] | None:
        entry = self.pending.pop(transport, None)
        if entry is not None:
            self.per_source[entry[0]] -= 1
            if self.per_source[entry[0]] <= 0:
                del self.per_source[entry[0]]
        return entry

    async def _handshake(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        held = _Held()
        tls: asyncio.Transport | None = None
        try:
            tls = await loop.start_tls(transport, held, self.tls, server_side=True,
                                       ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except OSError:  # ssl.SSLError and TimeoutError are OSErrors
            pass
        finally:
            if self._forget(transport) is not None and tls is None:
                self._ended_unfinished()
        if tls is None:  # timed out, refused by TLS or closed by the peer
            transport.abort()
            return
        server = self._runner.server
        assert server is not None
        held.hand_over(server(), tls)

    def _ended_unfinished(self) -> None:
        self.unfinished += 1
        if self.unfinished >= RECLAIM_AFTER and not self._reclaiming:
            self._reclaiming = True
            asyncio.get_running_loop().call_later(2.0, self._start_reclaim)  # at most every 2 s

    def _start_reclaim(self) -> None:
        task = asyncio.get_running_loop().create_task(self._reclaim())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reclaim(self) -> None:
        """Free what a burst of unfinished handshakes left behind, and hand it back."""
        try:
            count, self.unfinished = self.unfinished, 0
            started = time.monotonic()
            found = gc.collect()
            await asyncio.to_thread(_trim_malloc)
            logger.info("%d TLS connections ended before their handshake did; freed %d objects "
                        "in %.0f ms and returned the memory", count, found,
                        (time.monotonic() - started) * 1000)
        finally:
            self._reclaiming = False


def _trim_malloc() -> None:
    """Give freed heap memory back to the system (glibc keeps it otherwise)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


class NodeServer:
    """A node with its two HTTP surfaces; ``start()`` binds them, ``stop()`` ends everything."""

    def __init__(self, data_dir: Path, name: str, host: str = "127.0.0.1", peer_port: int = 0,
                 admin_port: int = 0,
                 accept_reduced_isolation: bool = False, mdns: bool = True,
                 mdns_interfaces: list[str] | None = None, warm_workers: int | None = None,
                 max_parties: int | None = None, min_rows: int | None = None) -> None:
        self.warm_workers = warm_workers
        self.min_rows = min_rows
        self.max_parties = max_parties
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
        self.accept_reduced_isolation = accept_reduced_isolation
        self.token = secrets.token_urlsafe(24)
        self.node: Node | None = None
        self.orchestrator: Orchestrator | None = None
        self._runners: list[web.AppRunner] = []
        self.admin_url = ""
        self.stopping = asyncio.Event()  # set by the admin API's shutdown
        self._lock_fd: int | None = None

    async def _site(self, app: web.Application, host: str, port: int,
                    ssl_context: ssl.SSLContext | None = None) -> int:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = (web.TCPSite(runner, host, port) if ssl_context is None
                else _TlsSite(runner, host, port, ssl_context))
        await site.start()
        self._runners.append(runner)
        return site.port  # the bound port, when 0 was asked

    async def start(self) -> None:
        self._lock_fd = lock_data_dir(self.data_dir)
        stale = self.data_dir / "node.json"
        if stale.exists():
            logger.warning("a node.json was left behind by a node that did not stop cleanly; "
                           "replacing it")
            stale.unlink()
        from node.core import DEFAULT_WARM_WORKERS

        self.node = Node(self.data_dir, self.name, host=self.host,
                         accept_reduced_isolation=self.accept_reduced_isolation,
                         warm_workers=(DEFAULT_WARM_WORKERS if self.warm_workers is None
                                       else self.warm_workers),
                         max_parties=self.max_parties, min_rows=self.min_rows)
        await self.node.start()
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
        self.node.spawn(self._flush_audit())
        await self.orchestrator.resume_interrupted()
        logger.info("node %s (%s): peer API %s, admin API %s", self.name, self.node.node_id,
                    self.node.peer_url, self.admin_url)

    async def _start_discovery(self, port: int) -> None:
        """Publish this node and follow the others over mDNS (names and addresses only:
        trust comes from pairing, never from a TXT record).

        The node announces the addresses it listens on and nothing else: bound to one address
        (``--host 127.0.0.1``), it runs mDNS on that address alone and announces it; bound to
        every interface, the interfaces' addresses (or ``--mdns-interface``'s). What a sighting
        says about a paired peer is only a hint: the peer book keeps its paired name and its
        known address until the new one is verified over pinned TLS (node/trust.py)."""
        from discovery.browser import Browser
        from discovery.interfaces import (
            follow_interface_changes,
            listening_addresses,
            make_zeroconf,
        )
        from discovery.publisher import Publisher

        assert self.node is not None
        node = self.node
        listening = listening_addresses(self.host)  # None: every interface
        if listening == []:
            logger.warning("not announcing this node over mDNS: --host %s has no IPv4 address "
                           "(mDNS announces IPv4 only); peers can add it by address",
                           ascii(self.host))
            return
        interfaces = self.mdns_interfaces if self.mdns_interfaces is not None else listening
        self._zeroconf = make_zeroconf(interfaces)
        self._publisher = Publisher(self._zeroconf, node_id=node.node_id, name=node.name,
                                    port=port, catalog_version=node.store.catalog_version(),
                                    addresses=listening if listening is not None
                                    else self.mdns_interfaces)
        await self._publisher.start()

        async def on_event(event: Any) -> None:
            rec = event.record
            if event.kind == "removed":
                await asyncio.to_thread(node.peer_book.offline, rec.node_id,
                                        rec.addresses or (rec.host,), rec.port)
            else:
                await asyncio.to_thread(node.peer_book.seen, rec.node_id, rec.name, rec.host,
                                        rec.port, "mdns", rec.catalog_version, rec.addresses)

        self._browser = Browser(self._zeroconf, own_node_id=node.node_id, on_event=on_event)
        await self._browser.start()
        node.spawn(self._follow_catalog())
        if interfaces is None:  # all interfaces: follow them as they come and go
            node.spawn(follow_interface_changes(self._zeroconf, self._publisher, self._browser))

    async def _probe_manual_peers(self) -> None:
        """Peers added by address are asked who they are at start and then every 30 s."""
        assert self.orchestrator is not None
        while True:
            await self.orchestrator.network.probe_manual()
            await asyncio.sleep(30.0)

    async def _expire_pairings(self) -> None:
        """Pairing requests past their time become ``pairing.expired`` events as they expire."""
        assert self.node is not None
        while True:
            await asyncio.sleep(2.0)
            await asyncio.to_thread(self.node.trust.expire)

    async def _flush_audit(self) -> None:
        """Counts of repeated refusals are written when their minute is over, even if nothing
        else is logged then."""
        assert self.node is not None
        while True:
            await asyncio.sleep(10.0)
            await asyncio.to_thread(self.node.audit.flush)

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
