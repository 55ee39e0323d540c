"""Nodes find each other over real mDNS on the loopback, and a name proves nothing."""

from __future__ import annotations

import asyncio
import io
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from discovery import Browser, Publisher, listening_addresses, make_zeroconf
from node.client import results
from node.localnet import LocalNode, all_party_processes
from tests.conftest import JOB_TIMEOUT, wait_until
from tests.test_jobs import spec, write_csv

LOOPBACK_MDNS = ("--mdns-interface", "127.0.0.1")
SUM = "def run(crypten):\n    return crypten.load('nums', 1).sum().get_plain_text(dst=0)\n"


def _peers(node):
    """The node's peer list by node id: names are not unique (other test runs on this
    machine announce their own alice and bob over the same mDNS)."""
    return {p["node_id"]: p for p in node.client.peers()}


@pytest.mark.real
def test_nodes_appear_change_and_leave(tmp_path):
    alice = LocalNode("alice", tmp_path / "alice", extra_args=LOOPBACK_MDNS).start()
    bob = LocalNode("bob", tmp_path / "bob", extra_args=LOOPBACK_MDNS).start()
    try:
        seen = wait_until(lambda: _peers(alice).get(bob.node_id), 20,
                          "alice to see bob over mDNS")
        assert seen["name"] == "bob" and seen["source"] == "mdns"
        assert seen["state"] == "seen" and seen["port"] == int(bob.peer_url.rsplit(":", 1)[1])
        wait_until(lambda: _peers(bob).get(alice.node_id), 20, "bob to see alice")

        # a catalog change is announced (catalog version bump in the TXT record)
        csv = tmp_path / "x.csv"
        csv.write_text("a\n1\n2\n")
        bob.client.publish(csv, tags=["x"])
        wait_until(lambda: _peers(alice)[bob.node_id]["catalog_version"] >= 1, 20,
                   "alice to see bob's catalog version change")

        # a clean stop says goodbye: bob goes offline at alice
        bob.stop()
        wait_until(lambda: not _peers(alice)[bob.node_id]["online"], 20, "bob's goodbye")
    finally:
        alice.stop()
        bob.stop()


@pytest.mark.real
def test_a_new_key_under_a_paired_name_is_another_node(tmp_path):
    alice = LocalNode("alice", tmp_path / "alice", extra_args=LOOPBACK_MDNS).start()
    bob = LocalNode("bob", tmp_path / "bob", extra_args=LOOPBACK_MDNS).start()
    impostor = None
    try:
        wait_until(lambda: _peers(alice).get(bob.node_id), 20, "alice to see bob")
        alice.pair_with(bob)
        bob.stop()
        # "bob" is reinstalled: same name, a new key
        shutil.rmtree(tmp_path / "bob")
        impostor = LocalNode("bob", tmp_path / "bob", extra_args=LOOPBACK_MDNS).start()
        assert impostor.node_id != bob.node_id

        def both():
            rows = [p for p in alice.client.peers() if p["name"] == "bob"
                    and p["node_id"] in (bob.node_id, impostor.node_id)]
            return rows if len(rows) == 2 else None

        rows = {p["node_id"]: p for p in wait_until(both, 20, "the new bob to appear")}
        assert rows[bob.node_id]["state"] == "paired"
        assert rows[impostor.node_id]["state"] == "seen"
        assert "different key" in rows[impostor.node_id]["name_clash"]
    finally:
        alice.stop()
        if impostor:
            impostor.stop()


# -- what mDNS says about a paired peer is a hint ---------------------------------------------
@pytest.fixture
def mdns_nodes(tmp_path: Path) -> Iterator[Callable[..., LocalNode]]:
    """Real nodes with mDNS on the loopback; stopped at teardown, no party left behind."""
    started: list[LocalNode] = []

    def make(name: str) -> LocalNode:
        node = LocalNode(name, tmp_path / name, auto_approve=True,
                         extra_args=(*LOOPBACK_MDNS, "--min-rows", "1"))  # jobs on 3 rows
        started.append(node)
        return node.start()

    yield make
    # this test's parties only: other test runs on the machine have their own
    mine = {pid for node in started if node.proc is not None and node.proc.poll() is None
            for pid in all_party_processes(parent=node.pid)}
    for node in started:
        node.stop()
    wait_until(lambda: not mine & set(all_party_processes()), 15,
               "every party process to end (none may be left behind)")


async def _publish_until(node_id: str, name: str, port: int, until: Callable[[], object]) -> None:
    """Announce ``node_id`` under ``name`` at 127.0.0.1:``port`` (as anyone on the link can)
    until ``until()`` is true (polled in a thread); then withdraw it."""
    aiozc = make_zeroconf(["127.0.0.1"])
    publisher = Publisher(aiozc, node_id=node_id, name=name, port=port,
                          addresses=["127.0.0.1"])
    try:
        await publisher.start()
        await asyncio.to_thread(until)
    finally:
        await publisher.close()
        await aiozc.async_close()


def _port(node: LocalNode) -> int:
    return int(node.peer_url.rsplit(":", 1)[1])


def _row(node: LocalNode, node_id: str) -> dict:
    (row,) = [p for p in node.client.peers() if p["node_id"] == node_id]
    return row


