"""The editor for a custom job's source: Python colours, the job API's names on completion, and
the static check's complaints marked on their lines as the orchestrator types.

Completion offers what a job can actually use inside a party: ``crypten.load``,
``crypten.load_model``, ``crypten.cat``, ``crypten.nn.*``, the ``torch`` names the runtime jail
lets through, and the methods of encrypted tensors and modules (``get_plain_text``, ``sum``,
``mean``...). The lists mirror the jail's allowlists (node/jail/runtime.py); the GUI never
imports torch or CrypTen, so they are written out here, and tests/gui/test_compose.py checks
that every name offered is one the jail allows.

Problems (``set_problems``: ``[{"line", "col", "rule", "message"}]``, lines from 1) shade their
line, underline from the column, put a red mark in the gutter and write the message after the
line's text, so the complaint is read where the code is; hovering the line shows it again.
"""

from __future__ import annotations

import re
from typing import Any

from PySide6.QtCore import QEvent, QRect, QSize, QStringListModel, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QKeyEvent,
    QPainter,
    QPalette,
    QTextCharFormat,
    QTextCursor,
    QTextFormat,
)
from PySide6.QtWidgets import QCompleter, QPlainTextEdit, QTextEdit, QToolTip, QWidget

from gui.highlight import PythonHighlighter

__all__ = ["ATTRIBUTES", "NAMESPACES", "TOP_LEVEL", "CodeEditorWidget", "completions_for"]

INDENT = "    "

#: Members of the facades a job receives (node/jail/runtime.py crypten_facade, torch_facade).
NAMESPACES: dict[str, tuple[str, ...]] = {
    "crypten": ("load", "load_model", "cat", "stack", "where", "cryptensor", "nn", "optim"),
    "crypten.nn": ("Linear", "ReLU", "Sigmoid", "Sequential", "Conv2d", "MaxPool2d",
                   "AvgPool2d", "Flatten", "Dropout", "BatchNorm1d", "BatchNorm2d", "Softmax",
                   "LogSoftmax", "BCELoss", "BCEWithLogitsLoss", "CrossEntropyLoss", "MSELoss",
                   "L1Loss"),
    "crypten.optim": ("SGD",),
    "torch": ("tensor", "zeros", "ones", "zeros_like", "ones_like", "full", "arange",
              "linspace", "eye", "cat", "stack", "where", "exp", "log", "sqrt", "abs", "sign",
              "sigmoid", "tanh", "relu", "softmax", "argmax", "argmin", "max", "min", "sum",
              "mean", "var", "std", "matmul", "clamp", "round", "floor", "ceil", "randn", "rand",
              "randint", "manual_seed", "float32", "float64", "int64", "long", "bool",
              "bincount", "histc", "sort", "unique", "nn"),
    "torch.nn": ("functional",),
    "torch.nn.functional": ("one_hot",),
}

#: Methods of what a job holds: encrypted tensors first (the common case), then modules.
ATTRIBUTES: tuple[str, ...] = (
    "get_plain_text", "add", "sub", "mul", "div", "matmul", "neg", "abs", "sign", "square",
    "sqrt", "pow", "exp", "log", "reciprocal", "sigmoid", "tanh", "relu", "softmax",
    "log_softmax", "sum", "mean", "var", "max", "min", "argmax", "argmin", "dot", "ger",
    "outer", "cumsum", "trace", "t", "transpose", "permute", "view", "reshape", "flatten",
    "unsqueeze", "squeeze", "size", "dim", "nelement", "numel", "expand", "repeat", "roll",
    "narrow", "split", "chunk", "gather", "scatter", "take", "index_select", "where", "clone",
    "eq", "ne", "lt", "le", "gt", "ge", "clamp", "hardtanh", "flip", "pad", "conv1d", "conv2d",
    "avg_pool2d", "max_pool2d", "dropout", "norm", "prod", "cos", "sin", "inv_sqrt",
    "polynomial", "shape", "T", "unbind", "backward", "grad", "requires_grad", "mul_", "add_",
    "sub_", "div_", "encrypt", "cpu", "new", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "cross_entropy",
    # modules and optimisers
    "forward", "train", "eval", "parameters", "zero_grad", "update_parameters", "encrypted",
    "training", "weight", "bias", "step",
    # plain tensors (a revealed value at its recipient)
    "float", "long", "int", "double", "bool", "tolist", "item", "dtype", "any", "all", "round",
    "floor", "ceil", "sort", "topk", "unique", "bincount", "std", "count_nonzero",
    "logical_and", "logical_or", "logical_not", "detach", "type_as",
    # lists and dicts
    "append", "extend", "items", "keys", "values", "get",
)

