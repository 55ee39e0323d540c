"""Jobs: every job this node sent (orchestrated) and received (played a party in), live.

The list is the node's (``GET jobs?role=orchestrator`` and ``?role=party``), so finished jobs
are still here after the app or the node restarts. It follows the event log, never a timer
that asks the node: ``job.state`` moves a job's state (and reloads the list, debounced),
``job.progress`` with phase ``detail`` carries the keys of the job's detail that changed
(for a sent job, every party's state, reason, timings and statistics), and a party's own
phases (imported, joined, locked, running, reveal) say where this node's party is.

For the selected job: a status light and the live progress of each party (phase, rounds,
bytes, elapsed time), the cause of a failure naming the party that caused it, what the job
printed at this node (a job's output never leaves the node it ran on), Cancel for a sent job
that has not finished, and below, the results and costs (gui/results_view.py).

No timer asks the node anything: a running party's progress (rounds, bytes, elapsed time)
arrives about once a second as detail events of its orchestration.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from gui import charts
from gui.client import NodeConnection
from gui.debounce import debounced
from gui.results_view import ResultsView
from gui.review_dialog import KIND_WORDS
from gui.style import ERROR, OK, WARNING, tree_group
from node.display import safe
from node.errors import ParleyError

logger = logging.getLogger(__name__)
__all__ = ["JobsView"]

ORCH, PARTY = "orchestrator", "party"
ENDED = ("succeeded", "failed", "rejected", "cancelled")
LIST_DEBOUNCE_MS = 300
DETAIL_DEBOUNCE_MS = 100
ITEM_ROLE = Qt.ItemDataRole.UserRole
COLUMNS = ["Job", "Kind", "With", "State", "Started"]
PARTY_COLUMNS = ["Party", "State", "Phase", "Rounds", "Bytes", "Elapsed", "Cause"]
LIGHTS: dict[str, tuple[QColor, str]] = {
    "proposed": (QColor("#9e9e9e"), "proposed"),
    "awaiting_approval": (WARNING, "waiting for approval"),
    "approved": (QColor("#00897b"), "approved"),
    "rejected": (ERROR, "rejected"),
    "queued": (QColor("#90a4ae"), "queued"),
    "starting": (QColor("#64b5f6"), "starting"),
    "running": (QColor("#1565c0"), "running"),
    "succeeded": (OK, "done"),
    "failed": (ERROR, "failed"),
    "cancelled": (QColor("#757575"), "cancelled"),
    "unknown": (QColor("#9e9e9e"), "not answering"),
}
PHASE_OF_STATE = {
    "proposed": "sending the proposal", "awaiting_approval": "waiting for its owner",
    "approved": "waiting for the others", "queued": "waiting for room on its node",
    "starting": "starting its process",
    "running": "computing", "succeeded": "finished", "failed": "ended",
    "cancelled": "stopped", "rejected": "refused", "unknown": "not answering",
}
PARTY_PHASES = {  # what a party reports of itself (node/party.py events)
    "imported": "imported CrypTen", "joined": "met the other parties",
    "locked": "locked down", "running": "computing", "reveal": "revealing",
}
FAILURE_WORDS = {
    "jail_rejected": "the jail refused the code", "jail_violation": "the job broke a jail rule",
    "job_error": "the job's code raised an error", "limit": "it ran past a limit",
    "peer_lost": "it lost the connection to another party",
    "peer_timeout": "another party stopped answering", "stopped": "its node stopped it",
    "crashed": "its process died", "refused": "its node refused the proposal",
}
SHORT_KINDS = {"source": "code", "train": "training"}
CULPRIT = re.compile(r"^(?P<name>.+?) \(rank (?P<rank>\d+)\): ")
_LIGHT_CACHE: dict[str, QIcon] = {}


def light(state: str) -> QIcon:
    """A status light: a filled circle in the state's colour."""
    colour = LIGHTS.get(state, LIGHTS["proposed"])[0]
    cached = _LIGHT_CACHE.get(colour.name())
    if cached is None:
        cached = QIcon()
        for size in (12, 16, 24, 32):
            pixmap = QPixmap(size, size)
            pixmap.fill(Qt.GlobalColor.transparent)
            painter = QPainter(pixmap)
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            painter.setPen(colour.darker(130))
            painter.setBrush(QBrush(colour))
            painter.drawEllipse(1, 1, size - 3, size - 3)
            painter.end()
            cached.addPixmap(pixmap)
        _LIGHT_CACHE[colour.name()] = cached
    return cached


