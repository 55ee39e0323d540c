"""The Inbox: what waits for this owner's decision, kept by the node, not by the window.

Two kinds of item: proposals this node received as a party (``GET /admin/v1/jobs?role=party``)
and pairing requests other nodes sent (``GET /admin/v1/pairings``, incoming and pending). Both
are the node's persisted state, so they are still here after the app or the node restarts;
closing a dialog without deciding loses nothing. Items awaiting the owner come first; decided
proposals follow, newest first, with their outcome.

A ``proposal.arrived`` event puts the item in the list at once (and the list is then reloaded
from the node); ``sig_pending_changed`` tells the main window how many items wait, for its
badge and tray notification.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from gui.client import NodeConnection
from gui.debounce import debounced
from gui.identicon import identicon_icon
from gui.pairing_dialog import PairingDialog, format_code
from gui.review_dialog import KIND_WORDS, ReviewDialog
from gui.style import ERROR, OK, WARNING, tree_group
from node.display import safe
from node.errors import ParleyError

logger = logging.getLogger(__name__)
__all__ = ["InboxView"]

DEBOUNCE_MS = 150
COLUMNS = ["What", "From", "Kind", "State", "Received"]
ITEM_ROLE = Qt.ItemDataRole.UserRole
STATE_WORDS = {
    "awaiting_approval": "waiting for you", "approved": "approved", "queued": "queued",
    "starting": "starting",
    "running": "running", "succeeded": "succeeded", "failed": "failed",
    "rejected": "rejected", "cancelled": "cancelled", "proposed": "arriving",
}
HINT = ("Double-click an item to review it. Proposals and pairing requests wait here until "
        "you decide, even if you close the app.")
STATE_COLOURS = {"awaiting_approval": WARNING, "succeeded": OK, "failed": ERROR,
                 "rejected": ERROR}


def orchestrator_of(job: dict[str, Any]) -> tuple[str, str]:
    """(name, node id) of a party job's orchestrator, from whichever field the node sent."""
    orch = job.get("orchestrator")
    if isinstance(orch, str):
        return orch, str(job.get("orchestrator_id", ""))
    if isinstance(orch, dict):
        return str(orch.get("name", "")), str(orch.get("node_id", ""))
    review = (job.get("detail") or {}).get("review") or {}
    orch = review.get("orchestrator") or (job.get("proposal") or {}).get("orchestrator") or {}
    if isinstance(orch, dict):
        return str(orch.get("name", "")), str(orch.get("node_id", ""))
    return str(orch), ""


def kind_of(job: dict[str, Any]) -> str:
    review = (job.get("detail") or {}).get("review") or {}
    return str(job.get("kind") or review.get("code_kind") or "")


def _when(t: Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(float(t)))
    except (TypeError, ValueError):
        return ""


