"""One redraw or reload for a burst of node events: the views' shared single-shot timer."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, QTimer

__all__ = ["debounced"]


def debounced(parent: QObject, ms: int, slot: Callable[[], None]) -> QTimer:
    """A single-shot timer owned by ``parent`` that calls ``slot`` ``ms`` after its last
    ``start()``: call ``start()`` on every event, and ``slot`` runs once for the burst."""
    timer = QTimer(parent)
    timer.setSingleShot(True)
    timer.setInterval(ms)
    timer.timeout.connect(slot)
    return timer
