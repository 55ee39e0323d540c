"""Look and feel shared by the views: icons drawn from resources/icons, status colours, and
the short form of an asset's shape.

Icons are monochrome SVGs stroked in ``currentColor``; ``icon()`` paints them in the palette's
text colour, so they read the same in light and dark themes and stay sharp at any scale.
Colours are palette roles everywhere except the status colours below, which carry meaning.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from PySide6.QtCore import QByteArray, QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPalette, QPixmap
from PySide6.QtSvg import QSvgRenderer
from PySide6.QtWidgets import QApplication, QTableWidgetItem, QTreeWidget, QTreeWidgetItem, QWidget

from node.display import safe

__all__ = [
    "ERROR",
    "OK",
    "WARNING",
    "app_icon",
    "asset_shape",
    "icon",
    "status_style",
]

OK = QColor("#2e7d32")
"""Green: in force, connected."""
WARNING = QColor("#b26a00")
"""Amber: works, with less than everything (reduced confinement)."""
ERROR = QColor("#c62828")
"""Red: stopped, failed, refused."""

_SIZES = (16, 20, 24, 32, 48, 64, 128, 256)


def _svg(name: str) -> bytes:
    return (files("resources") / "icons" / f"{name}.svg").read_bytes()


def _render(data: bytes, result: QIcon | None = None,
            mode: QIcon.Mode = QIcon.Mode.Normal) -> QIcon:
    renderer = QSvgRenderer(QByteArray(data))
    result = QIcon() if result is None else result
    for size in _SIZES:
        pixmap = QPixmap(size, size)
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(painter, QRectF(0, 0, size, size))
        painter.end()
        result.addPixmap(pixmap, mode)
    return result


def icon(name: str, widget: QWidget | None = None, role: QPalette.ColorRole =
         QPalette.ColorRole.WindowText) -> QIcon:
    """The icon ``resources/icons/NAME.svg`` drawn in the palette's text colour (of ``widget``,
    or the application's)."""
    palette = widget.palette() if widget is not None else QApplication.palette()
    svg = _svg(name)
    result = _render(svg.replace(b"currentColor", palette.color(role).name().encode()))
    selected = palette.color(QPalette.ColorRole.HighlightedText).name().encode()
    return _render(svg.replace(b"currentColor", selected), result, QIcon.Mode.Selected)


def app_icon() -> QIcon:
    """Parley's own icon (full colour)."""
    return _render(_svg("app"))


def status_style(colour: QColor) -> str:
    """A stylesheet for a banner or badge in a status colour (white text on it)."""
    return (f"background-color: {colour.name()}; color: white; border-radius: 4px; "
            "padding: 6px 10px;")


def asset_shape(asset: dict[str, Any]) -> str:
    """A dataset's rows × columns (and label), a model's input shape, in words people scan."""
    schema = asset.get("schema") or {}
    if asset.get("kind") == "dataset":
        shape = schema.get("shape") or []
        text = " × ".join(str(d) for d in shape) if shape else "?"
        label = schema.get("label")
        if isinstance(label, dict) and label.get("name"):
            text += f" + label '{label['name']}'"
        return text
    inputs = schema.get("inputs") or [{}]
    dims = inputs[0].get("shape") or []
    text = "in " + " × ".join("?" if d is None else str(d) for d in dims)
    if schema.get("parameters"):
        text += f", {schema['parameters']:,} parameters"
    return text


def tree_group(tree: QTreeWidget, title: str) -> QTreeWidgetItem:
    """A bold, expanded heading row spanning every column, that cannot be selected."""
    group = QTreeWidgetItem(tree, [title])
    font = group.font(0)
    font.setBold(True)
    group.setFont(0, font)
    group.setFlags(Qt.ItemFlag.ItemIsEnabled)
    group.setFirstColumnSpanned(True)
    group.setExpanded(True)
    return group


def table_cell(text: str, tip: str = "") -> QTableWidgetItem:
    """A read-only table cell; text from peers shows its control characters as escapes."""
    item = QTableWidgetItem(safe(text))
    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
    if tip:
        item.setToolTip(tip)
    return item
