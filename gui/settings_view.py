"""Settings: this node's name and address (saved for its next start), its data dir, the
standing approvals (policies) with Remove, and the isolation its jobs run under.

Name and address are the node's own settings (``PUT /admin/v1/settings``); the GUI keeps
nothing of its own here (QSettings holds only the window's geometry).
"""

from __future__ import annotations

import logging
from typing import Any

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from gui.client import NodeConnection
from gui.confirm_dialog import ConfirmDialog
from gui.style import ERROR, OK, WARNING, status_style
from node.address import url_address
from node.display import safe
from node.errors import NodeUnreachable, ParleyError

logger = logging.getLogger(__name__)

__all__ = ["SettingsView", "isolation_summary"]


def isolation_summary(status: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bool]:
    """("full" or "reduced", [(mechanism, what is in force)], source jobs accepted) from a
    status answer's ``confinement``."""
    conf = status.get("confinement") or {}
    seccomp = conf.get("seccomp") is True
    landlock = conf.get("landlock")
    landlock_on = isinstance(landlock, int) and not isinstance(landlock, bool) and landlock > 0
    level = str(conf.get("level") or ("full" if seccomp and landlock_on else "reduced"))
    rlimits = conf.get("rlimits") or []
    names = rlimits if isinstance(rlimits, list) else list(rlimits)
    rows = [
        ("seccomp filter", "on" if seccomp else f"off ({conf.get('seccomp') or 'not available'})"),
        ("Landlock", f"on, ABI {landlock}" if landlock_on else
         f"off ({landlock or 'not available on this kernel'})"),
        ("Resource limits", ", ".join(str(n).removeprefix("RLIMIT_") for n in names) or "none"),
        ("No new privileges", "on" if conf.get("no_new_privs") is True else "off"),
    ]
    if conf.get("kernel"):
        rows.append(("System", f"{conf.get('platform', '')} {conf.get('kernel')} "
                               f"{conf.get('arch', '')}".strip()))
    confined = seccomp or landlock_on
    accepts_source = confined or bool(status.get("accept_reduced_isolation"))
    return level, rows, accepts_source


