"""``parley gui``: the desktop window onto this machine's node.

The GUI is a client: it attaches to the node of its data dir, or starts one as a detached
process, and closing the window never stops the node or its jobs. Where the desktop has a
system tray, Parley stays there (Show / Quit); Quit asks whether to stop the node too.

::

    main(argv)                -> attach or start the node, show MainWindow, run Qt
    start_node_process(dir)   -> the one way the GUI starts a node (also the banner's button)
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QSettings, QTimer
from PySide6.QtWidgets import QApplication, QMenu, QSystemTrayIcon

from gui.client import NodeConnection, read_node_info
from gui.style import app_icon
from node.errors import ParleyError
from node.paths import data_dir as resolve_data_dir

logger = logging.getLogger(__name__)

__all__ = ["TrayController", "main", "node_alive", "start_node_process"]

ORGANIZATION = "Parley"
APP_NAME = "Parley"


def start_node_process(data_dir: str | Path) -> subprocess.Popen[bytes]:
    """Start ``parley node`` for ``data_dir`` in its own session, so that it outlives this
    window (and a Ctrl+C in the terminal that started the GUI); its output goes to node.log."""
    path = Path(data_dir)
    path.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "node.cli", "node", "--data-dir", str(path)]
    with open(path / "node.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    logger.info("started a node for %s (pid %d)", path, proc.pid)
    return proc


def node_alive(data_dir: Path) -> bool:
    """Whether node.json names a process that still exists (a stale file after a crash does
    not count)."""
    info = read_node_info(data_dir)
    if info is None:
        return False
    try:
        os.kill(int(info.get("pid", -1)), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


class TrayController(QObject):
    """The tray icon (where the desktop has one): Show, Quit, and notifications."""

    def __init__(self, window: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.window = window
        self.tray: QSystemTrayIcon | None = None
        if not QSystemTrayIcon.isSystemTrayAvailable():
            return
        self.tray = QSystemTrayIcon(app_icon(), self)
        self.tray.setToolTip("Parley: the node keeps running while this window is closed")
        menu = QMenu()
        menu.addAction("Show Parley", self._on_show_requested)
        menu.addSeparator()
        menu.addAction("Quit…", window.quit_app)
        self._menu = menu  # the tray does not own its menu
        self.tray.setContextMenu(menu)
        self.tray.activated.connect(self._on_activated)
        self.tray.show()

    @property
    def available(self) -> bool:
        return self.tray is not None

    def notify(self, title: str, text: str) -> None:
        """A desktop notification from the tray (nothing where there is no tray: the window's
        sidebar badge says it there)."""
        if self.tray is not None:
            self.tray.showMessage(title, text, app_icon(), 8000)

    def _on_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (QSystemTrayIcon.ActivationReason.Trigger,
                      QSystemTrayIcon.ActivationReason.DoubleClick):
            self._on_show_requested()

    def _on_show_requested(self) -> None:
        self.window.showNormal()
        self.window.raise_()
        self.window.activateWindow()


def main(argv: list[str] | None = None) -> int:
    """Run the desktop app until it quits; the node keeps running unless the owner stopped it."""
    parser = argparse.ArgumentParser(prog="parley gui", description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", help="the node's data directory (default: "
                        "$PARLEY_DATA_DIR or the user data dir)")
    args = parser.parse_args(argv)
    data_dir = resolve_data_dir(args.data_dir)

    from gui.main_window import MainWindow  # after argparse: --help needs no display

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setWindowIcon(app_icon())

    conn = NodeConnection(data_dir)
    window = MainWindow(conn, settings=QSettings())
    tray = TrayController(window)
    window.keep_running_in_tray = tray.available
    app.setQuitOnLastWindowClosed(not tray.available)
    window.sig_notification_raised.connect(tray.notify)
    app.aboutToQuit.connect(conn.close)
    window.show()
    if not node_alive(data_dir):
        window.start_node()  # the banner says "Starting the node…" until it answers
    else:
        window.attach()
    # Qt's loop does not see Python's signals; wake it so Ctrl+C in a terminal quits
    signal.signal(signal.SIGINT, lambda *_: app.quit())
    wake = QTimer(interval=500)
    wake.timeout.connect(lambda: None)
    wake.start()
    try:
        return app.exec()
    except ParleyError as exc:  # pragma: no cover - a last resort, never a traceback
        print(f"parley gui: {exc.message}", file=sys.stderr)
        return 1