@pytest.mark.real
def test_an_mdns_spoof_cannot_move_a_paired_peer_but_a_real_move_is_followed(mdns_nodes,
                                                                            tmp_path):
    alice, bob, mallory = mdns_nodes("alice"), mdns_nodes("bob"), mdns_nodes("mallory")
    wait_until(lambda: bob.node_id in _peers(alice), 20, "alice to see bob over mDNS")
    alice.pair_with(bob)
    bob.client.publish(write_csv(tmp_path / "b.csv", np.arange(12.0).reshape(3, 4)),
                       tags=["nums"])
    home = (bob.node_id, "bob", "127.0.0.1", _port(bob), "paired")

    # bob's node id announced under another name, at mallory's port: something answers there,
    # with another certificate
    log = alice.data_dir / "node.log"
    spoofed_at = f"at 127.0.0.1:{_port(mallory)}, but nothing there proved"
    asyncio.run(_publish_until(bob.node_id, "mallory", _port(mallory), lambda: wait_until(
        lambda: spoofed_at in log.read_text(), 30, "alice to check the spoofed address")))
    row = _row(alice, bob.node_id)
    assert (row["node_id"], row["name"], row["host"], row["port"], row["state"]) == home
    assert not [p for p in alice.client.peers()
                if p["name"] == "mallory" and p["state"] == "paired"]
    found = alice.client.search(["nums"])
    assert [m["node"]["name"] for m in found["matches"]] == ["bob"] and not found["errors"]
    job = alice.client.submit(spec([alice, bob], SUM, [("nums", 1, "dataset")]))
    done = alice.client.wait(job["id"], timeout=JOB_TIMEOUT)
    assert done["state"] == "succeeded", done["reason"]
    assert results(done)[0] == pytest.approx(66.0, abs=1e-2)

    # a genuine move: bob restarts on another port; alice follows once TLS pinned to bob's
    # certificate reached it there
    old_port = _port(bob)
    bob.stop()
    bob.peer_url = ""  # a new free port
    bob.start()
    assert _port(bob) != old_port
    moved = wait_until(lambda: _row(alice, bob.node_id)["port"] == _port(bob)
                       and _row(alice, bob.node_id), 30, "alice to follow bob's move")
    assert (moved["name"], moved["host"], moved["state"], moved["online"]) == \
        ("bob", "127.0.0.1", "paired", True)
    found = alice.client.search(["nums"])
    assert [m["node"]["name"] for m in found["matches"]] == ["bob"] and not found["errors"]
    assert [e["fields"]["address"] for e in alice.client.audit()["entries"]
            if e["fields"].get("event") == "moved"] == [f"127.0.0.1:{_port(bob)}"]


@pytest.mark.real
def test_a_node_bound_to_one_address_announces_that_address_alone(tmp_path, monkeypatch):
    """``--host 127.0.0.1`` without ``--mdns-interface``: mDNS runs on 127.0.0.1 and announces
    it, never the LAN address where nothing listens. (zeroconf is forced onto the loopback
    here whatever the node asks for; the test checks what it asked.)"""
    from discovery import interfaces
    from node.server import NodeServer

    real = interfaces.make_zeroconf
    asked: list[object] = []

    def loopback_only(chosen=None):
        asked.append(chosen)
        return real(["127.0.0.1"])

    monkeypatch.setattr(interfaces, "make_zeroconf", loopback_only)

    (tmp_path / "bob").mkdir()

    async def main() -> tuple[str, tuple[str, ...], list[str]]:
        server = NodeServer(tmp_path / "bob", "bob", host="127.0.0.1", mdns=True,
                            mdns_interfaces=None)
        await server.start()
        aiozc = real(["127.0.0.1"])
        browser = Browser(aiozc)
        try:
            await browser.start()
            node_id = server.node.node_id
            for _ in range(400):
                if node_id in browser.peers:
                    break
                await asyncio.sleep(0.05)
            record = browser.peers.get(node_id)
            return node_id, record.addresses if record else (), server._publisher.addresses
        finally:
            await browser.close()
            await aiozc.async_close()
            await server.stop()

    async def bounded() -> tuple[str, tuple[str, ...], list[str]]:
        # it hung once until pytest's 300 s under another test run, and threads' stacks do
        # not say which await: after 120 s every task's stack is shown
        task = asyncio.ensure_future(main())
        if not (await asyncio.wait({task}, timeout=120))[0]:
            stacks = io.StringIO()
            for each in asyncio.all_tasks():
                each.print_stack(file=stacks)
            pytest.fail(f"the node and browser did not finish in 120 s:\n{stacks.getvalue()}")
        return task.result()

    _, announced, published = asyncio.run(bounded())
    assert asked == [["127.0.0.1"]]
    assert published == ["127.0.0.1"]
    assert announced == ("127.0.0.1",)


def test_which_addresses_a_host_listens_on():
    assert listening_addresses("127.0.0.1") == ["127.0.0.1"]
    assert listening_addresses("10.2.0.7") == ["10.2.0.7"]
    assert listening_addresses("localhost") == ["127.0.0.1"]
    for every in ("0.0.0.0", "", "::"):
        assert listening_addresses(every) is None
    assert listening_addresses("::1") == []
