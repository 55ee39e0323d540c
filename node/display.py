"""Text that came from a peer, made safe to show to the owner.

Names, titles, tags, reasons and job output reach the owner's terminal, log and window. Any of
them may hold control characters: an escape sequence that clears the terminal or moves the
cursor, a carriage return or newline that forges a line, a right-to-left override that
reverses what follows. ``safe`` shows every such character as a visible escape (``\\x1b``,
``\\n``, ``\\u202e``) so the owner sees exactly what was sent; ``safe_data`` does it to every
string inside a JSON-like value. The CLI and the node's log use these.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from typing import Any

__all__ = ["SafeLogRecords", "safe", "safe_data"]

# C0 (but tab), DEL, C1, and the Unicode format characters that reorder or hide text.
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e"
                     "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]")


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    if ch == "\n":
        return "\\n"
    if ch == "\r":
        return "\\r"
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: Any, keep_tabs: bool = True) -> str:
    """``text`` with every control and reordering character shown as an escape."""
    out = _UNSAFE.sub(_escape, str(text))
    if not keep_tabs:
        out = out.replace("\t", "\\t")
    if out.isascii():
        return out
    # any other invisible format character (category Cf) too, without a table to keep
    return "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) == "Cf" else c for c in out)


def safe_data(value: Any) -> Any:
    """``value`` with ``safe`` applied to every string in it, keys included."""
    if isinstance(value, str):
        return safe(value)
    if isinstance(value, dict):
        return {safe(k) if isinstance(k, str) else k: safe_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [safe_data(v) for v in value]
    return value


class SafeLogRecords(logging.Filter):
    """A log handler's filter: the message (with its arguments) is made safe; a traceback
    attached to the record keeps its lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = safe(record.getMessage())
        record.args = None
        return True
