"""Compose: the orchestrator's desk. Build a job from a template, see what every party will
review, and send it only if it can work.

The steps, top to bottom: what to run (the four CrypTen use cases as templates, or custom
code); the parties in rank order (this node and paired peers); each input bound to an asset
found in the paired peers' catalogs (every asset shows its kind, shape and columns); who gets
the result. Every change is checked by the node, debounced (``POST compose/check``): the
answer is the rendered code each party's owner will review, the problems that would make the
job fail (a model whose input width is not the data's, rows that differ between parties, a
party without the asset, a reveal to nobody, a static-check refusal), and an estimate of its
cost. Send stays disabled while the node says the job cannot work, and says why in words.

Custom code is edited in ``CodeEditorWidget``: the static check (``POST check-source``) marks
refused lines as one types, and a dry run on one's own and mock data is one click.

A composed job saves to a ``.json`` file in exactly the format ``POST orchestrations`` and
``parley submit job.json`` take, and loads from one.

Names, tags and asset metadata come from other nodes: they are shown as plain text.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from gui.client import NodeConnection
from gui.code_editor import CodeEditorWidget
from gui.debounce import debounced
from gui.identicon import identicon_icon
from gui.job_templates import (
    DEFAULT_PRECISION_BITS,
    DEFAULT_TIME_S,
    STATS,
    TEMPLATES,
    Binding,
    Template,
    build_plan,
    read_plan,
    starter_source,
    template,
    template_for,
)
from gui.review_dialog import dry_run_text, readable
from gui.style import ERROR, OK, WARNING
from node.errors import ParleyError

logger = logging.getLogger(__name__)
__all__ = ["ComposeView"]

CHECK_DEBOUNCE_MS = 300
SOURCE_DEBOUNCE_MS = 350
PEERS_DEBOUNCE_MS = 150
SEARCH_WAIT_S = 3
DRY_RUN_TIME_S = 180
ENDED = ("succeeded", "failed", "rejected", "cancelled")
KEY_ROLE = Qt.ItemDataRole.UserRole
INPUT_COLUMNS = ["Input", "Tag", "Held by", "Asset"]
CATALOG_COLUMNS = ["Node", "Asset", "Kind", "Shape", "Columns", "Tags"]
_DEF = re.compile(r"^def\s+([A-Za-z][A-Za-z0-9_]*)\s*\(", re.MULTILINE)
# what the view itself writes into a spec; anything else a loaded file carries is kept as is
_MANAGED = {"title", "parties", "plan", "source", "entry", "bindings", "result_to", "reveal_to",
            "limits", "crypten"}


def _item(text: str, tip: str = "", editable: bool = False) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    if not editable:
        item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
    if tip:
        item.setToolTip(tip)
    return item


def _dims(shape: Any) -> str:
    return " × ".join("?" if d is None else str(d) for d in (shape or []))


def asset_words(asset: dict[str, Any]) -> tuple[str, str]:
    """(shape, columns) of an asset as a person scans them: a dataset's rows × columns and its
    column names (and label), a model's input and output shapes."""
    schema = asset.get("schema") or {}
    if asset.get("kind") == "model":
        ins = ", ".join(_dims(v.get("shape")) for v in schema.get("inputs", [])
                        if isinstance(v, dict))
        outs = ", ".join(_dims(v.get("shape")) for v in schema.get("outputs", [])
                         if isinstance(v, dict))
        return f"in {ins or '?'} → out {outs or '?'}", ""
    columns = [str(c) for c in schema.get("columns") or []]
    label = schema.get("label")
    shape = _dims(schema.get("shape")) or "?"
    if isinstance(label, dict) and label.get("name"):
        shape += f" + label '{label['name']}'"
    shown = ", ".join(columns[:6]) + (f", … ({len(columns)} columns)" if len(columns) > 6
                                      else "")
    return shape, shown


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() \
        else value


