"""Two link relays (node/links.py) with real TLS on the loopback, as two nodes' relays of one
job: what a party sends arrives whole at the other party, both ways at once, and a link that
one side ends is ended at the other, with the bytes counted at both relays."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from pathlib import Path

import pytest

from node.identity import NodeIdentity, cert_sha256
from node.links import LinkClient, LinkRelay
from tests.conftest import wait_until


def _pin(identity: NodeIdentity) -> tuple[str, str]:
    pem = Path(identity.cert_path).read_text()
    return cert_sha256(pem), pem


@pytest.fixture
def link(tmp_path):
    """(party A's socket, party B's socket, relay A, relay B): one gloo-like link between
    rank 0 and rank 1 through both relays."""
    a = NodeIdentity.load_or_create(tmp_path / "a")
    b = NodeIdentity.load_or_create(tmp_path / "b")
    relay_a = LinkRelay(a, "job-links", 0, {1: _pin(b)}, "127.0.0.1").start()
    relay_b = LinkRelay(b, "job-links", 1, {0: _pin(a)}, "127.0.0.1").start()
    device = socket.create_server((relay_b.local, 0))  # party B's gloo device
    control_b = LinkClient(relay_b.low, relay_b.control_port, relay_b.token)
    control_b.ask(op="device", port=device.getsockname()[1])
    control_a = LinkClient(relay_a.low, relay_a.control_port, relay_a.token)
    answer = control_a.ask(op="link", rank=1, port=device.getsockname()[1],
                           relay=f"127.0.0.1:{relay_b.tls_port}")
    assert answer["host"] == relay_a.low  # A dials its own relay, never B's machine
    party_a = socket.create_connection((answer["host"], answer["port"]), timeout=30)
    device.settimeout(30)
    party_b, _ = device.accept()
    party_b.settimeout(30)
    yield party_a, party_b, relay_a, relay_b
    for sock in (party_a, party_b, device):
        sock.close()
    for client in (control_a, control_b):
        client.close()
    relay_a.close(0.1)
    relay_b.close(0.1)


def _send_and_receive(sock: socket.socket, payload: bytes, size: int) -> bytes:
    """Send ``payload`` while receiving ``size`` bytes (both at once, as MPC parties do)."""
    sender = threading.Thread(target=sock.sendall, args=(payload,))
    sender.start()
    got = bytearray()
    while len(got) < size:
        chunk = sock.recv(1 << 20)
        assert chunk, f"the link ended after {len(got)} of {size} bytes"
        got += chunk
    sender.join(30)
    return bytes(got)


def test_a_link_carries_both_ways_at_once_whole_and_counted(link):
    party_a, party_b, relay_a, relay_b = link
    size = 12 << 20  # more than the pump buffers before it stops reading a side
    from_a, from_b = os.urandom(size), os.urandom(size)
    results: dict[str, bytes] = {}
    at_b = threading.Thread(target=lambda: results.update(b=_send_and_receive(party_b, from_b,
                                                                                size)))
    at_b.start()
    results["a"] = _send_and_receive(party_a, from_a, size)
    at_b.join(60)
    assert hashlib.sha256(results["a"]).digest() == hashlib.sha256(from_b).digest()
    assert hashlib.sha256(results["b"]).digest() == hashlib.sha256(from_a).digest()
    # party A ends the link: party B sees its end, and both relays count every byte
    party_a.shutdown(socket.SHUT_WR)
    assert party_b.recv(1) == b""
    party_a.close()
    party_b.close()

    def counted() -> bool:
        return (relay_a.bytes_sent, relay_a.bytes_received,
                relay_b.bytes_sent, relay_b.bytes_received) == (size, size, size, size)

    wait_until(counted, 10, "both relays to count the link's bytes")
    # on the wire between the nodes: the same bytes inside TLS records (a little more)
    assert size < relay_a.wire_sent < size * 1.02
    assert size < relay_b.wire_sent < size * 1.02


def test_a_party_ending_its_link_ends_it_at_the_other_party(link):
    party_a, party_b, _, _ = link
    party_b.sendall(b"last words")
    party_b.close()
    got = bytearray()
    while chunk := party_a.recv(4096):
        got += chunk
    assert bytes(got) == b"last words"
