"""A node's key as a picture: a symmetric 5x5 grid coloured from the hash of its node id.

People compare pictures faster than base32 strings, and a changed key changes the picture, so
an identicon beside every fingerprint makes "the same node as last time" easy to see (the
scheme GitHub uses for avatars). It proves nothing by itself: the pairing code does that.
"""

from __future__ import annotations

import hashlib

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import QSizePolicy, QWidget

GRID = 5
__all__ = ["IdenticonWidget", "identicon_cells", "identicon_color", "identicon_icon",
           "identicon_pixmap", "short_fingerprint"]


def _digest(node_id: str) -> bytes:
    return hashlib.sha256(node_id.encode("utf-8")).digest()


def identicon_cells(node_id: str) -> list[list[bool]]:
    """Which cells are filled, row by row; the grid is mirrored left to right."""
    bits = int.from_bytes(_digest(node_id)[:4], "big")
    half = (GRID + 1) // 2
    rows = []
    for r in range(GRID):
        left = [bool(bits >> (r * half + c) & 1) for c in range(half)]
        rows.append(left + left[:GRID - half][::-1])
    return rows


def identicon_color(node_id: str) -> QColor:
    """A saturated colour from the id's hash, dark enough to read on a light background."""
    d = _digest(node_id)
    hue = int.from_bytes(d[4:6], "big") % 360
    return QColor.fromHsl(hue, 140 + d[6] % 80, 95 + d[7] % 50)


def identicon_pixmap(node_id: str, size: int = 32) -> QPixmap:
    """The identicon of ``node_id`` at ``size`` x ``size`` pixels (grey for no id)."""
    pixmap = QPixmap(size, size)
    pixmap.fill(QColor("#f0f0f0"))
    painter = QPainter(pixmap)
    painter.setPen(Qt.PenStyle.NoPen)
    if node_id:
        margin = size / 12
        cell = (size - 2 * margin) / GRID
        painter.setBrush(identicon_color(node_id))
        for r, row in enumerate(identicon_cells(node_id)):
            for c, filled in enumerate(row):
                if filled:
                    painter.drawRect(QRectF(margin + c * cell, margin + r * cell, cell, cell))
    painter.end()
    return pixmap


def identicon_icon(node_id: str) -> QIcon:
    return QIcon(identicon_pixmap(node_id, 32))


def short_fingerprint(node_id: str, groups: int = 4) -> str:
    """The first characters of a node id in groups of four, easy to read aloud:
    ``n-abcd efgh ijkl mnop``."""
    prefix, _, body = node_id.partition("-")
    if not body:
        prefix, body = "", node_id
    chunks = [body[i:i + 4] for i in range(0, min(len(body), 4 * groups), 4)]
    return (f"{prefix}-" if prefix else "") + " ".join(chunks)


class IdenticonWidget(QWidget):
    """The identicon of one node id, kept square."""

    def __init__(self, node_id: str = "", size: int = 32, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._node_id = node_id
        self._size = size
        self.setFixedSize(size, size)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self._update_tip()

    @property
    def node_id(self) -> str:
        return self._node_id

    def set_node_id(self, node_id: str) -> None:
        self._node_id = node_id
        self._update_tip()
        self.update()

    def _update_tip(self) -> None:
        self.setToolTip(f"key fingerprint {self._node_id}" if self._node_id else "")

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(self._size, self._size)

    def paintEvent(self, event: object) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.drawPixmap(0, 0, identicon_pixmap(self._node_id, self._size))
        painter.end()
