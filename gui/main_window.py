"""The main window: a sidebar of views, the node's vital signs in the status bar, and a banner
when the node does not answer (with a button that starts it).

Everything shown comes from the node through ``NodeConnection``; the status bar reloads on the
events that change it (peers, pairings, job states), never on a timer. The window never waits
on the node: an unreachable node is a banner, not a frozen window.
"""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from gui.about_dialog import AboutDialog
from gui.app import start_node_process
from gui.assets_view import AssetsView
from gui.audit_view import AuditView
from gui.client import NodeConnection, read_node_info
from gui.compose_view import ComposeView
from gui.confirm_dialog import ConfirmDialog
from gui.identicon import identicon_pixmap, short_fingerprint
from gui.inbox_view import InboxView
from gui.jobs_view import JobsView
from gui.network_view import NetworkView
from gui.settings_view import SettingsView, isolation_summary
from gui.style import ERROR, OK, WARNING, app_icon, icon
from node.errors import NodeUnreachable, ParleyError

logger = logging.getLogger(__name__)

__all__ = ["VIEWS", "MainWindow"]

VIEWS: list[tuple[str, str, str]] = [
    # (name for show_view, sidebar label, icon)
    ("assets", "My assets", "assets"),
    ("network", "Network", "network"),
    ("inbox", "Inbox", "inbox"),
    ("compose", "Compose", "compose"),
    ("jobs", "Jobs", "jobs"),
    ("audit", "Audit", "audit"),
    ("settings", "Settings", "settings"),
]
STATUS_EVENTS = ("peer.", "pairing.", "job.state")
NODE_START_TIMEOUT_S = 90.0


POOL_REFRESH_MS = 2000


def worker_summary(pool: dict[str, Any] | None) -> str:
    """The status bar's short word on the pool of warm party workers."""
    if not pool:
        return "workers: ?"
    if not pool.get("size"):
        return "warm workers: off"
    return f"warm workers: {pool.get('ready', 0)}/{pool['size']}"


def worker_details(status: dict[str, Any]) -> str:
    pool = status.get("warm_workers") or {}
    parties = status.get("parties") or {}
    lines = []
    if pool.get("size"):
        lines.append(f"{pool.get('ready', 0)} of {pool['size']} party processes ready ahead of "
                     f"jobs ({pool.get('memory_bytes', 0) / 2**20:.0f} MB); a job takes one "
                     f"and it serves that job only")
        if pool.get("starting"):
            held = (f", {pool['held']} of them waiting for the running job to end"
                    if pool.get("held") else "")
            lines.append(f"{pool['starting']} starting{held}")
        if pool.get("paused"):
            lines.append(f"refill paused: {pool['paused']}")
    else:
        lines.append("No warm workers (parley node --warm-workers 0): each job starts its "
                     "party process cold, about 2 s later")
    if parties:
        lines.append(f"This node computes in at most {parties.get('max')} jobs at once; "
                     f"{parties.get('queued', 0)} waiting")
    return "\n".join(lines)


