"""Help > About: what is installed (Parley, torch, CrypTen, Qt) and where the node keeps its data.

Versions come from package metadata, never by importing torch or CrypTen into the GUI.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from PySide6 import __version__ as pyside_version
from PySide6.QtCore import Qt, qVersion
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from gui.style import app_icon

__all__ = ["AboutDialog", "versions"]


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """The versions people quote in a bug report."""
    return {"Parley": _version("parley"), "torch": _version("torch"),
            "CrypTen": _version("crypten"), "Qt": qVersion(), "PySide6": pyside_version}


class AboutDialog(QDialog):
    """Versions and the data dir."""

    def __init__(self, data_dir: str | Path, node_version: str | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About Parley")
        logo = QLabel()
        logo.setPixmap(app_icon().pixmap(64, 64))
        logo.setAlignment(Qt.AlignmentFlag.AlignTop)
        name = QLabel("Parley")
        font = name.font()
        font.setPointSizeF(font.pointSizeF() * 1.6)
        font.setBold(True)
        name.setFont(font)
        blurb = QLabel("Compute together on private data with secure multi-party computation, "
                       "without handing it over.")
        blurb.setWordWrap(True)
        form = QFormLayout()
        self.values: dict[str, str] = versions()
        if node_version:
            self.values["Node"] = node_version
        self.values["Data folder"] = str(data_dir)
        for key, value in self.values.items():
            label = QLabel(value)
            label.setTextFormat(Qt.TextFormat.PlainText)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            form.addRow(f"{key}:", label)
        text = QVBoxLayout()
        text.addWidget(name)
        text.addWidget(blurb)
        text.addSpacing(6)
        text.addLayout(form)
        top = QHBoxLayout()
        top.addWidget(logo)
        top.addSpacing(12)
        top.addLayout(text, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(buttons)
        self.setMinimumWidth(440)

    @classmethod
    def ask(cls, parent: QWidget | None, data_dir: str | Path,
            node_version: str | None = None) -> None:
        """Show it modally until closed."""
        cls(data_dir, node_version, parent).exec()
