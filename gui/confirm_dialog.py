"""A question with named answers, for actions that cannot be undone (unpublish, remove a
standing approval, quit and stop the node).

``ConfirmDialog.ask(...)`` returns the key of the answer, or None for Cancel; tests replace
``ask`` instead of clicking a modal.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QPushButton, QVBoxLayout, QWidget

__all__ = ["ConfirmDialog"]


class ConfirmDialog(QDialog):
    """One question, a few answers, and Cancel."""

    def __init__(self, title: str, text: str, answers: list[tuple[str, str]],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.answer: str | None = None
        label = QLabel(text)
        label.setTextFormat(Qt.TextFormat.PlainText)  # text may hold names from peers
        label.setWordWrap(True)
        label.setMinimumWidth(380)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.buttons: dict[str, QPushButton] = {}
        for i, (key, caption) in enumerate(answers):
            button = buttons.addButton(caption, QDialogButtonBox.ButtonRole.AcceptRole)
            button.clicked.connect(lambda _=False, k=key: self._on_answered(k))
            button.setDefault(i == 0)
            self.buttons[key] = button
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(label)
        layout.addSpacing(8)
        layout.addWidget(buttons)

    def _on_answered(self, key: str) -> None:
        self.answer = key
        self.accept()

    @classmethod
    def ask(cls, parent: QWidget | None, title: str, text: str,
            answers: list[tuple[str, str]]) -> str | None:
        """Show the question modally; the chosen answer's key, or None when cancelled."""
        dialog = cls(title, text, answers, parent)
        return dialog.answer if dialog.exec() == QDialog.DialogCode.Accepted else None
