"""What the owner says about an asset: its name, tags, description and (for a CSV being
published) which column is the label.

``AssetDialog.ask(...)`` returns an ``AssetForm`` or None when cancelled; tests replace ``ask``
to answer without a modal.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QStringListModel, Qt
from PySide6.QtWidgets import (
    QComboBox,
    QCompleter,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)

__all__ = ["AssetDialog", "AssetForm", "csv_header", "parse_tags"]

NO_LABEL = "(none: every column is a feature)"


@dataclass
class AssetForm:
    """The dialog's answer."""

    name: str
    tags: list[str] = field(default_factory=list)
    description: str = ""
    label_column: str | None = None


def parse_tags(text: str) -> list[str]:
    """``"cancer, demo  ,"`` -> ``["cancer", "demo"]`` (the node normalises case and order)."""
    return [t.strip() for t in text.replace(";", ",").split(",") if t.strip()]


def csv_header(path: str | Path, limit: int = 64 * 1024) -> list[str]:
    """The column names on a CSV's first line ([] when it cannot be read: the node then says
    why, with line and column, when the owner publishes)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            first = handle.readline(limit)
    except (OSError, UnicodeDecodeError):
        return []
    rows = list(csv.reader([first]))
    return [c.strip() for c in rows[0]] if rows else []


class _TagCompleter(QCompleter):
    """Completes the tag being typed after the last comma."""

    def splitPath(self, path: str) -> list[str]:
        return [path.rsplit(",", 1)[-1].strip()]

    def pathFromIndex(self, index: Any) -> str:
        typed = self.widget().text() if self.widget() is not None else ""
        head = typed.rsplit(",", 1)[0] + ", " if "," in typed else ""
        return head + str(super().pathFromIndex(index)) + ", "


class AssetDialog(QDialog):
    """Publish a file (``path``) or edit an asset already published (``asset``)."""

    def __init__(self, parent: QWidget | None = None, *, path: str | Path | None = None,
                 asset: dict[str, Any] | None = None, tags_in_use: Iterable[str] = (),
                 columns: Iterable[str] = ()) -> None:
        super().__init__(parent)
        editing = asset is not None
        source = Path(path) if path is not None else None
        self.setWindowTitle(f"Edit {asset.get('name', 'asset')}" if editing and asset
                            else f"Publish {source.name if source else 'a file'}")
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)

        if source is not None:
            file_label = QLabel(str(source))
            file_label.setTextFormat(Qt.TextFormat.PlainText)
            file_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            file_label.setToolTip(str(source))
            form.addRow("File:", file_label)

        self.name_edit = QLineEdit(str(asset.get("name", "")) if asset else
                                   (source.stem if source else ""))
        self.name_edit.setPlaceholderText("what peers see, e.g. clinic_a_features")
        form.addRow("&Name:", self.name_edit)

        self.tags_edit = QLineEdit(", ".join(asset.get("tags", [])) if asset else "")
        self.tags_edit.setPlaceholderText("comma-separated, e.g. breast-cancer, features")
        completer = _TagCompleter(QStringListModel(sorted(set(tags_in_use))), self)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.tags_edit.setCompleter(completer)
        form.addRow("&Tags:", self.tags_edit)
        hint = QLabel("Peers find your assets by tag. Lowercase letters, digits and '-'.")
        hint.setEnabled(False)  # the palette's placeholder colour, in any theme
        hint.setWordWrap(True)
        form.addRow("", hint)

        self.description_edit = QPlainTextEdit(str(asset.get("description", "")) if asset else "")
        self.description_edit.setPlaceholderText("what the data is, where it comes from")
        self.description_edit.setTabChangesFocus(True)
        self.description_edit.setFixedHeight(self.fontMetrics().lineSpacing() * 5)
        form.addRow("&Description:", self.description_edit)

        self.label_combo: QComboBox | None = None
        cols = list(columns)
        if not editing and source is not None and source.suffix.lower() == ".csv":
            self.label_combo = QComboBox()
            self.label_combo.addItem(NO_LABEL, None)
            for name in cols:
                self.label_combo.addItem(name, name)
            if "diagnosis" in cols or "label" in cols:
                self.label_combo.setCurrentIndex(self.label_combo.findData(
                    "diagnosis" if "diagnosis" in cols else "label"))
            form.addRow("&Label column:", self.label_combo)

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok |
                                        QDialogButtonBox.StandardButton.Cancel)
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setText("Save" if editing else "Publish")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.name_edit.textChanged.connect(lambda text: ok.setEnabled(bool(text.strip())))
        ok.setEnabled(bool(self.name_edit.text().strip()))

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(min(900, max(520, self.fontMetrics().horizontalAdvance(
            str(source or '')) + 160)))

    def form(self) -> AssetForm:
        """What the owner entered."""
        label = self.label_combo.currentData() if self.label_combo is not None else None
        return AssetForm(name=self.name_edit.text().strip(),
                         tags=parse_tags(self.tags_edit.text()),
                         description=self.description_edit.toPlainText().strip(),
                         label_column=label)

    @classmethod
    def ask(cls, parent: QWidget | None, *, path: str | Path | None = None,
            asset: dict[str, Any] | None = None, tags_in_use: Iterable[str] = (),
            columns: Iterable[str] = ()) -> AssetForm | None:
        """Show the dialog modally; the form, or None when cancelled."""
        dialog = cls(parent, path=path, asset=asset, tags_in_use=tags_in_use, columns=columns)
        return dialog.form() if dialog.exec() == QDialog.DialogCode.Accepted else None
