"""The main window against real nodes: the status bar, the unreachable-node banner, the inbox
badge, errors in words, and quitting with the node stopped."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from PySide6.QtWidgets import QApplication

from gui.confirm_dialog import ConfirmDialog
from gui.identicon import short_fingerprint

pytestmark = pytest.mark.real  # every test here starts real processes

WAIT_MS = 30_000


def test_status_bar_shows_the_node_and_the_banner_follows_it(make_node, make_window, qtbot):
    node = make_node("alice", auto_approve=False, pair=False)
    window = make_window(node)
    labels = window.status_labels
    qtbot.waitUntil(lambda: labels["name"].text() == "alice", timeout=WAIT_MS)
    assert labels["fingerprint"].text() == short_fingerprint(node.node_id, groups=2)
    assert labels["address"].text().endswith(node.address.rsplit(":", 1)[1])
    assert labels["jail"].text() in ("jail: full", "jail: reduced")
    assert labels["peers"].text() == "0 paired peers"
    # the node's one warm worker (tests/conftest.py) fills without an event: the bar follows
    qtbot.waitUntil(lambda: labels["workers"].text() == "warm workers: 1/1", timeout=WAIT_MS)
    assert "ready ahead of jobs" in labels["workers"].toolTip()
    assert window.windowTitle() == "Parley: alice"
    assert not window.banner.isVisible()

    node.stop()
    qtbot.waitUntil(window.banner.isVisible, timeout=WAIT_MS)
    assert "not answering" in window.banner_label.text()
    assert window.start_button.isVisible()
    assert not labels["name"].isEnabled()  # greyed: the last word, not the current one
    window.show_view("network")  # the window still answers while the node is away
    assert window.current_view_name() == "network"

    node.start()
    qtbot.waitUntil(lambda: not window.banner.isVisible(), timeout=WAIT_MS)
    qtbot.waitUntil(labels["name"].isEnabled, timeout=WAIT_MS)
    assert labels["name"].text() == "alice"


def test_views_switch_by_name_and_errors_show_in_words(make_node, make_window, qtbot):
    node = make_node("alice", auto_approve=False, pair=False)
    window = make_window(node)
    assert list(window.views) == ["assets", "network", "inbox", "compose", "jobs", "audit",
                                  "settings"]
    for name in window.views:
        assert window.show_view(name) is window.stack.currentWidget()
        assert window.current_view_name() == name

    window.conn.delete("/assets/a-000000000000").then()  # no handler: the window shows it
    qtbot.waitUntil(lambda: "no asset" in window.statusBar().currentMessage(), timeout=WAIT_MS)
    assert "Traceback" not in window.statusBar().currentMessage()


def test_inbox_badge_and_notification_when_a_pairing_request_arrives(make_node, make_window,
                                                                     qtbot):
    alice = make_node("alice", auto_approve=False, pair=False)
    bob = make_node("bob", auto_approve=False, pair=False)
    window = make_window(alice)
    inbox_item = window.sidebar.item(2)
    assert inbox_item.text() == "Inbox"

    with qtbot.waitSignal(window.sig_notification_raised, timeout=WAIT_MS) as raised:
        bob.client.pair(alice.address)
    assert "Inbox" in raised.args[1]
    qtbot.waitUntil(lambda: inbox_item.text() == "Inbox (1)", timeout=WAIT_MS)


def test_quit_and_stop_the_node(make_node, make_window, qtbot, monkeypatch):
    node = make_node("alice", auto_approve=False, pair=False)
    window = make_window(node)
    qtbot.waitUntil(lambda: window.status_labels["name"].text() == "alice", timeout=WAIT_MS)
    quits: list[bool] = []
    monkeypatch.setattr(QApplication, "quit", staticmethod(lambda: quits.append(True)))

    monkeypatch.setattr(ConfirmDialog, "ask", classmethod(lambda cls, *a: None))
    window.quit_app()  # cancelled: nothing happens
    assert not quits and node.proc.poll() is None

    monkeypatch.setattr(ConfirmDialog, "ask", classmethod(lambda cls, *a: "stop"))
    window.quit_app()
    qtbot.waitUntil(lambda: bool(quits), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: node.proc.poll() is not None, timeout=WAIT_MS)


@pytest.mark.parametrize("tray", [False, True])
def test_closing_the_window_leaves_the_node_running(make_node, make_window, qtbot, tray):
    node = make_node("alice", auto_approve=False, pair=False)
    window = make_window(node)
    window.keep_running_in_tray = tray
    notes: list[tuple[str, str]] = []
    window.sig_notification_raised.connect(lambda title, text: notes.append((title, text)))
    assert window.close() is (not tray)  # with a tray the window only hides
    assert not window.isVisible()
    assert bool(notes) is tray  # the tray says the node goes on
    assert node.client.status()["name"] == "alice" and node.proc.poll() is None


def test_start_the_node_from_the_banner(make_window, qtbot, tmp_path, monkeypatch):
    """No node runs for the data dir: the banner offers to start one, which the window waits
    for without freezing, then follows; the node outlives the window."""
    import gui.main_window
    from gui import app

    started: list = []

    def start(data_dir):
        proc = app.start_node_process(data_dir)
        started.append(proc)
        return proc

    monkeypatch.setattr(gui.main_window, "start_node_process", start)
    data_dir = tmp_path / "carol"
    window = make_window(SimpleNamespace(data_dir=data_dir))
    try:
        qtbot.waitUntil(window.start_button.isVisible, timeout=WAIT_MS)
        assert "not answering" in window.banner_label.text()
        window.start_button.click()
        assert "Starting the node" in window.banner_label.text()
        assert not window.start_button.isVisible()
        qtbot.waitUntil(lambda: not window.banner.isVisible(), timeout=90_000)
        qtbot.waitUntil(lambda: window.status_labels["name"].text() == "carol",
                        timeout=WAIT_MS)
        [proc] = started
        assert proc.poll() is None and (data_dir / "node.log").exists()
        assert os.getsid(proc.pid) == proc.pid  # its own session: it outlives the GUI
    finally:
        for proc in started:
            proc.terminate()
            proc.wait(15)
