"""Floods against a real node on the loopback: unsigned requests, stalled TLS handshakes and
deeply nested JSON. Each is bounded in what it costs the node (audit entries, open
connections, memory) and answered with a reason; counts and bounds, not timings."""

from __future__ import annotations

import asyncio
import json
import logging
import select
import socket
import ssl
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from node.api import problems
from node.audit import AuditLog
from node.server import HANDSHAKE_TIMEOUT, MAX_HANDSHAKES
from node.wire import MAX_JSON_DEPTH, JsonTooDeep, json_depth, loads_bounded
from tests.conftest import wait_until

TOO_DEEP = "https://parley.example/problems/json-too-deep"


def _insecure() -> ssl.SSLContext:
    """What a stranger uses: no client certificate, no pin."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _post(url: str, body: bytes, token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30, context=_insecure()) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _whoami(peer_url: str) -> int:
    with urllib.request.urlopen(peer_url + "/peer/v1/whoami", timeout=10,
                                context=_insecure()) as resp:
        return resp.status


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _audit_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.glob("audit.sqlite*"))


# -- unsigned requests -----------------------------------------------------------------------


async def _unsigned(peer_url: str, count: int) -> Counter[int]:
    statuses: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(ssl=_insecure(), limit=8)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one() -> None:
            async with session.get(peer_url + "/peer/v1/catalog") as resp:
                await resp.read()
                statuses[resp.status] += 1

        for start in range(0, count, 200):
            await asyncio.gather(*(one() for _ in range(min(200, count - start))))
    return statuses


def test_unsigned_requests_are_counted_in_the_audit_log_not_written_one_by_one(make_node):
    alice = make_node("alice")
    before = len(alice.client.audit()["entries"])
    size_before = _audit_bytes(alice.data_dir)

    statuses = asyncio.run(_unsigned(alice.peer_url, 2000))
    assert set(statuses) <= {401, 429} and statuses[401] > 0, statuses

    live = alice.client.audit()
    assert live["verify"]["ok"]
    refusals = [e for e in live["entries"][before:] if e["kind"] == "refusal"]
    # the first refusal of each minute at once; the rest counted (a minute may end meanwhile)
    assert 1 <= len(refusals) <= 4, refusals
    assert refusals[0]["fields"]["remote"] == "127.0.0.1"

    alice.stop()  # closing the log writes the count of the minute not yet over
    with AuditLog(alice.data_dir) as audit:
        assert audit.verify().ok
        refusals = [e for e in audit.entries(after=before) if e["kind"] == "refusal"]
        summaries = [e for e in refusals if "count" in e["fields"]]
        assert summaries and len(refusals) <= 6, refusals
        assert all(e["fields"]["remote"] == "127.0.0.1" and e["fields"]["reason"] == "unsigned"
                   for e in summaries)
        written = len(refusals) - len(summaries)
        assert written + sum(e["fields"]["count"] for e in summaries) == statuses[401]
    assert _audit_bytes(alice.data_dir) - size_before < 200_000  # was 3.7 MB


# -- stalled TLS handshakes ------------------------------------------------------------------


def _still_open(socks: list[socket.socket]) -> list[socket.socket]:
    """The sockets the node has not closed (it never writes to a stalled handshake)."""
    readable = set()
    for start in range(0, len(socks), 500):
        readable.update(select.select(socks[start:start + 500], [], [], 0)[0])
    return [s for s in socks if s not in readable]


def test_stalled_tls_handshakes_are_bounded_closed_in_time_and_their_memory_returned(make_node):
    alice = make_node("alice")
    host, port = alice.address.rsplit(":", 1)
    assert _whoami(alice.peer_url) == 200  # TLS warmed up before measuring
    rss_before = _rss_mb(alice.pid)

    socks: list[socket.socket] = []
    try:
        for i in range(600):  # from 20 addresses, each starting a TLS record and stalling
            s = socket.create_connection((host, int(port)), timeout=10,
                                         source_address=(f"127.0.0.{2 + i % 20}", 0))
            s.sendall(b"\x16\x03\x01")
            socks.append(s)
        # the node keeps only so many waiting, and still serves a real peer meanwhile
        wait_until(lambda: len(_still_open(socks)) <= MAX_HANDSHAKES, 10,
                   f"at most {MAX_HANDSHAKES} stalled handshakes left open")
        assert _whoami(alice.peer_url) == 200
        assert alice.client.status()["id"] == alice.node_id
        # ... and none waits longer than the handshake timeout
        wait_until(lambda: not _still_open(socks), HANDSHAKE_TIMEOUT + 5,
                   "every stalled handshake to be closed by the node")
    finally:
        for s in socks:
            s.close()
    assert _whoami(alice.peer_url) == 200
    # asyncio keeps 256 KB per TLS connection; 600 of them held would be 150 MB and more
    wait_until(lambda: _rss_mb(alice.pid) <= rss_before + 30, 15,
               f"the node's memory to come back near {rss_before:.0f} MB "
               f"(now {_rss_mb(alice.pid):.0f} MB)")


# -- deeply nested JSON ----------------------------------------------------------------------


def test_deep_json_is_refused_with_400_on_the_admin_api_and_the_pairing_endpoint(make_node):
    alice = make_node("alice")
    token = alice.client.token
    for body in (b"[" * 100_000, b"[" * 100_000 + b"]" * 100_000,
                 b'{"a":' * 5_000 + b"1" + b"}" * 5_000):
        for url, auth in ((alice.client.admin_url + "/admin/v1/orchestrations", token),
                          (alice.peer_url + "/peer/v1/pairing/hello", None)):
            status, doc = _post(url, body, auth)
            assert status == 400 and doc["type"] == TOO_DEEP, (url, status, doc)
            assert str(MAX_JSON_DEPTH) in doc["detail"]
    # as deep as a node reads is still read (and then refused for what it says)
    nested = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    status, doc = _post(alice.client.admin_url + "/admin/v1/peers",
                        f'{{"address": "nowhere", "pad": {nested}}}'.encode(), token)
    assert status == 422 and doc["type"] != TOO_DEEP and "HOST:PORT" in doc["detail"]
    assert alice.client.status()["id"] == alice.node_id
    log = (alice.data_dir / "node.log").read_text()
    assert "RecursionError" not in log and "Traceback" not in log


def test_loads_bounded_counts_only_real_nesting() -> None:
    assert loads_bounded("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is not None
    with pytest.raises(JsonTooDeep):
        loads_bounded("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
    with pytest.raises(JsonTooDeep):
        loads_bounded(b"[" * 100_000)
    # brackets inside strings are text, and many siblings are not depth
    text = json.dumps({"s": "[[[{{{" * 1000, "rows": [[1, 2]] * 5000, "q": "\\\"[["})
    assert loads_bounded(text)["rows"][0] == [1, 2]
    assert json_depth(text) == 3
    with pytest.raises(ValueError):
        loads_bounded("[1, 2")


async def test_a_recursion_error_anywhere_is_a_400_problem_without_a_traceback(
        aiohttp_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    async def nested(request: web.Request) -> web.Response:
        raise RecursionError("maximum recursion depth exceeded")

    app = web.Application(middlewares=[problems])
    app.router.add_post("/x", nested)
    client = await aiohttp_client(app)
    with caplog.at_level(logging.WARNING, logger="node.api"):
        resp = await client.post("/x", data=b"{}")
        doc = await resp.json(content_type=None)
    assert resp.status == 400 and doc["type"] == JsonTooDeep.problem_type
    assert resp.content_type == "application/problem+json"
    assert [r.exc_info for r in caplog.records if r.name == "node.api"] == [None]