class ComposeView(QWidget):
    """Compose a job, see what each party will review and what it costs, then send it."""

    sig_job_submitted = Signal(dict)
    """The node accepted the job and is proposing it to the parties: the job as it answered."""
    sig_job_checked = Signal(dict)
    """The node checked the composed job: {ok, problems, source, entry, parties, estimate}
    (or {ok: False, problems} when it could not be checked, or was incomplete here)."""
    sig_source_checked = Signal(list)
    """The static check answered for the custom code now in the editor: its problems."""
    sig_search_finished = Signal(dict)
    """A catalog search answered (the node's answer: matches, slow, errors)."""
    sig_parties_loaded = Signal(list)
    """The party list was (re)built: the candidates' names in list order."""
    sig_dry_run_finished = Signal(dict)
    """A dry run ended: the node's answer ({state, reason, result, ...})."""
    sig_job_ended = Signal(dict)
    """The job this view sent ended: the orchestration with its result."""

    def __init__(self, conn: NodeConnection, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.conn = conn
        self.me: dict[str, Any] = {}
        self.candidates: list[dict[str, Any]] = []
        self.inputs: list[Binding] = []
        self.template: Template = TEMPLATES[0]
        self.known_assets: dict[tuple[str, str], dict[str, Any]] = {}  # (node_id, tag)
        self.catalog: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.last_check: dict[str, Any] = {}
        self.static_problems: list[dict[str, Any]] = []
        self.sent_job: dict[str, Any] = {}
        self._output_key: str | None = None
        self._output_touched = False
        self._result_keys: list[str] = []
        self._reveal_keys: list[str] = []
        self._receivers_touched = False
        self._extra: dict[str, Any] = {}
        self._limits: dict[str, Any] = {}
        self._filling = False
        self._source_edited = False
        self._custom_source = ""
        self._gen = 0  # every change to the job; a check answer for an older one is dropped
        self._checked_gen = -1
        self._source_gen = 0
        self._source_checked_gen = -1
        self._sending = False
        self._sent_gen = -1  # the job as it was when last sent (Send then says "again")
        self._searched_tags: list[str] = []
        self._check_timer = debounced(self, CHECK_DEBOUNCE_MS, self._run_check)
        self._source_timer = debounced(self, SOURCE_DEBOUNCE_MS, self._run_source_check)
        self._peers_timer = debounced(self, PEERS_DEBOUNCE_MS, self.refresh)
        self._build()
        self._apply_template(self.template, keep=False)
        conn.sig_event_received.connect(self._on_event)
        conn.sig_connection_changed.connect(self._on_connection_changed)
        self.refresh()
        self.search("")
        self._changed()
        self.check_now()  # says at once what the job still needs

    # -- injectable questions -----------------------------------------------------------------
    @classmethod
    def ask_save_path(cls, parent: QWidget | None, suggested: str) -> str | None:
        """Where to save the composed job (a .json file), or None."""
        path, _ = QFileDialog.getSaveFileName(parent, "Save the job", suggested,
                                              "Parley job (*.json)")
        return path or None

    @classmethod
    def ask_open_path(cls, parent: QWidget | None) -> str | None:
        """A saved job (.json) to open, or None."""
        path, _ = QFileDialog.getOpenFileName(parent, "Open a job", "", "Parley job (*.json)")
        return path or None

    # -- layout -------------------------------------------------------------------------------
    def _build(self) -> None:
        title = QLabel("Compose a job")
        font = title.font()
        font.setPointSizeF(font.pointSizeF() * 1.4)
        font.setBold(True)
        title.setFont(font)
        subtitle = QLabel("Choose what to run, the parties and their inputs. Your node checks "
                          "the job as you go and shows the code every party's owner will "
                          "review; nothing runs before each of them approves it.")
        subtitle.setWordWrap(True)

        # 1. what to run
        self.template_combo = QComboBox()
        for t in TEMPLATES:
            self.template_combo.addItem(t.title, t.key)
        self.template_combo.currentIndexChanged.connect(self._on_template_changed)
        self.template_summary = QLabel()
        self.template_summary.setWordWrap(True)
        self.template_summary.setTextFormat(Qt.TextFormat.PlainText)
        self.title_edit = QLineEdit()
        self.title_edit.setPlaceholderText("a title the parties' owners see")
        self.title_edit.textChanged.connect(self._changed)
        what = QGroupBox("1. What to run")
        what_layout = QFormLayout(what)
        what_layout.addRow("Job:", self.template_combo)
        what_layout.addRow(self.template_summary)
        what_layout.addRow("Title:", self.title_edit)

        # 2. parties
        self.party_list = QListWidget()
        self.party_list.setIconSize(QSize(20, 20))
        self.party_list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.party_list.itemChanged.connect(self._on_party_item_changed)
        self.party_list.currentRowChanged.connect(lambda _r: self._update_party_buttons())
        self.up_button = QToolButton()
        self.up_button.setText("▲")
        self.up_button.setToolTip("Move the selected party up (a lower rank)")
        self.up_button.clicked.connect(lambda: self._move_party(-1))
        self.down_button = QToolButton()
        self.down_button.setText("▼")
        self.down_button.setToolTip("Move the selected party down (a higher rank)")
        self.down_button.clicked.connect(lambda: self._move_party(1))
        moves = QVBoxLayout()
        moves.addWidget(self.up_button)
        moves.addWidget(self.down_button)
        moves.addStretch(1)
        party_row = QHBoxLayout()
        party_row.addWidget(self.party_list, 1)
        party_row.addLayout(moves)
        self.party_hint = QLabel("Tick the nodes that take part: this node and paired peers. "
                                 "Their order is their rank.")
        self.party_hint.setWordWrap(True)
        parties = QGroupBox("2. Parties, in rank order")
        parties_layout = QVBoxLayout(parties)
        parties_layout.addLayout(party_row)
        parties_layout.addWidget(self.party_hint)

        # 3. inputs and the catalog they are found in
        self.input_table = QTableWidget(0, len(INPUT_COLUMNS))
        self.input_table.setHorizontalHeaderLabels(INPUT_COLUMNS)
        self.input_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.input_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.input_table.verticalHeader().setVisible(False)
        self.input_table.setWordWrap(False)
        header = self.input_table.horizontalHeader()
        for col in range(3):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        header.setMinimumSectionSize(64)
        self.input_table.itemChanged.connect(self._on_input_item_changed)
        self.input_table.itemSelectionChanged.connect(self._update_use_button)
        self.add_input_button = QPushButton("Add input")
        self.add_input_button.clicked.connect(self._on_add_input)
        self.remove_input_button = QPushButton("Remove input")
        self.remove_input_button.clicked.connect(self._on_remove_input)
        input_buttons = QHBoxLayout()
        input_buttons.addWidget(self.add_input_button)
        input_buttons.addWidget(self.remove_input_button)
        input_buttons.addStretch(1)

        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("tags to search paired peers' catalogs for (empty: "
                                            "everything)")
        self.search_edit.returnPressed.connect(self._on_search_clicked)
        self.search_button = QPushButton("Search")
        self.search_button.clicked.connect(self._on_search_clicked)
        search_row = QHBoxLayout()
        search_row.addWidget(self.search_edit, 1)
        search_row.addWidget(self.search_button)
        self.catalog_table = QTableWidget(0, len(CATALOG_COLUMNS))
        self.catalog_table.setHorizontalHeaderLabels(CATALOG_COLUMNS)
        self.catalog_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.catalog_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.catalog_table.verticalHeader().setVisible(False)
        self.catalog_table.setWordWrap(False)
        self.catalog_table.setIconSize(QSize(18, 18))
        header = self.catalog_table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.catalog_table.itemSelectionChanged.connect(self._update_use_button)
        self.catalog_table.itemDoubleClicked.connect(lambda _i: self.use_selected())
        self.use_button = QPushButton("Use for the selected input")
        self.use_button.clicked.connect(self.use_selected)
        self.search_status = QLabel("")
        self.search_status.setTextFormat(Qt.TextFormat.PlainText)
        self.search_status.setWordWrap(True)
        use_row = QHBoxLayout()
        use_row.addWidget(self.search_status, 1)
        use_row.addWidget(self.use_button)
        inputs = QGroupBox("3. Inputs: bind each to an asset")
        inputs_layout = QVBoxLayout(inputs)
        inputs_layout.addWidget(self.input_table)
        inputs_layout.addLayout(input_buttons)
        inputs_layout.addWidget(QLabel("Catalogs of this node and paired peers:"))
        inputs_layout.addLayout(search_row)
        self.catalog_table.setMinimumHeight(150)
        inputs_layout.addWidget(self.catalog_table, 1)
        inputs_layout.addLayout(use_row)

        # 4. results and options
        self.output_combo = QComboBox()
        self.output_combo.setToolTip("The party that receives the result in plaintext; no "
                                     "other party sees it")
        self.output_combo.activated.connect(self._on_output_chosen)
        self.receiver_table = QTableWidget(0, 3)
        self.receiver_table.setHorizontalHeaderLabels(["Party", "Gets the result",
                                                       "May decrypt to"])
        self.receiver_table.verticalHeader().setVisible(False)
        self.receiver_table.horizontalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.ResizeToContents)
        self.receiver_table.horizontalHeader().setStretchLastSection(True)
        self.receiver_table.setMaximumHeight(120)
        self.receiver_table.itemChanged.connect(self._on_receiver_changed)
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 1000)
        self.epochs_spin.setValue(30)
        self.rate_spin = QDoubleSpinBox()
        self.rate_spin.setRange(0.001, 100.0)
        self.rate_spin.setDecimals(3)
        self.rate_spin.setValue(1.0)
        self.hidden_spin = QSpinBox()
        self.hidden_spin.setRange(1, 256)
        self.hidden_spin.setValue(8)
        self.stat_boxes: dict[str, QCheckBox] = {}
        stats_row = QHBoxLayout()
        for name in STATS:
            box = QCheckBox(name)
            box.setChecked(True)
            box.toggled.connect(self._changed)
            self.stat_boxes[name] = box
            stats_row.addWidget(box)
        stats_row.addStretch(1)
        self.stats_widget = QWidget()
        self.stats_widget.setLayout(stats_row)
        stats_row.setContentsMargins(0, 0, 0, 0)
        self.column_spin = QSpinBox()
        self.column_spin.setRange(0, 10_000)
        self.edges_edit = QLineEdit("0, 10, 20, 30")
        self.edges_edit.setToolTip("Increasing bin edges, separated by commas")
        self.time_spin = QSpinBox()
        self.time_spin.setRange(10, 86400)
        self.time_spin.setSuffix(" s")
        self.time_spin.setValue(DEFAULT_TIME_S)
        self.precision_spin = QSpinBox()
        self.precision_spin.setRange(8, 24)
        self.precision_spin.setSuffix(" bits")
        self.precision_spin.setValue(DEFAULT_PRECISION_BITS)
        self.precision_spin.setToolTip("CrypTen's fixed-point precision: more bits for small "
                                       "values under large weights (a model that folds in "
                                       "standardisation), fewer for very large intermediates")
        for spin in (self.epochs_spin, self.hidden_spin, self.column_spin, self.time_spin,
                     self.precision_spin):
            spin.valueChanged.connect(self._changed)
        self.rate_spin.valueChanged.connect(self._changed)
        self.edges_edit.textChanged.connect(self._changed)
        options = QGroupBox("4. Results and options")
        self.options_form = QFormLayout(options)
        self.options_form.addRow("Result goes to:", self.output_combo)
        self.options_form.addRow(self.receiver_table)
        self.options_form.addRow("Epochs:", self.epochs_spin)
        self.options_form.addRow("Learning rate:", self.rate_spin)
        self.options_form.addRow("Hidden units:", self.hidden_spin)
        self.options_form.addRow("Statistics:", self.stats_widget)
        self.options_form.addRow("Histogram column:", self.column_spin)
        self.options_form.addRow("Histogram edges:", self.edges_edit)
        self.options_form.addRow("Time limit:", self.time_spin)
        self.options_form.addRow("Precision:", self.precision_spin)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 6, 0)
        left_layout.addWidget(what)
        left_layout.addWidget(parties)
        left_layout.addWidget(inputs, 1)
        left_layout.addWidget(options)
        scroll = QScrollArea()
        scroll.setWidget(left)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        left.setMinimumWidth(440)

        # the check, the code, the dry run
        self.check_label = QLabel("")
        self.check_label.setObjectName("composeCheck")
        self.check_label.setTextFormat(Qt.TextFormat.PlainText)
        self.check_label.setWordWrap(True)
        self.estimate_label = QLabel("")
        self.estimate_label.setTextFormat(Qt.TextFormat.PlainText)
        self.estimate_label.setWordWrap(True)
        self.code_caption = QLabel("")
        self.code_caption.setWordWrap(True)
        self.ranks_label = QLabel("")
        self.ranks_label.setTextFormat(Qt.TextFormat.PlainText)
        self.ranks_label.setWordWrap(True)
        self.ranks_label.setVisible(False)
        self.editor = CodeEditorWidget()
        self.editor.textChanged.connect(self._on_source_changed)
        self.source_problems_label = QLabel("")
        self.source_problems_label.setTextFormat(Qt.TextFormat.PlainText)
        self.source_problems_label.setWordWrap(True)
        self.source_problems_label.setStyleSheet(f"color: {ERROR.name()};")
        self.source_problems_label.setVisible(False)
        self.dry_run_button = QPushButton("Dry run")
        self.dry_run_button.setToolTip("Run this code here alone: on your own data for the tags "
                                       "you hold, on mock data shaped like the others' assets. "
                                       "Nothing is sent to anyone.")
        self.dry_run_button.clicked.connect(self._on_dry_run_clicked)
        self.dry_run_progress = QProgressBar()
        self.dry_run_progress.setRange(0, 0)
        self.dry_run_progress.setMaximumWidth(120)
        self.dry_run_progress.setVisible(False)
        self.dry_run_label = QLabel("")
        self.dry_run_label.setTextFormat(Qt.TextFormat.PlainText)
        self.dry_run_label.setWordWrap(True)
        dry_row = QHBoxLayout()
        dry_row.addWidget(self.dry_run_button)
        dry_row.addWidget(self.dry_run_progress)
        dry_row.addWidget(self.dry_run_label, 1)
        self.dry_run_output = QPlainTextEdit()
        self.dry_run_output.setReadOnly(True)
        self.dry_run_output.setMaximumHeight(110)
        self.dry_run_output.setVisible(False)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(6, 0, 0, 0)
        right_layout.addWidget(self.check_label)
        right_layout.addWidget(self.estimate_label)
        right_layout.addWidget(self.code_caption)
        right_layout.addWidget(self.ranks_label)
        right_layout.addWidget(self.editor, 1)
        right_layout.addWidget(self.source_problems_label)
        right_layout.addLayout(dry_row)
        right_layout.addWidget(self.dry_run_output)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(scroll)
        splitter.addWidget(right)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([470, 530])
        splitter.setChildrenCollapsible(False)
        self.splitter = splitter

        # the bottom row
        self.load_button = QPushButton("Open…")
        self.load_button.setToolTip("Open a job saved as .json (the format `parley submit` takes)")
        self.load_button.clicked.connect(self._on_load_clicked)
        self.save_button = QPushButton("Save…")
        self.save_button.setToolTip("Save this job as .json; `parley submit job.json` sends it")
        self.save_button.clicked.connect(self._on_save_clicked)
        self.status_label = QLabel("")
        self.status_label.setTextFormat(Qt.TextFormat.PlainText)
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.send_button = QPushButton("Send to the parties")
        self.send_button.setDefault(True)
        self.send_button.clicked.connect(self.send)
        bottom = QHBoxLayout()
        bottom.addWidget(self.load_button)
        bottom.addWidget(self.save_button)
        bottom.addWidget(self.status_label, 1)
        bottom.addWidget(self.send_button)

        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(subtitle)
        layout.addWidget(splitter, 1)
        layout.addLayout(bottom)
        self._update_send()

    # -- loading ------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Reload this node's identity and its paired peers (the party candidates)."""
        self.conn.get("/status").then(self._on_status, self._on_load_error)
        self.conn.get("/peers").then(self._on_peers, self._on_load_error)

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = str(event.get("kind", ""))
        if kind.startswith("peer."):
            self._peers_timer.start()
        elif kind == "job.state" and self.sent_job and \
                event.get("job_id") == self.sent_job.get("id") and \
                event.get("role") == "orchestrator":
            self._on_sent_job_state(event.get("data") or {})

    def _on_connection_changed(self, up: bool, _message: str) -> None:
        if up:
            self._peers_timer.start()

    def _on_load_error(self, error: ParleyError) -> None:
        self.party_hint.setText(f"Could not load the parties: {error.message}")

    def _on_status(self, status: dict[str, Any]) -> None:
        self.me = status
        self._merge_candidate(str(status.get("name", "")), str(status.get("id", "")),
                              me=True, online=True)
        self._fill_parties()

    def _on_peers(self, answer: dict[str, Any]) -> None:
        paired = [p for p in answer.get("peers", []) if p.get("state") == "paired"]
        ids = {str(p.get("node_id")) for p in paired}
        for peer in paired:
            self._merge_candidate(str(peer.get("name", "")), str(peer.get("node_id", "")),
                                  online=bool(peer.get("online")))
        for c in self.candidates:  # unpaired since: no longer a party candidate
            if not c["me"] and c["node_id"] and c["node_id"] not in ids:
                c["paired"] = False
        self.candidates = [c for c in self.candidates if c["me"] or c["paired"] or c["checked"]]
        self._fill_parties()

    def _merge_candidate(self, name: str, node_id: str, me: bool = False,
                         online: bool | None = None) -> None:
        for c in self.candidates:
            if (node_id and c["node_id"] == node_id) or (not c["node_id"] and c["name"] == name):
                c.update(name=name or c["name"], node_id=node_id or c["node_id"], me=me,
                         paired=True, online=online)
                return
        self.candidates.append({"key": node_id or f"name:{name}", "name": name,
                                "node_id": node_id, "me": me, "paired": True, "online": online,
                                "checked": False})
        if not any(c["checked"] for c in self.candidates):
            self.candidates.sort(key=lambda c: c["name"].lower())

    # -- parties ------------------------------------------------------------------------------
    def chosen(self) -> list[dict[str, Any]]:
        """The ticked parties in rank order."""
        return [c for c in self.candidates if c["checked"]]

    def _ranks(self) -> dict[str, int]:
        return {c["key"]: i for i, c in enumerate(self.chosen())}

    def _candidate(self, key: str | None) -> dict[str, Any] | None:
        return next((c for c in self.candidates if c["key"] == key), None)

    def _party_words(self, c: dict[str, Any]) -> str:
        text = c["name"] or c["node_id"][:12]
        if c["me"]:
            text += " (this node)"
        elif not c["paired"]:
            text += " · not paired"
        elif c["online"] is False:
            text += " · offline"
        return text

    def _fill_parties(self) -> None:
        self._filling = True
        current = self.party_list.currentRow()
        self.party_list.clear()
        ranks = self._ranks()
        for c in self.candidates:
            rank = ranks.get(c["key"])
            words = self._party_words(c)
            item = QListWidgetItem(f"rank {rank}:  {words}" if rank is not None else words)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if c["checked"] else Qt.CheckState.Unchecked)
            item.setData(KEY_ROLE, c["key"])
            item.setIcon(identicon_icon(c["node_id"] or c["name"]))
            item.setToolTip(c["node_id"] or "a node this one does not know")
            if not c["paired"]:
                item.setForeground(QColor(ERROR))
            self.party_list.addItem(item)
        if 0 <= current < self.party_list.count():
            self.party_list.setCurrentRow(current)
        rows = max(3, min(8, self.party_list.count()))
        self.party_list.setFixedHeight(rows * max(24, self.party_list.sizeHintForRow(0)) +
                                       2 * self.party_list.frameWidth() + 4)
        self._filling = False
        self._update_party_buttons()
        self._fill_inputs()
        self._fill_receivers()
        self.sig_parties_loaded.emit([c["name"] for c in self.candidates])

    def party_names(self) -> list[str]:
        """Every candidate's name, in list order."""
        return [c["name"] for c in self.candidates]

    def set_party_checked(self, name: str, on: bool = True) -> bool:
        """Tick (or untick) a party by name or node id, as a click on its box does."""
        for row, c in enumerate(self.candidates):
            if name in (c["name"], c["node_id"]):
                self.party_list.item(row).setCheckState(
                    Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
                return True
        return False

    def _on_party_item_changed(self, item: QListWidgetItem) -> None:
        if self._filling:
            return
        c = self._candidate(item.data(KEY_ROLE))
        if c is None:
            return
        on = item.checkState() == Qt.CheckState.Checked
        if on != c["checked"]:
            c["checked"] = on
            self._parties_changed()

    def _move_party(self, step: int) -> None:
        row = self.party_list.currentRow()
        to = row + step
        if not (0 <= row < len(self.candidates) and 0 <= to < len(self.candidates)):
            return
        self.candidates[row], self.candidates[to] = self.candidates[to], self.candidates[row]
        self._parties_changed()
        self.party_list.setCurrentRow(to)

    def _update_party_buttons(self) -> None:
        row = self.party_list.currentRow()
        self.up_button.setEnabled(row > 0)
        self.down_button.setEnabled(0 <= row < self.party_list.count() - 1)

    def _parties_changed(self) -> None:
        self._fill_parties()
        self._changed()

    # -- templates ----------------------------------------------------------------------------
    def choose_template(self, key: str) -> None:
        """Pick what to run (a template's key: inference, feature-aggregation, data-labelling,
        mlp, statistics, custom), as choosing it in the list does."""
        index = self.template_combo.findData(key)
        if index >= 0:
            self.template_combo.setCurrentIndex(index)

    def _on_template_changed(self, index: int) -> None:
        if self._filling:
            return
        self._apply_template(template(str(self.template_combo.itemData(index))), keep=True)
        self._changed()

    def _apply_template(self, t: Template, keep: bool) -> None:
        """Switch to ``t``, keeping the inputs already bound where the new job has a place
        for them (the same role, or the same kind of asset coming from custom code)."""
        old, previous = self.inputs, self.template
        if previous.kind == "source" and t.kind != "source":
            self._custom_source = self.editor.toPlainText()
        if t.kind == "source" and previous.kind != "source":
            self._start_custom_from(previous if keep else None)
        self.template = t
        if t.kind == "source":
            self.inputs = [Binding("input", b.kind, b.tag, b.holder, b.part, b.asset)
                           for b in old if b.tag] if keep else []
        else:
            bound = [b for b in old if b.tag] if keep else []

            def take(role_key: str, kind: str) -> Binding | None:
                for b in bound:
                    if b.role == role_key or (previous.kind == "source" and b.kind == kind):
                        bound.remove(b)
                        return Binding(role_key, kind, b.tag, b.holder,
                                       b.part if role_key == "labels" else "", b.asset)
                return None

            inputs = [take(key, t.role(key).kind) or Binding(key, t.role(key).kind)
                      for key in t.initial]
            for role in t.roles:  # more of a repeated role than the template starts with
                while role.repeat and (more := take(role.key, role.kind)) is not None:
                    inputs.append(more)
            self.inputs = inputs
        if not keep or self.precision_spin.value() == previous.precision_bits:
            self.precision_spin.setValue(t.precision_bits)
        self.template_summary.setText(t.summary)
        self._output_touched = self._output_touched and keep
        self._show_template_widgets()
        self._fill_inputs()
        self._fill_receivers()

    def _start_custom_from(self, previous: Template | None) -> None:
        """Custom code starts from what the orchestrator wrote before, else from the code the
        plan rendered to (its receiver kept), else from an example using the bound inputs."""
        if self._source_edited and self._custom_source.strip():
            self._set_source(self._custom_source)
            return
        out = self._output_key
        source = str(self.last_check.get("source") or "") if self.last_check.get("ok") else ""
        if source and previous is not None:
            self._set_source(source)
        else:
            ranks = self._ranks()
            bound = [(b.kind, b.tag, ranks[b.holder]) for b in self.inputs
                     if b.tag and b.holder in ranks]
            self._set_source(starter_source(bound, ranks.get(str(out), 0)))
        self._result_keys = [out] if out else []
        self._reveal_keys = [out] if out else []
        self._receivers_touched = out is not None

    def _set_source(self, source: str) -> None:
        self._filling = True
        self.editor.setPlainText(source)
        self._filling = False
        self._source_gen += 1
        self._source_timer.start()

    def _show_template_widgets(self) -> None:
        t = self.template
        custom = t.kind == "source"
        form = self.options_form
        form.setRowVisible(self.output_combo, not custom)
        form.setRowVisible(self.receiver_table, custom)
        form.setRowVisible(self.epochs_spin, t.kind == "train")
        form.setRowVisible(self.rate_spin, t.kind == "train")
        form.setRowVisible(self.hidden_spin, t.kind == "train" and t.model == "mlp")
        form.setRowVisible(self.stats_widget, t.kind == "statistics")
        histogram = t.kind == "statistics" and self.stat_boxes["histogram"].isChecked()
        form.setRowVisible(self.column_spin, histogram)
        form.setRowVisible(self.edges_edit, histogram)
        self.add_input_button.setVisible(any(r.repeat for r in t.roles))
        self.remove_input_button.setVisible(any(r.repeat for r in t.roles))
        self.editor.setReadOnly(not custom)
        self.source_problems_label.setVisible(custom and bool(self.static_problems))
        if custom:
            self.code_caption.setText("Your code: every party's owner reviews exactly this. "
                                      "Ctrl+Space completes the job API's names.")
            self.editor.set_problems(self.static_problems)
        else:
            self.code_caption.setText("The code every party's owner will review (each party's "
                                      "node renders it from the plan; nothing you send runs "
                                      "as code):")
            self.editor.set_problems([])

    # -- inputs -------------------------------------------------------------------------------
    def _role_label(self, row: int, b: Binding) -> str:
        role = self.template.role(b.role)
        same = [i for i, x in enumerate(self.inputs) if x.role == b.role]
        number = f" {same.index(row) + 1}" if role.repeat and len(same) > 1 else ""
        if self.template.kind == "source":
            return f"Input {row + 1}"
        return f"{role.label}{number}"

    def _fill_inputs(self) -> None:
        self._filling = True
        selected = self.selected_input()
        custom = self.template.kind == "source"
        self.input_table.setHorizontalHeaderLabels(["Kind" if custom else "Input",
                                                    *INPUT_COLUMNS[1:]])
        self.input_table.setRowCount(len(self.inputs))
        chosen = self.chosen()
        for row, b in enumerate(self.inputs):
            role = self.template.role(b.role)
            self.input_table.setItem(row, 0, _item("" if custom else self._role_label(row, b),
                                                   role.hint))
            # cell widgets are kept and refilled: one made per row, not one per change
            kind = self.input_table.cellWidget(row, 0)
            if custom:
                if not isinstance(kind, QComboBox):
                    kind = QComboBox()
                    kind.addItems(["dataset", "model"])
                    kind.activated.connect(lambda _i, r=row, box=kind: self._on_kind_chosen(
                        r, box.currentText()))
                    self.input_table.setCellWidget(row, 0, kind)
                kind.setCurrentText(b.kind or "dataset")
            elif kind is not None:
                kind.hide()  # deleted later by Qt; hidden now so it never shows over the text
                self.input_table.removeCellWidget(row, 0)
            tag = _item(b.tag, "the asset's tag: type it, or pick the asset in the catalog "
                        "below", editable=True)
            self.input_table.setItem(row, 1, tag)
            holder = self.input_table.cellWidget(row, 2)
            if not isinstance(holder, QComboBox):
                holder = QComboBox()
                holder.activated.connect(lambda _i, r=row, box=holder: self._on_holder_chosen(
                    r, box.currentData()))
                self.input_table.setCellWidget(row, 2, holder)
            holder.clear()
            holder.addItem("—", None)
            for c in chosen:
                holder.addItem(c["name"], c["key"])
            if b.holder is not None and holder.findData(b.holder) < 0:
                c = self._candidate(b.holder)
                holder.addItem(f"{c['name'] if c else b.holder} (not a party)", b.holder)
            holder.setCurrentIndex(max(0, holder.findData(b.holder)))
            self.input_table.setItem(row, 3, self._asset_item(b))
        self._filling = False
        rows = max(2, len(self.inputs))
        self.input_table.setFixedHeight(self.input_table.horizontalHeader().height() + 4 +
                                        rows * self.input_table.verticalHeader()
                                        .defaultSectionSize())
        if selected is not None and selected < self.input_table.rowCount():
            self.input_table.selectRow(selected)
        elif self.inputs and self.selected_input() is None:
            self._select_next_unbound()
        self._update_use_button()

    def _asset_item(self, b: Binding) -> QTableWidgetItem:
        asset = b.asset or self._lookup(b)
        if asset is None:
            words = "not bound yet" if not b.tag else "not found in the catalogs searched"
            item = _item(words)
            item.setForeground(QColor(WARNING if not b.tag else
                                      self.palette().color(self.foregroundRole())))
            return item
        shape, columns = asset_words(asset)
        where = self._candidate(b.holder)
        part = " (its label column)" if b.part == "labels" else ""
        text = f"{asset.get('name', '')} ({shape}){part}"
        tip = f"{asset.get('name', '')} at {where['name'] if where else '?'}\n{shape}"
        if columns:
            tip += "\ncolumns: " + ", ".join(
                str(c) for c in (asset.get("schema") or {}).get("columns") or [])
        return _item(text, tip)

    def _lookup(self, b: Binding) -> dict[str, Any] | None:
        c = self._candidate(b.holder)
        if c is None or not b.tag:
            return None
        return self.known_assets.get((c["node_id"], b.tag))

    def selected_input(self) -> int | None:
        rows = self.input_table.selectionModel().selectedRows() if \
            self.input_table.selectionModel() else []
        return rows[0].row() if rows else None

    def select_input(self, row: int) -> None:
        self.input_table.selectRow(row)

    def _select_next_unbound(self) -> None:
        for row, b in enumerate(self.inputs):
            if not b.tag or b.holder is None:
                self.input_table.selectRow(row)
                return

    def _on_input_item_changed(self, item: QTableWidgetItem) -> None:
        if self._filling or item.column() != 1 or item.row() >= len(self.inputs):
            return
        b = self.inputs[item.row()]
        tag = item.text().strip().lower()
        if tag != b.tag:
            b.tag, b.asset = tag, None
            b.asset = self._lookup(b)
            self._fill_inputs()
            self._changed()

    def _on_holder_chosen(self, row: int, key: str | None) -> None:
        if row < len(self.inputs) and self.inputs[row].holder != key:
            b = self.inputs[row]
            b.holder = key
            b.asset = self._lookup(b)
            self._fill_inputs()
            self._changed()

    def _on_kind_chosen(self, row: int, kind: str) -> None:
        if not self._filling and row < len(self.inputs) and self.inputs[row].kind != kind:
            self.inputs[row].kind = kind
            self._changed()

    def _on_add_input(self) -> None:
        repeat = next((r for r in self.template.roles if r.repeat), None)
        if repeat is None:
            return
        # a new feature or row share goes after the last of its kind
        last = max((i for i, b in enumerate(self.inputs) if b.role == repeat.key), default=-1)
        self.inputs.insert(last + 1, Binding(repeat.key, repeat.kind or "dataset"))
        self._fill_inputs()
        self.input_table.selectRow(last + 1)
        self._changed()

    def _on_remove_input(self) -> None:
        row = self.selected_input()
        if row is None:
            return
        role = self.template.role(self.inputs[row].role)
        if not role.repeat or sum(b.role == role.key for b in self.inputs) <= 1 and \
                self.template.kind != "source":
            self.status_label.setText(f"This job needs its {role.label.lower()} input.")
            return
        del self.inputs[row]
        self._fill_inputs()
        self._changed()

    # -- the catalog --------------------------------------------------------------------------
    def search(self, text: str) -> None:
        """Search this node's and paired peers' catalogs for every tag in ``text`` (all of
        them must match); empty text lists everything they offer."""
        tags = [t for t in text.replace(",", " ").split() if t]
        self._searched_tags = [t.lower() for t in tags]
        query = "&".join(f"tag={quote(t, safe='')}" for t in tags)
        self.search_button.setEnabled(False)
        self.search_status.setText(f"Searching for {', '.join(tags)}…" if tags else
                                   "Listing what this node and paired peers offer…")
        self.conn.get(f"/search?{query + '&' if query else ''}timeout={SEARCH_WAIT_S}",
                      timeout=SEARCH_WAIT_S + 15).then(self._on_search_answer,
                                                       self._on_search_error)

    def _on_search_clicked(self) -> None:
        self.search(self.search_edit.text())

    def _on_search_answer(self, answer: dict[str, Any]) -> None:
        self.search_button.setEnabled(True)
        self.catalog = []
        for match in answer.get("matches", []):
            node = match.get("node") or {}
            for asset in match.get("assets", []):
                self.catalog.append((node, asset))
                for tag in asset.get("tags", []):
                    self.known_assets[(str(node.get("node_id", "")), str(tag))] = asset
        self.catalog_table.setRowCount(len(self.catalog))
        for row, (node, asset) in enumerate(self.catalog):
            node_item = _item(str(node.get("name", "")), str(node.get("node_id", "")))
            node_item.setIcon(identicon_icon(str(node.get("node_id", ""))))
            shape, columns = asset_words(asset)
            all_columns = ", ".join(str(c) for c in (asset.get("schema") or {}).get("columns")
                                    or [])
            cells = [node_item,
                     _item(str(asset.get("name", "")), str(asset.get("description", ""))),
                     _item(str(asset.get("kind", ""))), _item(shape),
                     _item(columns, all_columns),
                     _item(", ".join(str(t) for t in asset.get("tags", [])))]
            for col, cell in enumerate(cells):
                self.catalog_table.setItem(row, col, cell)
        found = len(self.catalog)
        nodes = len(answer.get("matches", []))
        parts = [f"{found} asset{'s' if found != 1 else ''} on {nodes} "
                 f"node{'s' if nodes != 1 else ''}. Select one, then “Use”."
                 if found else "Nothing matches."]
        for name in answer.get("slow", []):
            parts.append(f"{name}: slow, not waited for.")
        for err in answer.get("errors", []):
            parts.append(f"{err.get('node')}: did not answer ({err.get('error')}).")
        self.search_status.setText(" ".join(parts))
        for b in self.inputs:  # a loaded job's inputs learn their assets
            if b.asset is None:
                b.asset = self._lookup(b)
        self._fill_inputs()
        self._update_use_button()
        self.sig_search_finished.emit(answer)

    def _on_search_error(self, error: ParleyError) -> None:
        self.search_button.setEnabled(True)
        self.search_status.setText(f"The search failed: {error.message}")

    def catalog_rows(self) -> list[tuple[str, str, str]]:
        """(node name, asset name, kind) of each row of the catalog, top to bottom."""
        return [(str(n.get("name", "")), str(a.get("name", "")), str(a.get("kind", "")))
                for n, a in self.catalog]

    def select_asset(self, node: str, tag: str) -> bool:
        """Select the catalog row of the asset tagged ``tag`` at ``node`` (name or id)."""
        for row, (n, a) in enumerate(self.catalog):
            if node in (n.get("name"), n.get("node_id")) and tag in a.get("tags", []):
                self.catalog_table.selectRow(row)
                return True
        return False

    def _selected_catalog(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        rows = self.catalog_table.selectionModel().selectedRows() if \
            self.catalog_table.selectionModel() else []
        return self.catalog[rows[0].row()] if rows and rows[0].row() < len(self.catalog) \
            else None

    def _target_input(self, asset: dict[str, Any] | None) -> int | None:
        """The input the selected asset would bind: the selected row, else the first unbound
        one it fits."""
        row = self.selected_input()
        if row is not None:
            return row
        for i, b in enumerate(self.inputs):
            if not b.tag and (asset is None or not b.kind or b.kind == asset.get("kind")):
                return i
        return None

    def _update_use_button(self) -> None:
        picked = self._selected_catalog()
        custom = self.template.kind == "source"
        row = self._target_input(picked[1] if picked else None)
        if row is None and custom:
            self.use_button.setText("Use as a new input")
            self.use_button.setEnabled(picked is not None)
            return
        label = self._role_label(row, self.inputs[row]) if row is not None else ""
        self.use_button.setText(f"Use for {label}" if label else "Use for the selected input")
        fits = picked is not None and row is not None and (
            custom or picked[1].get("kind") == self.inputs[row].kind)
        self.use_button.setEnabled(fits)
        if picked is not None and row is not None and not fits:
            self.use_button.setToolTip(f"{label} needs a {self.inputs[row].kind}, not a "
                                       f"{picked[1].get('kind')}")
        else:
            self.use_button.setToolTip("Bind the selected input to this asset (double-click "
                                       "does the same)")

    def use_selected(self) -> bool:
        """Bind the selected (or next unbound) input to the asset selected in the catalog;
        its holder becomes a party if it was not one."""
        picked = self._selected_catalog()
        if picked is None:
            return False
        node, asset = picked
        row = self._target_input(asset)
        if row is None and self.template.kind == "source":
            self.inputs.append(Binding("input", str(asset.get("kind", "dataset"))))
            row = len(self.inputs) - 1
        if row is None:
            return False
        b = self.inputs[row]
        if self.template.kind != "source" and asset.get("kind") != b.kind:
            self.status_label.setText(f"{self._role_label(row, b)} needs a {b.kind}; "
                                      f"{asset.get('name')} is a {asset.get('kind')}.")
            return False
        tags = [str(t) for t in asset.get("tags", [])]
        if not tags:
            self.status_label.setText(f"{asset.get('name')} has no tag, so a job cannot name "
                                      f"it; its owner can add one in My assets.")
            return False
        tag = next((t for t in self._searched_tags if t in tags), tags[0])
        self._merge_candidate(str(node.get("name", "")), str(node.get("node_id", "")),
                              me=node.get("node_id") == self.me.get("id"),
                              online=True)
        holder = next(c for c in self.candidates if c["node_id"] == node.get("node_id"))
        if not holder["checked"]:
            holder["checked"] = True  # whoever holds an input takes part
        label = (asset.get("schema") or {}).get("label")
        b.tag, b.holder, b.asset = tag, holder["key"], asset
        b.kind = str(asset.get("kind", b.kind))
        b.part = "labels" if b.role == "labels" and isinstance(label, dict) else ""
        self.status_label.setText("")
        self.input_table.clearSelection()
        self._fill_parties()
        self._select_next_unbound()
        self._changed()
        return True

    # -- receivers ----------------------------------------------------------------------------
    def _default_output(self) -> str | None:
        t = self.template
        if t.output_role:
            holder = next((b.holder for b in self.inputs if b.role == t.output_role
                           and b.holder is not None), None)
            if holder is not None:
                return holder
        chosen = self.chosen()
        return chosen[0]["key"] if chosen else None

    def _fill_receivers(self) -> None:
        self._filling = True
        chosen = self.chosen()
        keys = [c["key"] for c in chosen]
        if not self._output_touched or self._output_key not in keys:
            self._output_key = self._default_output()
            self._output_touched = False
        self.output_combo.clear()
        for rank, c in enumerate(chosen):
            self.output_combo.addItem(f"{c['name']} (rank {rank})", c["key"])
        self.output_combo.setCurrentIndex(max(0, self.output_combo.findData(self._output_key)))
        if not self._receivers_touched:
            first = self._default_output()
            self._result_keys = [first] if first else []
            self._reveal_keys = [first] if first else []
        self.receiver_table.setRowCount(len(chosen))
        for rank, c in enumerate(chosen):
            self.receiver_table.setItem(rank, 0, _item(f"{c['name']} (rank {rank})"))
            for col, keys_on in ((1, self._result_keys), (2, self._reveal_keys)):
                box = QTableWidgetItem()
                box.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
                box.setCheckState(Qt.CheckState.Checked if c["key"] in keys_on
                                  else Qt.CheckState.Unchecked)
                box.setData(KEY_ROLE, c["key"])
                box.setToolTip("its return value goes back to you, the orchestrator" if col == 1
                               else "get_plain_text(dst=this rank) may decrypt to it")
                self.receiver_table.setItem(rank, col, box)
        self._filling = False

    def _on_output_chosen(self, index: int) -> None:
        self._output_key = self.output_combo.itemData(index)
        self._output_touched = True
        self._changed()

    def _on_receiver_changed(self, item: QTableWidgetItem) -> None:
        if self._filling or item.column() not in (1, 2):
            return
        keys = self._result_keys if item.column() == 1 else self._reveal_keys
        key = item.data(KEY_ROLE)
        on = item.checkState() == Qt.CheckState.Checked
        if on and key not in keys:
            keys.append(key)
        elif not on and key in keys:
            keys.remove(key)
        self._receivers_touched = True
        self._changed()

    def set_receivers(self, result_to: list[str], reveal_to: list[str]) -> None:
        """Custom code: who gets the result and to whom it may decrypt (names), as ticking
        their boxes does."""
        by_name = {c["name"]: c["key"] for c in self.chosen()}
        self._result_keys = [by_name[n] for n in result_to if n in by_name]
        self._reveal_keys = [by_name[n] for n in reveal_to if n in by_name]
        self._receivers_touched = True
        self._fill_receivers()
        self._changed()

    # -- the spec -----------------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"epochs": self.epochs_spin.value(),
                                  "learning_rate": round(self.rate_spin.value(), 6),
                                  "hidden": self.hidden_spin.value(),
                                  "stats": [s for s, box in self.stat_boxes.items()
                                            if box.isChecked()],
                                  "column": self.column_spin.value()}
        return params

    def _edges(self) -> list[int | float]:
        parts = [p.strip() for p in self.edges_edit.text().replace(";", ",").split(",")]
        return [_number(p) for p in parts if p]

    def entry(self) -> str:
        match = _DEF.search(self.editor.toPlainText())
        return match.group(1) if match else "run"

    def compose(self) -> tuple[dict[str, Any] | None, list[str]]:
        """The job spec as ``POST orchestrations`` takes it, or None and what is missing, in
        words (checked here before the node is asked)."""
        problems: list[str] = []
        chosen = self.chosen()
        t = self.template
        if len(chosen) < 2:
            problems.append("Choose at least two parties (tick them in step 2).")
        ranks = self._ranks()
        for row, b in enumerate(self.inputs):
            label = self._role_label(row, b)
            if not b.tag:
                problems.append(f"{label}: pick an asset in the catalog (or type its tag).")
            elif b.holder is None:
                problems.append(f"{label}: choose the party that holds '{b.tag}'.")
            elif b.holder not in ranks:
                c = self._candidate(b.holder)
                problems.append(f"{label}: '{b.tag}' is held by "
                                f"{c['name'] if c else b.holder}, who is not a party; tick it "
                                f"in step 2.")
        params = self._params()
        if t.kind == "statistics":
            if not params["stats"]:
                problems.append("Tick at least one statistic.")
            if "histogram" in params["stats"]:
                try:
                    edges = self._edges()
                except ValueError:
                    edges = []
                if len(edges) < 2 or edges != sorted(edges) or len(set(edges)) != len(edges):
                    problems.append("Histogram edges: at least two increasing numbers, "
                                    "separated by commas.")
                params["edges"] = edges
        if t.kind == "source":
            if not self.editor.toPlainText().strip():
                problems.append("Write the job's function (def run(crypten): ...).")
            if not self._result_keys and not self._reveal_keys:
                problems.append("Tick who receives the result (step 4): as it is, the job "
                                "reveals nothing to anybody.")
        elif self._output_key not in ranks:
            problems.append("Choose who receives the result (step 4).")
        if problems:
            return None, problems
        spec: dict[str, Any] = {"title": self.title_edit.text().strip() or self._default_title(),
                                "parties": [self._party_ref(c) for c in chosen]}
        if t.kind == "source":
            spec.update({
                "source": self.editor.toPlainText(), "entry": self.entry(),
                "bindings": [{"tag": b.tag, "rank": ranks[str(b.holder)],
                              "kind": b.kind or "dataset"} for b in self.inputs],
                "result_to": sorted(ranks[k] for k in self._result_keys if k in ranks),
                "reveal_to": sorted(ranks[k] for k in self._reveal_keys if k in ranks)})
        else:
            spec["plan"] = build_plan(t, self.inputs, ranks, ranks[str(self._output_key)],
                                      params)
        limits = {**self._limits, "time_s": self.time_spin.value()}
        spec["limits"] = limits
        if self.precision_spin.value() != DEFAULT_PRECISION_BITS:
            spec["crypten"] = {"precision_bits": self.precision_spin.value()}
        for key, value in self._extra.items():
            spec.setdefault(key, value)
        return spec, []

    def spec(self) -> dict[str, Any] | None:
        """The composed job spec, or None while something is missing."""
        return self.compose()[0]

    def _party_ref(self, c: dict[str, Any]) -> dict[str, str]:
        return {"name": c["name"], "node_id": c["node_id"]} if c["node_id"] else \
            {"name": c["name"]}

    def _default_title(self) -> str:
        words = {"inference": "encrypted inference", "statistics": "statistics over rows",
                 "source": "custom job"}
        t = self.template
        what = words.get(t.kind) or f"train a {t.model} model"
        tags = ", ".join(b.tag for b in self.inputs if b.tag)
        return f"{what} ({tags})" if tags else what

    # -- checking -----------------------------------------------------------------------------
    def _changed(self, *_: Any) -> None:
        """Something in the job changed: the last check no longer holds."""
        if self._filling:
            return
        self._gen += 1
        self._show_template_widgets_light()
        self._check_timer.start()
        self._update_send()

    def _show_template_widgets_light(self) -> None:
        histogram = self.template.kind == "statistics" and \
            self.stat_boxes["histogram"].isChecked()
        self.options_form.setRowVisible(self.column_spin, histogram)
        self.options_form.setRowVisible(self.edges_edit, histogram)

    def check_now(self) -> None:
        """Check the job at once (instead of after the typing pause)."""
        self._check_timer.stop()
        self._run_check()

    def _run_check(self) -> None:
        gen = self._gen
        spec, problems = self.compose()
        if spec is None:
            self._show_check({"ok": False, "problems": problems, "local": True}, gen)
            return
        self.check_label.setText("Checking the job with your node…")
        self.check_label.setStyleSheet("")
        self.conn.post("/compose/check", spec, timeout=60).then(
            lambda answer, g=gen: self._show_check(answer, g),
            lambda exc, g=gen: self._show_check(
                {"ok": False, "problems": [f"Your node could not check this job: {exc.message}"],
                 "error": True}, g), owner=self)

    def _show_check(self, answer: dict[str, Any], gen: int) -> None:
        if gen != self._gen:
            return  # the job changed meanwhile; a newer check is on its way
        answer = dict(answer)
        answer.setdefault("problems", [])
        self.last_check = answer
        self._checked_gen = gen
        ok = bool(answer.get("ok")) and not answer["problems"]
        if ok:
            self.check_label.setText("✓ Ready to send: your node found no reason this job "
                                     "would fail.")
            self.check_label.setStyleSheet(
                "QLabel { background: #eaf6ec; border: 1px solid #9ccfa6; border-radius: 6px;"
                " padding: 6px; color: #1b5e2a; }")
        else:
            lines = [str(p) for p in answer["problems"]] or [
                "the node said no, without a reason"]
            head = "Not ready yet:" if answer.get("local") else "✗ This job cannot be sent:"
            self.check_label.setText(head + "\n" + "\n".join(f"• {p}" for p in lines))
            style = "#fff4d6; border: 1px solid #d9a300; color: #5c4200;" if answer.get(
                "local") else "#fde7ea; border: 1px solid #e09aa4; color: #8a1020;"
            self.check_label.setStyleSheet(f"QLabel {{ background: {style} border-radius: 6px;"
                                           f" padding: 6px; }}")
        ranks = [p for p in answer.get("parties") or [] if isinstance(p, dict)]
        self.ranks_label.setText("In this code, " + ", ".join(
            f"rank {p.get('rank')} is {p.get('name')}" for p in ranks) + "." if ranks else "")
        self.ranks_label.setVisible(bool(ranks))
        self.estimate_label.setText(self._estimate_words(answer.get("estimate")))
        self.estimate_label.setVisible(bool(answer.get("estimate")))
        if self.template.kind != "source":
            source = str(answer.get("source") or "")
            self._filling = True
            self.editor.setPlainText(source.rstrip("\n") if source else
                                     "# The code appears here once every input is bound\n"
                                     "# and your node has rendered the plan.")
            self._filling = False
        self._update_send()
        self.sig_job_checked.emit(answer)

    @staticmethod
    def _estimate_words(estimate: Any) -> str:
        if not isinstance(estimate, dict):
            return ""
        parts = []
        seconds, rounds, size = (estimate.get(k) for k in ("seconds", "rounds", "bytes"))
        if isinstance(seconds, (int, float)):
            parts.append(f"about {seconds:.1f} s" if seconds < 120 else
                         f"about {seconds / 60:.0f} min")
        if isinstance(rounds, int):
            parts.append(f"{rounds:,} communication rounds")
        if isinstance(size, int):
            parts.append(f"{size / 1e6:.1f} MB sent between parties" if size >= 100_000
                         else f"{size / 1e3:.0f} kB sent between parties")
        text = "Estimated cost: " + (", ".join(parts) if parts else "no estimate")
        if estimate.get("basis"):
            text += f"; {estimate['basis']}"
        return text

    def problems(self) -> list[str]:
        """What the last check says stands in the way (empty when the job can be sent)."""
        return [str(p) for p in self.last_check.get("problems", [])] + [
            f"line {p.get('line')}: {CodeEditorWidget.problem_text(p)}"
            for p in (self.static_problems if self.template.kind == "source" else [])]

    # -- the custom code ----------------------------------------------------------------------
    def set_source(self, source: str) -> None:
        """Replace the custom code (as typing it would)."""
        self.editor.setPlainText(source)

    def _on_source_changed(self) -> None:
        if self._filling or self.template.kind != "source":
            return
        self._source_edited = True
        self._source_gen += 1
        self._source_timer.start()
        self._changed()

    def _run_source_check(self) -> None:
        if self.template.kind != "source":
            return
        gen = self._source_gen
        self.conn.post("/check-source", {"source": self.editor.toPlainText(),
                                         "entry": self.entry()}).then(
            lambda answer, g=gen: self._on_source_checked(answer.get("problems") or [], g),
            lambda exc, g=gen: self._on_source_checked(
                [{"line": 1, "col": 0, "rule": "", "message": f"the static check did not run: "
                                                             f"{exc.message}"}], g),
            owner=self)

    def _on_source_checked(self, problems: list[dict[str, Any]], gen: int) -> None:
        if gen != self._source_gen or self.template.kind != "source":
            return
        self._source_checked_gen = gen
        self.static_problems = [p for p in problems if isinstance(p, dict)]
        self.editor.set_problems(self.static_problems)
        self.source_problems_label.setText("\n".join(
            f"Line {p.get('line')}: {CodeEditorWidget.problem_text(p)}"
            for p in self.static_problems))
        self.source_problems_label.setVisible(bool(self.static_problems))
        self._update_send()
        self.sig_source_checked.emit(self.static_problems)

    # -- sending ------------------------------------------------------------------------------
    def up_to_date(self) -> bool:
        """Whether the node's answers shown (the job's check, and the static check of custom
        code) are for the job as it stands now."""
        return self._checked_gen == self._gen and (
            self.template.kind != "source" or self._source_checked_gen == self._source_gen)

    def why_not_sendable(self) -> str:
        """Why Send is disabled, in words ("" when it is enabled)."""
        if self._sending:
            return "Sending…"
        if self._checked_gen != self._gen:
            return "Your node is checking the job."
        if self.template.kind == "source":
            if self._source_checked_gen != self._source_gen:
                return "The static check is looking at your code."
            if self.static_problems:
                return "The static check refuses the code: fix the marked lines."
        if not self.last_check.get("ok") or self.last_check.get("problems"):
            return "The job cannot be sent as it is: see the problems above the code."
        return ""

    def _update_send(self) -> None:
        why = self.why_not_sendable()
        self.send_button.setEnabled(not why)
        self.send_button.setText("Send again" if self._sent_gen == self._gen else
                                 "Send to the parties")
        self.send_button.setToolTip(why or "Propose this job to every party; each owner reviews "
                                           "the code above and approves or rejects it")
        has_code = bool(self.editor.toPlainText().strip()) and (
            self.template.kind == "source" or bool(self.last_check.get("source")))
        busy = self.dry_run_progress.isVisible()
        self.dry_run_button.setEnabled(has_code and not busy)

    def send(self) -> None:
        """Propose the job to its parties (only when the node's check found it possible)."""
        if self.why_not_sendable():
            return
        spec = self.spec()
        if spec is None:
            return
        self._sending = True
        self._update_send()
        self.status_label.setText("Sending the job to the parties…")
        self.conn.post("/orchestrations", spec, timeout=60).then(self._on_sent,
                                                                 self._on_send_failed)

    def _on_sent(self, job: dict[str, Any]) -> None:
        self._sending = False
        self.sent_job = job
        self._sent_gen = self._gen
        self._update_send()
        self.status_label.setText(f"Sent as job {job.get('id')}: each party's owner reviews it "
                                  f"now; this line follows it.")
        self.status_label.setStyleSheet("")
        self.sig_job_submitted.emit(job)

    def _on_send_failed(self, error: ParleyError) -> None:
        self._sending = False
        self._update_send()
        self.status_label.setText(f"Not sent: {error.message}")
        self.status_label.setStyleSheet(f"color: {ERROR.name()};")

    def _on_sent_job_state(self, data: dict[str, Any]) -> None:
        state = str(data.get("state", ""))
        job_id = str(self.sent_job.get("id"))
        reason = f": {data['reason']}" if data.get("reason") else ""
        self.status_label.setText(f"Job {job_id}: {state.replace('_', ' ')}{reason}")
        colour = OK if state == "succeeded" else ERROR if state in ENDED else None
        self.status_label.setStyleSheet(f"color: {colour.name()};" if colour else "")
        if state in ENDED:
            self.conn.get(f"/orchestrations/{job_id}").then(self._on_sent_job_ended,
                                                            self._on_send_failed)

    def _on_sent_job_ended(self, job: dict[str, Any]) -> None:
        if job.get("state") == "succeeded":
            result = job.get("result") or {}
            shown = "; ".join(f"rank {rank}: {readable(value, 4)}"
                              for rank, value in sorted(result.items()))
            self.status_label.setText(f"Job {job.get('id')} succeeded. {shown}"[:600])
            self.status_label.setToolTip(json.dumps(result, default=str)[:4000])
        self.sig_job_ended.emit(job)

    # -- dry run ------------------------------------------------------------------------------
    def _on_dry_run_clicked(self) -> None:
        if self.template.kind == "source":
            source, entry = self.editor.toPlainText(), self.entry()
        else:
            source = str(self.last_check.get("source") or "")
            entry = str(self.last_check.get("entry") or "run")
        if not source.strip():
            return
        time_s = min(self.time_spin.value(), DRY_RUN_TIME_S)
        self.dry_run_progress.setVisible(True)
        self.dry_run_button.setText("Running…")
        self.dry_run_label.setText("Running here alone on your data and mock data…")
        self.dry_run_label.setStyleSheet("")
        self._update_send()
        self.conn.post("/dry-run", {"source": source, "entry": entry, "time_s": time_s},
                       timeout=time_s + 120).then(self._on_dry_run_answer,
                                                  self._on_dry_run_error)

    def _dry_run_done(self) -> None:
        self.dry_run_progress.setVisible(False)
        self.dry_run_button.setText("Dry run again")
        self._update_send()

    def _on_dry_run_answer(self, answer: dict[str, Any]) -> None:
        self._dry_run_done()
        state = str(answer.get("state", "?"))
        ok = state == "succeeded"
        mocked = answer.get("mocked") or []
        note = (f" (mock data for {', '.join(str(m) for m in mocked)}: those numbers mean "
                f"nothing)" if mocked and ok else "")
        reason = f": {answer['reason']}" if answer.get("reason") else ""
        self.dry_run_label.setText(f"Dry run {state}{reason}{note}")
        self.dry_run_label.setStyleSheet(f"color: {(OK if ok else ERROR).name()};")
        shown = dict(answer)
        if not ok and shown.get("result") is None:
            shown.pop("result", None)  # a failed run has none; "result: null" says nothing
        self.dry_run_output.setPlainText(dry_run_text(shown))
        self.dry_run_output.setVisible(True)
        self.sig_dry_run_finished.emit(answer)

    def _on_dry_run_error(self, error: ParleyError) -> None:
        self._dry_run_done()
        self.dry_run_label.setText(f"The dry run could not run: {error.message}")
        self.dry_run_label.setStyleSheet(f"color: {ERROR.name()};")
        self.sig_dry_run_finished.emit({"state": "error", "reason": error.message})

    # -- files --------------------------------------------------------------------------------
    def _on_save_clicked(self) -> None:
        spec, problems = self.compose()
        if spec is None:
            self.status_label.setText("Not saved: " + " ".join(problems))
            return
        name = re.sub(r"[^A-Za-z0-9_-]+", "-", spec["title"]).strip("-")[:40] or "job"
        path = self.ask_save_path(self, f"{name}.json")
        if path:
            self.save(path)

    def save(self, path: str | Path) -> bool:
        """Write the composed job to ``path`` as the JSON ``parley submit`` takes."""
        spec, problems = self.compose()
        if spec is None:
            self.status_label.setText("Not saved: " + " ".join(problems))
            return False
        try:
            Path(path).write_text(json.dumps(spec, indent=2) + "\n")
        except OSError as exc:
            self.status_label.setText(f"Not saved: {path}: {exc.strerror or exc}")
            return False
        self.status_label.setText(f"Saved to {path}; `parley submit {Path(path).name}` sends "
                                  f"it too.")
        return True

    def _on_load_clicked(self) -> None:
        path = self.ask_open_path(self)
        if path:
            self.load(path)

    def load(self, path: str | Path) -> bool:
        """Open a job saved as JSON (by this view, or written for ``parley submit``)."""
        try:
            spec = json.loads(Path(path).read_text())
        except OSError as exc:
            self.status_label.setText(f"Could not open {path}: {exc.strerror or exc}")
            return False
        except ValueError as exc:
            self.status_label.setText(f"{path} is not a job: not JSON ({exc})")
            return False
        if not self.load_spec(spec):
            return False
        self.status_label.setText(f"Opened {path}.")
        return True

    def load_spec(self, spec: dict[str, Any]) -> bool:
        """Fill the view from a job spec (the JSON ``POST orchestrations`` takes)."""
        if not isinstance(spec, dict) or not isinstance(spec.get("parties"), list) or \
                not (isinstance(spec.get("plan"), dict) or isinstance(spec.get("source"), str)):
            self.status_label.setText("That is not a job: it needs parties and a plan or "
                                      "source (the format `parley submit job.json` takes).")
            return False
        t = template_for(spec)
        self._filling = True
        self.template_combo.setCurrentIndex(self.template_combo.findData(t.key))
        self._filling = False
        # parties: the file's, in its order, ticked first; the other candidates after them
        keys: list[str] = []
        for ref in spec["parties"]:
            ref = ref if isinstance(ref, dict) else {"name": str(ref)}
            name, node_id = str(ref.get("name", "")), str(ref.get("node_id", ""))
            c = next((c for c in self.candidates if node_id and c["node_id"] == node_id), None) \
                or next((c for c in self.candidates if name in (c["name"], c["node_id"])), None)
            if c is None:
                c = {"key": node_id or f"name:{name}", "name": name, "node_id": node_id,
                     "me": False, "paired": False, "online": None, "checked": False}
                self.candidates.append(c)
            keys.append(c["key"])
        for c in self.candidates:
            c["checked"] = c["key"] in keys
        self.candidates.sort(key=lambda c: keys.index(c["key"]) if c["key"] in keys
                             else len(keys))
        holder = {rank: key for rank, key in enumerate(keys)}
        self._extra = {k: v for k, v in spec.items() if k not in _MANAGED}
        limits = spec.get("limits") if isinstance(spec.get("limits"), dict) else {}
        self._limits = {k: v for k, v in limits.items() if k != "time_s"}
        self._filling = True
        self.title_edit.setText(str(spec.get("title", "")))
        self.time_spin.setValue(int(limits.get("time_s", DEFAULT_TIME_S)))
        crypten = spec.get("crypten") if isinstance(spec.get("crypten"), dict) else {}
        self.precision_spin.setValue(int(crypten.get("precision_bits", DEFAULT_PRECISION_BITS)))
        self.template = t
        if t.kind == "source":
            self.inputs = [Binding("input", str(b.get("kind", "dataset")), str(b.get("tag", "")),
                                   holder.get(b.get("rank")))
                           for b in spec.get("bindings") or [] if isinstance(b, dict)]
            self.editor.setPlainText(str(spec["source"]))
            self._source_edited = True
            self._result_keys = [holder[r] for r in spec.get("result_to", [0]) if r in holder]
            self._reveal_keys = [holder[r] for r in spec.get("reveal_to",
                                                             spec.get("result_to", [0]))
                                 if r in holder]
            self._receivers_touched = True
        else:
            rows, out, params = read_plan(t, spec["plan"])
            self.inputs = [Binding(role, t.role(role).kind, tag, holder.get(rank), part)
                           for role, tag, rank, part in rows]
            self._output_key = holder.get(out) if out is not None else None
            self._output_touched = self._output_key is not None
            self.epochs_spin.setValue(int(params.get("epochs", 30)))
            self.rate_spin.setValue(float(params.get("learning_rate", 1.0)))
            self.hidden_spin.setValue(int(params.get("hidden", 8)))
            for name, box in self.stat_boxes.items():
                box.setChecked(name in params.get("stats", STATS))
            self.column_spin.setValue(int(params.get("column", 0)))
            if "edges" in params:
                self.edges_edit.setText(", ".join(str(e) for e in params["edges"]))
        for b in self.inputs:
            b.asset = self._lookup(b)
        self.template_summary.setText(t.summary)
        self._filling = False
        self._show_template_widgets()
        self._fill_parties()
        if t.kind == "source":
            self._source_gen += 1
            self._source_timer.start()
        self._changed()
        return True
