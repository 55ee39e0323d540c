"""The Network view: the peers this node knows, whom it trusts, and what they offer.

Peers appear and vanish as the node reports them (``peer.*`` and ``pairing.*`` events); the
view never polls. Each peer shows its trust state (paired, not paired, or *key changed*: a new
key under a name this node paired with, which is a different node until proven otherwise),
whether it is online, its address, and its key's short fingerprint with an identicon.

Search asks every paired peer's catalog for tags at once; a peer that does not answer within
three seconds is listed as slow rather than waited for.

Peer names, asset names and tags come from other nodes: they are shown as plain text.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from gui.client import NodeConnection
from gui.confirm_dialog import ConfirmDialog
from gui.debounce import debounced
from gui.identicon import identicon_icon, short_fingerprint
from gui.pairing_dialog import PairingDialog
from gui.style import ERROR, OK, WARNING
from gui.style import table_cell as _item
from node.address import parse_address
from node.errors import ParleyError

logger = logging.getLogger(__name__)
__all__ = ["NetworkView"]

SEARCH_WAIT_S = 3
DEBOUNCE_MS = 120
PEER_COLUMNS = ["Peer", "Trust", "Status", "Address", "Key fingerprint"]
RESULT_COLUMNS = ["Node", "Asset", "Kind", "Tags", "Shape"]
ID_ROLE = Qt.ItemDataRole.UserRole


def trust_of(peer: dict[str, Any], pairing: dict[str, Any] | None) -> tuple[str, str, str]:
    """(words, colour, tooltip) for a peer's trust state."""
    if peer.get("name_clash"):
        return "KEY CHANGED", ERROR.name(), str(peer["name_clash"])
    state = peer.get("state", "seen")
    if state == "key_changed":
        return "KEY CHANGED", ERROR.name(), ("this peer now shows another key; it is not the node "
                                          "you paired with until you pair again")
    if pairing is not None:
        if pairing.get("direction") == "in":
            return "asks to pair", WARNING.name(), "select it and press Pair to compare the code"
        return "pairing…", WARNING.name(), "waiting for both owners to confirm the code"
    if state == "paired":
        return "paired", OK.name(), "this node trusts its key for proposals and searches"
    if state == "revoked":
        return "unpaired", "", "you unpaired this node; pair again to trust it"
    return "not paired", "", "seen on the network; its key is not trusted yet"


def shape_of(asset: dict[str, Any]) -> str:
    schema = asset.get("schema") or {}
    if "shape" in schema:
        return " × ".join(str(n) for n in schema["shape"])
    if "inputs" in schema:
        def dims(v: dict[str, Any]) -> str:
            return "×".join("?" if n is None else str(n) for n in (v.get("shape") or []))
        return " → ".join(", ".join(dims(v) for v in schema.get(part, []))
                          for part in ("inputs", "outputs"))
    return ""


