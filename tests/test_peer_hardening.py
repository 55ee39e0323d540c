"""What strangers on the network can and cannot do to a node's peers and pairing requests.

Pairing requests are open to anyone, so they are bounded per address and in all; unpairing
reaches the other side; peers nobody sees any more leave the list; names a stranger sends are
stored capped and kept out of the log as they came. Real nodes on the loopback, and one
network namespace for a node bound to 127.0.0.1 with mDNS on its default interfaces.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from netns import Namespace, NamespacesUnavailable, switched_namespaces

from node import peers as peers_mod
from node import trust as trust_mod
from node.events import EventLog
from node.identity import NodeIdentity, pairing_commitment
from node.localnet import LocalNode
from node.peers import PeerBook
from node.trust import Trust
from tests.conftest import wait_until
from tests.peerclient import peer_request
from tests.test_jobs import write_csv

REPO = Path(__file__).resolve().parents[1]
FLOOD = 24  # more than the 16 that used to fill the pending list


def _hello(ident: NodeIdentity, name: str = "flood") -> tuple[dict[str, Any], bytes]:
    nonce = secrets.token_bytes(16)
    return {"id": "p-" + secrets.token_hex(8), "node_id": ident.node_id, "name": name,
            "public_key": base64.b64encode(ident.public_key_bytes).decode(),
            "cert_pem": ident.cert_pem, "port": 9,
            "commitment": pairing_commitment(ident.public_key_bytes, nonce)}, nonce


def _flood(target: LocalNode, senders: list[NodeIdentity], count: int = FLOOD,
           name: str = "flood") -> None:
    """``count`` unauthenticated pairing requests (hello and reveal) from the loopback."""
    for i in range(count):
        body, nonce = _hello(senders[i % len(senders)], name)
        status, answer = peer_request(None, target.peer_url, target.node_id, "POST",
                                      "/peer/v1/pairing/hello", body, with_cert=False)
        assert status == 200, answer  # room is made, not refused
        status, answer = peer_request(None, target.peer_url, target.node_id, "POST",
                                      f"/peer/v1/pairing/{body['id']}/reveal",
                                      {"nonce": nonce.hex()}, with_cert=False)
        assert status == 200, answer


def _pending_in(node: LocalNode) -> list[dict[str, Any]]:
    return [p for p in node.client.pairings()
            if p["state"] == "pending" and p["direction"] == "in"]


@pytest.fixture
def senders(tmp_path: Path) -> list[NodeIdentity]:
    return [NodeIdentity.load_or_create(tmp_path / f"flood-{i}") for i in range(3)]


def test_a_flood_of_pairing_requests_does_not_stop_real_pairing(make_node, senders):
    alice, bob = make_node("alice", pair=False), make_node("bob", pair=False)
    carol = make_node("carol", pair=False)

    # a flood at bob keeps at most the per-address limit of requests waiting
    _flood(bob, senders)
    assert len(_pending_in(bob)) == trust_mod.MAX_PENDING_PER_ADDRESS
    assert not bob.client.peers()  # requests are not peers until the owner accepts one

    # alice (also on the loopback) still gets through, and bob's owner confirms
    asked = alice.client.pair(bob.address)
    theirs = [p for p in bob.client.pairings() if p["id"] == asked["id"]]
    assert [p["code"] for p in theirs] == [asked["code"]]
    bob.client.decide_pairing(asked["id"], confirm=True)
    # a request bob's owner confirmed is never crowded out by the next flood
    _flood(bob, senders)
    assert alice.client.decide_pairing(asked["id"], confirm=True)["state"] == "paired"
    assert {p["node_id"]: p["state"] for p in bob.client.peers()} == {alice.node_id: "paired"}

    # a pairing alice's owner started (direction "out") survives a flood at alice
    asked = alice.client.pair(carol.address)
    _flood(alice, senders)
    mine = [p for p in alice.client.pairings() if p["id"] == asked["id"]]
    assert [(p["direction"], p["state"]) for p in mine] == [("out", "pending")]
    carol.client.decide_pairing(asked["id"], confirm=True)
    assert alice.client.decide_pairing(asked["id"], confirm=True)["state"] == "paired"
    # each flood left no more than the per-address limit waiting at alice
    assert len(_pending_in(alice)) <= trust_mod.MAX_PENDING_PER_ADDRESS


def test_pairing_request_limits_per_address_and_overall(tmp_path, senders):
    t = Trust(tmp_path / "bob", "bob")
    try:
        made = []
        for i in range(40):  # ten addresses, four requests each
            body, nonce = _hello(senders[i % 3])
            t.hello(body, f"10.0.0.{i % 10}")
            t.reveal(body["id"], {"nonce": nonce.hex()})
            made.append(body["id"])
        pending = [p for p in t.pairings.values() if p.state == "pending"]
        assert len(pending) == trust_mod.MAX_PENDING_IN
        assert {p.id for p in pending} == set(made[-trust_mod.MAX_PENDING_IN:])  # oldest went
        # hellos never revealed go first when room is needed, then the oldest shown one
        body, _ = _hello(senders[0])
        t.hello(body, "10.0.0.99")
        survivors = {p.id for p in t.pairings.values() if p.state == "pending"}
        assert made[-trust_mod.MAX_PENDING_IN] not in survivors and body["id"] in survivors
        # the same pairing id twice is refused, not overwritten
        with pytest.raises(trust_mod.PairingError, match="exists already"):
            t.hello(dict(body), "10.0.0.98")
        # a hello whose reveal never came is dropped after a short while, silently
        t.pairings[body["id"]].created -= trust_mod.UNREVEALED_TTL_S + 1
        t.expire()
        assert body["id"] not in t.pairings
        assert all(json.loads(d)["id"] in t.pairings for d in t.peers.stored_pairings())
    finally:
        import asyncio

        asyncio.run(t.close())


def test_a_strange_name_is_stored_capped_and_kept_out_of_the_log(make_node, senders):
    bob = make_node("bob", pair=False)
    name = "\x1b[31mbob\u202e\r\nERROR forged log line " + "x" * 500
    _flood(bob, senders, count=1, name=name)
    (shown,) = bob.client.pairings()
    assert shown["name"] == name[:peers_mod.MAX_NAME_CHARS]
    log = (bob.data_dir / "node.log").read_text(errors="replace")
    assert "\x1b" not in log and "forged log line" not in log


def test_unpairing_tells_the_peer(make_node):
    alice, bob = make_node("alice"), make_node("bob")
    carol = make_node("carol")
    mallory = make_node("mallory", pair=False)

    out = alice.client.unpair("bob")
    assert (out["state"], out["peer_told"]) == ("revoked", True)
    # bob's side is revoked too, audited and announced
    assert _state(bob, alice) == "revoked"
    assert [e["fields"]["peer"] for e in bob.client.audit()["entries"]
            if e["fields"].get("event") == "revoked" and e["fields"].get("by") == "peer"] \
        == [alice.node_id]
    changed = [e["data"] for e in bob.client.events()["events"]
               if e["kind"] == "peer.trust_changed"]
    assert changed[-1]["node_id"] == alice.node_id and changed[-1]["trust"] == "revoked"
    # and it refuses alice from now on
    status, prob = peer_request(alice.data_dir, bob.peer_url, bob.node_id, "GET",
                                "/peer/v1/catalog")
    assert status == 401 and "unknown-node" in prob["detail"]

    # only a paired node's signed notice counts: a stranger unpairs nobody
    status, prob = peer_request(mallory.data_dir, carol.peer_url, carol.node_id, "POST",
                                "/peer/v1/unpair", {}, with_cert=False)
    assert status == 401 and "unknown-node" in prob["detail"]
    status, _ = peer_request(None, carol.peer_url, carol.node_id, "POST", "/peer/v1/unpair",
                             {}, with_cert=False)
    assert status == 401
    assert _state(carol, alice) == "paired" and _state(carol, bob) == "paired"

    # a peer that is offline: unpaired here all the same, and the answer says it was not told
    carol.stop()
    out = alice.client.unpair("carol")
    assert (out["state"], out["peer_told"]) == ("revoked", False)
    assert "did not answer" in out["peer_told_detail"]
    assert _state(alice, carol) == "revoked"
    told = [e["fields"]["peer_told"] for e in alice.client.audit()["entries"]
            if e["fields"].get("event") == "revoked"]
    assert told == [True, False]


def _state(node: LocalNode, other: LocalNode) -> str:
    return {p["node_id"]: p["state"] for p in node.client.peers()}[other.node_id]


def test_peers_nobody_sees_any_more_leave_the_list(tmp_path):
    events = EventLog(tmp_path)
    book = PeerBook(tmp_path, events)
    ids = {name: NodeIdentity.load_or_create(tmp_path / name).node_id
           for name in ("gone", "paired", "manual", "asked", "pending", "here")}
    try:
        t0 = time.time()
        book.seen(ids["gone"], "gone", "10.0.0.1", 7001, "mdns")
        book.seen(ids["paired"], "paired", "10.0.0.2", 7001, "mdns")
        book.pair(ids["paired"], "paired", "10.0.0.2", 7001, "", "", "")
        book.seen(ids["manual"], "manual", "10.0.0.3", 7001, "manual")
        book.seen(ids["asked"], "asked", "10.0.0.4", 7001, "pairing")
        book.seen(ids["pending"], "pending", "10.0.0.5", 7001, "pairing")
        book.seen(ids["here"], "here", "10.0.0.6", 7001, "mdns")
        book.offline(ids["gone"])
        book.offline(ids["paired"])

        # a manual peer that stopped answering the probe goes offline first
        assert book.sweep(now=t0 + peers_mod.MANUAL_OFFLINE_AFTER_S + 1) == []
        assert not book.get(ids["manual"]).online and book.get(ids["here"]).online

        forgotten = book.sweep(keep=[ids["pending"]], now=t0 + peers_mod.FORGET_AFTER_S + 5)
        assert sorted(p.name for p in forgotten) == ["asked", "gone", "manual"]
        left = {p.name: p for p in book.list()}
        assert sorted(left) == ["here", "paired", "pending"]
        assert left["paired"].paired and not left["paired"].online  # shown offline, kept
        lost = [e["data"] for e in events.since(0) if e["kind"] == "peer.lost"
                and e["data"].get("forgotten")]
        assert sorted(d["name"] for d in lost) == ["asked", "gone", "manual"]
        # one that comes back is a new sighting
        book.seen(ids["gone"], "gone", "10.0.0.1", 7001, "mdns")
        assert book.get(ids["gone"]).online
    finally:
        book.close()


def test_a_paired_peer_keeps_its_paired_name_and_address(tmp_path):
    book = PeerBook(tmp_path, EventLog(tmp_path))
    hints: list[tuple[str, list[tuple[str, int]]]] = []
    book.on_move_hint = lambda node_id, candidates: hints.append((node_id, candidates))
    bob = NodeIdentity.load_or_create(tmp_path / "bob").node_id
    try:
        book.pair(bob, "bob", "127.0.0.1", 7001, "", "", "")
        # mDNS says "mallory" at another port: a hint, nothing changes
        book.seen(bob, "mallory", "127.0.0.1", 7999, "mdns", 3, ["127.0.0.1"])
        peer = book.get(bob)
        assert (peer.name, peer.host, peer.port) == ("bob", "127.0.0.1", 7001)
        assert hints == [(bob, [("127.0.0.1", 7999)])]
        # at its known address (among others announced) it is a sighting: no hint, no rename
        book.seen(bob, "bobby", "192.168.1.5", 7001, "mdns", 4, ["192.168.1.5", "127.0.0.1"])
        peer = book.get(bob)
        assert (peer.name, peer.port, peer.catalog_version) == ("bob", 7001, 4)
        assert len(hints) == 1
        # a goodbye from the spoofed record does not take the real peer offline
        book.offline(bob, ["127.0.0.1"], 7999)
        assert book.get(bob).online
        book.offline(bob, ["127.0.0.1"], 7001)
        assert not book.get(bob).online
        # only a verified move changes the address
        assert book.move(bob, "127.0.0.1", 7999).port == 7999
    finally:
        book.close()


# -- one machine, --host 127.0.0.1, mDNS on its default interfaces ----------------------------
@pytest.fixture
def one_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Namespace, Path]]:
    root = tmp_path_factory.mktemp("onehost")
    root.chmod(0o755)
    try:
        with switched_namespaces(1, subnet="10.78.0") as (ns,):
            yield ns, root
    except NamespacesUnavailable as exc:
        pytest.skip(f"no network namespaces here: {exc}")


def _browse_loopback(ns: Namespace, node_id: str, timeout: float = 20) -> dict[str, Any]:
    """The record ``python -m discovery browse`` on the namespace's loopback reports."""
    proc = subprocess.Popen([*ns.exec_prefix(), sys.executable, "-m", "discovery", "browse",
                             "--interface", "127.0.0.1"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    try:
        buffer = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if not ready:
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                event = json.loads(line)
                peer = event.get("peer") or {}
                if event.get("event") in ("added", "updated") and peer.get("node_id") == node_id:
                    return peer
        pytest.fail(f"the loopback browser did not see {node_id} within {timeout:.0f} s")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # it ends in about 20 ms; once, under another
            proc.kill()                    # test run, not in 10 s: what it saw is what counts
            proc.wait(10)


@pytest.mark.real
def test_a_node_on_127_0_0_1_announces_only_that_and_stays_reachable(one_host, tmp_path):
    """The README on one machine: two nodes with ``--host 127.0.0.1`` and mDNS on their
    default interfaces, on a host that also has a LAN address (10.78.0.1)."""
    ns, root = one_host
    alice, bob = (LocalNode(name, root / name, extra_args=("--host", "127.0.0.1", "--port",
                                                           str(port)),
                            exec_prefix=tuple(ns.exec_prefix()))
                  for name, port in (("alice", 7611), ("bob", 7612)))
    try:
        alice.start()
        bob.start()
        bob_id = bob.node_id
        record = _browse_loopback(ns, bob_id)
        assert record["addresses"] == ["127.0.0.1"] and record["port"] == 7612

        def bob_at_alice() -> dict[str, Any] | None:
            return {p["name"]: p for p in alice.json("peers")}.get("bob")

        seen = wait_until(bob_at_alice, 30, "alice to see bob over mDNS")
        assert (seen["host"], seen["port"], seen["source"]) == ("127.0.0.1", 7612, "mdns")
        asked = alice.json("pair", "bob")  # by name, at the address mDNS gave
        bob.json("pair", "--confirm", asked["id"])
        assert alice.json("pair", "--confirm", asked["id"])["state"] == "paired"

        # bob publishes: a new catalog version reaches alice over mDNS, and bob stays where
        # alice paired with it
        csv = write_csv(root / "b.csv", np.ones((3, 4)))
        csv.chmod(0o644)
        bob.json("publish", str(csv), "--tag", "nums")
        after = wait_until(lambda: (p := bob_at_alice()) and p["catalog_version"] >= 1 and p,
                           30, "alice to see bob's new catalog version")
        assert (after["host"], after["port"], after["state"]) == ("127.0.0.1", 7612, "paired")
        found = alice.json("search", "nums")
        assert [m["node"]["name"] for m in found["matches"]] == ["bob"] and not found["errors"]
    finally:
        alice.stop()
        bob.stop()


def test_pairing_by_name_refuses_another_node_at_that_address(make_node, tmp_path):
    """What the peer list says about where a named node is may be stale or spoofed: the node
    answering there must be the one chosen."""
    import asyncio

    bob = make_node("bob", pair=False)
    other = NodeIdentity.load_or_create(tmp_path / "other").node_id
    host, port = bob.address.rsplit(":", 1)

    async def ask(expect: str) -> Any:
        t = Trust(tmp_path / "alice", "alice")
        t.peer_port = 9
        try:
            return await t.start_pairing(host, int(port), expect=expect)
        finally:
            await t.close()

    with pytest.raises(trust_mod.PairingError, match="another node"):
        asyncio.run(ask(other))
    assert not bob.client.pairings()  # no code was ever shown at bob
    assert asyncio.run(ask(bob.node_id)).node_id == bob.node_id
