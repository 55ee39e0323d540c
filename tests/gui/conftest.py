"""GUI fixtures: the real Qt app (offscreen, pytest-qt) against real ``parley node`` processes.

``make_node`` (tests/conftest.py) starts the nodes; ``connect`` gives a ``NodeConnection`` to one
of them that is closed at teardown, and the teardown fails if a thread was left running.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
import shiboken6
from PySide6.QtCore import QEvent
from PySide6.QtWidgets import QApplication, QWidget

from gui.client import NodeConnection
from gui.main_window import MainWindow
from node.localnet import LocalNode

W = TypeVar("W", bound=QWidget)


@pytest.fixture
def connect(qtbot) -> Iterator[Callable[[LocalNode], NodeConnection]]:
    made: list[NodeConnection] = []
    before = {t.ident for t in threading.enumerate()}

    def make(node: LocalNode, follow: bool = True) -> NodeConnection:
        conn = NodeConnection(node.data_dir)
        made.append(conn)
        if follow:
            conn.start()
        return conn

    yield make
    for conn in made:
        conn.close()
    left = [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()
            and t.name.startswith("parley-")]
    assert not left, f"threads left running: {left}"



def _dispose(widget: QWidget) -> None:
    """Close and delete a widget now, so that no timer of it fires into a closed connection."""
    widget.close()
    widget.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


@pytest.fixture
def dispose() -> Callable[[QWidget], None]:
    """``dispose(widget)``: close and delete it now (call before its connection closes)."""
    return _dispose


@pytest.fixture
def make_window(qtbot, connect) -> Iterator[Callable[[LocalNode], MainWindow]]:
    """Build the main window against a real node (its connection from ``connect``), shown
    offscreen; every window is closed and deleted at teardown, before its connection."""
    made: list[MainWindow] = []

    def make(node: LocalNode) -> MainWindow:
        window = MainWindow(connect(node))
        made.append(window)
        window.show()
        window.attach()
        return window

    yield make
    for window in made:
        _dispose(window)


@pytest.fixture
def keep(connect, dispose) -> Iterator[Callable[[W], W]]:  # noqa: ANN001
    """``keep(widget)``: the widget is shown, and deleted (with the dialogs it opened) at
    teardown before the connections close, so no timer of it calls a closed connection."""
    made: list[QWidget] = []

    def add(widget: W) -> W:
        made.append(widget)
        widget.show()
        return widget

    yield add
    for widget in reversed(made):
        if shiboken6.isValid(widget):
            dispose(widget)