def state_words(state: str) -> str:
    return LIGHTS.get(state, (None, state.replace("_", " ")))[1]


def _when(t: Any, short: bool = False) -> str:
    """A time people scan: in a list, only the clock for today's."""
    try:
        when = time.localtime(float(t))
    except (TypeError, ValueError):
        return ""
    if short:
        today = time.localtime()[:3] == when[:3]
        return time.strftime("%H:%M" if today else "%d %b %H:%M", when)
    return time.strftime("%Y-%m-%d %H:%M", when)


def _elapsed(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


class JobsView(QWidget):
    """The jobs this node sent and received, each party's progress, results and costs."""

    sig_job_selected = Signal(str)
    """The owner (or ``show_job``) selected a job: its id."""
    sig_job_loaded = Signal(str)
    """The selected job's full record arrived from the node (or changed): its id."""
    sig_job_cancelled = Signal(str)
    """The node accepted the owner's Cancel for a sent job: its id."""

    def __init__(self, conn: NodeConnection, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.conn = conn
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}  # (role, id) -> list record
        self.full: dict[tuple[str, str], dict[str, Any]] = {}  # (role, id) -> full record
        self.loaded: set[str] = set()  # roles whose list has arrived
        self.local_phase: dict[str, tuple[int, str]] = {}  # job id -> (rank, party phase)
        self.selected: tuple[str, str] | None = None
        # An answer can be older than an event that arrived while it travelled (two HTTP
        # streams): count the events, and ask again when one came in meanwhile.
        self._job_events: dict[str, int] = {}  # job id -> events seen for it
        self._state_events = 0
        self._wanted: str | None = None  # show_job before the list had it
        self._list_timer = debounced(self, LIST_DEBOUNCE_MS, self.refresh)
        self._fetch_timer = debounced(self, DETAIL_DEBOUNCE_MS, self._fetch_selected)
        self._detail_timer = debounced(self, 30, self._show_detail)
        self._build()
        conn.sig_event_received.connect(self._on_event)
        conn.sig_connection_changed.connect(self._on_connection_changed)
        self.refresh()

    @classmethod
    def ask_cancel_reason(cls, parent: QWidget | None, title: str) -> str | None:
        """Why the owner cancels (sent to every party), or None to keep the job running."""
        text, ok = QInputDialog.getText(parent, "Cancel the job",
                                        f"Cancel '{title}' at every party? Reason (sent to "
                                        f"the parties):", text="cancelled by its orchestrator")
        return (text.strip() or "cancelled by its orchestrator") if ok else None

    # -- building -------------------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.setChildrenCollapsible(False)
        layout.addWidget(split)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        self.tree = QTreeWidget()
        self.tree.setColumnCount(len(COLUMNS))
        self.tree.setHeaderLabels(COLUMNS)
        self.tree.setRootIsDecorated(False)
        self.tree.setIconSize(QSize(12, 12))
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for c in range(1, len(COLUMNS)):
            self.tree.header().setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.header().setStretchLastSection(False)
        self.tree.itemSelectionChanged.connect(self._on_selection_changed)
        self.sent_group = self._group("Sent")
        self.received_group = self._group("Received")
        left_layout.addWidget(self.tree, 1)
        self.status_label = QLabel("Loading the jobs…")
        self.status_label.setTextFormat(Qt.TextFormat.PlainText)
        self.status_label.setWordWrap(True)
        left_layout.addWidget(self.status_label)
        split.addWidget(left)

        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        head = QHBoxLayout()
        self.light_label = QLabel()
        head.addWidget(self.light_label)
        self.title_label = QLabel("No job selected")
        self.title_label.setTextFormat(Qt.TextFormat.PlainText)
        font = QFont(self.title_label.font())
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.2)
        self.title_label.setFont(font)
        head.addWidget(self.title_label, 1)
        self.cancel_button = QPushButton("Cancel job…")
        self.cancel_button.setToolTip("Stop this job at every party (it cannot be resumed)")
        self.cancel_button.clicked.connect(self._on_cancel_clicked)
        policy = self.cancel_button.sizePolicy()
        policy.setRetainSizeWhenHidden(True)  # the header keeps its height for received jobs
        self.cancel_button.setSizePolicy(policy)
        head.addWidget(self.cancel_button)
        right_layout.addLayout(head)
        self.meta_label = QLabel()
        self.meta_label.setTextFormat(Qt.TextFormat.PlainText)
        self.meta_label.setWordWrap(True)
        self.meta_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        right_layout.addWidget(self.meta_label)
        self.reason_label = QLabel()
        self.reason_label.setTextFormat(Qt.TextFormat.PlainText)
        self.reason_label.setWordWrap(True)
        self.reason_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.reason_label.setVisible(False)
        right_layout.addWidget(self.reason_label)

        detail_split = QSplitter(Qt.Orientation.Vertical)
        detail_split.setChildrenCollapsible(False)
        self.parties_tree = QTreeWidget()
        self.parties_tree.setColumnCount(len(PARTY_COLUMNS))
        self.parties_tree.setHeaderLabels(PARTY_COLUMNS)
        self.parties_tree.setRootIsDecorated(False)
        self.parties_tree.setIconSize(QSize(12, 12))
        self.parties_tree.setWordWrap(True)
        header = self.parties_tree.header()
        for c in range(len(PARTY_COLUMNS) - 1):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(len(PARTY_COLUMNS) - 1, QHeaderView.ResizeMode.Stretch)
        self.parties_tree.setMinimumHeight(90)
        detail_split.addWidget(self.parties_tree)
        self.output_box = QWidget()
        out_layout = QVBoxLayout(self.output_box)
        out_layout.setContentsMargins(0, 0, 0, 0)
        self.output_label = QLabel("What the job printed at this node")
        out_layout.addWidget(self.output_label)
        self.output_view = QPlainTextEdit()
        self.output_view.setReadOnly(True)
        self.output_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        mono = QFont("monospace")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        self.output_view.setFont(mono)
        self.output_view.setMaximumBlockCount(1000)
        out_layout.addWidget(self.output_view)
        self.output_box.setVisible(False)
        detail_split.addWidget(self.output_box)
        self.results = ResultsView(self.conn)
        detail_split.addWidget(self.results)
        detail_split.setStretchFactor(0, 1)
        detail_split.setStretchFactor(1, 1)
        detail_split.setStretchFactor(2, 4)
        right_layout.addWidget(detail_split, 1)
        split.addWidget(right)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        self._show_detail()

    def _group(self, title: str) -> QTreeWidgetItem:
        return tree_group(self.tree, title)

    # -- loading --------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Reload both lists from the node (and the selected job)."""
        seen = self._state_events
        for role in (ORCH, PARTY):
            self.conn.get(f"/jobs?role={role}").then(
                lambda answer, r=role: self._on_jobs(r, answer, seen), self._on_load_error,
                owner=self)
        if self.selected is not None:
            self._fetch_timer.start()

    def _on_jobs(self, role: str, answer: dict[str, Any], seen: int = -1) -> None:
        if seen != self._state_events:
            self._list_timer.start()  # a job changed state meanwhile: this list may predate it
        for key in [k for k in self.jobs if k[0] == role]:
            del self.jobs[key]
        for job in answer.get("jobs", []):
            self.jobs[(role, str(job.get("id")))] = job
        self.loaded.add(role)
        sent = sum(1 for k in self.jobs if k[0] == ORCH)
        received = len(self.jobs) - sent
        self.status_label.setText(f"{sent} sent, {received} received. Jobs stay here after "
                                  f"they end; the node keeps them.")
        self._fill()
        if self._wanted and self._select_id(self._wanted):
            self._wanted = None

    def _on_load_error(self, error: ParleyError) -> None:
        self.status_label.setText(f"Could not load the jobs: {error.message}")

    def _on_connection_changed(self, up: bool, _message: str) -> None:
        if up:
            self._list_timer.start()

    def _fetch_selected(self) -> None:
        if self.selected is None:
            return
        role, job_id = self.selected
        seen = self._job_events.get(job_id, 0)
        path = f"/orchestrations/{job_id}" if role == ORCH else f"/jobs/{job_id}?role=party"
        self.conn.get(path).then(lambda job, k=(role, job_id): self._on_full(k, job, seen),
                                 lambda error, k=(role, job_id): self._on_full_error(k, error),
                                 owner=self)
        if role == ORCH and (PARTY, job_id) in self.jobs:  # this node's own part: its output
            self.conn.get(f"/jobs/{job_id}?role=party").then(
                lambda job, k=(PARTY, job_id): self._on_full(k, job, seen), lambda _e: None,
                owner=self)

    def _on_full(self, key: tuple[str, str], job: dict[str, Any], seen: int = -1) -> None:
        if seen != self._job_events.get(key[1], 0) and self.selected is not None \
                and self.selected[1] == key[1]:
            self._fetch_timer.start()  # an event came in while this answer travelled
        self.full[key] = job
        if key in self.jobs:  # the list shows the newest state too
            self.jobs[key].update({k: job[k] for k in ("state", "reason", "detail")
                                   if k in job})
            self._update_item(key)
        if key == self.selected:
            self._show_detail()
            self.sig_job_loaded.emit(key[1])

    def _on_full_error(self, key: tuple[str, str], error: ParleyError) -> None:
        if key == self.selected:
            self.status_label.setText(f"Could not load job {key[1]}: {error.message}")

    # -- events ---------------------------------------------------------------------------------
    def _on_event(self, event: dict[str, Any]) -> None:
        kind = str(event.get("kind", ""))
        if kind not in ("job.state", "job.progress"):
            return
        data = event.get("data") or {}
        job_id = str(event.get("job_id") or data.get("job_id") or "")
        role = str(event.get("role") or data.get("role") or "")
        if not job_id or role not in (ORCH, PARTY):
            return
        key = (role, job_id)
        self._job_events[job_id] = self._job_events.get(job_id, 0) + 1
        if kind == "job.state":
            self._state_events += 1
            state = str(data.get("state", ""))
            for record in (self.jobs.get(key), self.full.get(key)):
                if record is not None and state:
                    record["state"] = state
                    record["reason"] = str(data.get("reason", ""))
            if key in self.jobs:
                self._update_item(key)
            self._list_timer.start()  # a new job, or the detail the end brings
            if self.selected is not None and self.selected[1] == job_id:
                self._fetch_timer.start()
                self._show_detail()  # a state change is rare: shown at once, with its reason
            return
        phase = str(data.get("phase", ""))
        if phase == "detail":
            changed = {k: v for k, v in data.items() if k not in ("job_id", "role", "phase")}
            for record in (self.jobs.get(key), self.full.get(key)):
                if record is not None:
                    record["detail"] = {**(record.get("detail") or {}), **changed}
            if key in self.jobs:
                self._update_item(key)
        elif role == PARTY and phase:
            self.local_phase[job_id] = (int(data.get("rank") or 0), phase)
        if self.selected is not None and self.selected[1] == job_id:
            self._detail_timer.start()

    # -- the list -------------------------------------------------------------------------------
    def _fill(self) -> None:
        selected = self.selected
        self.tree.blockSignals(True)
        for group in (self.sent_group, self.received_group):
            group.takeChildren()
        order = sorted(self.jobs.items(), key=lambda kv: -float(kv[1].get("created_at") or 0))
        for key, _job in order:
            group = self.sent_group if key[0] == ORCH else self.received_group
            item = QTreeWidgetItem(group)
            item.setData(0, ITEM_ROLE, key)
            self._paint_item(item, key)
        for group, title in ((self.sent_group, "Sent"), (self.received_group, "Received")):
            group.setText(0, f"{title} ({group.childCount()})")
        self.tree.blockSignals(False)
        if selected is not None:
            item = self.item_for(selected)
            if item is not None:
                self.tree.blockSignals(True)
                self.tree.setCurrentItem(item)
                self.tree.blockSignals(False)
        self._detail_timer.start()

    def _paint_item(self, item: QTreeWidgetItem, key: tuple[str, str]) -> None:
        job = self.jobs[key]
        state = str(job.get("state", ""))
        kind = str(job.get("kind", ""))
        title = safe(job.get("title") or "") or f"job {key[1]}"
        if key[0] == ORCH:
            parties = (job.get("detail") or {}).get("parties") or {}
            names = [str(p.get("name", "?")) for _r, p in
                     sorted(parties.items(), key=lambda kv: int(kv[0]))]
            with_text = ", ".join(names)
        else:
            with_text = f"from {safe(job.get('orchestrator', ''))}"
        for c, text in enumerate([title, SHORT_KINDS.get(kind, kind), with_text,
                                  state_words(state), _when(job.get("created_at"), True)]):
            item.setText(c, text)
        item.setIcon(3, light(state))
        item.setToolTip(0, f"{title}\njob {key[1]}")
        item.setToolTip(4, _when(job.get("created_at")))
        item.setToolTip(3, safe(job.get("reason") or state_words(state)))
        if state in ("failed", "rejected"):
            item.setForeground(3, ERROR)
        elif state == "succeeded":
            item.setForeground(3, OK)
        else:
            item.setData(3, Qt.ItemDataRole.ForegroundRole, None)

    def _update_item(self, key: tuple[str, str]) -> None:
        item = self.item_for(key)
        if item is not None:
            self._paint_item(item, key)

    def item_for(self, key: tuple[str, str]) -> QTreeWidgetItem | None:
        group = self.sent_group if key[0] == ORCH else self.received_group
        for i in range(group.childCount()):
            if tuple(group.child(i).data(0, ITEM_ROLE) or ()) == key:
                return group.child(i)
        return None

    def items(self) -> list[tuple[str, str, str]]:
        """(role, job id, state words) of every listed job, in display order."""
        out = []
        for group in (self.sent_group, self.received_group):
            for i in range(group.childCount()):
                role, job_id = group.child(i).data(0, ITEM_ROLE)
                out.append((role, job_id, group.child(i).text(3)))
        return out

    def show_job(self, job_id: str) -> bool:
        """Select ``job_id`` (the sent job where this node also played a party); a job the list
        does not hold yet is selected when it arrives. True when it was selected now."""
        if self._select_id(job_id):
            return True
        self._wanted = job_id
        self._list_timer.start()
        return False

    def _select_id(self, job_id: str) -> bool:
        for role in (ORCH, PARTY):
            item = self.item_for((role, job_id))
            if item is not None:
                self.tree.setCurrentItem(item)
                return True
        return False

    def _on_selection_changed(self) -> None:
        item = self.tree.currentItem()
        key = item.data(0, ITEM_ROLE) if item is not None else None
        key = tuple(key) if key else None
        if key == self.selected:
            return
        self.selected = key  # type: ignore[assignment]
        self._show_detail()
        if key is not None:
            self._fetch_selected()
            self.sig_job_selected.emit(key[1])

    # -- the selected job -----------------------------------------------------------------------
    def current_job(self) -> dict[str, Any]:
        """The selected job as best known: its full record, else its list record."""
        if self.selected is None:
            return {}
        return self.full.get(self.selected) or self.jobs.get(self.selected) or {}

    def _show_detail(self) -> None:
        job = self.current_job()
        key = self.selected
        if not job or key is None:
            self.light_label.clear()
            self.title_label.setText("No job selected")
            self.meta_label.setText("Select a job on the left: its parties, what it printed "
                                    "here, its result and what it cost.")
            self.reason_label.setVisible(False)
            self.cancel_button.setVisible(False)
            self.parties_tree.clear()
            self.output_box.setVisible(False)
            self.results.show_job(None)
            return
        role, job_id = key
        state = str(job.get("state", ""))
        self.light_label.setPixmap(light(state).pixmap(16, 16))
        self.light_label.setToolTip(state_words(state))
        title = safe(job.get("title") or "") or f"job {job_id}"
        self.title_label.setText(f"{title} — {state_words(state)}")
        kind = str(job.get("kind", ""))
        who = ("sent by this node" if role == ORCH
               else f"received from {safe(job.get('orchestrator', '?'))}, this node is rank "
                    f"{job.get('rank')}")
        kind_text = KIND_WORDS.get(kind) or f"{SHORT_KINDS.get(kind, kind)} plan"
        self.meta_label.setText(f"{kind_text}, {who}; job {job_id}, "
                                f"created {_when(job.get('created_at'))}")
        self._show_reason(job)
        self.cancel_button.setVisible(role == ORCH)
        self.cancel_button.setEnabled(role == ORCH and state not in ENDED)
        rows = self._party_rows(role, job_id, job)
        self._fill_parties(rows)
        self._show_output(job_id)
        runs = [j for k, j in self.jobs.items() if k[0] == ORCH]
        runs = [self.full.get((ORCH, str(j.get("id")))) or j for j in runs]
        self.results.show_job(job, runs)

    def _show_reason(self, job: dict[str, Any]) -> None:
        state = str(job.get("state", ""))
        reason = safe(job.get("reason") or "")
        if not reason or state in ("approved", "awaiting_approval", "succeeded"):
            # an auto-approval's note or a restart's note is shown as a plain line
            self.reason_label.setVisible(bool(reason))
            self.reason_label.setStyleSheet("")
            self.reason_label.setText(reason)
            return
        match = CULPRIT.match(reason)
        if state in ("failed", "rejected") and match:
            text = (f"{state_words(state).capitalize()} because of {match['name']} "
                    f"(rank {match['rank']}): {reason[match.end():]}")
        elif reason.lower().startswith(state_words(state)):  # "cancelled by alice: ..."
            text = reason[:1].upper() + reason[1:]
        else:
            text = f"{state_words(state).capitalize()}: {reason}"
        self.reason_label.setText(text)
        self.reason_label.setStyleSheet(f"color: {ERROR.name()}" if state in
                                        ("failed", "rejected") else "")
        self.reason_label.setVisible(True)

    def _party_rows(self, role: str, job_id: str, job: dict[str, Any]) -> list[dict[str, Any]]:
        """One row per party: name, state, phase, rounds, bytes, elapsed, cause."""
        detail = job.get("detail") or {}
        if role == PARTY:
            rank = int(job.get("rank") or 0)
            me = {"name": f"this node (rank {rank})", "state": job.get("state", ""),
                  "reason": job.get("reason", ""), "timings": detail.get("timings") or {},
                  "stats": detail.get("stats") or {}, "progress": detail.get("progress") or {},
                  "failure_kind": detail.get("failure_kind", "")}
            return [self._row(job_id, rank, me, rank, str(job.get("state", "")))]
        parties = dict(detail.get("parties") or {})
        for p in (job.get("proposal") or {}).get("parties") or []:
            parties.setdefault(str(p.get("rank")), {"name": p.get("name"), "state": "proposed"})
        mine = self.jobs.get((PARTY, job_id))
        my_rank = int(mine["rank"]) if mine and mine.get("rank") is not None else None
        return [self._row(job_id, int(r), p, my_rank, str(job.get("state", "")))
                for r, p in sorted(parties.items(), key=lambda kv: int(kv[0]))]

    def _row(self, job_id: str, rank: int, party: dict[str, Any], my_rank: int | None,
             job_state: str = "") -> dict[str, Any]:
        state = str(party.get("state") or "")
        progress = party.get("progress") or {}
        timings = party.get("timings") or {}
        stats = party.get("stats") or {}
        if state in ENDED or state == "unknown":  # the last tick is not the final figure
            progress = {}
        phase = str(progress.get("phase") or "")
        if not phase and rank == my_rank and state in ("starting", "running"):
            local = self.local_phase.get(job_id)
            if local is not None:
                phase = PARTY_PHASES.get(local[1], local[1])
        if job_state in ENDED and state in ("starting", "running"):
            phase = "being stopped"  # the job ended; this party's end is not recorded yet
        elif job_state in ENDED and state in ("proposed", "awaiting_approval", "approved",
                                              "queued"):
            phase = "never started"
        phase = phase or PHASE_OF_STATE.get(state, state)
        rounds = progress.get("rounds", stats.get("rounds"))
        size = progress.get("bytes", stats.get("bytes"))
        elapsed = progress.get("elapsed_s", timings.get("total_s"))
        reason = safe(party.get("reason") or "")
        if reason.startswith("approved "):  # the approval's note is not a cause
            reason = ""
        failure = FAILURE_WORDS.get(str(party.get("failure_kind") or ""), "")
        cause = reason
        if failure and state in ("failed", "cancelled"):
            cause = f"{reason} ({failure})" if reason and failure not in reason else \
                (reason or failure)
        name = str(party.get("name") or f"rank {rank}")
        if not name.startswith("this node"):
            name = f"{name} (rank {rank})" + (", this node" if rank == my_rank else "")
        return {"rank": rank, "name": name, "state": state,
                "phase": phase, "rounds": "" if rounds is None else f"{int(rounds):,}",
                "bytes": "" if size is None else charts.size_text(float(size)),
                "elapsed": "" if elapsed is None else _elapsed(float(elapsed)),
                "cause": cause, "failure_kind": str(party.get("failure_kind") or "")}

    def _fill_parties(self, rows: list[dict[str, Any]]) -> None:
        """The party table, changed in place (it is redrawn about once a second while a job
        runs: only what changed is touched)."""
        job = self.current_job()
        match = CULPRIT.match(str(job.get("reason") or ""))
        culprit = int(match["rank"]) if match else None
        tree = self.parties_tree
        while tree.topLevelItemCount() > len(rows):
            tree.takeTopLevelItem(tree.topLevelItemCount() - 1)
        for i, row in enumerate(rows):
            item = tree.topLevelItem(i)
            if item is None:
                item = QTreeWidgetItem(tree)
                for c in (3, 4, 5):
                    item.setTextAlignment(c, Qt.AlignmentFlag.AlignRight |
                                          Qt.AlignmentFlag.AlignVCenter)
            texts = [row["name"], state_words(row["state"]), row["phase"], row["rounds"],
                     row["bytes"], row["elapsed"], row["cause"]]
            look = (row["state"], row["rank"] == culprit,
                    culprit is None and row["state"] in ("failed", "rejected"))
            if [item.text(c) for c in range(len(texts))] == texts and \
                    item.data(0, ITEM_ROLE) == list(look):
                continue
            for c, text in enumerate(texts):
                if item.text(c) != text:
                    item.setText(c, text)
            item.setData(0, ITEM_ROLE, list(look))
            item.setIcon(1, light(row["state"]))
            item.setToolTip(6, row["cause"])
            blamed = look[1] or look[2]
            item.setData(6, Qt.ItemDataRole.ForegroundRole, ERROR if blamed else None)
            font = QFont(tree.font())
            font.setBold(look[1])
            item.setFont(0, font)
            item.setFont(6, font)

    def party_rows(self) -> list[list[str]]:
        """The party table as shown: [party, state, phase, rounds, bytes, elapsed, cause]."""
        out = []
        for i in range(self.parties_tree.topLevelItemCount()):
            item = self.parties_tree.topLevelItem(i)
            out.append([item.text(c) for c in range(len(PARTY_COLUMNS))])
        return out

    def _show_output(self, job_id: str) -> None:
        record = self.full.get((PARTY, job_id)) or self.jobs.get((PARTY, job_id)) or {}
        lines = [str(line) for line in (record.get("detail") or {}).get("output") or []]
        self.output_box.setVisible(bool(lines))
        text = "\n".join(lines)
        if text != self.output_view.toPlainText():
            self.output_view.setPlainText(text)
            self.output_view.verticalScrollBar().setValue(
                self.output_view.verticalScrollBar().maximum())
        self.output_label.setText(f"What the job printed at this node ({len(lines)} line"
                                  f"{'s' if len(lines) != 1 else ''}; other parties' output "
                                  f"stays at their nodes)")

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        self._detail_timer.start()

    # -- cancel ---------------------------------------------------------------------------------
    def _on_cancel_clicked(self) -> None:
        job = self.current_job()
        if self.selected is None or self.selected[0] != ORCH:
            return
        reason = self.ask_cancel_reason(self, str(job.get("title") or self.selected[1]))
        if reason is not None:
            self.cancel(self.selected[1], reason)

    def cancel(self, job_id: str, reason: str) -> None:
        """Ask the node to cancel a sent job at every party."""
        self.cancel_button.setEnabled(False)
        self.status_label.setText(f"Cancelling job {job_id}…")
        self.conn.post(f"/orchestrations/{job_id}/cancel", {"reason": reason}).then(
            lambda _job, j=job_id: self._on_cancelled(j), self._on_cancel_error, owner=self)

    def _on_cancelled(self, job_id: str) -> None:
        self.status_label.setText(f"Job {job_id} is cancelled; its parties are told to stop.")
        self.sig_job_cancelled.emit(job_id)
        self._list_timer.start()

    def _on_cancel_error(self, error: ParleyError) -> None:
        self.status_label.setText(f"Could not cancel: {error.message}")
        self._detail_timer.start()