#: Names a job may use without a dot: its parameters, the safe builtins, keywords it may write.
TOP_LEVEL: tuple[str, ...] = (
    "crypten", "torch",
    "abs", "all", "any", "bool", "dict", "enumerate", "float", "int", "len", "list", "max",
    "min", "range", "reversed", "round", "sorted", "sum", "tuple", "zip", "pow", "divmod",
    "str", "repr", "set", "slice", "iter", "next", "map", "filter", "chr", "ord", "print",
    "isinstance", "True", "False", "None",
    "def", "return", "for", "in", "if", "elif", "else", "while", "and", "or", "not", "is",
    "break", "continue", "pass",
)

_WORD_BEFORE = re.compile(r"[A-Za-z_][\w.]*$|\.$")


def _unique(names: tuple[str, ...] | list[str]) -> list[str]:
    return list(dict.fromkeys(names))


def completions_for(text_before_cursor: str, extra: list[str] | None = None
                    ) -> tuple[str, list[str]]:
    """(prefix typed so far, names that may follow) for the text left of the cursor on its
    line: after ``crypten.`` the facade's members, after ``x.`` the methods of encrypted values,
    otherwise the names a job may use (and ``extra``, e.g. tags in a string)."""
    match = _WORD_BEFORE.search(text_before_cursor)
    word = match.group(0) if match else ""
    if "." in word:
        qualifier, _, prefix = word.rpartition(".")
        names = NAMESPACES.get(qualifier)
        if names is None:
            names = ATTRIBUTES
        return prefix, _unique(names)
    return word, _unique(TOP_LEVEL + tuple(extra or ()))


class _Gutter(QWidget):
    """Line numbers, and a red mark on each line the static check refused."""

    def __init__(self, editor: CodeEditorWidget) -> None:
        super().__init__(editor)
        self.editor = editor

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(self.editor.gutter_width(), 0)

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        self.editor.paint_gutter(event)