class SettingsView(QWidget):
    """The node's own settings and the rules it applies to incoming jobs."""

    sig_settings_saved = Signal(dict)
    """The node saved new settings (they apply when it restarts)."""

    def __init__(self, conn: NodeConnection, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.conn = conn
        self.status: dict[str, Any] = {}
        self.settings: dict[str, Any] = {}
        self.policies: list[dict[str, Any]] = []
        self._loaded: dict[str, Any] = {}

        title = QLabel("Settings")
        font = title.font()
        font.setPointSizeF(font.pointSizeF() * 1.4)
        font.setBold(True)
        title.setFont(font)

        # -- this node
        node_box = QGroupBox("This node")
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("how peers see this node, e.g. clinic-a")
        self.host_edit = QLineEdit()
        self.host_edit.setPlaceholderText("0.0.0.0 (every interface)")
        self.port_spin = QSpinBox()
        self.port_spin.setRange(0, 65535)
        self.port_spin.setSpecialValueText("any free port")
        address = QHBoxLayout()
        address.addWidget(self.host_edit, 3)
        address.addWidget(QLabel("port"))
        address.addWidget(self.port_spin, 1)
        self.data_dir_label = QLabel(str(conn.data_dir))
        self.data_dir_label.setTextFormat(Qt.TextFormat.PlainText)
        self.data_dir_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        open_dir = QPushButton("Open folder")
        open_dir.setToolTip("Open the data dir in the file manager (its log is node.log)")
        open_dir.clicked.connect(lambda: QDesktopServices.openUrl(
            QUrl.fromLocalFile(str(self.conn.data_dir))))
        data_row = QHBoxLayout()
        data_row.addWidget(self.data_dir_label, 1)
        data_row.addWidget(open_dir)
        self.save_button = QPushButton("Save")
        self.save_button.setToolTip("Save the name and address for the node's next start")
        self.save_button.clicked.connect(self.save)
        note = QLabel("Name and address apply when the node restarts. The node keeps its "
                      "identity (fingerprint) either way, so pairings stay valid.")
        note.setWordWrap(True)
        note.setEnabled(False)
        self.saved_label = QLabel()
        self.saved_label.setWordWrap(True)
        self.saved_label.hide()
        save_row = QHBoxLayout()
        save_row.addWidget(self.save_button)
        save_row.addWidget(self.saved_label, 1)
        save_row.addStretch(0)
        form = QFormLayout(node_box)
        form.addRow("&Name:", self.name_edit)
        form.addRow("Listen address:", address)
        form.addRow("Data folder:", data_row)
        form.addRow("", note)
        form.addRow("", save_row)

        # -- isolation
        iso_box = QGroupBox("Isolation of job code")
        self.level_label = QLabel("…")
        self.level_label.setTextFormat(Qt.TextFormat.PlainText)
        self.iso_form = QFormLayout()
        self.source_label = QLabel("…")
        self.source_label.setWordWrap(True)
        iso_layout = QVBoxLayout(iso_box)
        level_row = QHBoxLayout()
        level_row.addWidget(self.level_label)
        level_row.addStretch(1)
        iso_layout.addLayout(level_row)
        iso_layout.addLayout(self.iso_form)
        iso_layout.addWidget(self.source_label)

        # -- policies
        policy_box = QGroupBox("Standing approvals")
        explain = QLabel("Jobs of these kinds from these orchestrators start without asking you. "
                         "Approving a job with \"always\" in the Inbox adds one; remove one to "
                         "be asked again.")
        explain.setWordWrap(True)
        self.policy_table = QTableWidget(0, 3)
        self.policy_table.setHorizontalHeaderLabels(["Orchestrator", "Job kind", ""])
        self.policy_table.verticalHeader().hide()
        self.policy_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.policy_table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        header = self.policy_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        self.policy_table.setMinimumHeight(120)
        self.no_policies = QLabel("None: every proposal waits for you in the Inbox.")
        self.no_policies.setEnabled(False)
        policy_layout = QVBoxLayout(policy_box)
        policy_layout.addWidget(explain)
        policy_layout.addWidget(self.no_policies)
        policy_layout.addWidget(self.policy_table)

        self.message = QLabel()
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.message.setWordWrap(True)
        self.message.hide()

        inner = QWidget()
        layout = QVBoxLayout(inner)
        layout.addWidget(title)
        layout.addWidget(self.message)
        layout.addWidget(node_box)
        layout.addWidget(iso_box)
        layout.addWidget(policy_box)
        layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(inner)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

        self._reload = QTimer(self, singleShot=True, interval=150)
        self._reload.timeout.connect(self._load_policies)
        conn.sig_event_received.connect(self._on_event)
        self.refresh()

    # -- loading ------------------------------------------------------------------------------
    def refresh(self) -> None:
        self.conn.get("/status").then(self._on_status_loaded, self._on_load_failed)
        self.conn.get("/settings").then(self._on_settings_loaded, self._on_settings_failed)
        self._load_policies()

    def _load_policies(self) -> None:
        self.conn.get("/policies").then(self._on_policies_loaded, self._on_load_failed)

    def _on_event(self, event: dict[str, Any]) -> None:
        if str(event.get("kind", "")).startswith("policy."):
            self._reload.start()

    def _on_load_failed(self, exc: ParleyError) -> None:
        if not isinstance(exc, NodeUnreachable):
            self._show(f"Could not load the node's settings: {exc.message}", ERROR)

    def _show(self, text: str, colour: Any = None) -> None:
        self.message.setText(text)
        self.message.setStyleSheet(status_style(colour) if colour is not None else "")
        self.message.show()

    def _on_status_loaded(self, status: dict[str, Any]) -> None:
        self.status = status
        self.data_dir_label.setText(str(status.get("data_dir") or self.conn.data_dir))
        if not self.settings:  # until GET settings answers, what the node runs with now
            self._fill_node(status)
        level, rows, accepts_source = isolation_summary(status)
        self.level_label.setText(f"Confinement in force: {level}")
        self.level_label.setStyleSheet(status_style(OK if level == "full" else WARNING))
        while self.iso_form.rowCount():
            self.iso_form.removeRow(0)
        for name, value in rows:
            label = QLabel(value)
            label.setTextFormat(Qt.TextFormat.PlainText)
            label.setWordWrap(True)
            self.iso_form.addRow(f"{name}:", label)
        if accepts_source and level == "full":
            text = ("Source jobs (code written by an orchestrator) are accepted: they run "
                    "confined as above, after you approve them.")
        elif accepts_source:
            text = ("Source jobs are accepted with REDUCED isolation (the node was started with "
                    "--accept-reduced-isolation). Read their code carefully before approving.")
        else:
            text = ("Source jobs are refused: this system cannot confine job code, so the node "
                    "accepts built-in plans only. Start it with --accept-reduced-isolation to "
                    "allow source jobs at your own risk.")
        self.source_label.setText(text)

    def _fill_node(self, values: dict[str, Any]) -> None:
        host, port = values.get("host"), values.get("port")
        if host is None and values.get("url"):  # a status answer: the node's peer URL
            host, port = url_address(str(values["url"]))
        self._loaded = {"name": str(values.get("name") or ""), "host": str(host or ""),
                        "port": int(port or 0)}
        self.name_edit.setText(self._loaded["name"])
        self.host_edit.setText(self._loaded["host"])
        self.port_spin.setValue(self._loaded["port"])

    def _on_settings_loaded(self, answer: dict[str, Any]) -> None:
        running = answer.get("running") or {}
        saved = answer.get("saved") or {}
        self.settings = answer
        self._fill_node({**running, **saved})
        self._show_pending(saved, running)

    def _show_pending(self, saved: dict[str, Any], running: dict[str, Any]) -> None:
        """Say what is saved but not yet in force (it applies when the node restarts)."""
        waiting = [f"{k} {saved[k]}" for k in ("name", "host", "port")
                   if k in saved and running and saved[k] != running.get(k)]
        if waiting:
            self.saved_label.setText(
                f"Saved for the next start: {', '.join(waiting)}. The node runs now as "
                f"{running.get('name')} on {running.get('host')}:{running.get('port')}; quit "
                "Parley with \"stop the node\", then open it again to apply.")
            self.saved_label.show()
        else:
            self.saved_label.hide()

    def _on_settings_failed(self, exc: ParleyError) -> None:
        if not isinstance(exc, NodeUnreachable):
            logger.info("GET settings failed (%s); showing what the node runs with", exc.message)
            self.save_button.setEnabled(False)
            self.save_button.setToolTip(f"This node cannot save settings: {exc.message}")

    def _on_policies_loaded(self, answer: dict[str, Any]) -> None:
        self.policies = list(answer.get("policies", []))
        table = self.policy_table
        table.setRowCount(len(self.policies))
        for row, policy in enumerate(self.policies):
            kind = str(policy.get("kind", ""))
            for col, text in enumerate((safe(str(policy.get("orchestrator", ""))),
                                        "any (every job)" if kind == "any" else kind)):
                item = QTableWidgetItem(text)
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                table.setItem(row, col, item)
            button = QPushButton("Remove")
            button.setToolTip("Ask me again for jobs of this kind from this orchestrator")
            button.clicked.connect(lambda _=False, p=dict(policy): self.remove_policy(p))
            table.setCellWidget(row, 2, button)
        table.setVisible(bool(self.policies))
        self.no_policies.setVisible(not self.policies)

    # -- actions ------------------------------------------------------------------------------
    def save(self) -> None:
        """Send what the owner changed (only that: an unchanged port stays "any free port")."""
        now = {"name": self.name_edit.text().strip(), "host": self.host_edit.text().strip(),
               "port": self.port_spin.value()}
        body = {k: v for k, v in now.items() if v != self._loaded.get(k)}
        if not body:
            self._show("Nothing to save: change the name or the address first.")
            return
        self.save_button.setEnabled(False)
        self.conn.put("/settings", body).then(self._on_saved, self._on_save_failed)

    def _on_saved(self, answer: dict[str, Any]) -> None:
        self.save_button.setEnabled(True)
        self.message.hide()
        saved = answer.get("saved", {}) if isinstance(answer, dict) else {}
        self._loaded.update({k: saved[k] for k in ("name", "host", "port") if k in saved})
        running = (self.settings or {}).get("running") or {}
        self._show_pending(saved, running)
        if self.saved_label.isHidden():
            self.saved_label.setText("Saved.")
            self.saved_label.show()
        self.sig_settings_saved.emit(saved)

    def _on_save_failed(self, exc: ParleyError) -> None:
        self.save_button.setEnabled(True)
        self._show(f"The settings were not saved: {exc.message}", ERROR)

    def remove_policy(self, policy: dict[str, Any]) -> None:
        who, kind = safe(str(policy.get("orchestrator", ""))), str(policy.get("kind", ""))
        answer = ConfirmDialog.ask(
            self, "Remove standing approval",
            f"Stop approving {kind} jobs from {who} automatically? Their next proposal will "
            "wait for you in the Inbox.", [("remove", "Remove")])
        if answer != "remove":
            return
        target = str(policy.get("node_id") or policy.get("orchestrator", ""))  # its key
        self.conn.delete("/policies", {"orchestrator": target, "kind": kind}).then(
            lambda _a: (self._show(f"Removed: {kind} jobs from {who} now wait for you."),
                        self._load_policies()),
            lambda exc: self._show(f"Could not remove the approval: {exc.message}", ERROR))
