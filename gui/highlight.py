"""Syntax colours for the Python job source an owner reviews.

Besides the usual keywords, strings and comments, it marks the calls that matter for privacy:
``get_plain_text`` (a decryption: a reveal) stands out in red, and ``crypten.load`` (reading an
asset) in blue, so a reviewer's eye lands on them first.
"""

from __future__ import annotations

import builtins
import keyword
import re

from PySide6.QtCore import QRegularExpression
from PySide6.QtGui import (
    QColor,
    QFont,
    QGuiApplication,
    QPalette,
    QSyntaxHighlighter,
    QTextCharFormat,
    QTextDocument,
)

__all__ = ["PythonHighlighter"]

_IN_TRIPLE_SINGLE, _IN_TRIPLE_DOUBLE = 1, 2


def _fmt(color: str, bold: bool = False, italic: bool = False, background: str = ""
         ) -> QTextCharFormat:
    fmt = QTextCharFormat()
    fmt.setForeground(QColor(color))
    if bold:
        fmt.setFontWeight(QFont.Weight.Bold)
    if italic:
        fmt.setFontItalic(True)
    if background:
        fmt.setBackground(QColor(background))
    return fmt


class PythonHighlighter(QSyntaxHighlighter):
    """Highlights Python in a QTextDocument (set on a QPlainTextEdit's document)."""

    LIGHT = {
        "keyword": _fmt("#0033b3", bold=True),
        "builtin": _fmt("#7a3e9d"),
        "definition": _fmt("#00627a", bold=True),
        "decorator": _fmt("#9e880d"),
        "number": _fmt("#1750eb"),
        "string": _fmt("#067d17"),
        "comment": _fmt("#8c8c8c", italic=True),
        "self": _fmt("#94558d", italic=True),
        "load": _fmt("#0b5cad", bold=True),
        "reveal": _fmt("#b00020", bold=True, background="#fde7ea"),
    }
    DARK = {
        "keyword": _fmt("#cc7832", bold=True),
        "builtin": _fmt("#c58af9"),
        "definition": _fmt("#56b6c2", bold=True),
        "decorator": _fmt("#bbb529"),
        "number": _fmt("#6897bb"),
        "string": _fmt("#98c379"),
        "comment": _fmt("#8a8a8a", italic=True),
        "self": _fmt("#c77dbb", italic=True),
        "load": _fmt("#61afef", bold=True),
        "reveal": _fmt("#ff8a80", bold=True, background="#4a1f26"),
    }

    def __init__(self, document: QTextDocument, dark: bool | None = None) -> None:
        super().__init__(document)
        if dark is None:
            dark = QGuiApplication.palette().color(QPalette.ColorRole.Base).lightness() < 128
        self.FORMATS = self.DARK if dark else self.LIGHT
        words = "|".join(re.escape(k) for k in keyword.kwlist)
        names = "|".join(n for n in dir(builtins) if not n.startswith("_") and n.isidentifier())
        self._rules: list[tuple[QRegularExpression, str, int]] = [
            (QRegularExpression(rf"\b({words})\b"), "keyword", 0),
            (QRegularExpression(rf"\b({names})\b(?=\s*\()"), "builtin", 0),
            (QRegularExpression(r"\b(self|cls)\b"), "self", 0),
            (QRegularExpression(r"\b[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?\b"), "number", 0),
            (QRegularExpression(r"\b(?:def|class)\s+(\w+)"), "definition", 1),
            (QRegularExpression(r"^\s*@[\w.]+"), "decorator", 0),
            (QRegularExpression(r"\bcrypten\.load\b"), "load", 0),
            (QRegularExpression(r"\bget_plain_text\b"), "reveal", 0),
        ]
        self._string = QRegularExpression(
            r"[rbuRBUfF]{0,2}(\"([^\"\\]|\\.)*\"|'([^'\\]|\\.)*')")
        self._comment = QRegularExpression(r"#[^\n]*")

    def highlightBlock(self, text: str) -> None:  # noqa: N802 - Qt's name
        for regex, name, group in self._rules:
            it = regex.globalMatch(text)
            while it.hasNext():
                m = it.next()
                self.setFormat(m.capturedStart(group), m.capturedLength(group),
                               self.FORMATS[name])
        # strings and comments last: what is inside them is not code
        covered: list[tuple[int, int]] = []
        it = self._string.globalMatch(text)
        while it.hasNext():
            m = it.next()
            covered.append((m.capturedStart(), m.capturedEnd()))
            self.setFormat(m.capturedStart(), m.capturedLength(), self.FORMATS["string"])
        it = self._comment.globalMatch(text)
        while it.hasNext():
            m = it.next()
            if not any(a <= m.capturedStart() < b for a, b in covered):
                self.setFormat(m.capturedStart(), len(text) - m.capturedStart(),
                               self.FORMATS["comment"])
                break
        self._triple_quotes(text)

    def _triple_quotes(self, text: str) -> None:
        """Docstrings and other triple-quoted strings, across lines."""
        self.setCurrentBlockState(0)
        start = 0
        state = self.previousBlockState()
        while start <= len(text):
            if state in (_IN_TRIPLE_SINGLE, _IN_TRIPLE_DOUBLE):
                quote = "'''" if state == _IN_TRIPLE_SINGLE else '"""'
                end = text.find(quote, start)
                if end < 0:
                    self.setFormat(start, len(text) - start, self.FORMATS["string"])
                    self.setCurrentBlockState(state)
                    return
                self.setFormat(start, end + 3 - start, self.FORMATS["string"])
                start, state = end + 3, 0
                continue
            single, double = text.find("'''", start), text.find('"""', start)
            found = [i for i in (single, double) if i >= 0]
            if not found:
                return
            first = min(found)
            state = _IN_TRIPLE_SINGLE if first == single else _IN_TRIPLE_DOUBLE
            self.setFormat(first, 3, self.FORMATS["string"])
            start = first + 3
