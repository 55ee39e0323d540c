"""The audit log: what this node was asked, decided, ran and revealed, in a hash chain.

The node checks the chain on every read (``GET /admin/v1/audit``) and the banner says the
outcome in words: verified with its length, or broken at the first bad entry and why. The log
is filtered by peer, job and kind (the node filters; the view applies the same filter again,
so a node that ignores the parameters still shows the right rows) and exported as JSON or
CSV. It reloads shortly after any event, since nearly every event adds entries.
"""

from __future__ import annotations

import csv
import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from gui.client import NodeConnection
from gui.debounce import debounced
from gui.style import ERROR
from gui.style import table_cell as _item
from node.errors import ParleyError

logger = logging.getLogger(__name__)
__all__ = ["AuditView"]

DEBOUNCE_MS = 400
COLUMNS = ["#", "Time", "Kind", "Details", "Hash"]
PEER_FIELDS = ("peer", "sender", "orchestrator", "name", "node", "to")
KNOWN_KINDS = ["proposal", "decision", "run", "reveal", "result", "pairing", "refusal", "asset",
               "policy"]


def local_time(stamp: str) -> str:
    """An entry's ISO time (UTC) as local time to the second; the exact stamp is the tooltip."""
    try:
        return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return stamp


def details(fields: dict[str, Any]) -> str:
    """An entry's fields as ``key=value`` pairs, job and peer first."""
    order = sorted(fields, key=lambda k: (k not in ("job", "peer", "event", "decision"), k))
    return "  ".join(f"{k}={fields[k]}" for k in order)


def matches(entry: dict[str, Any], peer: str, job: str, kind: str) -> bool:
    """The view's own filter: the same meaning as the endpoint's query parameters."""
    fields = entry.get("fields") or {}
    if kind and entry.get("kind") != kind:
        return False
    if job and job not in str(fields.get("job", "")):
        return False
    if peer and not any(peer.lower() in str(fields.get(k, "")).lower() for k in PEER_FIELDS):
        return False
    return True


