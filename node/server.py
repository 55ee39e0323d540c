"""Run a node: the peer and admin HTTP servers on one asyncio loop (``parley node``)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
from pathlib import Path

from aiohttp import web

from node.api import admin_app, peer_app
from node.core import Node
from node.orchestrator import Orchestrator

logger = logging.getLogger(__name__)


class NodeServer:
    """A node with its two HTTP surfaces; ``start()`` binds them, ``stop()`` ends everything."""

    def __init__(self, data_dir: Path, name: str, host: str = "127.0.0.1", peer_port: int = 0,
                 admin_port: int = 0, auto_approve: bool = False,
                 accept_reduced_isolation: bool = False) -> None:
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

    async def _site(self, app: web.Application, host: str, port: int) -> int:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runners.append(runner)
        server = site._server  # the bound socket tells the real port when 0 was asked
        return int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def start(self) -> None:
        self.node = Node(self.data_dir, self.name, host=self.host, auto_approve=self.auto_approve,
                         accept_reduced_isolation=self.accept_reduced_isolation)
        self.orchestrator = Orchestrator(self.node)
        port = await self._site(peer_app(self.node), self.host, self.peer_port)
        self.node.peer_url = f"http://{self.host}:{port}"
        admin_port = await self._site(admin_app(self.node, self.orchestrator, self.token),
                                      "127.0.0.1", self.admin_port)
        self.admin_url = f"http://127.0.0.1:{admin_port}"
        self.node.write_runtime_file(self.admin_url, self.token)
        logger.info("node %s (%s): peer API %s, admin API %s", self.name, self.node.node_id,
                    self.node.peer_url, self.admin_url)

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        if self.orchestrator:
            await self.orchestrator.close()
        if self.node:
            await self.node.close()
        (self.data_dir / "node.json").unlink(missing_ok=True)


async def serve_forever(server: NodeServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    print(f"parley node '{server.name}' ready: peer API {server.node.peer_url}, "  # type: ignore[union-attr]
          f"admin API {server.admin_url}, data {server.data_dir}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()
