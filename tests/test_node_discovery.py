"""Nodes find each other over real mDNS on the loopback, and a name proves nothing."""

from __future__ import annotations

import shutil

from node.localnet import LocalNode
from tests.conftest import wait_until

LOOPBACK_MDNS = ("--mdns-interface", "127.0.0.1")


def _peers(node):
    return {p["name"]: p for p in node.client.peers()}


def test_nodes_appear_change_and_leave(tmp_path):
    alice = LocalNode("alice", tmp_path / "alice", extra_args=LOOPBACK_MDNS).start()
    bob = LocalNode("bob", tmp_path / "bob", extra_args=LOOPBACK_MDNS).start()
    try:
        seen = wait_until(lambda: _peers(alice).get("bob"), 20, "alice to see bob over mDNS")
        assert seen["node_id"] == bob.node_id and seen["source"] == "mdns"
        assert seen["state"] == "seen" and seen["port"] == int(bob.peer_url.rsplit(":", 1)[1])
        wait_until(lambda: _peers(bob).get("alice"), 20, "bob to see alice")

        # a catalog change is announced (catalog version bump in the TXT record)
        csv = tmp_path / "x.csv"
        csv.write_text("a\n1\n2\n")
        bob.client.publish(csv, tags=["x"])
        wait_until(lambda: _peers(alice)["bob"]["catalog_version"] >= 1, 20,
                   "alice to see bob's catalog version change")

        # a clean stop says goodbye: bob goes offline at alice
        bob.stop()
        wait_until(lambda: not _peers(alice)["bob"]["online"], 20, "bob's goodbye")
    finally:
        alice.stop()
        bob.stop()


def test_a_new_key_under_a_paired_name_is_another_node(tmp_path):
    alice = LocalNode("alice", tmp_path / "alice", extra_args=LOOPBACK_MDNS).start()
    bob = LocalNode("bob", tmp_path / "bob", extra_args=LOOPBACK_MDNS).start()
    impostor = None
    try:
        wait_until(lambda: _peers(alice).get("bob"), 20, "alice to see bob")
        alice.pair_with(bob)
        bob.stop()
        # "bob" is reinstalled: same name, a new key
        shutil.rmtree(tmp_path / "bob")
        impostor = LocalNode("bob", tmp_path / "bob", extra_args=LOOPBACK_MDNS).start()
        assert impostor.node_id != bob.node_id

        def both():
            rows = [p for p in alice.client.peers() if p["name"] == "bob"]
            return rows if len(rows) == 2 else None

        rows = {p["node_id"]: p for p in wait_until(both, 20, "the new bob to appear")}
        assert rows[bob.node_id]["state"] == "paired"
        assert rows[impostor.node_id]["state"] == "seen"
        assert "different key" in rows[impostor.node_id]["name_clash"]
    finally:
        alice.stop()
        if impostor:
            impostor.stop()
