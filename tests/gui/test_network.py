"""The Network view against real nodes: pairing through both owners' dialogs, search, unpair."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt

from gui.identicon import short_fingerprint
from gui.network_view import NetworkView
from tests.test_jobs import write_csv

WAIT_MS = 30_000


def _view(keep, conn) -> NetworkView:  # noqa: ANN001
    view = keep(NetworkView(conn))
    view.resize(900, 640)
    return view


def test_two_owners_pair_through_their_dialogs(make_node, connect, keep, qtbot, monkeypatch):
    alice = make_node("alice", pair=False)
    bob = make_node("bob", pair=False)
    alice_view, bob_view = _view(keep, connect(alice)), _view(keep, connect(bob))
    qtbot.waitUntil(lambda: bob_view.empty_label.isVisibleTo(bob_view), timeout=WAIT_MS)

    # alice adds bob by address (no multicast in tests) and asks to pair
    monkeypatch.setattr(NetworkView, "ask_address", classmethod(lambda cls, _p: bob.address))
    with qtbot.waitSignal(alice_view.sig_pairing_opened, timeout=WAIT_MS) as opened:
        qtbot.mouseClick(alice_view.add_button, Qt.MouseButton.LeftButton)
    alice_dialog = opened.args[0]
    code = alice_dialog.code
    assert len(code) == 6 and code.isdigit()
    assert alice_dialog.code_label.text().replace(" ", "") == code
    assert alice_dialog.peer_fingerprint_label.text() == short_fingerprint(bob.node_id)

    # bob's view shows the request live (an event, no refresh) and opens the same pairing
    qtbot.waitUntil(lambda: bob_view.peer_text("alice", "Trust") == "asks to pair",
                    timeout=WAIT_MS)
    assert bob_view.select_peer("alice")
    assert bob_view.pair_button.text() == "Compare code…"
    with qtbot.waitSignal(bob_view.sig_pairing_opened, timeout=WAIT_MS) as opened:
        qtbot.mouseClick(bob_view.pair_button, Qt.MouseButton.LeftButton)
    bob_dialog = opened.args[0]
    assert bob_dialog.pairing_id == alice_dialog.pairing_id
    assert bob_dialog.code_label.text() == alice_dialog.code_label.text()  # the same code
    qtbot.waitUntil(lambda: bob_dialog.my_fingerprint_label.text() ==
                    short_fingerprint(bob.node_id), timeout=WAIT_MS)
    assert bob_dialog.peer_fingerprint_label.text() == short_fingerprint(alice.node_id)

    # bob confirms first: alice's dialog learns it live; one confirmation pairs nobody
    with qtbot.waitSignal(bob_dialog.sig_pairing_decided, timeout=WAIT_MS):
        qtbot.mouseClick(bob_dialog.confirm_button, Qt.MouseButton.LeftButton)
    assert "Waiting for the other owner" in bob_dialog.state_label.text()
    qtbot.waitUntil(lambda: alice_dialog.pairing.get("remote_confirmed") is True,
                    timeout=WAIT_MS)
    assert "confirmed" in alice_dialog.state_label.text()
    assert {p["state"] for p in bob.client.peers()} != {"paired"}

    qtbot.mouseClick(alice_dialog.confirm_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: alice_dialog.state == "paired" and bob_dialog.state == "paired",
                    timeout=WAIT_MS)
    assert bob_dialog.state_label.text().startswith("Paired with alice")
    qtbot.waitUntil(lambda: alice_view.peer_text("bob", "Trust") == "paired" and
                    bob_view.peer_text("alice", "Trust") == "paired", timeout=WAIT_MS)
    for node, other in ((alice, bob), (bob, alice)):
        (peer,) = node.client.peers()
        assert peer["state"] == "paired" and peer["node_id"] == other.node_id


def test_search_lists_peer_assets_and_unpair_asks_first(make_node, connect, keep, qtbot,
                                                        monkeypatch, tmp_path):
    alice, bob = make_node("alice"), make_node("bob")
    bob.client.publish(write_csv(tmp_path / "w.csv", np.ones((5, 3)), "a,b,c"), tags=["wages"],
                       name="bob wages")
    view = _view(keep, connect(alice))
    qtbot.waitUntil(lambda: view.peer_text("bob", "Trust") == "paired", timeout=WAIT_MS)

    view.search_edit.setText("wages")
    with qtbot.waitSignal(view.sig_search_finished, timeout=WAIT_MS):
        qtbot.mouseClick(view.search_button, Qt.MouseButton.LeftButton)
    rows = [[view.result_table.item(r, c).text() for c in range(view.result_table.columnCount())]
            for r in range(view.result_table.rowCount())]
    assert rows == [["bob", "bob wages", "dataset", "wages", "5 × 3"]]
    assert view.search_status.text().startswith("1 asset on 1 node")

    assert view.select_peer("bob")
    asked: list[str] = []
    monkeypatch.setattr(NetworkView, "ask_unpair",
                        classmethod(lambda cls, _p, name: asked.append(name) or True))
    qtbot.mouseClick(view.unpair_button, Qt.MouseButton.LeftButton)
    assert asked == ["bob"]  # the owner is asked before trust is withdrawn
    qtbot.waitUntil(lambda: view.peer_text("bob", "Trust") == "unpaired", timeout=WAIT_MS)
    assert alice.client.peers()[0]["state"] == "revoked"
    assert not view.unpair_button.isEnabled()