class MainWindow(QMainWindow):
    """Parley's window onto one node (the node of ``conn.data_dir``)."""

    sig_notification_raised = Signal(str, str)
    """Something needs the owner (title, text): the tray shows it as a notification."""
    sig_status_loaded = Signal(dict)
    """The node's status was reloaded (the status bar shows it)."""

    def __init__(self, conn: NodeConnection, settings: QSettings | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.conn = conn
        self.settings = settings
        self.status: dict[str, Any] = {}
        self.keep_running_in_tray = False
        self._following = False
        self._pending = 0
        self._told_tray = False
        self._node_proc: subprocess.Popen[bytes] | None = None
        self._start_deadline = 0.0
        self._start_probe_busy = False
        self.setWindowTitle("Parley")
        self.setWindowIcon(app_icon())
        self.setAcceptDrops(True)

        # -- sidebar and views
        self.sidebar = QListWidget()
        self.sidebar.setIconSize(QSize(22, 22))
        self.sidebar.setSpacing(2)
        self.sidebar.setFrameShape(QFrame.Shape.NoFrame)
        self.sidebar.setAccessibleName("Views")
        self.stack = QStackedWidget()
        self.views: dict[str, QWidget] = {}
        classes = {"assets": AssetsView, "network": NetworkView, "inbox": InboxView,
                   "compose": ComposeView, "jobs": JobsView, "audit": AuditView,
                   "settings": SettingsView}
        for name, label, icon_name in VIEWS:
            view = classes[name](conn)
            self.views[name] = view
            self.stack.addWidget(view)
            item = QListWidgetItem(icon(icon_name, self), label)
            item.setData(Qt.ItemDataRole.UserRole, name)
            item.setSizeHint(QSize(0, 40))
            self.sidebar.addItem(item)
        self.sidebar.setFixedWidth(max(170, self.sidebar.sizeHintForColumn(0) + 24))
        self.sidebar.currentRowChanged.connect(self.stack.setCurrentIndex)
        pending = getattr(self.views["inbox"], "sig_pending_changed", None)
        if pending is not None:
            pending.connect(self._on_pending_changed)
        self.views["compose"].sig_job_submitted.connect(self._on_job_submitted)

        # -- the banner for an unreachable node
        self.banner = QFrame()
        self.banner.setObjectName("banner")
        self.banner_label = QLabel()
        self.banner_label.setTextFormat(Qt.TextFormat.PlainText)
        self.banner_label.setWordWrap(True)
        self.start_button = QPushButton("Start the node")
        self.start_button.setToolTip("Start `parley node` for this data folder in the "
                                     "background; it keeps running when you close Parley")
        self.start_button.clicked.connect(self.start_node)
        banner_layout = QHBoxLayout(self.banner)
        banner_layout.setContentsMargins(12, 8, 12, 8)
        banner_layout.addWidget(self.banner_label, 1)
        banner_layout.addWidget(self.start_button)
        self._paint_banner(ERROR)
        self.banner.hide()

        body = QHBoxLayout()
        body.setContentsMargins(0, 0, 0, 0)
        body.addWidget(self.sidebar)
        body.addWidget(self.stack, 1)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(6, 6, 6, 0)
        layout.addWidget(self.banner)
        layout.addLayout(body, 1)
        self.setCentralWidget(central)

        # -- status bar: the node's vital signs
        bar = self.statusBar()
        self.status_labels: dict[str, QLabel] = {}
        self.identicon_label = QLabel()
        bar.addPermanentWidget(self.identicon_label)
        for key, tip in (("name", "This node's name, as peers see it"),
                         ("fingerprint", ("The start of this node's fingerprint (its id); peers "
                                         "compare it when pairing")),
                         ("address", "Where peers reach this node"),
                         ("peers", "Nodes this node has paired with"),
                         ("jobs", "Jobs running on this node now"),
                         ("workers", "Party processes started ahead of jobs, so that a job "
                                     "starts at once"),
                         ("jail", ("How job code is confined on this machine (Settings says "
                                  "more)"))):
            label = QLabel("…")
            label.setTextFormat(Qt.TextFormat.PlainText)
            label.setToolTip(tip)
            label.setContentsMargins(6, 0, 6, 0)
            bar.addPermanentWidget(label)
            self.status_labels[key] = label

        self._build_menus()
        self.setTabOrder(self.sidebar, self.stack)
        self.sidebar.setCurrentRow(0)
        self.resize(1100, 720)
        if settings is not None:
            geometry = settings.value("window/geometry")
            if geometry is not None:
                self.restoreGeometry(geometry)

        # what the connection's signals said last (conn.connected, set on its loop thread, can
        # be ahead of the answers still queued for this thread)
        self._reachable: bool | None = None
        self._status_timer = QTimer(self, singleShot=True, interval=200)
        self._status_timer.timeout.connect(self.refresh_status)
        self._pool_timer = QTimer(self, singleShot=True, interval=POOL_REFRESH_MS)
        self._pool_timer.timeout.connect(self.refresh_status)
        self._start_timer = QTimer(self, interval=400)
        self._start_timer.timeout.connect(self._on_start_tick)
        conn.sig_event_received.connect(self._on_event)
        conn.sig_connection_changed.connect(self._on_connection_changed)
        conn.sig_error_raised.connect(self._on_error)
        self.refresh_status()

    # -- menus and shortcuts ------------------------------------------------------------------
    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        publish = QAction(icon("publish", self), "&Publish a file…", self)
        publish.setShortcut(QKeySequence("Ctrl+O"))
        publish.triggered.connect(self.publish)
        file_menu.addAction(publish)
        refresh = QAction("&Refresh", self)
        refresh.setShortcut(QKeySequence("F5"))
        refresh.triggered.connect(self.refresh_current)
        file_menu.addAction(refresh)
        file_menu.addSeparator()
        close = QAction("&Close window", self)
        close.setShortcut(QKeySequence("Ctrl+W"))
        close.triggered.connect(self.close)
        file_menu.addAction(close)
        quit_action = QAction("&Quit…", self)
        quit_action.setShortcut(QKeySequence("Ctrl+Q"))
        quit_action.triggered.connect(self.quit_app)
        file_menu.addAction(quit_action)

        view_menu = self.menuBar().addMenu("&View")
        for i, (name, label, icon_name) in enumerate(VIEWS):
            action = QAction(icon(icon_name, self), label, self)
            action.setShortcut(QKeySequence(f"Ctrl+{i + 1}"))
            action.triggered.connect(lambda _=False, n=name: self.show_view(n))
            view_menu.addAction(action)

        help_menu = self.menuBar().addMenu("&Help")
        about = QAction("&About Parley", self)
        about.triggered.connect(self.show_about)
        help_menu.addAction(about)

    def _on_job_submitted(self, job: dict[str, Any]) -> None:
        """A job sent from Compose is followed in Jobs."""
        self.show_view("jobs")
        self.views["jobs"].show_job(str(job.get("id", "")))

    def show_view(self, name: str) -> QWidget:
        """Bring a view to the front ("assets", "network", "inbox", "audit", "settings")."""
        index = [n for n, _label, _icon in VIEWS].index(name)
        self.sidebar.setCurrentRow(index)
        return self.views[name]

    def current_view_name(self) -> str:
        return VIEWS[self.stack.currentIndex()][0]

    def refresh_current(self) -> None:
        refresh = getattr(self.stack.currentWidget(), "refresh", None)
        if callable(refresh):
            refresh()
        self.refresh_status()

    def refresh_all(self) -> None:
        for view in self.views.values():
            refresh = getattr(view, "refresh", None)
            if callable(refresh):
                refresh()
        self.refresh_status()

    def publish(self, paths: list[str] | None = None) -> None:
        """Ctrl+O and drops: publish files from the My assets view."""
        view = self.show_view("assets")
        assert isinstance(view, AssetsView)
        view.publish_files(paths)

    def show_about(self) -> None:
        AboutDialog.ask(self, self.status.get("data_dir") or self.conn.data_dir,
                        self.status.get("version"))

    # -- the node's status --------------------------------------------------------------------
    def attach(self) -> None:
        """Load the status, then follow the node's events from its newest one."""
        self.conn.get("/status", timeout=5).then(self._on_attached, self._on_status_failed)

    def _on_attached(self, status: dict[str, Any]) -> None:
        self._on_status_loaded(status)
        if not self._following:
            self._following = True
            seq = status.get("event_seq")
            self.conn.start(after=int(seq) if seq is not None else None)

    def refresh_status(self) -> None:
        self.conn.get("/status", timeout=5).then(self._on_status_loaded, self._on_status_failed)

    def _on_status_failed(self, exc: ParleyError) -> None:
        if not isinstance(exc, NodeUnreachable):  # that one the connection reports (banner)
            self.statusBar().showMessage(f"Could not read the node's status: {exc.message}",
                                         15_000)

    def _on_status_loaded(self, status: dict[str, Any]) -> None:
        self.status = status
        name = str(status.get("name", "?"))
        node_id = str(status.get("id", ""))
        self.setWindowTitle(f"Parley: {name}")
        self.identicon_label.setPixmap(identicon_pixmap(node_id, 16) if node_id else
                                       app_icon().pixmap(16, 16))
        labels = self.status_labels
        for label in labels.values():  # greyed while the node does not answer: an answer
            label.setEnabled(self._reachable is not False)  # sent before it stopped is old news
        labels["name"].setText(name)
        labels["fingerprint"].setText(short_fingerprint(node_id, groups=2) if node_id else "?")
        labels["fingerprint"].setToolTip(f"This node's fingerprint: {node_id}\nPeers compare "
                                         "it when pairing.")
        host, port = status.get("host"), status.get("port")
        if host and port and host not in ("0.0.0.0", "::"):
            address = f"{host}:{port}"
        else:  # listening everywhere: the address the node tells peers
            address = str(status.get("url", "?")).split("://", 1)[-1]
        labels["address"].setText(address)
        counts = status.get("counts") or {}
        peers = counts.get("paired_peers")
        jobs = counts.get("running_jobs")
        labels["peers"].setText("peers: ?" if peers is None else
                                f"{peers} paired peer{'' if peers == 1 else 's'}")
        queued = counts.get("queued_jobs") or 0
        labels["jobs"].setText("jobs: ?" if jobs is None else
                               f"{jobs} job{'' if jobs == 1 else 's'} running"
                               + (f", {queued} queued" if queued else ""))
        labels["workers"].setText(worker_summary(status.get("warm_workers")))
        labels["workers"].setToolTip(worker_details(status))
        pool = status.get("warm_workers") or {}
        if pool.get("size") and pool.get("ready", 0) < pool["size"]:
            self._pool_timer.start()  # workers fill without events: look again
        level, _rows, _source = isolation_summary(status)
        labels["jail"].setText(f"jail: {level}")
        colour = (OK if level == "full" else WARNING).name()
        labels["jail"].setStyleSheet(f"background-color: {colour}; color: white; "
                                     "border-radius: 3px; padding: 0 6px;")
        self.sig_status_loaded.emit(status)

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = str(event.get("kind", ""))
        if kind.startswith(STATUS_EVENTS):
            self._status_timer.start()  # a burst of events makes one reload

    def _on_error(self, exc: ParleyError) -> None:
        message = exc.message if isinstance(exc, ParleyError) else str(exc)
        self.statusBar().showMessage(message, 20_000)

    # -- reachability -------------------------------------------------------------------------
    def _paint_banner(self, colour: Any) -> None:
        self.banner.setStyleSheet(f"QFrame#banner {{ background-color: {colour.name()}; "
                                  "border-radius: 4px; } QFrame#banner QLabel { color: white; }")

    def _show_banner(self, text: str, starting: bool = False) -> None:
        self._paint_banner(WARNING if starting else ERROR)
        self.banner_label.setText(text)
        self.start_button.setVisible(not starting)
        self.banner.show()

    def _show_unreachable(self, message: str) -> None:
        folder = self.conn.data_dir
        self._show_banner(
            f"The node of {folder} is not answering: it has stopped, or it is busy or frozen. "
            "Your assets and pending work are safe on disk. Start the node to carry on; if it "
            f"does not start, its log ({Path(folder) / 'node.log'}) says why.")
        self.banner_label.setToolTip(message)
        for label in self.status_labels.values():
            label.setEnabled(False)  # greyed: what the node said last, not what it says now

    def _on_connection_changed(self, up: bool, message: str) -> None:
        """The one place that shows and hides the not-answering banner."""
        self._reachable = up
        if up:
            self._stop_starting()
            self.banner.hide()
            self.refresh_all()  # events may have been missed while it was away
        elif self._node_proc is None:
            self._show_unreachable(message)

    def start_node(self) -> None:
        """Start the node of this data dir in the background and wait (without blocking)
        until it answers."""
        if self._node_proc is not None:
            return
        try:
            self._node_proc = start_node_process(self.conn.data_dir)
        except OSError as exc:
            self._show_banner(f"The node could not be started ({exc.strerror or exc}). Start it "
                              f"in a terminal: parley node --data-dir {self.conn.data_dir}")
            return
        self._start_deadline = time.monotonic() + NODE_START_TIMEOUT_S
        self._show_banner(f"Starting the node for {self.conn.data_dir}… (its log: "
                          f"{Path(self.conn.data_dir) / 'node.log'})", starting=True)
        self._start_timer.start()

    def _stop_starting(self) -> None:
        self._start_timer.stop()
        self._node_proc = None
        self._start_probe_busy = False

    def _on_start_tick(self) -> None:
        proc = self._node_proc
        if proc is None:
            self._start_timer.stop()
            return
        log = Path(self.conn.data_dir) / "node.log"
        code = proc.poll()
        if code is not None:
            self._stop_starting()
            self._show_banner(f"The node stopped as it started (exit code {code}). The end of "
                              f"its log, {log}, says why; fix that and start it again.")
            return
        if time.monotonic() > self._start_deadline:
            self._stop_starting()
            self._show_banner(f"The node did not answer within {NODE_START_TIMEOUT_S:.0f} s of "
                              f"starting. Its log, {log}, says what it is doing; try again.")
            return
        info = read_node_info(self.conn.data_dir)
        if info is None or info.get("pid") != proc.pid or self._start_probe_busy:
            return
        self._start_probe_busy = True

        def answered(status: dict[str, Any]) -> None:
            self._stop_starting()
            self.banner.hide()
            self._on_attached(status)
            self.refresh_all()

        def not_yet(_exc: ParleyError) -> None:
            self._start_probe_busy = False

        self.conn.get("/status", timeout=3).then(answered, not_yet, owner=self)

    # -- the inbox badge ----------------------------------------------------------------------
    def _on_pending_changed(self, count: int) -> None:
        index = [n for n, _l, _i in VIEWS].index("inbox")
        self.sidebar.item(index).setText(f"Inbox ({count})" if count else "Inbox")
        if count > self._pending:
            self.sig_notification_raised.emit(
                "Parley: waiting for you",
                f"{count} item{'' if count == 1 else 's'} wait in the Inbox (job proposals or "
                "pairing requests). Open Parley to review them.")
        self._pending = count

    # -- quitting -----------------------------------------------------------------------------
    def _save_geometry(self) -> None:
        if self.settings is not None:
            self.settings.setValue("window/geometry", self.saveGeometry())

    def quit_app(self) -> None:
        """Quit Parley; ask whether the node should stop too."""
        answer = ConfirmDialog.ask(
            self, "Quit Parley",
            "Quit Parley? The node can keep running without this window: paired peers still "
            "find your assets, and proposals wait in the Inbox until you open Parley again.",
            [("quit", "Quit, keep the node running"), ("stop", "Quit and stop the node")])
        if answer is None:
            return
        self._save_geometry()
        if answer == "stop":
            self.conn.post("/shutdown", timeout=10).then(
                lambda _a: QApplication.quit(), self._on_shutdown_failed)
        else:
            QApplication.quit()

    def _on_shutdown_failed(self, exc: ParleyError) -> None:
        if isinstance(exc, NodeUnreachable):
            QApplication.quit()  # it is not running: nothing to stop
            return
        self.statusBar().showMessage(f"The node did not stop: {exc.message}. Parley is still "
                                     "open; try again, or stop it with `parley` in a terminal.")

    def closeEvent(self, event: QCloseEvent) -> None:
        self._save_geometry()
        if self.keep_running_in_tray:
            event.ignore()
            self.hide()
            if not self._told_tray:
                self._told_tray = True
                self.sig_notification_raised.emit(
                    "Parley is still running", "The node goes on working; open Parley again "
                    "from its icon here. Quit from that icon's menu.")
            return
        event.accept()

    # -- drops anywhere on the window publish ---------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if AssetsView.droppable(event):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = AssetsView.droppable(event)
        if paths:
            event.acceptProposedAction()
            QTimer.singleShot(0, lambda: self.publish(paths))
