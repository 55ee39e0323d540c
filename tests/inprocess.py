"""An in-process node for the rules of its admin API that need no party: the real ``Node``
and ``admin_app`` behind aiohttp's test client, with a launcher that needs no CrypTen and
starts no process. The tests that need real nodes, parties or the command line start real
processes instead (``make_node``; they are marked ``real``, see tests/conftest.py)."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from node.core import Node

__all__ = ["AppNode", "NoPartyLauncher"]


class NoPartyLauncher:
    """Starts no party process: a job that would take one fails to start, as when a process
    cannot be started (an OSError the node records), so a rule's test sees it if it ran one."""

    size = 0

    def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {"size": 0, "ready": 0, "starting": 0, "held": 0, "memory_bytes": 0,
                "taken": 0, "paused": False}

    async def launch(self, job_id: str, threads: int) -> Any:
        raise OSError("an in-process test node starts no party processes")


@dataclass
class AppNode:
    """The node, its admin API's test client and its token."""

    node: Node
    client: TestClient
    token: str

    async def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                   token: str | None = None) -> tuple[int, Any]:
        """(status, JSON answer) of an admin request; ``token`` replaces the node's."""
        headers = {"Authorization": f"Bearer {self.token if token is None else token}",
                   "Content-Type": "application/json"}
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else None)
        async with self.client.request(method, "/admin/v1" + path, data=data,
                                       headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)


async def app_node(data_dir: Path, aiohttp_client: Any, name: str = "owner") -> AppNode:
    from node.api import admin_app
    from node.orchestrator import Orchestrator

    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    node = Node(data_dir, name, launcher=NoPartyLauncher())
    token = secrets.token_urlsafe(16)
    client = await aiohttp_client(admin_app(node, Orchestrator(node), token))
    return AppNode(node, client, token)