class CodeEditorWidget(QPlainTextEdit):
    """A Python editor for one job function (or, read-only, the code a plan renders to)."""

    sig_problems_marked = Signal(list)
    """The problems now marked in the text (after ``set_problems``)."""

    PROBLEM_LIGHT = ("#fde7ea", "#c62828")
    PROBLEM_DARK = ("#4a1f26", "#ff8a80")

    def __init__(self, parent: QWidget | None = None, read_only: bool = False) -> None:
        super().__init__(parent)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        font = QFont("monospace")
        font.setStyleHint(QFont.StyleHint.Monospace)
        self.setFont(font)
        self.setTabStopDistance(self.fontMetrics().horizontalAdvance(" ") * 4)
        self.gutter = _Gutter(self)
        self.blockCountChanged.connect(self._on_block_count_changed)
        self.updateRequest.connect(self._on_update_request)
        self._on_block_count_changed(0)
        self.highlighter = PythonHighlighter(self.document())
        self.problems: list[dict[str, Any]] = []
        self.extra_words: list[str] = []

        self.completer = QCompleter(self)
        self.completer.setModel(QStringListModel(self.completer))
        self.completer.setWidget(self)
        self.completer.setCaseSensitivity(Qt.CaseSensitivity.CaseSensitive)
        self.completer.setCompletionMode(QCompleter.CompletionMode.PopupCompletion)
        self.completer.setModelSorting(QCompleter.ModelSorting.UnsortedModel)
        self.completer.setMaxVisibleItems(12)
        self.completer.activated.connect(self.insert_completion)
        self.setReadOnly(read_only)

    # -- the gutter ---------------------------------------------------------------------------
    def gutter_width(self) -> int:
        digits = max(3, len(str(max(1, self.blockCount()))))
        return 18 + self.fontMetrics().horizontalAdvance("9") * digits

    def _on_block_count_changed(self, _count: int) -> None:
        self.setViewportMargins(self.gutter_width(), 0, 0, 0)

    def _on_update_request(self, rect: QRect, dy: int) -> None:
        if dy:
            self.gutter.scroll(0, dy)
        else:
            self.gutter.update(0, rect.y(), self.gutter.width(), rect.height())

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        cr = self.contentsRect()
        self.gutter.setGeometry(QRect(cr.left(), cr.top(), self.gutter_width(), cr.height()))

    def _colours(self) -> tuple[QColor, QColor]:
        dark = self.palette().color(QPalette.ColorRole.Base).lightness() < 128
        shade, ink = self.PROBLEM_DARK if dark else self.PROBLEM_LIGHT
        return QColor(shade), QColor(ink)

    def paint_gutter(self, event: Any) -> None:
        painter = QPainter(self.gutter)
        painter.fillRect(event.rect(), self.palette().color(QPalette.ColorRole.Window))
        _shade, ink = self._colours()
        bad = {int(p.get("line") or 0) for p in self.problems}
        block = self.firstVisibleBlock()
        number = block.blockNumber()
        top = round(self.blockBoundingGeometry(block).translated(self.contentOffset()).top())
        height = round(self.blockBoundingRect(block).height())
        line_height = self.fontMetrics().height()
        while block.isValid() and top <= event.rect().bottom():
            if block.isVisible() and top + height >= event.rect().top():
                if number + 1 in bad:
                    painter.setPen(Qt.PenStyle.NoPen)
                    painter.setBrush(ink)
                    size = max(6, line_height // 2)
                    painter.drawEllipse(3, top + (line_height - size) // 2, size, size)
                    painter.setPen(ink)
                else:
                    painter.setPen(self.palette().color(QPalette.ColorRole.PlaceholderText))
                painter.drawText(0, top, self.gutter.width() - 5, line_height,
                                 Qt.AlignmentFlag.AlignRight, str(number + 1))
            block = block.next()
            top += height
            height = round(self.blockBoundingRect(block).height())
            number += 1
        painter.end()

    # -- problems -----------------------------------------------------------------------------
    def set_problems(self, problems: list[dict[str, Any]]) -> None:
        """Mark the static check's problems (lines from 1, columns from 0) in the text."""
        self.problems = [dict(p) for p in problems]
        shade, ink = self._colours()
        marks = []
        for problem in self.problems:
            block = self.document().findBlockByNumber(int(problem.get("line") or 1) - 1)
            if not block.isValid():
                block = self.document().lastBlock()
            line = QTextEdit.ExtraSelection()
            line.format.setBackground(shade)
            line.format.setProperty(QTextFormat.Property.FullWidthSelection, True)
            line.cursor = QTextCursor(block)
            marks.append(line)
            col = max(0, min(int(problem.get("col") or 0), max(0, block.length() - 1)))
            text = block.text()
            end = col
            while end < len(text) and (text[end].isalnum() or text[end] in "_."):
                end += 1
            if end == col:
                end = len(text.rstrip()) if len(text.rstrip()) > col else col + 1
            squiggle = QTextEdit.ExtraSelection()
            fmt = QTextCharFormat()
            fmt.setUnderlineStyle(QTextCharFormat.UnderlineStyle.WaveUnderline)
            fmt.setUnderlineColor(ink)
            squiggle.format = fmt
            cursor = QTextCursor(block)
            cursor.setPosition(block.position() + col)
            cursor.setPosition(min(block.position() + end, block.position() + block.length() - 1),
                               QTextCursor.MoveMode.KeepAnchor)
            squiggle.cursor = cursor
            marks.append(squiggle)
        self.setExtraSelections(marks)
        self.viewport().update()
        self.gutter.update()
        self.sig_problems_marked.emit(self.problems)

    def mark_lines(self, lines: list[int]) -> None:
        """Shade whole lines (from 1), e.g. where the review shows a value is decrypted."""
        shade, _ink = self._colours()
        marks = []
        for line in lines:
            block = self.document().findBlockByNumber(line - 1)
            if not block.isValid():
                continue
            sel = QTextEdit.ExtraSelection()
            sel.format.setBackground(shade)
            sel.format.setProperty(QTextFormat.Property.FullWidthSelection, True)
            sel.cursor = QTextCursor(block)
            marks.append(sel)
        self.setExtraSelections(marks)

    def marked_lines(self) -> list[int]:
        """The lines (from 1) marked as refused, in order."""
        return sorted({int(p.get("line") or 0) for p in self.problems})

    @staticmethod
    def problem_text(problem: dict[str, Any]) -> str:
        rule = f" ({problem['rule']})" if problem.get("rule") else ""
        return f"{problem.get('message', '')}{rule}"

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        super().paintEvent(event)
        if not self.problems:
            return
        painter = QPainter(self.viewport())
        _shade, ink = self._colours()
        font = QFont(self.font())
        font.setItalic(True)
        painter.setFont(font)
        painter.setPen(ink)
        metrics = self.fontMetrics()
        offset = self.contentOffset()
        for problem in self.problems:
            block = self.document().findBlockByNumber(int(problem.get("line") or 1) - 1)
            if not block.isValid() or not block.isVisible():
                continue
            geometry = self.blockBoundingGeometry(block).translated(offset)
            if geometry.bottom() < event.rect().top() or geometry.top() > event.rect().bottom():
                continue
            x = int(offset.x()) + metrics.horizontalAdvance(block.text().expandtabs(4)) + \
                metrics.horizontalAdvance("    ") + int(self.document().documentMargin())
            painter.drawText(x, int(geometry.top()), 4000, metrics.height(),
                             Qt.AlignmentFlag.AlignLeft, "◀ " + self.problem_text(problem))
        painter.end()

    def viewportEvent(self, e: Any) -> bool:  # noqa: N802 - Qt's name
        """Hovering a marked line shows its problems (tooltips reach the viewport)."""
        if e.type() == QEvent.Type.ToolTip and self.problems:
            line = self.cursorForPosition(e.pos()).blockNumber() + 1
            said = [self.problem_text(p) for p in self.problems if int(p.get("line") or 0) == line]
            if said:
                QToolTip.showText(e.globalPos(), "\n".join(said), self.viewport())
                return True
            QToolTip.hideText()
        return super().viewportEvent(e)

    # -- completion ---------------------------------------------------------------------------
    def _text_before_cursor(self) -> str:
        cursor = self.textCursor()
        return cursor.block().text()[:cursor.positionInBlock()]

    def complete(self, force: bool = False) -> bool:
        """Open the completion list for the word left of the cursor; False if nothing fits.
        Without ``force`` it opens after a dot or two letters of a name."""
        before = self._text_before_cursor()
        if _in_string_or_comment(before):
            return False
        prefix, names = completions_for(before, self.extra_words)
        if not force and not before.endswith(".") and len(prefix) < 2:
            self.completer.popup().hide()
            return False
        names = [n for n in names if n.startswith(prefix) and n != prefix]
        if not names:
            self.completer.popup().hide()
            return False
        model = self.completer.model()
        assert isinstance(model, QStringListModel)
        model.setStringList(names)
        self.completer.setCompletionPrefix(prefix)
        self.completer.popup().setCurrentIndex(self.completer.completionModel().index(0, 0))
        rect = self.cursorRect()
        rect.setWidth(self.completer.popup().sizeHintForColumn(0)
                      + self.completer.popup().verticalScrollBar().sizeHint().width() + 8)
        rect.translate(self.viewportMargins().left(), 0)
        self.completer.complete(rect)
        return True

    def completion_names(self) -> list[str]:
        """What the completion list offers now (for tests and accessibility)."""
        model = self.completer.completionModel()
        return [model.index(i, 0).data() for i in range(model.rowCount())]

    def insert_completion(self, name: str) -> None:
        cursor = self.textCursor()
        cursor.insertText(name[len(self.completer.completionPrefix()):])
        self.setTextCursor(cursor)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt's name
        popup = self.completer.popup()
        if popup.isVisible() and event.key() in (
                Qt.Key.Key_Enter, Qt.Key.Key_Return, Qt.Key.Key_Escape, Qt.Key.Key_Tab,
                Qt.Key.Key_Backtab):
            if event.key() == Qt.Key.Key_Tab:  # Tab takes the highlighted name, like Enter
                index = popup.currentIndex()
                if index.isValid():
                    self.insert_completion(index.data())
                popup.hide()
                return
            event.ignore()  # the completer's popup handles it
            return
        if self.isReadOnly():
            super().keyPressEvent(event)
            return
        ctrl = event.modifiers() & Qt.KeyboardModifier.ControlModifier
        if ctrl and event.key() == Qt.Key.Key_Space:
            self.complete(force=True)
            return
        if event.key() == Qt.Key.Key_Tab and not self.textCursor().hasSelection():
            self.textCursor().insertText(INDENT)
            return
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            line = self._text_before_cursor()
            indent = line[:len(line) - len(line.lstrip())]
            if line.rstrip().endswith(":"):
                indent += INDENT
            super().keyPressEvent(event)
            self.textCursor().insertText(indent)
            return
        if event.key() == Qt.Key.Key_Backspace and not self.textCursor().hasSelection():
            before = self._text_before_cursor()
            if before and not before.strip() and len(before) % 4 == 0:
                cursor = self.textCursor()
                for _ in range(4):
                    cursor.deletePreviousChar()
                return
        super().keyPressEvent(event)
        text = event.text()
        if text and (text.isalnum() or text in "_."):
            self.complete()
        elif popup.isVisible():
            popup.hide()


def _in_string_or_comment(before: str) -> bool:
    """Whether the end of ``before`` (one line up to the cursor) is inside a string or a
    comment (a rough test: quotes counted, escapes honoured)."""
    quote = ""
    i = 0
    while i < len(before):
        ch = before[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            return True
        i += 1
    return bool(quote)

