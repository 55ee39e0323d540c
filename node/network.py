"""The paired network as this node sees it: signed calls to peers, and what they hold.

``Network.call`` is the one way a node asks a paired peer something (TLS pinned to the peer's
certificate, the request signed with this node's key); an error the peer answers comes back as
the exception its problem type names. On top of it: searching every paired peer's catalog at
once (slow peers reported, not waited for), the catalog schemas a dry run needs from other
parties, and the probes of manually added addresses. node/orchestrator.py drives jobs with it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import quote

import aiohttp

from node import proposal as proposals
from node.address import format_address, parse_address
from node.core import Node
from node.errors import NodeUnreachable, ParleyError, ProposalError, error_from_problem
from node.jail import static

__all__ = ["Network"]

logger = logging.getLogger(__name__)


class Network:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.trust = node.trust
        self._silent: set[str] = set()  # manual peers whose silence was logged already

    async def call(self, method: str, party: dict[str, Any], path: str, body: Any = None) -> Any:
        """A signed request to a paired node over TLS pinned to its certificate."""
        node_id = party["node_id"]
        url = self.url_of(party) + path
        data = json.dumps(body).encode() if body is not None else b""
        session = self.node.sessions.get(node_id, self.trust.pin_of(node_id))
        headers = self.trust.signed_headers(method, url, data, node_id)
        try:
            async with session.request(method, url, data=data or None, headers=headers) as resp:
                answer = await resp.json(content_type=None)
                if resp.status >= 400:  # the peer's problem, as its own exception
                    raise error_from_problem(answer, resp.status)
                return answer
        except aiohttp.ClientConnectorCertificateError:
            raise ParleyError(f"{party['name']} presented another certificate than the one "
                              f"paired: not the node you paired with") from None
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise NodeUnreachable(f"{party['name']} ({party['url']}) did not answer "
                                  f"({type(exc).__name__})") from None

    def url_of(self, party: dict[str, Any]) -> str:
        """Where a party is now: this node's own address, or the address the peer book
        holds for the key (a paired peer that restarted on another port is followed)."""
        if party["node_id"] == self.node.node_id:
            return self.node.peer_url
        try:
            return self.node.peer_book.get(party["node_id"]).url
        except ParleyError:
            return party["url"]

    async def search(self, tags: list[str], wait_s: float) -> dict[str, Any]:
        """Every paired peer's catalog at once; slow peers are reported, not waited for."""
        me = {"name": self.node.name, "url": self.node.peer_url, "node_id": self.node.node_id}
        targets = [me] + [{"name": p.name, "url": p.url, "node_id": p.node_id}
                          for p in self.node.peer_book.paired()]
        query = "&".join(f"tag={quote(t)}" for t in tags)
        tasks = {asyncio.ensure_future(self.call("GET", t, f"/peer/v1/catalog?{query}")):
                 t for t in targets}
        done, pending = await asyncio.wait(tasks, timeout=wait_s)
        for task in pending:
            task.cancel()
        matches, errors = [], []
        for task in done:
            target = tasks[task]
            if task.exception() is not None:
                exc = task.exception()
                errors.append({"node": target["name"], "error": getattr(exc, "message",
                                                                       repr(exc))})
            elif task.result()["assets"]:
                matches.append({"node": {**target}, "assets": task.result()["assets"]})
        return {"tags": tags, "matches": sorted(matches, key=lambda m: m["node"]["name"]),
                "slow": sorted(tasks[t]["name"] for t in pending), "errors": errors}

    async def schemas_elsewhere(self, p: dict[str, Any], rank: int) -> dict[str, dict[str, Any]]:
        """The catalog schema of every tag of ``p`` bound at another rank than ``rank`` (what a
        dry run needs to stand in for it); tags whose holder does not answer are left out."""
        wanted = {b["tag"]: proposals.party_of(p, b["rank"]) for b in p["bindings"]
                  if b["rank"] != rank}

        async def one(tag: str, party: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
            try:
                found = await asyncio.wait_for(self.call(
                    "GET", party, f"/peer/v1/catalog?tag={quote(tag)}"), 5)
            except (TimeoutError, ParleyError):
                return tag, None
            assets = found.get("assets", [])
            return tag, assets[0]["schema"] if len(assets) == 1 else None

        pairs = await asyncio.gather(*(one(t, q) for t, q in wanted.items()))
        return {tag: schema for tag, schema in pairs if schema is not None}

    async def schemas_of_tags(self, source: str, entry: str) -> dict[str, dict[str, Any]]:
        """For a dry run of one's own file: the catalog schema of each tag the source loads
        that this node does not hold, as paired peers publish it (one holder answering)."""
        try:
            info = await asyncio.to_thread(static.check, source, entry)
        except static.JailRejected:
            return {}  # the dry run says why
        tags = sorted({ld.tag for ld in info.loads if not static.is_dynamic(ld.tag)})
        tags = [t for t in tags if not await asyncio.to_thread(self.node._holds, t)]
        if not tags:
            return {}
        found: dict[str, dict[str, Any]] = {}
        for tag in tags:
            answer = await self.search([tag], 3.0)
            for match in answer["matches"]:
                for asset in match["assets"]:
                    found.setdefault(tag, asset["schema"])
        return found

    async def probe_manual(self) -> None:
        """Ask each manually added address who it is (an unauthenticated hello is not
        needed: the catalog needs pairing, so a manual peer first shows up by pairing)."""
        for address in await asyncio.to_thread(self.node.peer_book.manual):
            try:
                host, port = parse_address(address)
            except ProposalError:
                continue  # stored before addresses were checked as they are now
            url = f"https://{format_address(host, port)}/peer/v1/whoami"
            try:
                session = self.node.sessions.get(None, None, with_cert=False)
                async with session.get(url) as resp:
                    info = await resp.json(content_type=None)
                self._silent.discard(address)
                await asyncio.to_thread(self.node.peer_book.seen, info["node_id"], info["name"],
                                        host, int(port), "manual",
                                        int(info.get("catalog_version", 0)))
            except (TimeoutError, aiohttp.ClientError, ValueError, KeyError, TypeError):
                if address not in self._silent:
                    self._silent.add(address)
                    logger.info("manual peer %s did not answer (said once; it is shown "
                                "offline, and listed again when it answers)", address)
