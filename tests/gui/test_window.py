"""The main window against real nodes: the status bar, the unreachable-node banner, the inbox
badge, errors in words, and quitting with the node stopped."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web
from PySide6.QtWidgets import QApplication

from gui.client import read_node_info
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


class Gate:
    """A reverse proxy in front of a node's admin API, on a loop of its own: it holds back the
    answer of a call whose query says ``late``, and can stop taking connections, as a node
    that stops with that answer still on its way."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.arrived = threading.Event()  # the late call reached the node
        self.loop = asyncio.new_event_loop()
        self._release: asyncio.Event | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.url = self._do(self._start())

    def _do(self, coro):  # noqa: ANN001, ANN202
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _start(self) -> str:
        self._release = asyncio.Event()
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, shutdown_timeout=1)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await self._site.start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def _forward(self, request: web.Request) -> web.Response:
        try:
            async with self._session.request(
                    request.method, self.target + request.path_qs, data=await request.read(),
                    headers={"Authorization": request.headers.get("Authorization", ""),
                             "Content-Type": request.headers.get("Content-Type", "")}) as resp:
                body, status = await resp.read(), resp.status
        except aiohttp.ClientError:  # the gate is closing (the event stream's long poll)
            raise web.HTTPBadGateway() from None
        if "late" in request.query:
            self.arrived.set()
            await self._release.wait()
        answer = web.Response(body=body, status=status, content_type="application/json")
        answer.force_close()  # no kept-alive connection outlives the listener
        return answer

    def stop_listening(self) -> None:
        self._do(self._site.stop())

    def release(self) -> None:
        self.loop.call_soon_threadsafe(self._release.set)

    def close(self) -> None:
        async def close() -> None:
            await self._runner.cleanup()
            await self._session.close()
        self._do(close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def test_an_answer_on_its_way_when_the_node_stopped_does_not_hide_the_banner(
        make_node, make_window, qtbot, tmp_path):
    """The banner follows the newest call: a status answer sent before the node stopped, and
    delivered after the window saw it stop, is old news (it hid the banner for good)."""
    node = make_node("alice", auto_approve=False, pair=False)
    info = read_node_info(node.data_dir)
    assert info is not None
    gate = Gate(info["admin_url"])
    try:
        seen = tmp_path / "seen"  # the data dir the window watches: node.json points at the gate
        seen.mkdir()
        (seen / "node.json").write_text(json.dumps({**info, "admin_url": gate.url}))
        window = make_window(SimpleNamespace(data_dir=seen))
        labels = window.status_labels
        qtbot.waitUntil(lambda: labels["name"].text() == "alice", timeout=WAIT_MS)

        late = []
        window.conn.get("/status?late=1", timeout=120).then(
            lambda status: (late.append(status), window._on_status_loaded(status)))
        assert gate.arrived.wait(WAIT_MS / 1000)
        gate.stop_listening()  # the node "stops" with that answer on its way
        qtbot.waitUntil(window.banner.isVisible, timeout=WAIT_MS)
        assert not labels["name"].isEnabled()
        gate.release()
        qtbot.waitUntil(lambda: bool(late), timeout=WAIT_MS)
        qtbot.wait(500)  # anything the answer set off has run
        assert window.banner.isVisible() and "not answering" in window.banner_label.text()
        assert not labels["name"].isEnabled()
        assert window.conn.connected is False
    finally:
        gate.close()


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