class InboxView(QWidget):
    """Proposals and pairing requests waiting for this owner, and the decided ones."""

    sig_pending_changed = Signal(int)
    """How many items wait for the owner changed (proposals to review plus pairing requests
    to answer): the main window's badge and tray notification."""
    sig_item_opened = Signal(object)
    """A ReviewDialog or PairingDialog was opened from the inbox."""

    def __init__(self, conn: NodeConnection, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.conn = conn
        self.jobs: list[dict[str, Any]] = []
        self.pairings: list[dict[str, Any]] = []
        self.arrived: dict[str, dict[str, Any]] = {}  # from events, until the list has them
        self.dialogs: dict[str, QWidget] = {}
        self.peer_ids: dict[str, str] = {}
        self.pending_count = -1
        self._timer = debounced(self, DEBOUNCE_MS, self.refresh)
        self._fill_timer = debounced(self, 0, self._fill)
        self._build()
        conn.sig_event_received.connect(self._on_event)
        conn.sig_connection_changed.connect(self._on_connection_changed)
        self.refresh()

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        self.tree = QTreeWidget()
        self.tree.setColumnCount(len(COLUMNS))
        self.tree.setHeaderLabels(COLUMNS)
        self.tree.setRootIsDecorated(False)
        self.tree.setIconSize(QSize(20, 20))
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for c in range(1, len(COLUMNS)):
            self.tree.header().setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.header().setStretchLastSection(False)
        self.tree.itemDoubleClicked.connect(self._on_item_double_clicked)
        self.tree.itemSelectionChanged.connect(self._update_buttons)
        self.waiting_group = self._group("Waiting for you")
        self.decided_group = self._group("Decided")
        layout.addWidget(self.tree, 1)
        self.status_label = QLabel(HINT)
        self.status_label.setTextFormat(Qt.TextFormat.PlainText)
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.open_button = QPushButton("Review…")
        self.open_button.clicked.connect(self._on_open_clicked)
        buttons.addWidget(self.open_button)
        layout.addLayout(buttons)
        self._update_buttons()

    def _group(self, title: str) -> QTreeWidgetItem:
        return tree_group(self.tree, title)

    # -- loading ------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Reload proposals and pairing requests from the node."""
        self.conn.get("/jobs?role=party").then(self._on_jobs, self._on_load_error)
        self.conn.get("/pairings").then(self._on_pairings, self._on_load_error)
        self.conn.get("/peers").then(self._on_peers, self._on_load_error)

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = str(event.get("kind", ""))
        data = event.get("data") or {}
        job_id = str(data.get("job_id") or event.get("job_id") or "")
        if kind == "proposal.arrived" and job_id:
            if not any(j.get("id") == job_id for j in self.jobs):
                self.arrived[job_id] = {
                    "id": job_id, "state": str(data.get("state") or "awaiting_approval"),
                    "title": data.get("title", ""),
                    "orchestrator": data.get("orchestrator", ""), "kind": data.get("kind", ""),
                    "created_at": event.get("t", time.time())}
            self._fill_timer.start()
        elif kind == "decision.taken" and job_id:
            self._set_state(job_id, str(data.get("decision", "")), str(data.get("by", "")))
        elif kind == "job.state" and event.get("role") == "party" and data.get("state"):
            self._set_state(job_id, str(data["state"]), str(data.get("reason", "")))
        if kind.startswith(("proposal.", "decision.", "pairing.", "policy.")) or (
                event.get("role") == "party" and kind == "job.state"):
            self._timer.start()

    def _set_state(self, job_id: str, state: str, reason: str) -> None:
        """Follow a party job's state from an event until the list is reloaded."""
        for job in [*self.jobs, *self.arrived.values()]:
            if job.get("id") == job_id and state:
                job["state"] = state
                job["reason"] = reason or job.get("reason", "")
                self._fill_timer.start()

    def _on_connection_changed(self, up: bool, _message: str) -> None:
        if up:
            self._timer.start()

    def _on_jobs(self, answer: dict[str, Any]) -> None:
        self.jobs = list(answer.get("jobs", []))
        for job in self.jobs:
            self.arrived.pop(str(job.get("id")), None)
        self.status_label.setText(HINT)
        self._fill()

    def _on_pairings(self, answer: dict[str, Any]) -> None:
        self.pairings = [p for p in answer.get("pairings", [])
                         if p.get("direction") == "in" and p.get("state") == "pending"]
        self._fill()

    def _on_peers(self, answer: dict[str, Any]) -> None:
        """Paired peers' ids by name: a proposal came from a paired node, whose identicon the
        list shows (the job list names the orchestrator only)."""
        self.peer_ids = {str(p.get("name")): str(p.get("node_id"))
                         for p in answer.get("peers", []) if p.get("state") == "paired"}
        self._fill()

    def _on_load_error(self, error: ParleyError) -> None:
        self.status_label.setText(f"Could not load the inbox: {error.message}")

    # -- the list -------------------------------------------------------------------------------
    def _fill(self) -> None:
        selected = self.selected_key()
        for group in (self.waiting_group, self.decided_group):
            group.takeChildren()
        for pairing in self.pairings:
            self._add_pairing(pairing)
        jobs = list(self.arrived.values()) + self.jobs
        waiting = [j for j in jobs if j.get("state") == "awaiting_approval"]
        decided = [j for j in jobs if j.get("state") != "awaiting_approval"]
        for job in sorted(waiting, key=lambda j: -float(j.get("created_at") or 0)):
            self._add_job(self.waiting_group, job)
        for job in sorted(decided, key=lambda j: -float(j.get("updated_at")
                                                        or j.get("created_at") or 0)):
            self._add_job(self.decided_group, job)
        for group, title in ((self.waiting_group, "Waiting for you"),
                             (self.decided_group, "Decided")):
            group.setText(0, f"{title} ({group.childCount()})")
        if self.waiting_group.childCount() == 0:
            empty = QTreeWidgetItem(self.waiting_group, ["Nothing waits for you."])
            empty.setFlags(Qt.ItemFlag.ItemIsEnabled)
            empty.setDisabled(True)
            self.waiting_group.setText(0, "Waiting for you (0)")
        if selected:
            self.select(selected[1])
        self._update_buttons()
        count = len(self.pairings) + len(waiting)
        if count != self.pending_count:
            self.pending_count = count
            self.sig_pending_changed.emit(count)

    def _add_job(self, group: QTreeWidgetItem, job: dict[str, Any]) -> None:
        name, node_id = orchestrator_of(job)
        node_id = node_id or self.peer_ids.get(name, "")
        kind = kind_of(job)
        state = str(job.get("state", ""))
        title = safe(job.get("title") or "") or f"job {job.get('id')}"
        item = QTreeWidgetItem(group, [title, safe(name), KIND_WORDS.get(kind, kind),
                                       STATE_WORDS.get(state, state),
                                       _when(job.get("created_at"))])
        item.setData(0, ITEM_ROLE, ("job", str(job.get("id"))))
        item.setToolTip(0, f"job {job.get('id')}")
        if job.get("reason"):
            item.setToolTip(3, safe(job["reason"]))
        if node_id:
            item.setIcon(1, identicon_icon(node_id))
        if state in STATE_COLOURS:
            item.setForeground(3, STATE_COLOURS[state])
        if state == "awaiting_approval":
            font = item.font(0)
            font.setBold(True)
            item.setFont(0, font)

    def _add_pairing(self, pairing: dict[str, Any]) -> None:
        waiting = not pairing.get("local_confirmed")
        minutes = -(-int(pairing.get("expires_in_s") or 0) // 60)
        item = QTreeWidgetItem(self.waiting_group, [
            f"Pairing request, code {format_code(str(pairing.get('code', '')))}",
            safe(pairing.get("name", "")), "pairing",
            ("waiting for you" if waiting else "waiting for the other owner")
            + f" (expires in {minutes} min)", _when(pairing.get("created"))])
        item.setData(0, ITEM_ROLE, ("pairing", str(pairing.get("id"))))
        item.setToolTip(1, f"{pairing.get('node_id')} at {pairing.get('address')}")
        item.setIcon(1, identicon_icon(str(pairing.get("node_id", ""))))
        item.setForeground(3, WARNING)
        font = item.font(0)
        font.setBold(waiting)
        item.setFont(0, font)

    def items(self) -> list[tuple[str, str, str]]:
        """(group title, kind "job"/"pairing", id) of every item, in display order."""
        out = []
        for group, title in ((self.waiting_group, "waiting"), (self.decided_group, "decided")):
            for i in range(group.childCount()):
                key = group.child(i).data(0, ITEM_ROLE)
                if key:
                    out.append((title, key[0], key[1]))
        return out

    def item_for(self, key_id: str) -> QTreeWidgetItem | None:
        for group in (self.waiting_group, self.decided_group):
            for i in range(group.childCount()):
                key = group.child(i).data(0, ITEM_ROLE)
                if key and key[1] == key_id:
                    return group.child(i)
        return None

    def select(self, key_id: str) -> bool:
        item = self.item_for(key_id)
        if item is not None:
            self.tree.setCurrentItem(item)
        return item is not None

    def selected_key(self) -> tuple[str, str] | None:
        item = self.tree.currentItem()
        key = item.data(0, ITEM_ROLE) if item is not None else None
        return tuple(key) if key else None  # type: ignore[return-value]

    def _update_buttons(self) -> None:
        key = self.selected_key()
        self.open_button.setEnabled(key is not None)
        self.open_button.setText("Compare code…" if key and key[0] == "pairing" else "Review…")

    # -- opening items ------------------------------------------------------------------------
    def _on_item_double_clicked(self, item: QTreeWidgetItem, _column: int) -> None:
        key = item.data(0, ITEM_ROLE)
        if key:
            self.open_item(key[1])

    def _on_open_clicked(self) -> None:
        key = self.selected_key()
        if key:
            self.open_item(key[1])

    def open_item(self, key_id: str) -> QWidget | None:
        """Open the review (a proposal) or the pairing dialog (a request); non-modal."""
        dialog = self.dialogs.get(key_id)
        if dialog is None:
            pairing = next((p for p in self.pairings if p.get("id") == key_id), None)
            if pairing is not None:
                dialog = PairingDialog(self.conn, pairing, self)
            elif any(j.get("id") == key_id for j in self.jobs) or key_id in self.arrived:
                dialog = ReviewDialog(self.conn, key_id, self)
                dialog.sig_job_decided.connect(self._on_job_decided)
            else:
                return None
            dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            dialog.finished.connect(lambda _r, k=key_id: self.dialogs.pop(k, None))
            self.dialogs[key_id] = dialog
        dialog.show()
        dialog.raise_()
        self.sig_item_opened.emit(dialog)
        return dialog

    def _on_job_decided(self, _job_id: str, _decision: str) -> None:
        self.refresh()