class NetworkView(QWidget):
    """Peers, pairing and search across paired peers' catalogs."""

    sig_pairing_opened = Signal(object)
    """A PairingDialog was opened (for a request this owner made or answers)."""
    sig_peers_changed = Signal(list)
    """The peer list was reloaded from the node (the peer documents)."""
    sig_search_finished = Signal(dict)
    """A search answered (the node's answer: matches, slow, errors)."""

    def __init__(self, conn: NodeConnection, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.conn = conn
        self.peers: list[dict[str, Any]] = []
        self.pairings: list[dict[str, Any]] = []
        self.dialogs: dict[str, PairingDialog] = {}
        self._adding = ""
        self._refresh_timer = debounced(self, DEBOUNCE_MS, self.refresh)
        self._build()
        conn.sig_event_received.connect(self._on_event)
        conn.sig_connection_changed.connect(self._on_connection_changed)
        self.refresh()

    # -- injectable questions (tests answer them without modal dialogs) -----------------------
    @classmethod
    def ask_address(cls, parent: QWidget | None) -> str | None:
        """HOST:PORT of a node multicast does not reach, or None."""
        text, ok = QInputDialog.getText(
            parent, "Add a node by address",
            "Address of the other node (HOST:PORT, as its owner sees it in Settings):",
            QLineEdit.EchoMode.Normal, "")
        return text.strip() if ok and text.strip() else None

    @classmethod
    def ask_unpair(cls, parent: QWidget | None, name: str) -> bool:
        """Whether the owner really wants to stop trusting ``name``."""
        return ConfirmDialog.ask(
            parent, "Unpair",
            f"Stop trusting {name}?\n\nIt will no longer be able to send this node proposals "
            f"or search its catalog, nor this node its. You can pair again later.",
            [("unpair", f"Unpair {name}")]) == "unpair"

    # -- layout ---------------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        peers_box = QGroupBox("Peers")
        peers_layout = QVBoxLayout(peers_box)
        self.peer_table = QTableWidget(0, len(PEER_COLUMNS))
        self.peer_table.setHorizontalHeaderLabels(PEER_COLUMNS)
        self.peer_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.peer_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.peer_table.verticalHeader().setVisible(False)
        self.peer_table.setIconSize(QSize(22, 22))
        self.peer_table.horizontalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.ResizeToContents)
        self.peer_table.horizontalHeader().setStretchLastSection(True)
        self.peer_table.horizontalHeader().setMinimumSectionSize(70)
        self.peer_table.itemSelectionChanged.connect(self._update_buttons)
        self.peer_table.itemDoubleClicked.connect(self._on_peer_double_clicked)
        peers_layout.addWidget(self.peer_table)
        self.empty_label = QLabel(
            "No other node seen yet. Nodes on this network appear here by themselves; "
            "for one on another network, use “Add by address…”.")
        self.empty_label.setWordWrap(True)
        peers_layout.addWidget(self.empty_label)
        self.status_label = QLabel("")
        self.status_label.setTextFormat(Qt.TextFormat.PlainText)
        self.status_label.setWordWrap(True)
        peers_layout.addWidget(self.status_label)
        buttons = QHBoxLayout()
        self.pair_button = QPushButton("Pair…")
        self.pair_button.setToolTip("Pair with the selected peer: both owners compare a code")
        self.pair_button.clicked.connect(self._on_pair_clicked)
        self.add_button = QPushButton("Add by address…")
        self.add_button.setToolTip("Pair with a node multicast does not reach (HOST:PORT)")
        self.add_button.clicked.connect(self._on_add_clicked)
        self.unpair_button = QPushButton("Unpair…")
        self.unpair_button.clicked.connect(self._on_unpair_clicked)
        buttons.addWidget(self.pair_button)
        buttons.addWidget(self.add_button)
        buttons.addStretch(1)
        buttons.addWidget(self.unpair_button)
        peers_layout.addLayout(buttons)
        layout.addWidget(peers_box, 3)

        search_box = QGroupBox("Search the catalogs of paired peers")
        search_layout = QVBoxLayout(search_box)
        row = QHBoxLayout()
        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("tags, e.g. wages 2024 (all must match)")
        self.search_edit.returnPressed.connect(self._on_search_clicked)
        self.search_button = QPushButton("Search")
        self.search_button.clicked.connect(self._on_search_clicked)
        row.addWidget(self.search_edit, 1)
        row.addWidget(self.search_button)
        search_layout.addLayout(row)
        self.result_table = QTableWidget(0, len(RESULT_COLUMNS))
        self.result_table.setHorizontalHeaderLabels(RESULT_COLUMNS)
        self.result_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.result_table.verticalHeader().setVisible(False)
        self.result_table.setIconSize(QSize(20, 20))
        self.result_table.horizontalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.ResizeToContents)
        self.result_table.horizontalHeader().setStretchLastSection(True)
        self.result_table.horizontalHeader().setMinimumSectionSize(70)
        search_layout.addWidget(self.result_table)
        self.search_status = QLabel("")
        self.search_status.setTextFormat(Qt.TextFormat.PlainText)
        self.search_status.setWordWrap(True)
        search_layout.addWidget(self.search_status)
        layout.addWidget(search_box, 2)
        self._update_buttons()

    # -- loading ------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Reload peers and pairing requests from the node (answers arrive later)."""
        self.conn.get("/peers").then(self._on_peers, self._on_load_error)
        self.conn.get("/pairings").then(self._on_pairings, self._on_load_error)

    def _on_event(self, event: dict[str, Any]) -> None:
        if str(event.get("kind", "")).startswith(("peer.", "pairing.")):
            self._refresh_timer.start()

    def _on_connection_changed(self, up: bool, _message: str) -> None:
        if up:
            self._refresh_timer.start()

    def _on_peers(self, answer: dict[str, Any]) -> None:
        self.peers = list(answer.get("peers", []))
        self._fill_peers()
        self.sig_peers_changed.emit(self.peers)

    def _on_pairings(self, answer: dict[str, Any]) -> None:
        self.pairings = list(answer.get("pairings", []))
        self._fill_peers()

    def _on_load_error(self, error: ParleyError) -> None:
        self.status_label.setText(f"Could not load the peers: {error.message}")

    def pending_pairing(self, node_id: str) -> dict[str, Any] | None:
        """The newest pending pairing request with ``node_id``, if any."""
        pending = [p for p in self.pairings
                   if p.get("node_id") == node_id and p.get("state") == "pending"]
        return pending[-1] if pending else None

    def _rows(self) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        rows = [(peer, self.pending_pairing(str(peer.get("node_id", "")))) for peer in self.peers]
        known = {str(p.get("node_id")) for p in self.peers}
        for pairing in self.pairings:  # a request from a node not in the book yet
            if pairing.get("state") == "pending" and pairing.get("node_id") not in known:
                try:
                    host, port = parse_address(pairing.get("address", ""))
                except ParleyError:
                    host, port = str(pairing.get("address", "")), 0
                rows.append(({"node_id": pairing.get("node_id", ""), "name": pairing.get("name"),
                              "host": host, "port": port, "state": "seen", "online": True},
                             pairing))
                known.add(str(pairing.get("node_id")))
        return rows

    def _fill_peers(self) -> None:
        selected = self.selected_peer()
        keep = selected.get("node_id") if selected else None
        self.peer_table.setRowCount(0)
        for peer, pairing in self._rows():
            r = self.peer_table.rowCount()
            self.peer_table.insertRow(r)
            node_id = str(peer.get("node_id", ""))
            name_item = _item(str(peer.get("name", "")), node_id)
            name_item.setIcon(identicon_icon(node_id))
            name_item.setData(ID_ROLE, node_id)
            words, colour, tip = trust_of(peer, pairing)
            trust_item = _item(words, tip)
            if colour:
                trust_item.setForeground(QColor(colour))
            if words == "KEY CHANGED":
                font = trust_item.font()
                font.setBold(True)
                trust_item.setFont(font)
            online = bool(peer.get("online"))
            status_item = _item("online" if online else "offline")
            if online:
                status_item.setForeground(OK)
            host, port = str(peer.get("host", "")), peer.get("port", "")
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            cells = [name_item, trust_item, status_item, _item(address),
                     _item(short_fingerprint(node_id), node_id)]
            for c, cell in enumerate(cells):
                self.peer_table.setItem(r, c, cell)
            if node_id == keep:
                self.peer_table.selectRow(r)
        self.empty_label.setVisible(self.peer_table.rowCount() == 0)
        self._update_buttons()

    # -- selection and buttons ----------------------------------------------------------------
    def peer_row(self, name_or_id: str) -> int:
        """The table row of a peer by name or node id, or -1."""
        for r in range(self.peer_table.rowCount()):
            item = self.peer_table.item(r, 0)
            if name_or_id in (item.text(), item.data(ID_ROLE)):
                return r
        return -1

    def select_peer(self, name_or_id: str) -> bool:
        row = self.peer_row(name_or_id)
        if row >= 0:
            self.peer_table.selectRow(row)
        return row >= 0

    def peer_text(self, name_or_id: str, column: str) -> str:
        """What the table shows for a peer in ``column`` ("Trust", "Status", ...)."""
        row = self.peer_row(name_or_id)
        return self.peer_table.item(row, PEER_COLUMNS.index(column)).text() if row >= 0 else ""

    def selected_peer(self) -> dict[str, Any] | None:
        rows = self.peer_table.selectionModel().selectedRows() if \
            self.peer_table.selectionModel() else []
        if not rows:
            return None
        node_id = self.peer_table.item(rows[0].row(), 0).data(ID_ROLE)
        for peer, _ in self._rows():
            if peer.get("node_id") == node_id:
                return peer
        return None

    def _update_buttons(self) -> None:
        peer = self.selected_peer()
        pending = self.pending_pairing(str(peer.get("node_id"))) if peer else None
        self.pair_button.setEnabled(peer is not None and (pending is not None
                                                          or peer.get("state") != "paired"))
        self.pair_button.setText("Compare code…" if pending else "Pair…")
        self.unpair_button.setEnabled(peer is not None and peer.get("state") == "paired")

    def _on_peer_double_clicked(self, _item: QTableWidgetItem) -> None:
        if self.pair_button.isEnabled():
            self._on_pair_clicked()

    # -- pairing ------------------------------------------------------------------------------
    def _on_pair_clicked(self) -> None:
        peer = self.selected_peer()
        if peer is None:
            return
        pending = self.pending_pairing(str(peer.get("node_id")))
        if pending is not None:
            self.open_pairing(pending)
            return
        self.status_label.setText(f"Asking {peer.get('name')} to pair…")
        self.conn.post("/pairings", {"peer": str(peer.get("node_id"))}).then(
            self._on_pairing_started, self._on_pair_error)

    def _on_add_clicked(self) -> None:
        address = self.ask_address(self)
        if not address:
            return
        self.status_label.setText(f"Adding {address}…")
        self._adding = address
        self.conn.post("/peers", {"address": address}).then(self._on_peer_added,
                                                             self._on_pair_error)

    def _on_peer_added(self, _answer: dict[str, Any]) -> None:
        address = self._adding
        self.status_label.setText(f"Asking {address} to pair…")
        self.conn.post("/pairings", {"peer": address}).then(self._on_pairing_started,
                                                             self._on_pair_error)

    def _on_pairing_started(self, pairing: dict[str, Any]) -> None:
        self.status_label.setText("")
        self.pairings = [p for p in self.pairings if p.get("id") != pairing.get("id")] + [pairing]
        self.open_pairing(pairing)
        self.refresh()

    def _on_pair_error(self, error: ParleyError) -> None:
        self.status_label.setText(f"Pairing did not start: {error.message}")

    def open_pairing(self, pairing: dict[str, Any]) -> PairingDialog:
        """Show (or raise) the dialog for one pairing request; it stays open, non-modal."""
        pairing_id = str(pairing.get("id"))
        dialog = self.dialogs.get(pairing_id)
        if dialog is None:
            dialog = PairingDialog(self.conn, pairing, self)
            dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            dialog.finished.connect(lambda _r, pid=pairing_id: self.dialogs.pop(pid, None))
            self.dialogs[pairing_id] = dialog
        dialog.show()
        dialog.raise_()
        self.sig_pairing_opened.emit(dialog)
        return dialog

    def _on_unpair_clicked(self) -> None:
        peer = self.selected_peer()
        if peer is None or not self.ask_unpair(self, str(peer.get("name"))):
            return
        self.conn.delete(f"/peers/{quote(str(peer.get('node_id')), safe='')}").then(
            self._on_unpaired, self._on_unpair_error)

    def _on_unpaired(self, peer: dict[str, Any]) -> None:
        told = "" if peer.get("peer_told") is not False else (
            f" {peer.get('name')} was not told ({peer.get('peer_told_detail')}).")
        self.status_label.setText(f"Unpaired {peer.get('name')}: its key is no longer "
                                  f"trusted.{told}")
        self.refresh()

    def _on_unpair_error(self, error: ParleyError) -> None:
        self.status_label.setText(f"Not unpaired: {error.message}")

    # -- search -------------------------------------------------------------------------------
    def search(self, text: str) -> None:
        """Search paired peers' catalogs for every tag in ``text`` (commas or spaces)."""
        tags = [t for t in text.replace(",", " ").split() if t]
        if not tags:
            self.search_status.setText("Type one or more tags to search for.")
            return
        query = "&".join(f"tag={quote(t, safe='')}" for t in tags)
        self.search_button.setEnabled(False)
        self.search_status.setText(f"Searching for {', '.join(tags)}…")
        self.conn.get(f"/search?{query}&timeout={SEARCH_WAIT_S}",
                      timeout=SEARCH_WAIT_S + 15).then(self._on_search_answer,
                                                       self._on_search_error)

    def _on_search_clicked(self) -> None:
        self.search(self.search_edit.text())

    def _on_search_answer(self, answer: dict[str, Any]) -> None:
        self.search_button.setEnabled(True)
        self.result_table.setRowCount(0)
        nodes = 0
        for match in answer.get("matches", []):
            node = match.get("node") or {}
            nodes += 1
            for asset in match.get("assets", []):
                r = self.result_table.rowCount()
                self.result_table.insertRow(r)
                node_item = _item(str(node.get("name", "")), str(node.get("node_id", "")))
                node_item.setIcon(identicon_icon(str(node.get("node_id", ""))))
                cells = [node_item, _item(str(asset.get("name", "")),
                                          str(asset.get("description", ""))),
                         _item(str(asset.get("kind", ""))),
                         _item(", ".join(str(t) for t in asset.get("tags", []))),
                         _item(shape_of(asset))]
                for c, cell in enumerate(cells):
                    self.result_table.setItem(r, c, cell)
        found = self.result_table.rowCount()
        parts = [f"{found} asset{'s' if found != 1 else ''} on {nodes} "
                 f"node{'s' if nodes != 1 else ''}." if found else "Nothing matches."]
        for name in answer.get("slow", []):
            parts.append(f"{name}: slow, not waited for.")
        for err in answer.get("errors", []):
            parts.append(f"{err.get('node')}: did not answer ({err.get('error')}).")
        self.search_status.setText(" ".join(parts))
        self.sig_search_finished.emit(answer)

    def _on_search_error(self, error: ParleyError) -> None:
        self.search_button.setEnabled(True)
        self.search_status.setText(f"The search failed: {error.message}")