class AuditView(QWidget):
    """The node's hash-chained audit log, its verification, filters and export."""

    sig_audit_loaded = Signal(dict)
    """The log was read (the node's answer: entries and verify)."""
    sig_exported = Signal(str)
    """The shown entries were written to this path."""

    def __init__(self, conn: NodeConnection, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.conn = conn
        self.entries: list[dict[str, Any]] = []
        self.shown: list[dict[str, Any]] = []
        self.verify: dict[str, Any] = {}
        self._timer = debounced(self, DEBOUNCE_MS, self.refresh)
        self._build()
        conn.sig_event_received.connect(self._on_event)
        conn.sig_connection_changed.connect(self._on_connection_changed)
        self.refresh()

    @classmethod
    def ask_export_path(cls, parent: QWidget | None) -> str | None:
        """Where to export (a .json or .csv path), or None."""
        path, _ = QFileDialog.getSaveFileName(parent, "Export the audit log", "audit.json",
                                              "JSON (*.json);;CSV (*.csv)")
        return path or None

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        self.banner = QLabel("Reading the audit log…")
        self.banner.setObjectName("auditBanner")
        self.banner.setTextFormat(Qt.TextFormat.PlainText)
        self.banner.setWordWrap(True)
        layout.addWidget(self.banner)
        filters = QHBoxLayout()
        filters.addWidget(QLabel("Peer:"))
        self.peer_edit = QLineEdit()
        self.peer_edit.setPlaceholderText("name or node id")
        filters.addWidget(self.peer_edit, 2)
        filters.addWidget(QLabel("Job:"))
        self.job_edit = QLineEdit()
        self.job_edit.setPlaceholderText("job id")
        filters.addWidget(self.job_edit, 2)
        filters.addWidget(QLabel("Kind:"))
        self.kind_combo = QComboBox()
        self.kind_combo.addItem("all kinds", "")
        for kind in KNOWN_KINDS:
            self.kind_combo.addItem(kind, kind)
        filters.addWidget(self.kind_combo, 1)
        self.export_button = QPushButton("Export…")
        self.export_button.clicked.connect(self._on_export_clicked)
        filters.addWidget(self.export_button)
        layout.addLayout(filters)
        for edit in (self.peer_edit, self.job_edit):
            edit.textChanged.connect(self._on_filter_changed)
        self.kind_combo.currentIndexChanged.connect(self._on_filter_changed)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        header = self.table.horizontalHeader()
        for c in range(len(COLUMNS)):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        layout.addWidget(self.table, 1)
        self.count_label = QLabel("")
        self.count_label.setTextFormat(Qt.TextFormat.PlainText)
        layout.addWidget(self.count_label)

    # -- loading ------------------------------------------------------------------------------
    def filters(self) -> dict[str, str]:
        return {"peer": self.peer_edit.text().strip(), "job": self.job_edit.text().strip(),
                "kind": str(self.kind_combo.currentData() or "")}

    def set_filters(self, peer: str = "", job: str = "", kind: str = "") -> None:
        self.peer_edit.setText(peer)
        self.job_edit.setText(job)
        index = self.kind_combo.findData(kind)
        if index < 0:
            self.kind_combo.addItem(kind, kind)
            index = self.kind_combo.count() - 1
        self.kind_combo.setCurrentIndex(index)

    def refresh(self) -> None:
        query = urlencode({k: v for k, v in self.filters().items() if v})
        self.conn.get("/audit" + (f"?{query}" if query else "")).then(self._on_audit,
                                                                       self._on_error)

    def _on_event(self, _event: dict[str, Any]) -> None:
        self._timer.start()

    def _on_connection_changed(self, up: bool, _message: str) -> None:
        if up:
            self._timer.start()

    def _on_filter_changed(self, *_args: Any) -> None:
        self._timer.start()

    def _on_audit(self, answer: dict[str, Any]) -> None:
        self.entries = list(answer.get("entries", []))
        self.verify = dict(answer.get("verify") or {})
        self._show_banner()
        f = self.filters()
        self.shown = [e for e in self.entries if matches(e, f["peer"], f["job"], f["kind"])]
        for kind in sorted({str(e.get("kind")) for e in self.entries}):
            if self.kind_combo.findData(kind) < 0:
                self.kind_combo.blockSignals(True)
                self.kind_combo.addItem(kind, kind)
                self.kind_combo.blockSignals(False)
        self.table.setRowCount(len(self.shown))
        bad = self.verify.get("first_bad_seq")
        for r, e in enumerate(reversed(self.shown)):  # newest first
            fields = e.get("fields") or {}
            digest = str(e.get("hash", ""))
            stamp = str(e.get("time", ""))
            cells = [_item(str(e.get("seq", ""))), _item(local_time(stamp), stamp),
                     _item(str(e.get("kind", ""))), _item(details(fields), details(fields)),
                     _item(digest[:12], digest)]
            for c, cell in enumerate(cells):
                if bad is not None and e.get("seq") == bad:
                    cell.setBackground(Qt.GlobalColor.red)
                self.table.setItem(r, c, cell)
        total = int(self.verify.get("entries") or len(self.entries))
        self.count_label.setText(f"{len(self.shown)} of {total} entries match the filter"
                                 if any(f.values()) else f"{len(self.shown)} entries")
        self.sig_audit_loaded.emit(answer)

    def banner_text(self) -> str:
        v = self.verify
        if not v:
            return "The audit log has not been read yet."
        if v.get("ok"):
            return (f"✓ Chain verified: {v.get('entries', len(self.entries))} entries, none "
                    f"changed, removed or reordered.")
        return (f"✗ BROKEN at entry {v.get('first_bad_seq')}: {v.get('problem')}. Entries from "
                f"there on cannot be trusted; keep a copy (Export) and find out who changed "
                f"the node's data dir.")

    def _show_banner(self) -> None:
        ok = bool(self.verify.get("ok"))
        self.banner.setText(self.banner_text())
        self.banner.setStyleSheet(
            "QLabel { background: #eaf6ec; border: 1px solid #9ccfa6; color: #1b5e2a;"
            " border-radius: 6px; padding: 8px; font-weight: bold; }" if ok else
            "QLabel { background: #fde7ea; border: 2px solid #b00020; color: #7a0016;"
            " border-radius: 6px; padding: 8px; font-weight: bold; }")

    def _on_error(self, error: ParleyError) -> None:
        self.banner.setText(f"Could not read the audit log: {error.message}")
        self.banner.setStyleSheet(f"QLabel {{ color: {ERROR.name()}; padding: 8px; }}")

    # -- export -------------------------------------------------------------------------------
    def _on_export_clicked(self) -> None:
        path = self.ask_export_path(self)
        if path:
            self.export(path)

    def export(self, path: str) -> None:
        """Write the shown entries (and the verification) as JSON, or as CSV by extension."""
        target = Path(path)
        try:
            if target.suffix.lower() == ".csv":
                with target.open("w", newline="", encoding="utf-8") as fh:
                    writer = csv.writer(fh)
                    writer.writerow(["seq", "time", "kind", "fields", "prev_hash", "hash"])
                    for e in self.shown:
                        writer.writerow([e.get("seq"), e.get("time"), e.get("kind"),
                                         json.dumps(e.get("fields") or {}, sort_keys=True),
                                         e.get("prev_hash", ""), e.get("hash", "")])
            else:
                target.write_text(json.dumps({"verify": self.verify, "filters": self.filters(),
                                              "entries": self.shown}, indent=2),
                                  encoding="utf-8")
        except OSError as exc:
            self.count_label.setText(f"Could not export to {target}: {exc.strerror or exc}; "
                                     f"choose another folder.")
            return
        self.count_label.setText(f"Exported {len(self.shown)} entries to {target}.")
        self.sig_exported.emit(str(target))
