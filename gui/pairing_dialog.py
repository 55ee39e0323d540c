"""Pairing, as both owners see it: the same 6-digit code on two screens, compared by people.

The dialog shows one pairing request as the node holds it (``GET /admin/v1/pairings``): the
code in large digits, both keys' short fingerprints with their identicons, the peer's name and
address, and the time left. The owner compares the code with the other screen and confirms or
refuses; the node does the cryptography. The dialog follows ``pairing.*`` events, so "waiting
for the other owner", "paired" and "expired" appear without anyone pressing anything.

Everything about the peer (its name, its address) came from the network and is shown as plain
text, never as rich text.
"""

from __future__ import annotations

import logging
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from gui.client import NodeConnection
from gui.identicon import IdenticonWidget, short_fingerprint
from gui.style import ERROR, OK
from node.display import safe
from node.errors import ParleyError

logger = logging.getLogger(__name__)
__all__ = ["PairingDialog"]


def _plain(text: str, parent: QWidget | None = None) -> QLabel:
    label = QLabel(text, parent)
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def format_code(code: str) -> str:
    """``123456`` as ``123 456``: two groups are easier to read out."""
    return f"{code[:3]} {code[3:]}" if len(code) == 6 and code.isdigit() else code or "…"


class PairingDialog(QDialog):
    """One pairing request: compare the code, then confirm or refuse."""

    sig_pairing_changed = Signal(dict)
    """The node reported a new state of this pairing (the pairing document)."""
    sig_pairing_decided = Signal(str, bool)
    """This owner decided: (pairing id, True for confirmed / False for refused)."""

    def __init__(self, conn: NodeConnection, pairing: dict[str, Any],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.conn = conn
        self.pairing: dict[str, Any] = dict(pairing)
        self.pairing_id = str(pairing.get("id", ""))
        self._my_id = ""
        self._my_name = ""
        self._busy = False
        self._expires_in = float(pairing.get("expires_in_s") or 0)
        self.setWindowTitle("Pair with another node")
        self.setMinimumWidth(520)
        self._build()
        self._countdown = QTimer(self)
        self._countdown.setInterval(1000)
        self._countdown.timeout.connect(self._on_tick)
        self._countdown.start()
        self._show_pairing()
        conn.sig_event_received.connect(self._on_event)
        conn.get("/status").then(self._on_status, self._on_status_error)

    # -- the injectable modal form ----------------------------------------------------------
    @classmethod
    def ask(cls, conn: NodeConnection, pairing: dict[str, Any],
            parent: QWidget | None = None) -> bool | None:
        """Show the request modally: True if the owner confirmed, False if refused, None if
        the dialog was closed undecided. Tests replace this to answer without clicking."""
        dialog = cls(conn, pairing, parent)
        answer: list[bool] = []
        dialog.sig_pairing_decided.connect(lambda _id, ok: answer.append(ok))
        dialog.exec()
        return answer[-1] if answer else None

    # -- layout --------------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        layout.setSpacing(10)
        self.title_label = _plain("")
        font = self.title_label.font()
        font.setPointSizeF(font.pointSizeF() * 1.35)
        font.setBold(True)
        self.title_label.setFont(font)
        layout.addWidget(self.title_label)
        self.subtitle_label = _plain("")
        self.subtitle_label.setWordWrap(True)
        layout.addWidget(self.subtitle_label)

        code_frame = QFrame()
        code_frame.setFrameShape(QFrame.Shape.StyledPanel)
        code_frame.setStyleSheet("QFrame { background: palette(alternate-base); "
                                 "border-radius: 6px; }")
        code_layout = QVBoxLayout(code_frame)
        caption = QLabel("Pairing code")
        caption.setAlignment(Qt.AlignmentFlag.AlignCenter)
        code_layout.addWidget(caption)
        self.code_label = _plain("")
        self.code_label.setObjectName("pairingCode")
        code_font = QFont("monospace")
        code_font.setStyleHint(QFont.StyleHint.Monospace)
        code_font.setPointSize(34)
        code_font.setBold(True)
        code_font.setLetterSpacing(QFont.SpacingType.AbsoluteSpacing, 4)
        self.code_label.setFont(code_font)
        self.code_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        code_layout.addWidget(self.code_label)
        self.compare_label = _plain("")
        self.compare_label.setWordWrap(True)
        self.compare_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        code_layout.addWidget(self.compare_label)
        layout.addWidget(code_frame)

        keys = QGridLayout()
        keys.setHorizontalSpacing(10)
        keys.addWidget(QLabel("<b>Keys</b>"), 0, 0, 1, 3)
        self.my_icon = IdenticonWidget("", 36)
        self.my_name_label = _plain("This node")
        self.my_fingerprint_label = _plain("…")
        self.peer_icon = IdenticonWidget("", 36)
        self.peer_name_label = _plain("")
        self.peer_fingerprint_label = _plain("")
        mono = QFont("monospace")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        for row, (icon, name, fp) in enumerate(
                ((self.my_icon, self.my_name_label, self.my_fingerprint_label),
                 (self.peer_icon, self.peer_name_label, self.peer_fingerprint_label)), start=1):
            fp.setFont(mono)
            keys.addWidget(icon, row, 0)
            keys.addWidget(name, row, 1)
            keys.addWidget(fp, row, 2)
        keys.setColumnStretch(2, 1)
        layout.addLayout(keys)

        self.state_label = _plain("")
        self.state_label.setObjectName("pairingState")
        self.state_label.setWordWrap(True)
        layout.addWidget(self.state_label)
        self.time_label = _plain("")
        self.time_label.setEnabled(False)  # the palette's dimmed text, in any theme
        layout.addWidget(self.time_label)

        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.refuse_button = QPushButton("Refuse")
        self.refuse_button.setToolTip("The codes differ, or you do not know this node")
        self.refuse_button.clicked.connect(self._on_refuse_clicked)
        self.confirm_button = QPushButton("Confirm: the codes match")
        self.confirm_button.setDefault(True)
        self.confirm_button.clicked.connect(self._on_confirm_clicked)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.close)
        buttons.addWidget(self.close_button)
        buttons.addWidget(self.refuse_button)
        buttons.addWidget(self.confirm_button)
        layout.addLayout(buttons)

    # -- what the node says ----------------------------------------------------------------
    @property
    def code(self) -> str:
        return str(self.pairing.get("code", ""))

    @property
    def state(self) -> str:
        return str(self.pairing.get("state", "pending"))

    def _show_pairing(self) -> None:
        p = self.pairing
        name = safe(p.get("name", "")) or "the other node"
        incoming = p.get("direction") == "in"
        self.title_label.setText(f"Pair with {name}")
        address = str(p.get("address", ""))
        self.subtitle_label.setText(
            (f"{name} ({address}) asks to pair with this node." if incoming else
             f"You asked {name} ({address}) to pair.") +
            " Once paired, each node trusts the other's key for proposals and searches.")
        self.code_label.setText(format_code(self.code))
        self.compare_label.setText(f"Check that {name}'s owner sees exactly this code. "
                                   f"Confirm only if it matches.")
        self.peer_icon.set_node_id(str(p.get("node_id", "")))
        self.peer_name_label.setText(name)
        peer_fp = str(p.get("peer_fingerprint") or p.get("node_id", ""))
        self.peer_fingerprint_label.setText(short_fingerprint(peer_fp))
        self.peer_fingerprint_label.setToolTip(peer_fp)
        if self._my_id:
            self.my_icon.set_node_id(self._my_id)
        self.my_name_label.setText(f"This node ({self._my_name})" if self._my_name
                                   else "This node")
        mine = str(p.get("my_fingerprint") or self._my_id)
        if mine and not self._my_id:
            self.my_icon.set_node_id(mine)
        self.my_fingerprint_label.setText(short_fingerprint(mine) if mine else "…")
        self.my_fingerprint_label.setToolTip(mine)
        self._show_state()

    def state_text(self) -> str:
        """The pairing's state in words."""
        p, name = self.pairing, str(self.pairing.get("name", "")) or "the other node"
        state = self.state
        if state == "paired":
            return f"Paired with {name}. Each node now trusts the other's key."
        if state == "rejected":
            return "Refused: the nodes are not paired."
        if state == "expired":
            return "Expired before both owners confirmed. Ask again from the Network view."
        if p.get("local_confirmed") and not p.get("remote_confirmed"):
            return f"You confirmed. Waiting for the other owner ({name}) to confirm…"
        if p.get("remote_confirmed") and not p.get("local_confirmed"):
            return f"{name}'s owner confirmed. Compare the code, then confirm here."
        return "Waiting for you: compare the code with the other screen."

    def _show_state(self) -> None:
        state = self.state
        done = state in ("paired", "rejected", "expired")
        colour = {"paired": OK.name(), "rejected": ERROR.name(),
                  "expired": ERROR.name()}.get(state)
        self.state_label.setText(self.state_text())
        self.state_label.setStyleSheet((f"color: {colour}; " if colour else "")
                                       + "font-weight: bold;")
        decided = bool(self.pairing.get("local_confirmed"))
        self.confirm_button.setEnabled(not done and not decided and not self._busy
                                       and bool(self.code))
        self.refuse_button.setEnabled(not done and not self._busy)
        self.confirm_button.setVisible(not done)
        self.refuse_button.setVisible(not done)
        self.close_button.setDefault(done)
        if done:
            self._countdown.stop()
            self.time_label.setText("")
        else:
            self._show_time()

    def _show_time(self) -> None:
        left = max(0, int(self._expires_in))
        self.time_label.setText(f"Expires in {left // 60}:{left % 60:02d}" if left
                                else "Expiring…")

    def _on_tick(self) -> None:
        self._expires_in = max(0.0, self._expires_in - 1)
        if self.state == "pending":
            self._show_time()
            if self._expires_in <= 0:
                self._reload()  # the node says whether it expired

    def _on_status(self, status: dict[str, Any]) -> None:
        self._my_id = str(status.get("id", ""))
        self._my_name = str(status.get("name", ""))
        self._show_pairing()

    def _on_status_error(self, error: ParleyError) -> None:
        logger.debug("status for the pairing dialog: %s", error)

    def _on_event(self, event: dict[str, Any]) -> None:
        if not str(event.get("kind", "")).startswith(("pairing.", "peer.trust")):
            return
        data = event.get("data") or {}
        if data.get("pairing_id") in (None, self.pairing_id) or \
                data.get("node_id") == self.pairing.get("node_id"):
            self._reload()

    def _reload(self) -> None:
        self.conn.get("/pairings").then(self._on_pairings, self._on_reload_error)

    def _on_pairings(self, answer: dict[str, Any]) -> None:
        for p in answer.get("pairings", []):
            if p.get("id") == self.pairing_id:
                self.set_pairing(p)
                return

    def _on_reload_error(self, error: ParleyError) -> None:
        self.state_label.setText(f"Could not reach the node: {error.message}")

    def set_pairing(self, pairing: dict[str, Any]) -> None:
        """Show the node's newest view of this pairing."""
        self.pairing = dict(pairing)
        if "expires_in_s" in pairing:
            self._expires_in = float(pairing.get("expires_in_s") or 0)
        self._show_pairing()
        self.sig_pairing_changed.emit(self.pairing)

    # -- the owner's decision ----------------------------------------------------------------
    def _on_confirm_clicked(self) -> None:
        self._decide(True)

    def _on_refuse_clicked(self) -> None:
        self._decide(False)

    def _decide(self, confirm: bool) -> None:
        self._busy = True
        self._show_state()
        self.state_label.setText("Telling the other node…" if confirm else "Refusing…")
        action = "confirm" if confirm else "reject"
        reply = self.conn.post(f"/pairings/{self.pairing_id}/{action}")
        reply.then(self._on_confirmed if confirm else self._on_refused, self._on_decide_error)

    def _on_confirmed(self, pairing: dict[str, Any]) -> None:
        self._busy = False
        self.set_pairing(pairing)
        self.sig_pairing_decided.emit(self.pairing_id, True)

    def _on_refused(self, pairing: dict[str, Any]) -> None:
        self._busy = False
        self.set_pairing(pairing)
        self.sig_pairing_decided.emit(self.pairing_id, False)

    def _on_decide_error(self, error: ParleyError) -> None:
        self._busy = False
        self._show_state()
        self.state_label.setText(f"Not done: {error.message}")
        self.state_label.setStyleSheet(f"color: {ERROR.name()}; font-weight: bold;")
        self._reload()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        self._countdown.stop()
        try:
            self.conn.sig_event_received.disconnect(self._on_event)
        except (RuntimeError, TypeError):
            pass
        super().closeEvent(event)

